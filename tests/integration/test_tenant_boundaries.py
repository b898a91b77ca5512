"""The operator keeps its own rules, policy or no policy: the attacks a tenant who may create
ManagedSecrets would try through the operator's rights, each refused, on the real apiserver.

The operator here runs as the cluster admin, for whom every admission check passes: what is
refused is refused by the operator itself (tests/integration/test_admission.py covers the
admission policy that checks the author's own rights).
"""

from __future__ import annotations

import base64
import time
import urllib.error
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.components.kube import KubeCluster
from tests.components.operator import OperatorProcess, child_env, eventually
from tests.conftest import MASTER_KEY
from tests.integration.test_operator import decoded, ready

TLS_KEY = "CANARY-tls-key-3e9a-must-survive"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def condition(op: OperatorProcess, name: str) -> dict[str, Any]:
    conditions = (op.msec(name).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


def reason_is(op: OperatorProcess, name: str, reason: str) -> dict[str, Any]:
    return dict(eventually(lambda: (c := condition(op, name)).get("reason") == reason and c,
                           what=f"{name} {reason}"))  # fmt: skip


def test_merge_onto_a_secret_that_did_not_consent_is_refused(op: OperatorProcess) -> None:
    op.kube.request("POST", f"/api/v1/namespaces/{op.namespace}/secrets", {
        "metadata": {"name": "tls"}, "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64("cert"), "tls.key": b64(TLS_KEY)},
    })  # fmt: skip
    op.cli("secret", "set", f"{op.namespace}/grab", "tls.key=attacker")
    op.apply("grab", {"data": [{"key": "tls.key"}],
                      "target": {"name": "tls", "creationPolicy": "Merge"}})  # fmt: skip
    refused = reason_is(op, "grab", "MergeNotAllowed")
    assert "strongroom.io/merge-from=grab" in refused["message"]
    assert decoded(op.secret("tls"))["tls.key"] == TLS_KEY
    op.delete_and_wait("grab")  # its finalizer must not strip the key either
    assert decoded(op.secret("tls")) == {"tls.crt": "cert", "tls.key": TLS_KEY}


def test_merge_with_consent_for_another_managedsecret_is_refused(op: OperatorProcess) -> None:
    op.kube.request("POST", f"/api/v1/namespaces/{op.namespace}/secrets", {
        "metadata": {"name": "cfg", "annotations": {"strongroom.io/merge-from": "friend"}},
        "data": {"theirs": b64("keep")},
    })  # fmt: skip
    op.cli("secret", "set", f"{op.namespace}/intruder", "theirs=overwritten")
    op.apply("intruder", {"data": [{"key": "theirs"}],
                          "target": {"name": "cfg", "creationPolicy": "Merge"}})  # fmt: skip
    reason_is(op, "intruder", "MergeNotAllowed")
    assert decoded(op.secret("cfg")) == {"theirs": "keep"}


def test_another_managedsecrets_secret_cannot_be_taken_over(op: OperatorProcess) -> None:
    op.cli("secret", "set", f"{op.namespace}/owner", "pw=the-owners")
    op.apply("owner", {"data": [{"key": "pw"}]})
    ready(op, "owner")
    op.cli("secret", "set", f"{op.namespace}/thief", "pw=the-thiefs")
    # Orphan + Delete: the thief's finalizer would delete the Secret it claims.
    op.apply("thief", {"data": [{"key": "pw"}], "target": {
        "name": "owner", "creationPolicy": "Orphan", "deletionPolicy": "Delete"}})  # fmt: skip
    reason_is(op, "thief", "TargetConflict")
    assert decoded(op.secret("owner")) == {"pw": "the-owners"}
    op.delete_and_wait("thief")
    assert decoded(op.secret("owner")) == {"pw": "the-owners"}


def _controller(op: OperatorProcess, name: str, **fields: Any) -> dict[str, Any]:
    """A controller ownerReference naming the ManagedSecret ``name``, as anyone can write it."""
    uid = op.msec(name)["metadata"]["uid"]
    return {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret", "name": name,
            "uid": uid, "controller": True, **fields}  # fmt: skip


def test_a_planted_owner_reference_gets_the_planter_nothing(op: OperatorProcess) -> None:
    """Whoever may create (or update) a Secret can make it name a ManagedSecret as its owner,
    and the operator then treats it as that ManagedSecret's Secret. That gives the planter
    nothing: the operator writes what it would have written into a Secret of that name anyway,
    replaces it whole (nothing planted survives to carry the values elsewhere, e.g. an
    annotation a replicator acts on), and reading it still takes `get`."""
    ns = op.namespace
    op.kube.grant(ns, "planter", [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {"apiGroups": ["strongroom.io"], "resources": ["managedsecrets"], "verbs": ["get"]}])  # fmt: skip
    token = op.kube.service_account_token(ns, "planter")
    op.apply("victim", {"data": [{"key": "pw"}]})
    reason_is(op, "victim", "MissingValues")  # no Secret yet: its name is free to take
    planted = {"metadata": {
        "name": "victim", "labels": {"backup": "planter"},
        "annotations": {"replicator.example.com/replicate-to": "planters-namespace"},
        "finalizers": ["example.com/keep"], "ownerReferences": [_controller(op, "victim")]},
        "data": {"pw": b64("planted"), "extra": b64("planted")}}  # fmt: skip
    eventually(lambda: op.kube.request("POST", f"/api/v1/namespaces/{ns}/secrets", planted,
                                       token=token), what="the planted Secret")  # fmt: skip
    op.cli("secret", "set", f"{ns}/victim", f"pw={TLS_KEY}")
    ready(op, "victim")
    secret = op.secret("victim")
    assert decoded(secret) == {"pw": TLS_KEY}
    meta = (secret or {})["metadata"]
    assert "backup" not in meta["labels"]
    assert not [k for k in meta["annotations"] if k.startswith("replicator.")]
    assert not meta.get("finalizers")
    assert [ref["uid"] for ref in meta["ownerReferences"]] == [op.msec("victim")["metadata"]["uid"]]
    with pytest.raises(urllib.error.HTTPError) as denied:
        op.kube.request("GET", f"/api/v1/namespaces/{ns}/secrets/victim", token=token)
    assert denied.value.code == 403


def test_a_reference_that_is_not_the_controller_or_on_a_token_claims_nothing(
    op: OperatorProcess,
) -> None:
    """Before: any ownerReference carrying the UID was ownership, and a token naming the
    ManagedSecret was deleted to be recreated as the spec's type."""
    ns, secrets = op.namespace, f"/api/v1/namespaces/{op.namespace}/secrets"
    for name in ("coowned", "builder-token"):
        op.apply(name, {"data": [{"key": "token"}]})
        reason_is(op, name, "MissingValues")  # no Secret written yet
    op.kube.request("POST", secrets, {"metadata": {
        "name": "coowned", "ownerReferences": [_controller(op, "coowned", controller=False)]},
        "data": {"token": b64("theirs")}})  # fmt: skip
    op.kube.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts",
                    {"metadata": {"name": "builder"}})  # fmt: skip
    op.kube.request("POST", secrets, {"metadata": {
        "name": "builder-token", "ownerReferences": [_controller(op, "builder-token")],
        "annotations": {"kubernetes.io/service-account.name": "builder"}},
        "type": "kubernetes.io/service-account-token", "data": {"token": b64("theirs")}})  # fmt: skip
    for name in ("coowned", "builder-token"):
        op.cli("secret", "set", f"{ns}/{name}", "token=from-the-store")
    reason_is(op, "coowned", "TargetConflict")
    refused = reason_is(op, "builder-token", "TargetConflict")
    assert "does not write tokens" in refused["message"]
    assert decoded(op.secret("coowned")) == {"token": "theirs"}
    token = op.secret("builder-token")
    assert token is not None and token["type"] == "kubernetes.io/service-account-token"
    assert decoded(token)["token"] == "theirs"


