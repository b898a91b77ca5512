"""The operator running against the real kube-apiserver + etcd, on SQLite and the local KEK."""

from __future__ import annotations

import base64
import json
import signal
import time
import urllib.error
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.components.kube import KubeCluster
from tests.components.operator import OperatorProcess, eventually

REPO = Path(__file__).resolve().parents[2]
CANARY = "CANARY-op-5b1d-never-log-me"


def decoded(secret: dict[str, Any] | None) -> dict[str, str]:
    assert secret is not None
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def ready(op: OperatorProcess, name: str, version: int | None = None) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        status = op.msec(name).get("status") or {}
        conds = {c["type"]: c for c in status.get("conditions") or []}
        ok = conds.get("Ready", {}).get("status") == "True"
        if ok and (version is None or status.get("version") == version):
            return status
        return None

    return dict(eventually(check, timeout=45, what=f"{name} Ready (version {version})"))


def test_generated_and_out_of_band_values_reach_the_secret(op: OperatorProcess) -> None:
    op.apply("db", {"data": [{"key": "password", "generate": {"length": 24, "charset": "hex"}},
                             {"key": "username"}]})  # fmt: skip
    status = eventually(lambda: (op.msec("db").get("status") or {}).get("conditions"),
                        what="a status")  # fmt: skip
    assert status[0]["reason"] == "MissingValues"
    assert "username" in status[0]["message"]
    assert op.secret("db") is None  # nothing is written before every key has a value
    op.cli("secret", "set", f"{op.namespace}/db", f"username={CANARY}")
    status = ready(op, "db")
    data = decoded(op.secret("db"))
    assert data["username"] == CANARY
    assert len(data["password"]) == 24 and set(data["password"]) <= set("0123456789abcdef")
    assert data["password"] == op.cli("secret", "get", f"{op.namespace}/db", "password")
    assert status["targetName"] == "db" and status["version"] == 2
    assert status["observedGeneration"] == 1
    printed = op.kube.kubectl("get", "msec", "-n", op.namespace).stdout
    assert "True" in printed and "Synced" in printed


def test_a_cli_change_reaches_the_secret_within_seconds(op: OperatorProcess) -> None:
    op.cli("secret", "set", f"{op.namespace}/api", "token=one")
    op.apply("api", {"data": [{"key": "token"}], "refreshInterval": "1h"})
    ready(op, "api", 1)
    op.cli("secret", "set", f"{op.namespace}/api", "token=two")
    eventually(lambda: decoded(op.secret("api")).get("token") == "two", timeout=15,
               what="the new value in the Secret")  # fmt: skip


def test_an_edited_or_deleted_secret_is_repaired(op: OperatorProcess) -> None:
    op.cli("secret", "set", f"{op.namespace}/app", "k=right")
    op.apply("app", {"data": [{"key": "k"}], "refreshInterval": "1h"})
    ready(op, "app")
    path = f"/api/v1/namespaces/{op.namespace}/secrets/app"
    op.kube.request("PATCH", path, {"data": {"k": base64.b64encode(b"wrong").decode()}},
                    content_type="application/merge-patch+json")  # fmt: skip
    eventually(lambda: decoded(op.secret("app")).get("k") == "right", timeout=15, what="repair")
    op.kube.request("DELETE", path)
    eventually(lambda: op.secret("app") is not None and decoded(op.secret("app"))["k"] == "right",
               timeout=15, what="re-creation")  # fmt: skip


def test_a_spec_change_is_applied_and_a_metadata_edit_writes_nothing(op: OperatorProcess) -> None:
    op.apply("cfg", {"data": [{"key": "pw", "generate": {"length": 16}}], "refreshInterval": "1h"})
    first = ready(op, "cfg")
    annotations = op.msec("cfg")["metadata"].get("annotations") or {}
    assert not [k for k in annotations if k.startswith("strongroom.io/")]  # no kopf bookkeeping
    password = decoded(op.secret("cfg"))["pw"]
    op.kube.request(
        "PATCH", op.msec_path("cfg"),
        {"spec": {"data": [{"key": "pw", "generate": {"length": 16}},
                           {"key": "extra", "generate": {"length": 8}}],
                  "target": {"labels": {"team": "web"}}}},
        content_type="application/merge-patch+json",
    )  # fmt: skip
    status = ready(op, "cfg", first["version"] + 1)
    assert status["observedGeneration"] == 2
    secret = op.secret("cfg")
    assert secret is not None and secret["metadata"]["labels"]["team"] == "web"
    data = decoded(secret)
    assert data["pw"] == password and len(data["extra"]) == 8  # kept, and added
    secret_rv = secret["metadata"]["resourceVersion"]
    op.kube.request("PATCH", op.msec_path("cfg"), {"metadata": {"labels": {"note": "x"}}},
                    content_type="application/merge-patch+json")  # fmt: skip
    msec_rv = op.msec("cfg")["metadata"]["resourceVersion"]
    time.sleep(3)
    assert op.secret("cfg")["metadata"]["resourceVersion"] == secret_rv  # type: ignore[index]
    assert op.msec("cfg")["metadata"]["resourceVersion"] == msec_rv


