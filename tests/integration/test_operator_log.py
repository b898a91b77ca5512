"""What the operator's log says happened, read from a real operator process."""

from __future__ import annotations

import base64

from tests.components.operator import OperatorProcess, eventually
from tests.integration.test_operator import decoded, ready


def test_a_store_side_change_is_logged_as_one_not_as_a_repair(op: OperatorProcess) -> None:
    """Before: a value set with the CLI was logged as "Secret api was changed; repairing", the
    words for someone editing the Secret in Kubernetes."""
    ref = f"{op.namespace}/api"
    op.cli("secret", "set", ref, "token=one")
    op.apply("api", {"data": [{"key": "token"}], "refreshInterval": "1h"})
    ready(op, "api", 1)
    for version, value in ((2, "two"), (3, "three")):
        op.cli("secret", "set", ref, f"token={value}")
        eventually(lambda v=value: decoded(op.secret("api")).get("token") == v,  # type: ignore[misc]
                   timeout=15, what=f"version {version} in the Secret")  # fmt: skip
        ready(op, "api", version)
    log = op.log()
    assert f"the store has a new version of {ref} (version 2); syncing" in log
    assert f"the store has a new version of {ref} (version 3); syncing" in log
    assert "repairing" not in log

    path = f"/api/v1/namespaces/{op.namespace}/secrets/api"
    op.kube.request("PATCH", path, {"data": {"token": base64.b64encode(b"edited").decode()}},
                    content_type="application/merge-patch+json")  # fmt: skip
    eventually(lambda: decoded(op.secret("api")).get("token") == "three", timeout=15,
               what="the edit repaired")  # fmt: skip
    assert f"{ref}: Secret api was changed; repairing" in op.log()
