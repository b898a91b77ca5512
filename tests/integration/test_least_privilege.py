"""Least privilege, measured: the chart grants the operator exactly what it uses.

The chart's RBAC is applied as rendered, the operator runs as the chart's ServiceAccount (with
the chart's fence in place, as by default) through every path it has, and the apiserver's audit
log (tests/components/kube.py: every ServiceAccount request, at the Metadata level) says which
(API group, resource, verb) it sent. The test fails when the chart grants one the operator
never sent, or the operator sent one the chart does not grant (a 403 included), or the fence
refused one of the operator's own writes.

Paths exercised: creationPolicy Owner, Orphan (deletionPolicy Retain and Delete) and Merge (into
a Secret that consents with ``strongroom.io/merge-from``); fromSecret with deleteSource; a value
set with the CLI (reaching the Secret through the store watch) that restarts a Deployment, a
StatefulSet and a DaemonSet reading the Secret; a synced Secret edited, deleted and unlabelled
(repair);
the finalizer paths of the deletions; Events; with several replicas, the Lease; and the audit
checkpoint: created, updated, read at start, and a mismatch Event on it when an operator starts
on an emptied database.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.components.chart import (
    deployment_env,
    install_fence,
    install_identity,
    of_kind,
    render,
)
from tests.components.kube import KubeCluster
from tests.components.operator import OperatorProcess, child_env, eventually
from tests.conftest import MASTER_KEY

Triple = tuple[str, str, str]  # (API group, resource[/subresource], verb); "" is the core group

# Granted, yet never a request of its own, so no audit event can show it used. Each entry says
# why it is granted anyway; every entry is a right nothing here measures, so keep the list short.
NEVER_REQUESTED: dict[Triple, str] = {
    ("strongroom.io", "managedsecrets/finalizers", "update"): (
        "an authorization check, not a request: the OwnerReferencesPermissionEnforcement "
        "admission plugin asks for it when the operator creates a Secret whose ownerReference "
        "sets blockOwnerDeletion (creationPolicy Owner). The test apiserver does not enable "
        "that plugin; clusters that do (OpenShift, hardened control planes) refuse the Secret "
        "without it"
    ),
}

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")
MANAGED_BY = "strongroom.io/managed-by"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def decoded(secret: dict[str, Any] | None) -> dict[str, str]:
    assert secret is not None
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


# -- what the chart grants, what the audit log shows ---------------------------------------


def granted(docs: Iterable[dict[str, Any]]) -> set[Triple]:
    """Every (group, resource, verb) of the rendered Roles and ClusterRoles (resourceNames, which
    narrow a grant to some objects, are not told apart: the triple is what is compared)."""
    out: set[Triple] = set()
    for doc in docs:
        if doc["kind"] not in {"Role", "ClusterRole"}:
            continue
        for rule in doc.get("rules") or []:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out.update((group, resource, verb) for verb in rule["verbs"])
    return out


def triple(event: dict[str, Any]) -> Triple | None:
    ref = event.get("objectRef")
    if not ref:
        return None  # a non-resource URL (kopf's API discovery): not the chart's to grant
    resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return (ref.get("apiGroup", ""), resource, event["verb"])


def dry_run(event: dict[str, Any]) -> bool:
    return "dryRun=All" in event.get("requestURI", "")  # the test's own fence probe


def code(event: dict[str, Any]) -> int:
    return int((event.get("responseStatus") or {}).get("code") or 0)


def rbac_denied(event: dict[str, Any]) -> bool:
    return (event.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid"


def show(event: dict[str, Any]) -> str:
    return f"{event['verb']} {event.get('requestURI')} -> {code(event)}"


def operator_requests(kube: KubeCluster, username: str, watches: set[Triple],
                      timeout: float = 30.0) -> list[dict[str, Any]]:  # fmt: skip
    """The identity's audited requests, once its long-running watches have been logged too
    (a watch is logged when it ends, i.e. shortly after the operator has stopped)."""
    deadline = time.monotonic() + timeout
    while True:
        events = [e for e in kube.audit_events(username) if not dry_run(e)]
        seen = {t for e in events if (t := triple(e)) is not None}
        if watches <= seen or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


# -- the scenario ---------------------------------------------------------------------------


def workload(kind: str, name: str, pod: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    labels = {"app": name}
    spec: dict[str, Any] = {"selector": {"matchLabels": labels},
                            "template": {"metadata": {"labels": labels}, "spec": pod}}  # fmt: skip
    if kind == "StatefulSet":
        spec["serviceName"] = name
    plural = {"Deployment": "deployments", "StatefulSet": "statefulsets",
              "DaemonSet": "daemonsets"}[kind]  # fmt: skip
    return plural, {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def create_workloads(kube: KubeCluster, namespace: str, secret: str) -> dict[str, str]:
    """A Deployment (envFrom), a StatefulSet (env secretKeyRef) and a DaemonSet (a volume), each
    reading ``secret``; their API paths by kind."""
    container = {"name": "app", "image": "registry.invalid/app:1"}
    pods: dict[str, dict[str, Any]] = {
        "Deployment": {"containers": [{**container, "envFrom": [{"secretRef": {"name": secret}}]}]},
        "StatefulSet": {"containers": [{**container, "env": [{"name": "K", "valueFrom": {
            "secretKeyRef": {"name": secret, "key": "k"}}}]}]},
        "DaemonSet": {"containers": [container],
                      "volumes": [{"name": "s", "secret": {"secretName": secret}}]},
    }  # fmt: skip
    paths = {}
    for kind, pod in pods.items():
        name = kind.lower()
        plural, body = workload(kind, name, pod)
        base = f"/apis/apps/v1/namespaces/{namespace}/{plural}"
        kube.request("POST", base, body)
        paths[kind] = f"{base}/{name}"
    return paths


def restarted(kube: KubeCluster, path: str) -> str | None:
    meta = kube.request("GET", path)["spec"]["template"].get("metadata") or {}
    return (meta.get("annotations") or {}).get("strongroom.io/restartedAt")


def deleted(op: OperatorProcess, name: str) -> None:
    op.delete_and_wait(name)


def synced(op: OperatorProcess, secret: str, key: str, value: str) -> None:
    def check() -> bool:
        found = op.secret(secret)
        return found is not None and decoded(found).get(key) == value

    eventually(check, timeout=45, what=f"Secret {secret} holding {key}={value}")


def exercise(op: OperatorProcess, restarts: bool) -> None:
    """Every path of the operator, each checked to have happened."""
    kube, ns = op.kube, op.namespace
    secrets = f"/api/v1/namespaces/{ns}/secrets"
    paths = create_workloads(kube, ns, "app")
    kube.request("POST", secrets, {"metadata": {"name": "shared",
                                                "annotations": {"strongroom.io/merge-from": "merge"}},
                                   "data": {"theirs": b64("kept")}})  # fmt: skip
    kube.request("POST", secrets, {"metadata": {"name": "legacy"}, "data": {"pw": b64("old-pw")}})

    # Owner (the default), with a value from the store and workloads to restart.
    op.cli("secret", "set", f"{ns}/app", "k=one")
    op.apply("app", {"data": [{"key": "k"}],
                     "rolloutRestart": [{"kind": k, "name": k.lower()} for k in WORKLOADS]})  # fmt: skip
    synced(op, "app", "k", "one")
    # Orphan, released (Retain) or deleted (Delete) with the ManagedSecret: finalizer paths.
    for name, policy in (("kept", "Retain"), ("dropped", "Delete")):
        op.apply(name, {"data": [{"key": "g", "generate": {}}],
                        "target": {"creationPolicy": "Orphan", "deletionPolicy": policy}})  # fmt: skip
    # Merge into a Secret that consents; fromSecret, its source deleted.
    op.apply("merge", {"data": [{"key": "m", "generate": {}}],
                       "target": {"name": "shared", "creationPolicy": "Merge",
                                  "deletionPolicy": "Delete"}})  # fmt: skip
    op.apply("imported", {"data": [{"key": "pw", "fromSecret": {
        "name": "legacy", "key": "pw", "deleteSource": True}}]})  # fmt: skip
    eventually(lambda: op.secret("kept") and op.secret("dropped"), timeout=45,
               what="the Orphan Secrets")  # fmt: skip
    eventually(lambda: {"theirs", "m"} <= set(decoded(op.secret("shared"))), timeout=45,
               what="the merged key beside the Secret's own")  # fmt: skip
    synced(op, "imported", "pw", "old-pw")
    eventually(lambda: op.secret("legacy") is None, timeout=45, what="the source deleted")
    # A template kept in a ConfigMap (templateFrom): read, and watched for changes.
    kube.request("POST", f"/api/v1/namespaces/{ns}/configmaps",
                 {"metadata": {"name": "tmpl"}, "data": {"t": "{{ k }}!"}})  # fmt: skip
    op.apply("templated", {"data": [{"key": "k"}], "target": {"template": {
        "templateFrom": [{"configMap": {"name": "tmpl"}}]}}})  # fmt: skip
    op.cli("secret", "set", f"{ns}/templated", "k=v")
    synced(op, "templated", "t", "v!")

    # A value changed with the CLI: the Secret follows, its consumers restart (or, with
    # restarts disabled, are left alone, and an Event says so).
    op.cli("secret", "set", f"{ns}/app", "k=two")
    synced(op, "app", "k", "two")
    if restarts:
        eventually(lambda: all(restarted(kube, p) for p in paths.values()), timeout=30,
                   what="the three workloads restarted")  # fmt: skip
    else:
        eventually(lambda: "RestartSkipped" in op.event_reasons(), timeout=30,
                   what="a RestartSkipped Event")  # fmt: skip
        assert not any(restarted(kube, p) for p in paths.values())

    # Repair: an edited Secret, then a deleted one.
    kube.request("PATCH", f"{secrets}/app", {"data": {"k": b64("tampered")}},
                 content_type="application/merge-patch+json")  # fmt: skip
    synced(op, "app", "k", "two")
    kube.request("DELETE", f"{secrets}/app")
    synced(op, "app", "k", "two")
    # Its label removed, the Secret still names its ManagedSecret and gets the label back (the
    # fence judges the old object, which names its owner).
    kube.request("PATCH", f"{secrets}/app", {"metadata": {"labels": {MANAGED_BY: None}}},
                 content_type="application/merge-patch+json")  # fmt: skip
    eventually(lambda: ((op.secret("app") or {})["metadata"].get("labels") or {}).get(MANAGED_BY)
               == "strongroom", timeout=30, what="the label put back")  # fmt: skip

    # Deletions: every deletionPolicy path of the finalizer, and the garbage collector's.
    for name in ("kept", "dropped", "merge", "imported", "app"):
        deleted(op, name)
    kept = op.secret("kept")
    assert kept is not None
    assert "strongroom.io/managed-by" not in (kept["metadata"].get("labels") or {})
    assert op.secret("dropped") is None
    assert set(decoded(op.secret("shared"))) == {"theirs"}

    # Events are posted once reconciles pause (operator/events.py), within seconds.
    wanted = {"Synced", "Imported", "RolloutRestarted" if restarts else "RestartSkipped"}
    eventually(lambda: wanted <= op.event_reasons(), timeout=30, what=f"Events {wanted}")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "restarts"),
    [
        pytest.param("cluster-wide", True, id="cluster-wide-leader-elected"),
        pytest.param("namespaced", False, id="namespaced-restarts-disabled"),
    ],
)
def test_the_chart_grants_exactly_what_the_operator_uses(
    helm: str, kube: KubeCluster, tmp_path: Path, mode: str, restarts: bool
) -> None:
    tenant, home = (f"{p}-{uuid.uuid4().hex[:6]}" for p in ("tenant", "sr"))
    for ns in (tenant, home):
        kube.ensure_namespace(ns)
    if mode == "cluster-wide":
        args = ["--set", "replicaCount=2", "--set", "store.postgres.existingSecret=pg"]
    else:
        args = ["--set", f"watchNamespaces={{{tenant}}}", "--set", "rolloutRestart.enabled=false"]
    docs = render(helm, *args, namespace=home)
    identity = install_identity(kube, docs)
    install_fence(kube, docs, identity, probe_namespace=tenant)

    env = deployment_env(docs)
    assert env["STRONGROOM_ROLLOUT_RESTART"] == ("true" if restarts else "false")
    container = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    lease = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--leader-elect=")]
    checkpoint = next(a.split("=", 1)[1] for a in container["args"]
                      if a.startswith("--audit-checkpoint="))  # fmt: skip
    assert ("--all-namespaces" in container["args"]) == (mode == "cluster-wide")
    kubeconfig = kube.write_kubeconfig(tmp_path / "sa.kubeconfig", token=identity.token,
                                       user="operator")  # fmt: skip
    # The pod gets POD_NAMESPACE from the downward API; here the namespace is given. The
    # checkpoint is checked every second rather than the chart's 30 s: the same requests, sooner.
    args = ("--audit-checkpoint", f"{home}/{checkpoint}",
            *(("--leader-elect", f"{home}/{lease[0]}") if lease else ()))

    def operator(store: str, log: str) -> OperatorProcess:
        return OperatorProcess(
            kube, tenant,
            child_env(f"sqlite:///{tmp_path / store}", MASTER_KEY.hex(),
                      STRONGROOM_ROLLOUT_RESTART=env["STRONGROOM_ROLLOUT_RESTART"],
                      STRONGROOM_STORE_POLL_SECONDS=env["STRONGROOM_STORE_POLL_SECONDS"],
                      STRONGROOM_AUDIT_CHECKPOINT_SECONDS="1"),
            tmp_path / log, kubeconfig=kubeconfig, args=args,
            all_namespaces=mode == "cluster-wide",
        )

    op = operator("store.db", "operator.log")
    op.start()
    try:
        if lease:
            eventually(lambda: "leading: holding Lease" in op.log(), timeout=45,
                       what="the Lease held")  # fmt: skip
        exercise(op, restarts)
        checkpoint_path = f"/api/v1/namespaces/{home}/configmaps/{checkpoint}"
        eventually(lambda: int(kube.request("GET", checkpoint_path)["data"]["seq"]) > 10,
                   timeout=30, what="the audit checkpoint created and updated")  # fmt: skip
        op.stop()
        # Started on an emptied database: the Warning Event on the checkpoint's ConfigMap.
        op = operator("empty.db", "operator-empty.log")
        op.start()
        eventually(lambda: [e for e in kube.request("GET", f"/api/v1/namespaces/{home}/events")
                            ["items"] if e["reason"] == "AuditCheckpointMismatch"],
                   timeout=30, what="the AuditCheckpointMismatch Event")  # fmt: skip
    except AssertionError as exc:
        # A path that did not complete: RBAC or the fence may have refused the operator.
        refused = [show(e) for e in kube.audit_events(identity.username)
                   if code(e) == 403 and not dry_run(e)]  # fmt: skip
        raise AssertionError(f"{exc}\nthe operator's refused requests: {refused}") from None
    finally:
        op.stop()

    grants = granted(docs)
    watches = {t for t in grants if t[2] == "watch"}
    events = operator_requests(kube, identity.username, watches)
    used = {t for e in events if (t := triple(e)) is not None}
    fenced = [show(e) for e in events if code(e) == 403 and not rbac_denied(e)]
    denied = sorted({t for e in events if rbac_denied(e) and (t := triple(e)) is not None})
    print(f"\n{mode}: the operator's requests (group, resource, verb):")
    for entry in sorted(used):
        print("  ", entry)

    assert not fenced, f"the fence refused the operator's own writes: {fenced}"
    # The checkpoint's Role (release namespace) grants Events too: used there, not only where
    # the operator watches (the triples above do not tell namespaces apart).
    assert any(triple(e) == ("", "events", "create") and e["objectRef"].get("namespace") == home
               for e in events), "no Event posted in the release namespace"  # fmt: skip
    assert not denied, f"used but not granted (403): {denied}"
    assert not used - grants, f"used but not granted: {sorted(used - grants)}"
    unused = grants - used - NEVER_REQUESTED.keys()
    assert not unused, f"granted but never used: {sorted(unused)}"
    # The allow-list stays honest: each entry is granted, and none is in fact a request.
    assert NEVER_REQUESTED.keys() <= grants
    assert not NEVER_REQUESTED.keys() & used, "an allow-listed grant was requested after all"
