"""What status says after a pass: the last change, not the last look."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from strongroom.sync import Reason, Result, status_patch

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def body(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "app", "namespace": "ns", "generation": 1},
            "spec": {}, "status": status or {}}  # fmt: skip


def synced(wrote: bool) -> Result:
    return Result(True, Reason.SYNCED, "Secret app matches store version 1", version=1,
                  data_hmac="ab" * 32, wrote=wrote)  # fmt: skip


def test_a_no_op_refresh_after_a_sync_changes_nothing() -> None:
    first = status_patch(body(), synced(wrote=True), now=NOW)
    assert first is not None and first["lastSyncTime"] == "2026-12-01T12:00:00Z"
    later = status_patch(body(first), synced(wrote=False), now=NOW + timedelta(minutes=5))
    assert later is None  # no write: the reason and times still describe the last change


def test_last_sync_time_is_absent_until_a_secret_was_written() -> None:
    missing = Result(False, Reason.MISSING_VALUES, "keys not in the store yet: k")
    patch = status_patch(body(), missing, now=NOW)
    assert patch is not None and "lastSyncTime" not in patch
    ready = status_patch(body(patch), synced(wrote=True), now=NOW + timedelta(seconds=3))
    assert ready is not None and ready["lastSyncTime"] == "2026-12-01T12:00:03Z"
    assert ready["conditions"][0]["reason"] == "Synced"
