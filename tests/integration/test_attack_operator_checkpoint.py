"""The operator against a database restored under it, with the audit checkpoint on.

The attack passed before the checkpoint check walked the chain (found by a review).
"""

from __future__ import annotations

import base64
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine

from tests.components.kube import KubeCluster
from tests.components.operator import OperatorProcess, child_env, eventually
from tests.conftest import MASTER_KEY
from tests.integration.test_attack_audit_chain import (
    _restored_with_copied_head,
    _snapshot,
)


def _pw(proc: OperatorProcess) -> str | None:
    secret = proc.secret("db")
    if secret is None:
        return None
    return base64.b64decode(secret["data"]["pw"]).decode()


def test_attack_a_restored_backup_under_the_live_head_is_refused_by_the_operator(
    kube: KubeCluster, tmp_path: Path
) -> None:
    """DBA restores an older backup while the operator is stopped and copies the live head and later event rows over it: the restarted operator must not find its checkpoint reached, nor roll the Secret back to the old password."""
    namespace = f"atk-{uuid.uuid4().hex[:8]}"
    kube.ensure_namespace(namespace)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    env = child_env(url, MASTER_KEY.hex(), STRONGROOM_AUDIT_CHECKPOINT_SECONDS="1")
    proc = OperatorProcess(kube, namespace, env, tmp_path / "operator.log",
                           args=("--audit-checkpoint", f"{namespace}/checkpoint"))  # fmt: skip
    attacker = create_engine(url)
    try:
        proc.cli("secret", "set", f"{namespace}/db", "pw=old-password")
        proc.start()
        proc.apply("db", {"data": [{"key": "pw"}]})
        eventually(lambda: _pw(proc) == "old-password", what="the first value synced")
        backup = _snapshot(attacker)  # a backup taken while all is well

        proc.cli("secret", "set", f"{namespace}/db", "pw=rotated-password")
        eventually(lambda: _pw(proc) == "rotated-password", what="the rotation synced")
        proc.stop()  # publishes the final head to the checkpoint ConfigMap
        cm = kube.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/checkpoint")
        assert int(cm["data"]["seq"]) > backup["audit_head"][0]["seq"]

        _restored_with_copied_head(attacker, backup)
        proc.start()

        # security.md: an older copy of the database put back is caught by the checkpoint:
        # a Warning Event AuditCheckpointMismatch and no reconcile (no Secret rolled back).
        def reasons() -> set[str]:
            events = kube.request("GET", f"/api/v1/namespaces/{namespace}/events")["items"]
            return {e["reason"] for e in events}

        eventually(lambda: "AuditCheckpointMismatch" in reasons(), timeout=45,
                   what="the AuditCheckpointMismatch Event")  # fmt: skip
        time.sleep(3)  # a reconcile would have run by now (store poll: 2 s)
        assert _pw(proc) == "rotated-password", "the operator rolled the Secret back"
        assert "does not verify at event" in proc.log()
    finally:
        proc.stop()
        attacker.dispose()