def test_a_service_account_token_is_neither_imported_nor_deleted(op: OperatorProcess) -> None:
    op.kube.request("POST", f"/api/v1/namespaces/{op.namespace}/serviceaccounts",
                    {"metadata": {"name": "builder"}})  # fmt: skip
    op.kube.request("POST", f"/api/v1/namespaces/{op.namespace}/secrets", {
        "metadata": {"name": "builder-token",
                     "annotations": {"kubernetes.io/service-account.name": "builder"}},
        "type": "kubernetes.io/service-account-token",
        "data": {"token": b64("CANARY-sa-token-not-for-tenants")},
    })  # fmt: skip
    op.apply("steal", {"data": [{"key": "t", "fromSecret": {
        "name": "builder-token", "key": "token", "deleteSource": True}}]})  # fmt: skip
    refused = reason_is(op, "steal", "SourceInvalid")
    assert "tokens are not imported" in refused["message"]
    assert op.secret("steal") is None
    assert op.secret("builder-token") is not None
    assert "not-for-tenants" not in op.cli("secret", "list", op.namespace)


def _deployment(op: OperatorProcess, name: str, secret: str | None) -> None:
    container: dict[str, Any] = {"name": "c", "image": "busybox"}
    if secret:
        container["env"] = [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": secret,
                                                                            "key": "pw"}}}]  # fmt: skip
    op.kube.request("POST", f"/apis/apps/v1/namespaces/{op.namespace}/deployments", {
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [container]}}},
    })  # fmt: skip


