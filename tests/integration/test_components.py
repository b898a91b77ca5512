"""Smoke tests: each test component is the real thing and does what later tests rely on."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import urllib.error
import uuid
from pathlib import Path

import boto3
import hvac
import pytest

from tests.components.base import wait_until
from tests.components.kube import KubeCluster
from tests.components.moto import MotoServer
from tests.components.openbao import OpenBao

REPO = Path(__file__).resolve().parents[2]

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.smoke.strongroom.io"},
    "spec": {
        "group": "smoke.strongroom.io",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 10}
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


def test_apiserver_stores_and_watches_a_secret(kube: KubeCluster) -> None:
    name = f"smoke-{uuid.uuid4().hex[:6]}"
    seen: list[str] = []
    ready = threading.Event()

    def watch() -> None:
        out = subprocess.Popen(
            [str(kube.kubectl_bin), "--kubeconfig", str(kube.kubeconfig), "get", "secrets",
             "-n", "default", "--watch-only", "-o", "name"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        ready.set()
        assert out.stdout is not None
        for line in out.stdout:
            seen.append(line.strip())
            if name in line:
                break
        out.terminate()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ready.wait(10)
    kube.request(
        "POST", "/api/v1/namespaces/default/secrets",
        {"metadata": {"name": name}, "data": {"k": base64.b64encode(b"v").decode()}},
    )  # fmt: skip
    # kubectl may establish its watch after the create (a loaded machine): each further write
    # is an event it sees once it watches.
    for touch in range(30):
        watcher.join(1)
        if not watcher.is_alive():
            break
        kube.request("PATCH", f"/api/v1/namespaces/default/secrets/{name}",
                     {"metadata": {"labels": {"touch": str(touch)}}},
                     content_type="application/merge-patch+json")  # fmt: skip
    assert f"secret/{name}" in seen
    stored = kube.request("GET", f"/api/v1/namespaces/default/secrets/{name}")
    assert base64.b64decode(stored["data"]["k"]) == b"v"


def test_the_apiserver_enforces_a_crd_schema(kube: KubeCluster) -> None:
    kube.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD)
    wait_until(lambda: kube._established("widgets.smoke.strongroom.io"), timeout=30, what="CRD")
    base = "/apis/smoke.strongroom.io/v1/namespaces/default/widgets"
    good = {"apiVersion": "smoke.strongroom.io/v1", "kind": "Widget",
            "metadata": {"name": "ok"}, "spec": {"size": 3}}  # fmt: skip
    kube.request("POST", base, good)
    assert kube.request("GET", f"{base}/ok")["spec"]["size"] == 3
    bad = {**good, "metadata": {"name": "too-big"}, "spec": {"size": 99}}
    with pytest.raises(urllib.error.HTTPError) as info:
        kube.request("POST", base, bad)
    assert info.value.code == 422
    body = json.loads(info.value.read())
    assert "spec.size" in body["message"]


def test_rbac_denies_what_no_role_grants(kube: KubeCluster) -> None:
    ns = f"rbac-{uuid.uuid4().hex[:6]}"
    kube.ensure_namespace(ns)
    token = kube.service_account_token(ns, "reader")
    path = f"/api/v1/namespaces/{ns}/secrets"
    with pytest.raises(urllib.error.HTTPError) as info:
        kube.request("GET", path, token=token)
    assert info.value.code == 403
    kube.request("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles", {
        "metadata": {"name": "read-secrets"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}],
    })  # fmt: skip
    kube.request("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", {
        "metadata": {"name": "read-secrets"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-secrets"
        },
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}],
    })  # fmt: skip
    wait_until(lambda: kube.request("GET", path, token=token) is not None, timeout=10, what="RBAC")
    with pytest.raises(urllib.error.HTTPError) as other:
        kube.request("GET", "/api/v1/namespaces/default/secrets", token=token)
    assert other.value.code == 403


def test_openbao_transit_round_trip(openbao: OpenBao) -> None:
    client = hvac.Client(url=openbao.addr, token=openbao.token)
    client.secrets.transit.create_key(name="smoke")
    plain = base64.b64encode(b"seed bytes").decode()
    ciphertext = client.secrets.transit.encrypt_data(name="smoke", plaintext=plain)["data"][
        "ciphertext"
    ]
    assert ciphertext.startswith("vault:v1:")
    decrypted = client.secrets.transit.decrypt_data(name="smoke", ciphertext=ciphertext)
    assert decrypted["data"]["plaintext"] == plain


def test_moto_kms_round_trip(moto: MotoServer) -> None:
    kms = boto3.client("kms", endpoint_url=moto.endpoint, region_name=moto.region,
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    key_id = kms.create_key(Description="smoke")["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"seed", EncryptionContext={"a": "b"})[
        "CiphertextBlob"
    ]
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"a": "b"})["Plaintext"] == b"seed"
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"a": "c"})


def test_helm_is_the_real_binary(helm: str) -> None:
    out = subprocess.run([helm, "version", "--short"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("v4.")


# -- what scripts/testenv builds ----------------------------------------------------------------


def test_the_built_components_report_their_release(kube: KubeCluster, openbao: OpenBao) -> None:
    """Stamped as their own builds do: not v0.0.0-master+$Format:%H$, not 2.0.0-HEAD."""
    server = json.loads(kube.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert (server["gitVersion"], server["major"], server["minor"]) == ("v1.35.4", "1", "35")
    own = subprocess.run([kube.apiserver_bin, "--version"], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert own.strip() == "Kubernetes v1.35.4"
    bao = subprocess.run([openbao.binary, "version"], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert bao.startswith("OpenBao v2.4.0 (f9407a27fbee)")
    assert Path(openbao.binary).parent.name == "openbao-v2.4.0"  # the cache names the release


def test_a_component_build_says_what_it_does_and_shows_its_log_when_it_fails(
    tmp_path: Path,
) -> None:
    """The progress lines of a cold build, made to fail at once (no module proxy, an empty
    module cache): what is built and how long it usually takes, where Go's output goes, and
    on failure that output in full."""
    env = {**os.environ, "STRONGROOM_CACHE": str(tmp_path / "cache"), "GOPROXY": "off",
           "GOMODCACHE": str(tmp_path / "gomod"), "GOFLAGS": "-mod=mod"}  # fmt: skip
    done = subprocess.run([str(REPO / "scripts" / "testenv"), "etcd"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    log = tmp_path / "cache" / "logs" / "etcd.log"
    assert done.returncode != 0
    assert "testenv: building etcd v3.6.5 from Go modules, once: 1-3 min on 2 cores" in done.stderr
    assert f"(Go's output goes to {log})" in done.stderr
    assert "error: building etcd failed after" in done.stderr
    assert "GOPROXY=off" in log.read_text()  # Go's own words, kept in the log ...
    assert log.read_text().strip() in done.stderr  # ... and shown in full on failure
    assert not (tmp_path / "cache" / "bin" / "etcd-v3.6.5" / "etcd").exists()
