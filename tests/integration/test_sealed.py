"""Sealed values through the real apiserver and operator: a value sealed offline from the
ConfigMap the operator publishes reaches the Secret; re-applying writes nothing, a new blob a
new version; a blob moved to another name or key, or with a flipped byte, is SealedInvalid and
says nothing more; a rotation then a reseal clears SealedKeyOld; and neither the value nor the
sealing private key appears anywhere but encrypted in the store."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from strongroom import Strongroom
from strongroom.sealing.blob import Header, header
from strongroom.sealing.keys import SealingKeys
from tests.components.base import free_port
from tests.components.kube import KubeCluster
from tests.components.operator import STRONGROOM, OperatorProcess, child_env, eventually
from tests.conftest import MASTER_KEY, make_settings
from tests.integration.test_operator import decoded, ready

CANARY = "CANARY-sealed-5c1f-never-log-me"
CONFIGMAP = "strongroom-sealing-keys"


def start(kube: KubeCluster, tmp_path: Path, **extra: str) -> OperatorProcess:
    namespace = f"seal-{uuid.uuid4().hex[:8]}"
    kube.ensure_namespace(namespace)
    env = child_env(f"sqlite:///{tmp_path / 'store.db'}", MASTER_KEY.hex(),
                    STRONGROOM_SEALING_CONFIGMAP=f"{namespace}/{CONFIGMAP}",
                    STRONGROOM_SEALING_PUBLISH_SECONDS="1", **extra)  # fmt: skip
    op = OperatorProcess(kube, namespace, env, tmp_path / "operator.log",
                         args=("--metrics-port", str(metrics_port := free_port())))  # fmt: skip
    op.metrics_port = metrics_port  # type: ignore[attr-defined]
    op.start()
    return op


@pytest.fixture
def sop(kube: KubeCluster, tmp_path: Path) -> Iterator[OperatorProcess]:
    op = start(kube, tmp_path)
    try:
        yield op
    finally:
        op.stop()


def published(op: OperatorProcess) -> dict[str, str]:
    path = f"/api/v1/namespaces/{op.namespace}/configmaps/{CONFIGMAP}"
    return dict(eventually(lambda: op.kube.request("GET", path).get("data"), timeout=45,
                           what="the published sealing keys"))  # fmt: skip


def seal_offline(op: OperatorProcess, name: str, key: str, value: str,
                 namespace: str | None = None) -> str:  # fmt: skip
    """`strongroom seal value --configmap` as a GitOps user runs it: the kubeconfig and nothing
    of the store (no database URL, no master key)."""
    env = {k: v for k, v in op.env.items() if not k.startswith("STRONGROOM_")}
    env["KUBECONFIG"] = str(op.kube.kubeconfig)
    out = subprocess.run(
        [STRONGROOM, "seal", "value", f"{namespace or op.namespace}/{name}", key,
         "--configmap", f"{op.namespace}/{CONFIGMAP}"],
        env=env, input=value, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return str(yaml.safe_load(out.stdout)[0]["sealed"])


def conditions(op: OperatorProcess, name: str) -> dict[str, dict[str, Any]]:
    status = op.msec(name).get("status") or {}
    return {c["type"]: c for c in status.get("conditions") or []}


def reason_is(op: OperatorProcess, name: str, reason: str) -> dict[str, Any]:
    return dict(eventually(lambda: (c := conditions(op, name).get("Ready")) and
                           c["reason"] == reason and c, timeout=45, what=f"{name} {reason}"))  # fmt: skip


def replace_spec(op: OperatorProcess, name: str, spec: dict[str, Any]) -> None:
    op.kube.request("PATCH", op.msec_path(name), {"spec": spec},
                    content_type="application/merge-patch+json")  # fmt: skip


def test_a_value_sealed_offline_reaches_the_secret_once_per_blob(sop: OperatorProcess) -> None:
    keys = published(sop)
    assert keys["format"] == "strongroom.io/sealing-keys/v1"
    assert json.loads(keys[f"{keys['active']}.json"])["suite"] == "mlkem768-x25519"
    blob = seal_offline(sop, "app", "password", CANARY)
    spec = {"data": [{"key": "password", "sealed": blob}, {"key": "user", "generate": {}}]}
    sop.apply("app", spec)
    status = ready(sop, "app", 1)
    assert decoded(sop.secret("app"))["password"] == CANARY
    assert status["sealed"]["password"]["keyId"] == keys["active"]
    # Applied again (a new generation, the same blob): no new version.
    replace_spec(sop, "app", {**spec, "refreshInterval": "30s"})
    eventually(lambda: op_status(sop, "app").get("observedGeneration") == 2, what="gen 2")
    assert op_status(sop, "app")["version"] == 1
    # A new blob: a new version, in the Secret at once.
    replace_spec(sop, "app", {"data": [{"key": "password",
                                        "sealed": seal_offline(sop, "app", "password", "v2")},
                                       {"key": "user", "generate": {}}]})  # fmt: skip
    ready(sop, "app", 2)
    eventually(lambda: decoded(sop.secret("app"))["password"] == "v2", what="v2 in the Secret")
    # Resealing the same value under the same key (a new blob, the same value): no version.
    replace_spec(sop, "app", {"data": [{"key": "password",
                                        "sealed": seal_offline(sop, "app", "password", "v2")},
                                       {"key": "user", "generate": {}}]})  # fmt: skip
    eventually(lambda: op_status(sop, "app").get("observedGeneration") == 4, what="gen 4")
    assert op_status(sop, "app")["version"] == 2
    assert "Unsealed" in sop.event_reasons()
    with Strongroom.open(make_settings(sop.env["STRONGROOM_DATABASE_URL"])) as room:
        actions = [e.action for e in room.audit_tail(200) if e.name == "app"]
        uses = SealingKeys(room, actor="t").usage()[keys["active"]]
    assert actions.count("operator.unseal") == 3
    assert [(u.namespace, u.name, u.key) for u in uses] == [(sop.namespace, "app", "password")]


def op_status(op: OperatorProcess, name: str) -> dict[str, Any]:
    return dict(op.msec(name).get("status") or {})


def flipped(blob: str) -> str:
    body = blob[5:]
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return "srs1." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


@pytest.mark.parametrize(("target", "key", "mutate"), [
    pytest.param("other", "password", False, id="moved-to-another-name"),
    pytest.param("app", "token", False, id="moved-to-another-key"),
    pytest.param("app", "password", True, id="flipped-byte"),
])  # fmt: skip
def test_a_blob_that_does_not_belong_here_is_sealed_invalid_without_detail(
    sop: OperatorProcess, target: str, key: str, mutate: bool
) -> None:
    published(sop)
    blob = seal_offline(sop, "app", "password", CANARY)
    sop.apply(target, {"data": [{"key": key, "sealed": flipped(blob) if mutate else blob}]})
    cond = reason_is(sop, target, "SealedInvalid")
    assert cond["message"] == (f"data[{key}].sealed does not open for this ManagedSecret; seal "
                               "the value again with `strongroom seal value`")  # fmt: skip
    assert sop.secret(target) is None
    assert CANARY not in json.dumps(sop.msec(target)) + sop.log()


def test_a_blob_moved_to_another_namespace_does_not_open(sop: OperatorProcess) -> None:
    published(sop)
    blob = seal_offline(sop, "app", "password", CANARY, namespace="elsewhere")
    sop.apply("app", {"data": [{"key": "password", "sealed": blob}]})
    reason_is(sop, "app", "SealedInvalid")


def test_the_crd_refuses_a_sealed_key_with_another_source(sop: OperatorProcess) -> None:
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as refused:
        sop.apply("two", {"data": [{"key": "k", "sealed": "srs1.AAAA", "generate": {}}]})
    message = refused.value.read().decode()
    assert "at most one source (generate, fromSecret" in message and "sealed" in message
    with pytest.raises(urllib.error.HTTPError):
        sop.apply("bad", {"data": [{"key": "k", "sealed": "not a blob"}]})


def test_rotation_then_reseal_clears_sealed_key_old(kube: KubeCluster, tmp_path: Path) -> None:
    op = start(kube, tmp_path, STRONGROOM_SEALING_KEY_MAX_AGE="40s")
    try:
        first = published(op)["active"]
        manifest = tmp_path / "app.yaml"
        manifest.write_text(yaml.safe_dump({
            "apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": "app", "namespace": op.namespace},
            "spec": {"refreshInterval": "10s", "data": [{"key": "password"}]}}))  # fmt: skip
        env = {**op.env, "KUBECONFIG": str(op.kube.kubeconfig)}
        subprocess.run([STRONGROOM, "seal", "value", f"{op.namespace}/app", "password",
                        "--configmap", f"{op.namespace}/{CONFIGMAP}", "--in-place", str(manifest)],
                       env=env, input=CANARY, text=True, check=True, timeout=60)  # fmt: skip
        doc = yaml.safe_load(manifest.read_text())
        op.apply("app", doc["spec"])
        ready(op, "app", 1)
        # The operator starts a new key once the first is 40 s old; the blob's key is then old.
        old = eventually(lambda: (c := conditions(op, "app").get("SealedKeyOld")) and
                         c["status"] == "True" and c, timeout=90, what="SealedKeyOld=True")  # fmt: skip
        assert old["reason"] == "SealedKeyOld" and "reseal" in old["message"]
        assert "strongroom_sealed_values_old_key 1.0" in scrape(op)
        newest = eventually(lambda: (a := published(op)["active"]) != first and a, what="rotated")
        subprocess.run([STRONGROOM, "seal", "reseal", str(manifest)], env=op.env, check=True,
                       timeout=60)  # fmt: skip
        blob = yaml.safe_load(manifest.read_text())["spec"]["data"][0]["sealed"]
        assert header(blob).key_id == newest
        replace_spec(op, "app", yaml.safe_load(manifest.read_text())["spec"])
        cleared = eventually(lambda: (c := conditions(op, "app").get("SealedKeyOld")) and
                             c["status"] == "False" and c, timeout=45, what="SealedKeyOld=False")  # fmt: skip
        assert cleared["reason"] == "SealedKeyCurrent"
        assert "strongroom_sealed_values_old_key 0.0" in scrape(op)
        assert op_status(op, "app")["version"] == 1  # the same value: no new version
        assert decoded(op.secret("app"))["password"] == CANARY
    finally:
        op.stop()


def scrape(op: OperatorProcess) -> str:
    port = op.metrics_port  # type: ignore[attr-defined]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_neither_the_value_nor_the_private_key_appears_outside_the_store(
    sop: OperatorProcess, tmp_path: Path
) -> None:
    keys = published(sop)
    sop.apply("app", {"data": [{"key": "password",
                                "sealed": seal_offline(sop, "app", "password", CANARY)}]})
    ready(sop, "app", 1)
    sop.apply("bad", {"data": [{"key": "password", "sealed": flipped(
        seal_offline(sop, "bad", "password", CANARY))}]})  # fmt: skip
    reason_is(sop, "bad", "SealedInvalid")
    with Strongroom.open(make_settings(sop.env["STRONGROOM_DATABASE_URL"])) as room:
        found = SealingKeys(room, actor="t").private(Header(header(
            seal_offline(sop, "x", "y", "z")).suite, keys["active"]))  # fmt: skip
    assert found is not None
    private = found[1]
    canaries = [CANARY.encode(), private[:24], base64.b64encode(private)[:32],
                private.hex().encode()[:48]]  # fmt: skip
    sop.stop()
    cm = sop.kube.request("GET", f"/api/v1/namespaces/{sop.namespace}/configmaps/{CONFIGMAP}")
    exposed = {
        "operator log": sop.log().encode(),
        "events": json.dumps(sop.events()).encode(),
        "status": json.dumps([op_status(sop, "app"), op_status(sop, "bad")]).encode(),
        "configmap": json.dumps(cm).encode(),
        "database file": Path(sop.env["STRONGROOM_DATABASE_URL"].removeprefix("sqlite:///"))
        .read_bytes(),
    }
    for where, text in exposed.items():
        for canary in canaries:
            assert canary not in text, where


def test_a_value_sealed_under_a_pruned_key_is_reported(sop: OperatorProcess) -> None:
    """After a forced prune, `seal keys` names the sealed values whose key is gone, and a blob
    of that key no longer opens (SealedInvalid); values already opened stay in the store."""
    old = published(sop)["active"]
    sop.apply("app", {"data": [{"key": "password",
                                "sealed": seal_offline(sop, "app", "password", CANARY)}]})
    ready(sop, "app", 1)
    late = seal_offline(sop, "late", "password", "sealed-before-the-prune")
    sop.cli("seal", "rotate")
    refused = subprocess.run([STRONGROOM, "seal", "prune", old], env=sop.env, capture_output=True,
                             text=True, timeout=60, check=False)  # fmt: skip
    assert refused.returncode == 1 and f"{sop.namespace}/app[password]" in refused.stderr
    sop.cli("seal", "prune", old, "--force")
    keys = json.loads(sop.cli("seal", "keys", "--json"))
    assert keys["missingKeys"] == {old: [f"{sop.namespace}/app[password]"]}
    sop.apply("late", {"data": [{"key": "password", "sealed": late}]})
    reason_is(sop, "late", "SealedInvalid")
    assert decoded(sop.secret("app"))["password"] == CANARY  # opened before: kept