def test_labels_annotations_and_ownership_are_repaired_like_data(op: OperatorProcess) -> None:
    """Before: an edited label stayed wrong until the next data repair (the Secret watch
    compared only the data), and a Secret whose managed-by label was removed stayed so."""
    op.cli("secret", "set", f"{op.namespace}/meta", "k=v")
    op.apply("meta", {"data": [{"key": "k"}], "refreshInterval": "1h",
                      "target": {"labels": {"app": "web"}, "annotations": {"team": "payments"}}})  # fmt: skip
    ready(op, "meta")
    path = f"/api/v1/namespaces/{op.namespace}/secrets/meta"

    def edit(metadata: dict[str, Any]) -> None:
        op.kube.request("PATCH", path, {"metadata": metadata},
                        content_type="application/merge-patch+json")  # fmt: skip

    def meta() -> dict[str, Any]:
        return dict(op.secret("meta")["metadata"])  # type: ignore[index]

    edit({"labels": {"app": "evil"}})
    eventually(lambda: meta()["labels"]["app"] == "web", timeout=15, what="the label repaired")
    edit({"annotations": {"team": None}})
    eventually(lambda: meta()["annotations"].get("team") == "payments", timeout=15,
               what="the annotation put back")  # fmt: skip
    # Strongroom's own marks gone but the controller ownerReference: still this ManagedSecret's.
    edit({"labels": {"strongroom.io/managed-by": None, "strongroom.io/managed-secret": None},
          "annotations": {"strongroom.io/owner-uid": None}})
    eventually(lambda: meta()["labels"].get("strongroom.io/managed-by") == "strongroom"
               and meta()["labels"].get("strongroom.io/managed-secret") == "meta"
               and meta()["annotations"].get("strongroom.io/owner-uid") == meta()[
                   "ownerReferences"][0]["uid"], timeout=15, what="Strongroom's marks put back")  # fmt: skip
    # What someone else adds is theirs: nothing is written for it.
    edit({"labels": {"backup": "nightly"}})
    written = meta()["resourceVersion"]
    time.sleep(3)
    assert meta()["resourceVersion"] == written and meta()["labels"]["backup"] == "nightly"
    assert decoded(op.secret("meta")) == {"k": "v"}
    assert ready(op, "meta")["conditions"][0]["reason"] == "Synced"
    op.stop()  # posts the Events still queued
    assert "TargetConflict" not in op.event_reasons()


def test_an_idle_refresh_writes_nothing(op: OperatorProcess) -> None:
    op.cli("secret", "set", f"{op.namespace}/quiet", "k=v")
    op.apply("quiet", {"data": [{"key": "k"}], "refreshInterval": "10s",  # the floor
                       "target": {"labels": {"app": "quiet"}, "annotations": {"team": "t"}}})  # fmt: skip
    ready(op, "quiet")

    time.sleep(2)  # let the first sync settle
    secret_rv = op.secret("quiet")["metadata"]["resourceVersion"]  # type: ignore[index]
    msec_rv = op.msec("quiet")["metadata"]["resourceVersion"]
    time.sleep(12)  # a refresh interval (jittered by up to 10 %) has passed
    assert op.secret("quiet")["metadata"]["resourceVersion"] == secret_rv  # type: ignore[index]
    assert op.msec("quiet")["metadata"]["resourceVersion"] == msec_rv


@pytest.mark.parametrize(("policy", "kept"), [("Delete", False), ("Retain", True)])
def test_deleting_the_resource_follows_deletion_policy(
    op: OperatorProcess, policy: str, kept: bool
) -> None:
    op.cli("secret", "set", f"{op.namespace}/gone", "k=v")
    op.apply("gone", {"data": [{"key": "k"}], "target": {"deletionPolicy": policy}})
    ready(op, "gone")
    # Owner + Delete is the garbage collector's job (ownerReference); Retain needs the
    # operator at deletion time, so only then does a finalizer hold the object.
    finalizers = op.msec("gone")["metadata"].get("finalizers") or []
    assert ("strongroom.io/finalizer" in finalizers) is kept
    op.kube.request("DELETE", op.msec_path("gone"))

    def resource_gone() -> bool:
        try:
            op.msec("gone")
        except urllib.error.HTTPError as exc:
            return exc.code == 404
        return False

    eventually(resource_gone, what="the ManagedSecret to be finalized")
    if kept:
        secret = op.secret("gone")
        assert secret is not None
        assert not secret["metadata"].get("ownerReferences")
    else:
        eventually(lambda: op.secret("gone") is None, what="the Secret to be garbage-collected")
    assert op.cli("secret", "get", f"{op.namespace}/gone", "k") == "v"  # values stay in the store

    def finalize_audited() -> bool:
        rows = [
            json.loads(line) for line in op.cli("audit", "tail", "-n", "50", "--json").splitlines()
        ]
        return any(r["action"] == "operator.finalize" and r["name"] == "gone" for r in rows)

    eventually(finalize_audited, what="the deletion in the audit log")