def _restarted(op: OperatorProcess, name: str) -> bool:
    deployment = op.kube.request("GET",
                                 f"/apis/apps/v1/namespaces/{op.namespace}/deployments/{name}")  # fmt: skip
    annotations = deployment["spec"]["template"]["metadata"].get("annotations") or {}
    return "strongroom.io/restartedAt" in annotations


def test_only_workloads_that_read_the_secret_are_restarted(op: OperatorProcess) -> None:
    _deployment(op, "consumer", "app")
    _deployment(op, "bystander", None)
    op.cli("secret", "set", f"{op.namespace}/app", "pw=one")
    op.apply("app", {"data": [{"key": "pw"}], "rolloutRestart": [
        {"kind": "Deployment", "name": "consumer"}, {"kind": "Deployment", "name": "bystander"}]})
    ready(op, "app", 1)
    op.cli("secret", "set", f"{op.namespace}/app", "pw=two")
    eventually(lambda: _restarted(op, "consumer"), what="the consumer restarted")
    assert not _restarted(op, "bystander")

    def skipped() -> list[dict[str, Any]]:
        return [e for e in op.events() if e["reason"] == "RestartSkipped"]

    events = eventually(skipped, what="a RestartSkipped Event")
    assert "bystander" in events[0]["message"] and "does not use Secret app" in events[0]["message"]


def test_the_hmac_key_cannot_be_projected(kube: KubeCluster, tmp_path: Path) -> None:
    """Before: the key lived at strongroom-system/sync-hmac-key, so a ManagedSecret of that name
    in that namespace had it written into a Secret."""
    namespace = "strongroom-system"
    kube.ensure_namespace(namespace)
    env = child_env(f"sqlite:///{tmp_path / 'store.db'}", MASTER_KEY.hex())
    op = OperatorProcess(kube, namespace, env, tmp_path / "operator.log")
    op.start()  # creates the HMAC key in its store at start
    try:
        eventually(lambda: "strongroom.internal" in op.cli("secret", "list"),
                   what="the HMAC key in the store")  # fmt: skip
        op.apply("sync-hmac-key", {"data": [{"key": "key"}]})
        missing = reason_is(op, "sync-hmac-key", "MissingValues")
        assert "key" in missing["message"]
        assert op.secret("sync-hmac-key") is None
    finally:
        op.stop()


