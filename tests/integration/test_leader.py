"""Several replicas: one leads through a real coordination.k8s.io Lease, the others wait.

Real operator processes against the real apiserver and the real PostgreSQL server (the store
the chart requires for more than one replica). The Lease lasts 3 s here (15 s by default).
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.components.kube import KubeCluster
from tests.components.operator import STRONGROOM, OperatorProcess, child_env, eventually
from tests.conftest import MASTER_KEY


def replicas(kube: KubeCluster, tmp_path: Path, db_url: str, count: int) -> list[OperatorProcess]:
    namespace = f"lead-{uuid.uuid4().hex[:6]}"
    kube.ensure_namespace(namespace)
    env = child_env(db_url, MASTER_KEY.hex(), STRONGROOM_LEASE_SECONDS="3")
    args = ("--leader-elect", f"{namespace}/strongroom")
    return [
        OperatorProcess(kube, namespace, env, tmp_path / f"replica-{i}.log", args=args)
        for i in range(count)
    ]


def lease(op: OperatorProcess) -> dict[str, Any]:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{op.namespace}/leases/strongroom"
    return dict(op.kube.request("GET", path))


def ready(op: OperatorProcess, name: str) -> bool:
    conditions = (op.msec(name).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_one_replica_reconciles_and_another_takes_over_when_it_dies(
    kube: KubeCluster, tmp_path: Path, pg_url: str
) -> None:
    first, second = replicas(kube, tmp_path, pg_url, 2)
    first.start()
    try:
        eventually(lambda: "leading: holding Lease" in first.log(), what="the first to lead")
        second.start()
        eventually(lambda: "follower: Lease" in second.log(), what="the second to follow")
        first.apply("one", {"data": [{"key": "pw", "generate": {}}]})
        eventually(lambda: ready(first, "one"), what="one Ready")
        time.sleep(2)  # the follower had every chance to act too
        assert "one: Synced" in first.log()
        assert "one: " not in second.log(), "the follower reconciled"

        first.stop(signal.SIGKILL)  # no release: the follower must wait the lease out
        killed = time.monotonic()
        first.apply("two", {"data": [{"key": "pw", "generate": {}}]})
        eventually(lambda: ready(second, "two"), timeout=30, what="two Ready under the new leader")
        assert time.monotonic() - killed >= 2.5, "took over before the lease ran out"
        assert "has not renewed" in second.log()
        held = lease(second)["spec"]
        assert held["holderIdentity"] and held["leaseTransitions"] >= 1
        assert "two: Synced" in second.log()
    finally:
        first.stop()
        second.stop()  # a clean stop hands the Lease back
    assert lease(second)["spec"]["holderIdentity"] == ""
    assert "released Lease" in second.log()


def test_a_leader_that_loses_its_lease_stops_reconciling_and_exits(
    kube: KubeCluster, tmp_path: Path, pg_url: str
) -> None:
    (op,) = replicas(kube, tmp_path, pg_url, 1)
    op.start()
    try:
        eventually(lambda: "leading: holding Lease" in op.log(), what="the replica to lead")
        # Someone else holds the Lease now (as after a network partition that outlasted it).
        taken = lease(op)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        taken["spec"].update(holderIdentity="intruder", renewTime=now, leaseDurationSeconds=60)
        op.kube.request("PUT", f"/apis/coordination.k8s.io/v1/namespaces/{op.namespace}/leases/"
                        "strongroom", taken)  # fmt: skip
        assert op.proc is not None
        code = op.proc.wait(30)
        op.apply("late", {"data": [{"key": "pw", "generate": {}}]})
        time.sleep(2)
    finally:
        op.stop()
    assert code == 1
    assert "lost the leadership of Lease" in op.log()
    assert "taken over by intruder" in op.log()
    assert op.secret("late") is None
    assert lease(op)["spec"]["holderIdentity"] == "intruder", "gave back a Lease it did not hold"


def test_a_malformed_lease_name_is_a_clear_error(tmp_path: Path) -> None:
    env = child_env(f"sqlite:///{tmp_path / 'store.db'}", MASTER_KEY.hex())
    cases = [("ns/", "no lease name"), ("ns/Bad_Name", "'Bad_Name' is not a valid name"),
             ("lease", "no lease namespace")]  # fmt: skip
    for value, message in cases:
        out = subprocess.run([STRONGROOM, "run", "--leader-elect", value], env=env, check=False,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert out.returncode == 1, out.stderr
        assert message in out.stderr
        assert "Traceback" not in out.stderr
