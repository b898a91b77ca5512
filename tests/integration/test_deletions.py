"""Each deletion of a ManagedSecret is one audit record, and the true one, on the real apiserver.

Before: deleting a ManagedSecret with deletionPolicy Retain (or a Merge one) sometimes left two
records, "Secret … retained" and then "Secret … is removed by Kubernetes garbage collection
(ownerReference)", though the Secret was kept: the watch's DELETED event could be handled before
the finalizer's release was noted as done. Many deletions at once make that race likely.

A failure is made real with a ValidatingAdmissionPolicy (:func:`held`): it refuses the removal
of Strongroom's finalizer from a ManagedSecret labelled :data:`HOLD`, and any write to a Secret
labelled so (the apiserver refuses the operator's own request, as it would on a conflict or an
admission webhook's veto); removing the label lets the next attempt through.
"""

from __future__ import annotations

import base64
import json
import signal
import time
import urllib.error
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.components.kube import ADMISSION, KubeCluster
from tests.components.operator import OperatorProcess, eventually
from tests.integration.test_operator import ready

HOLD = "example.com/hold"
FINALIZER = "strongroom.io/finalizer"


def finalize_records(op: OperatorProcess) -> dict[str, list[str]]:
    """Each ManagedSecret's ``operator.finalize`` records, oldest first."""
    records: dict[str, list[str]] = {}
    for line in op.cli("audit", "tail", "-n", "2000", "--json").splitlines():
        row = json.loads(line)
        if row["action"] == "operator.finalize" and row["namespace"] == op.namespace:
            records.setdefault(row["name"], []).append(row["detail"])
    return records


def gone(op: OperatorProcess, name: str) -> bool:
    try:
        op.msec(name)
    except urllib.error.HTTPError as exc:
        return exc.code == 404
    return False


def settled(op: OperatorProcess, names: list[str]) -> dict[str, list[str]]:
    """The records once every name has one and a few more seconds passed (a second record,
    from a late watch event, would come within them)."""
    eventually(lambda: set(names) <= set(finalize_records(op)), timeout=60,
               what="a finalize record for every deletion")  # fmt: skip
    time.sleep(4)
    return finalize_records(op)


def test_many_deletions_at_once_each_leave_one_true_record(op: OperatorProcess) -> None:
    kube, secrets = op.kube, f"/api/v1/namespaces/{op.namespace}/secrets"
    expected: dict[str, str] = {}
    for i in range(12):
        expected[f"keep-{i}"] = f"Secret keep-{i} retained"
        op.apply(f"keep-{i}", {"data": [{"key": "g", "generate": {}}],
                               "target": {"deletionPolicy": "Retain"}})  # fmt: skip
    for i in range(4):
        expected[f"orphan-{i}"] = f"Secret orphan-{i} retained"
        op.apply(f"orphan-{i}", {"data": [{"key": "g", "generate": {}}], "target": {
            "creationPolicy": "Orphan", "deletionPolicy": "Retain"}})  # fmt: skip
    for i in range(4):
        kube.request("POST", secrets, {"metadata": {"name": f"shared-{i}", "annotations": {
            "strongroom.io/merge-from": f"merge-{i}"}}, "data": {"theirs": "eA=="}})  # fmt: skip
        expected[f"merge-{i}"] = f"Secret shared-{i} released"
        op.apply(f"merge-{i}", {"data": [{"key": "g", "generate": {}}], "target": {
            "name": f"shared-{i}", "creationPolicy": "Merge", "deletionPolicy": "Retain"}})  # fmt: skip
    expected["dropped"] = "Secret dropped deleted"
    op.apply("dropped", {"data": [{"key": "g", "generate": {}}], "target": {
        "creationPolicy": "Orphan", "deletionPolicy": "Delete"}})  # fmt: skip
    expected["collected"] = ("ManagedSecret deleted; Secret collected is removed by Kubernetes "
                             "garbage collection (ownerReference)")  # fmt: skip
    op.apply("collected", {"data": [{"key": "g", "generate": {}}]})  # Owner + Delete: no finalizer
    for name in expected:
        ready(op, name)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: kube.request("DELETE", op.msec_path(n)), expected))
    eventually(lambda: all(gone(op, n) for n in expected), timeout=60, what="all deleted")

    records = settled(op, list(expected))
    assert {name: records.get(name) for name in expected} == {
        name: [detail] for name, detail in expected.items()
    }
    for i in range(12):  # and what the records say is what happened
        kept = op.secret(f"keep-{i}")
        assert kept is not None and not kept["metadata"].get("ownerReferences")
    assert op.secret("dropped") is None
    eventually(lambda: op.secret("collected") is None, what="the garbage collector's deletion")