def test_import_from_an_existing_secret_once(op: OperatorProcess) -> None:
    op.kube.request("POST", f"/api/v1/namespaces/{op.namespace}/secrets", {
        "metadata": {"name": "legacy"}, "data": {"api-key": base64.b64encode(CANARY.encode()).decode()},
    })  # fmt: skip
    op.apply("imported", {"data": [
        {"key": "stripe", "fromSecret": {"name": "legacy", "key": "api-key", "deleteSource": True}},
    ]})  # fmt: skip
    ready(op, "imported")
    assert decoded(op.secret("imported")) == {"stripe": CANARY}
    eventually(lambda: op.secret("legacy") is None, what="the source to be deleted")
    # Events are posted in the background, once the operator is idle.
    eventually(lambda: {"Imported", "Synced"} <= op.event_reasons(), what="Imported, Synced events")


def test_merge_adds_keys_to_an_existing_secret_and_removes_only_them(op: OperatorProcess) -> None:
    op.kube.request("POST", f"/api/v1/namespaces/{op.namespace}/secrets", {
        "metadata": {"name": "shared", "annotations": {"strongroom.io/merge-from": "merged"}},
        "data": {"theirs": base64.b64encode(b"keep").decode()},
    })  # fmt: skip
    op.cli("secret", "set", f"{op.namespace}/merged", "ours=added")
    op.apply("merged", {"data": [{"key": "ours"}],
                        "target": {"name": "shared", "creationPolicy": "Merge"}})  # fmt: skip
    ready(op, "merged")
    assert decoded(op.secret("shared")) == {"theirs": "keep", "ours": "added"}
    op.kube.request("DELETE", op.msec_path("merged"))
    eventually(
        lambda: decoded(op.secret("shared")) == {"theirs": "keep"}, what="merged keys removed"
    )


def test_a_foreign_secret_is_not_overwritten(op: OperatorProcess) -> None:
    op.kube.request("POST", f"/api/v1/namespaces/{op.namespace}/secrets", {
        "metadata": {"name": "foreign"}, "data": {"x": base64.b64encode(b"theirs").decode()},
    })  # fmt: skip
    op.cli("secret", "set", f"{op.namespace}/foreign", "x=ours")
    op.apply("foreign", {"data": [{"key": "x"}]})
    eventually(lambda: any(c.get("reason") == "TargetConflict" for c in
                           (op.msec("foreign").get("status") or {}).get("conditions", [])),
               what="TargetConflict")  # fmt: skip
    assert decoded(op.secret("foreign")) == {"x": "theirs"}


def test_rotation_and_rollout_restart(op: OperatorProcess) -> None:
    """A value generated longer than rotationPeriod ago is rotated, and the workload that reads
    the Secret restarted. rotationPeriod is at least 1h, so the test makes the last generation
    two hours old in the status (where the operator keeps it), as an hour's wait would."""
    op.kube.request("POST", f"/apis/apps/v1/namespaces/{op.namespace}/deployments", {
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox",
                                                       "envFrom": [{"secretRef": {
                                                           "name": "rotating"}}]}]}}},
    })  # fmt: skip
    op.apply("rotating", {
        "data": [{"key": "pw", "generate": {"length": 16, "rotationPeriod": "1h"}}],
        "rotation": {"keepPrevious": "1s"},
        "rolloutRestart": [{"kind": "Deployment", "name": "web"}],
    })  # fmt: skip
    ready(op, "rotating", 1)
    first = decoded(op.secret("rotating"))["pw"]
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    op.kube.request("PATCH", op.msec_path("rotating") + "/status",
                    {"status": {"generated": {"pw": two_hours_ago}}},
                    content_type="application/merge-patch+json")  # fmt: skip
    op.kube.request("PATCH", op.msec_path("rotating"),
                    {"spec": {"target": {"labels": {"nudge": "1"}}}},
                    content_type="application/merge-patch+json")  # fmt: skip
    status = ready(op, "rotating", 2)
    assert decoded(op.secret("rotating"))["pw"] != first
    assert status["generated"]["pw"] > two_hours_ago
    deployment = op.kube.request("GET", f"/apis/apps/v1/namespaces/{op.namespace}/deployments/web")
    assert "strongroom.io/restartedAt" in deployment["spec"]["template"]["metadata"]["annotations"]
    eventually(lambda: {"Rotated", "RolloutRestarted"} <= op.event_reasons(),
               what="Rotated, RolloutRestarted events")  # fmt: skip

    def previous_destroyed() -> bool:
        history = op.cli("secret", "history", f"{op.namespace}/rotating")
        return "destroyed" in history

    # keepPrevious 1s, but nothing is rescheduled sooner than 10 s after a reconcile.
    eventually(previous_destroyed, timeout=40, what="keepPrevious to destroy version 1")