def test_equal_values_in_two_namespaces_have_unrelated_hmacs(kube: KubeCluster,
                                                             tmp_path: Path) -> None:  # fmt: skip
    first, second = (f"hmac-{uuid.uuid4().hex[:6]}" for _ in range(2))
    for ns in (first, second):
        kube.ensure_namespace(ns)
    env = child_env(f"sqlite:///{tmp_path / 'store.db'}", MASTER_KEY.hex())
    op = OperatorProcess(kube, first, env, tmp_path / "operator.log", args=("--namespace", second))
    op.start()
    try:
        statuses = []
        for ns in (first, second):
            op.cli("secret", "set", f"{ns}/db", "password=the-same-guess")
            kube.request("POST", f"/apis/strongroom.io/v1alpha1/namespaces/{ns}/managedsecrets",
                         {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
                          "metadata": {"name": "db"}, "spec": {"data": [{"key": "password"}]}})  # fmt: skip

            def synced(ns: str = ns) -> dict[str, Any] | None:
                status = kube.request("GET", f"/apis/strongroom.io/v1alpha1/namespaces/{ns}/"
                                             "managedsecrets/db").get("status") or {}  # fmt: skip
                return status if status.get("dataHMAC") else None

            statuses.append(eventually(synced, what=f"{ns}/db synced"))
        assert statuses[0]["dataHMAC"] != statuses[1]["dataHMAC"]
        secrets = [kube.request("GET", f"/api/v1/namespaces/{ns}/secrets/db") for ns in (first, second)]
        assert secrets[0]["data"] == secrets[1]["data"]  # the same value, unrelated HMACs
    finally:
        op.stop()


def test_moving_the_target_lets_go_of_the_secret_written_before(op: OperatorProcess) -> None:
    """Before: the old Secret stayed, with the values and the labels of a ManagedSecret that no
    longer pointed at it."""
    op.cli("secret", "set", f"{op.namespace}/mover", "pw=moving")
    op.apply("mover", {"data": [{"key": "pw"}], "target": {
        "name": "first", "creationPolicy": "Orphan", "deletionPolicy": "Delete"}})  # fmt: skip
    ready(op, "mover")
    assert decoded(op.secret("first")) == {"pw": "moving"}
    op.kube.request("PATCH", op.msec_path("mover"), {"spec": {"target": {"name": "second"}}},
                    content_type="application/merge-patch+json")  # fmt: skip
    eventually(lambda: op.secret("second") is not None and op.secret("first") is None,
               what="the new target written and the old one deleted")  # fmt: skip
    assert op.msec("mover")["status"]["targetName"] == "second"


def test_merge_deletion_strips_only_added_keys_and_withdraws_consent(op: OperatorProcess) -> None:
    op.kube.request("POST", f"/api/v1/namespaces/{op.namespace}/secrets", {
        "metadata": {"name": "shared", "annotations": {"strongroom.io/merge-from": "extra"}},
        "data": {"a": b64("theirs"), "b": b64("keep")},
    })  # fmt: skip
    op.cli("secret", "set", f"{op.namespace}/extra", "a=ours", "ca=added")
    op.apply("extra", {"data": [{"key": "a"}, {"key": "ca"}],
                       "target": {"name": "shared", "creationPolicy": "Merge"}})  # fmt: skip
    ready(op, "extra")
    assert decoded(op.secret("shared")) == {"a": "ours", "b": "keep", "ca": "added"}
    op.delete_and_wait("extra")
    secret = op.secret("shared")
    # "a" was there before the first merge: overwritten with consent, never removed.
    assert decoded(secret) == {"a": "ours", "b": "keep"}
    assert "strongroom.io/merge-from" not in (secret or {})["metadata"].get("annotations", {})
    # A new ManagedSecret of the same name finds no consent: it was given to the one deleted.
    op.apply("extra", {"data": [{"key": "a"}],
                       "target": {"name": "shared", "creationPolicy": "Merge"}})  # fmt: skip
    reason_is(op, "extra", "MergeNotAllowed")


def test_a_secret_the_apiserver_refuses_is_not_retried_forever(op: OperatorProcess) -> None:
    op.cli("secret", "set", f"{op.namespace}/badlabel", "k=v")
    op.apply("badlabel", {"data": [{"key": "k"}], "target": {"labels": {"team": "not a value"}}})
    refused = reason_is(op, "badlabel", "SecretRefused")
    assert "422" in refused["message"]
    time.sleep(3)  # the value's own arrival may bring one more pass (the store watch)
    passes = op.log().count("badlabel: SecretRefused")
    time.sleep(8)  # retries with backoff (2 s, doubling) would have run again by now
    assert op.log().count("badlabel: SecretRefused") == passes
