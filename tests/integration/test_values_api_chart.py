"""The chart's values API: its own ServiceAccount can review tokens and access and nothing
else, and the aggregated ClusterRoles grant tenants what their names say."""

from __future__ import annotations

import base64
import urllib.error
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from strongroom.server.tls import self_signed
from tests.components.chart import RBAC_KINDS, of_kind, render, suffixed
from tests.components.kube import KubeCluster
from tests.components.operator import child_env, eventually
from tests.components.values_api import ApiClient, ServerProcess, token_for
from tests.conftest import MASTER_KEY

POSTGRES_API = ["--set", "valuesApi.enabled=true", "--set", "store.postgres.existingSecret=pg",
                "--set", "replicaCount=2"]  # fmt: skip
SQLITE_API = ["--set", "valuesApi.enabled=true"]


def test_on_postgres_the_api_is_its_own_deployment_without_secret_rights(helm: str) -> None:
    docs = render(helm, *POSTGRES_API)
    api = next(
        d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "sr-strongroom-api"
    )
    pod = api["spec"]["template"]["spec"]
    assert api["spec"]["replicas"] == 2
    assert pod["serviceAccountName"] == "sr-strongroom-api"
    assert pod["containers"][0]["args"][0] == "serve"
    env = {e["name"] for e in pod["containers"][0]["env"]}
    assert {"STRONGROOM_DATABASE_URL", "STRONGROOM_KEK", "STRONGROOM_MASTER_KEY_FILE"} <= env
    granted = [
        (rule, binding["roleRef"]["name"])
        for binding in of_kind(docs, "ClusterRoleBinding", "RoleBinding")
        if binding["subjects"][0]["name"] == "sr-strongroom-api"
        for role in of_kind(docs, "ClusterRole", "Role")
        if role["metadata"]["name"] == binding["roleRef"]["name"]
        for rule in role["rules"]
    ]
    assert [(r["resources"], r["verbs"]) for r, _ in granted] == [
        (["tokenreviews"], ["create"]), (["subjectaccessreviews"], ["create"])]  # fmt: skip
    operator = of_kind(docs, "Deployment")[0]
    assert "--serve" not in operator["spec"]["template"]["spec"]["containers"][0]["args"]
    selector = api["spec"]["selector"]["matchLabels"]
    assert (
        selector != operator["spec"]["selector"]["matchLabels"]
    )  # neither adopts the other's pods
    service = next(
        d for d in of_kind(docs, "Service") if d["metadata"]["name"] == "sr-strongroom-api"
    )
    assert service["spec"]["selector"] == selector


def test_on_sqlite_the_operator_serves_and_the_certificate_names_the_service(helm: str) -> None:
    docs = render(helm, *SQLITE_API)
    assert [d["metadata"]["name"] for d in of_kind(docs, "Deployment")] == ["sr-strongroom"]
    args = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--serve" in args and "--serve-tls-cert-file=/etc/strongroom/api-tls/tls.crt" in args
    secret = next(
        d for d in of_kind(docs, "Secret") if d["metadata"]["name"] == "sr-strongroom-api-tls"
    )
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "sr-strongroom-api.strongroom.svc" in names.get_values_for_type(x509.DNSName)
    ca = next(
        d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == "sr-strongroom-api-ca"
    )
    assert ca["data"]["ca.crt"].encode() == base64.b64decode(secret["data"]["tls.crt"])


@pytest.mark.parametrize("args", [pytest.param(POSTGRES_API, id="postgres"),
                                  pytest.param(SQLITE_API, id="sqlite")])  # fmt: skip
def test_the_network_policy_lets_clients_reach_the_pods_that_serve(
    helm: str, args: list[str]
) -> None:
    docs = render(helm, *args, "--set", "networkPolicy.enabled=true")
    service = next(
        d for d in of_kind(docs, "Service") if d["metadata"]["name"] == "sr-strongroom-api"
    )
    open_to = [policy for policy in of_kind(docs, "NetworkPolicy")
               if policy["spec"]["podSelector"]["matchLabels"] == service["spec"]["selector"]]  # fmt: skip
    assert len(open_to) == 1
    assert 8443 in [port["port"] for port in open_to[0]["spec"]["ingress"][0]["ports"]]


@pytest.fixture
def chart_server(
    helm: str, kube: KubeCluster, tmp_path: Path
) -> Iterator[tuple[ApiClient, str, str]]:
    """``strongroom serve`` under the chart's own ServiceAccount and RBAC, nothing more."""
    release = f"rel-{uuid.uuid4().hex[:6]}"
    kube.ensure_namespace(release)
    docs = render(helm, *POSTGRES_API, namespace=release)
    mine = [d for d in of_kind(docs, *RBAC_KINDS)
            if d["metadata"]["name"] in {"sr-strongroom-api", "strongroom-values-editor",
                                         "strongroom-values-viewer"}]  # fmt: skip
    suffix = f"-{uuid.uuid4().hex[:6]}"
    kube.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(suffixed(mine, suffix)))
    token = kube.service_account_token(release, "sr-strongroom-api", create=False)
    kubeconfig = kube.write_kubeconfig(tmp_path / "api.kubeconfig", token=token, user="api")
    pair = self_signed(["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(pair.cert_pem)
    (tmp_path / "tls.key").write_bytes(pair.key_pem)
    proc = ServerProcess(kube, child_env(f"sqlite:///{tmp_path / 's.db'}", MASTER_KEY.hex()),
                         tmp_path, kubeconfig=kubeconfig,
                         tls_files=(tmp_path / "tls.crt", tmp_path / "tls.key"))  # fmt: skip
    client = proc.start()
    try:
        yield client, suffix, token
    finally:
        proc.stop()


def test_the_charts_api_identity_reviews_and_the_aggregated_roles_grant_what_they_say(
    kube: KubeCluster, chart_server: tuple[ApiClient, str, str]
) -> None:
    api, suffix, api_token = chart_server
    ns = f"tenant-{uuid.uuid4().hex[:6]}"
    kube.ensure_namespace(ns)
    for who, role in (("dev", "strongroom-values-editor"), ("auditor", "strongroom-values-viewer")):
        kube.request(
            "POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": who}}
        )
        kube.request("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", {
            "metadata": {"name": who},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role + suffix},
            "subjects": [{"kind": "ServiceAccount", "name": who, "namespace": ns}]})  # fmt: skip
    dev, auditor = token_for(kube, ns, "dev"), token_for(kube, ns, "auditor")
    path = f"/v1/namespaces/{ns}/secrets/stripe"
    eventually(lambda: api.call("PATCH", path, {"data": {"key": "v"}}, token=dev).status == 200,
               what="the editor's set")  # fmt: skip
    assert api.call("GET", path, token=dev).body["data"] == {"key": "v"}
    listing = api.call("GET", f"/v1/namespaces/{ns}/secrets", token=auditor)
    assert listing.status == 200 and listing.body["items"][0]["keys"] == {"key": "••••••••"}
    for method, body in (("GET", None), ("PATCH", {"data": {"key": "x"}}), ("DELETE", None)):
        assert api.call(method, path, body, token=auditor).status == 403
    # And the server's own identity reads no Secret at all.
    with pytest.raises(urllib.error.HTTPError) as refused:
        kube.request("GET", f"/api/v1/namespaces/{ns}/secrets", token=api_token)
    assert refused.value.code == 403