def test_a_restart_generates_nothing_new(op: OperatorProcess) -> None:
    op.apply("stable", {"data": [{"key": "pw", "generate": {}}]})
    ready(op, "stable", 1)
    before = decoded(op.secret("stable"))["pw"]
    op.stop(signal.SIGKILL)
    op.start()

    time.sleep(5)
    assert decoded(op.secret("stable"))["pw"] == before
    assert op.msec("stable")["status"]["version"] == 1
    assert op.cli("secret", "get", f"{op.namespace}/stable", "pw") == before


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        pytest.param(
            {"data": [{"key": "k", "generate": {}, "fromSecret": {"name": "s", "key": "k"}}]},
            "at most one source",
            id="two-sources",
        ),
        pytest.param({"data": [{"key": "bad key"}]}, "spec.data[0].key", id="bad-key"),
        pytest.param({"refreshInterval": "soon"}, "spec.refreshInterval", id="bad-duration"),
        pytest.param({"refreshPolicy": "Sometimes"}, "spec.refreshPolicy", id="bad-enum"),
        pytest.param({"target": {"creationPolicy": "Steal"}}, "creationPolicy", id="bad-policy"),
        pytest.param({"data": [{"key": "k", "generate": {"length": 2}}]}, "length", id="too-short"),
        pytest.param({"target": {"name": "Not_A_Name"}}, "spec.target.name", id="bad-target"),
    ],
)
def test_the_apiserver_rejects_invalid_specs(
    kube: KubeCluster, spec: dict[str, Any], needle: str
) -> None:
    body = {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": "invalid"}, "spec": spec}  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as info:
        kube.request("POST", "/apis/strongroom.io/v1alpha1/namespaces/default/managedsecrets", body)
    assert info.value.code == 422
    assert needle in json.loads(info.value.read())["message"]


def test_examples_apply_and_sync(op: OperatorProcess) -> None:
    for path in sorted((REPO / "examples").glob("managedsecret-*.yaml")):
        doc = yaml.safe_load(path.read_text())
        doc["metadata"]["namespace"] = op.namespace
        op.kube.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    op.cli("secret", "set", f"{op.namespace}/app-db", "username=app")
    op.kube.request("POST", f"/api/v1/namespaces/{op.namespace}/secrets", {
        "metadata": {"name": "legacy-stripe"}, "data": {"api-key": base64.b64encode(b"sk").decode()},
    })  # fmt: skip
    ready(op, "app-db")
    ready(op, "payments-api")


def test_no_value_in_logs_events_or_status(op: OperatorProcess) -> None:
    op.cli("secret", "set", f"{op.namespace}/canary", f"oob={CANARY}")
    op.apply("canary", {"data": [{"key": "oob"}, {"key": "gen", "generate": {"length": 40}}],
                        "refreshInterval": "10s"})  # fmt: skip
    ready(op, "canary")
    generated = op.cli("secret", "get", f"{op.namespace}/canary", "gen")
    path = f"/api/v1/namespaces/{op.namespace}/secrets/canary"
    op.kube.request("PATCH", path, {"data": {"oob": base64.b64encode(b"tampered").decode()}},
                    content_type="application/merge-patch+json")  # fmt: skip
    eventually(lambda: decoded(op.secret("canary"))["oob"] == CANARY, what="repair")
    op.stop()  # posts the Events still queued
    events = op.events()
    assert "Synced" in {event["reason"] for event in events}
    haystack = op.log() + json.dumps(events) + json.dumps(op.msec("canary"))
    for needle in (CANARY, generated, base64.b64encode(CANARY.encode()).decode(),
                   base64.b64encode(generated.encode()).decode()):  # fmt: skip
        assert needle not in haystack


def test_any_valid_key_name_is_projected_as_data(op: OperatorProcess) -> None:
    op.cli("secret", "set", f"{op.namespace}/odd", "__version__=v", "plain=p")
    op.apply("odd", {"data": [{"key": "__version__"}]})
    ready(op, "odd", 1)
    assert decoded(op.secret("odd")) == {"__version__": "v", "plain": "p"}