@pytest.fixture
def held(kube: KubeCluster) -> Iterator[None]:
    """A ValidatingAdmissionPolicy refusing to let Strongroom's finalizer go from a
    ManagedSecret labelled HOLD, and any update or deletion of a Secret labelled HOLD."""
    name = f"hold-{uuid.uuid4().hex[:6]}"
    kube.request("POST", f"{ADMISSION}/validatingadmissionpolicies", {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [
                {"apiGroups": ["strongroom.io"], "apiVersions": ["*"],
                 "resources": ["managedsecrets"], "operations": ["UPDATE"]},
                {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["secrets"],
                 "operations": ["UPDATE", "DELETE"]}]},
            "matchConditions": [{"name": "held", "expression":
                f"oldObject != null && has(oldObject.metadata.labels) && "
                f"'{HOLD}' in oldObject.metadata.labels"}],
            "validations": [{"expression": f"request.resource.resource == 'managedsecrets' && "
                                           f"has(object.metadata.finalizers) && "
                                           f"'{FINALIZER}' in object.metadata.finalizers",
                             "reason": "Forbidden", "message": "test: held"}],
        },
    })  # fmt: skip
    kube.request("POST", f"{ADMISSION}/validatingadmissionpolicybindings", {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    })  # fmt: skip
    probe_ns = f"probe-{uuid.uuid4().hex[:6]}"  # no operator watches it
    kube.ensure_namespace(probe_ns)
    path = f"/apis/strongroom.io/v1alpha1/namespaces/{probe_ns}/managedsecrets"
    kube.request("POST", path, {
        "apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
        "metadata": {"name": "probe", "labels": {HOLD: "true"}, "finalizers": [FINALIZER]},
        "spec": {"data": [{"key": "k"}]},
    })  # fmt: skip

    def refused() -> bool:
        try:
            kube.request("PATCH", f"{path}/probe?dryRun=All", {"metadata": {"finalizers": None}},
                         content_type="application/merge-patch+json")  # fmt: skip
        except urllib.error.HTTPError as exc:
            return "test: held" in exc.read().decode()
        return False

    eventually(refused, what="the hold policy in force")
    try:
        yield
    finally:
        kube.request("DELETE", f"{ADMISSION}/validatingadmissionpolicybindings/{name}")
        kube.request("DELETE", f"{ADMISSION}/validatingadmissionpolicies/{name}")
        eventually(lambda: kube.request("PATCH", f"{path}/probe", {"metadata": {
            "finalizers": None}}, content_type="application/merge-patch+json"),
            what="the probe released")  # fmt: skip


@pytest.mark.parametrize("restart", [pytest.param(False, id="retried-in-process"),
                                     pytest.param(True, id="retried-after-a-restart")])
def test_a_release_that_fails_is_retried_and_the_deletion_recorded_once(
    op: OperatorProcess, held: None, restart: bool
) -> None:
    op.cli("secret", "set", f"{op.namespace}/held", "k=v")
    body = {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": "held", "namespace": op.namespace, "labels": {HOLD: "true"}},
            "spec": {"data": [{"key": "k"}], "target": {"deletionPolicy": "Retain"}}}  # fmt: skip
    op.kube.request("POST", op.msec_path(), body)
    ready(op, "held")
    op.kube.request("DELETE", op.msec_path("held"))
    eventually(lambda: "held: cannot finalize: Kubernetes API answered 403" in op.log(),
               what="the release refused")  # fmt: skip
    assert finalize_records(op) == {"held": ["Secret held retained"]}  # recorded before
    secret = op.secret("held")
    assert secret is not None and not secret["metadata"].get("ownerReferences")
    if restart:  # the memory of what was done goes with the process
        op.stop(signal.SIGKILL)
        op.start()
        eventually(lambda: op.log().count("cannot finalize: Kubernetes API answered 403") >= 2,
                   what="the new process's release refused too")  # fmt: skip
    op.kube.request("PATCH", op.msec_path("held"), {"metadata": {"labels": {HOLD: None}}},
                    content_type="application/merge-patch+json")  # fmt: skip
    eventually(lambda: gone(op, "held"), timeout=60, what="the finalizer released")
    assert settled(op, ["held"]) == {"held": ["Secret held retained"]}
    assert base64.b64decode(op.secret("held")["data"]["k"]) == b"v"  # type: ignore[index]


def test_a_deletion_whose_finalizer_someone_removed_says_so(
    op: OperatorProcess, held: None
) -> None:
    """Someone removed Strongroom's finalizer while the operator could not apply the policy:
    the record says it was not applied, not that garbage collection removed the Secret."""
    op.cli("secret", "set", f"{op.namespace}/forced", "k=v")
    op.apply("forced", {"data": [{"key": "k"}], "target": {
        "creationPolicy": "Orphan", "deletionPolicy": "Delete", "labels": {HOLD: "true"}}})  # fmt: skip
    ready(op, "forced")
    op.kube.request("DELETE", op.msec_path("forced"))
    eventually(lambda: "forced: cannot finalize: Kubernetes API answered 403" in op.log(),
               what="the Secret's deletion refused")  # fmt: skip
    op.kube.request("PATCH", op.msec_path("forced"), {"metadata": {"finalizers": None}},
                    content_type="application/merge-patch+json")  # fmt: skip
    eventually(lambda: gone(op, "forced"), what="the ManagedSecret gone")
    assert settled(op, ["forced"]) == {"forced": [
        "ManagedSecret deleted without Strongroom's finalizer (removed by someone else); "
        "deletionPolicy not applied, Secret forced left as it was"]}  # fmt: skip
    assert op.secret("forced") is not None
