"""The hash chain detects every edit, deletion, reordering and truncation."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from strongroom.audit import GENESIS_HASH, AuditEvent, seal_event, verify_chain


def chain(n: int) -> list[AuditEvent]:
    out: list[AuditEvent] = []
    prev = GENESIS_HASH
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(n):
        event = AuditEvent(start + timedelta(seconds=i), "alice", "secret.get", "ok", "ns", f"s{i}")
        placed = seal_event(event, seq=i + 1, prev_hash=prev)
        out.append(placed)
        prev = placed.hash
    return out


def test_an_untouched_chain_verifies() -> None:
    events = chain(5)
    report = verify_chain(events, head_seq=5, head_hash=events[-1].hash)
    assert report.ok
    assert report.count == 5


def test_an_empty_chain_verifies() -> None:
    assert verify_chain([], head_seq=0, head_hash=GENESIS_HASH).ok


@pytest.mark.parametrize("field", ["actor", "action", "outcome", "name"])
def test_an_edited_event_is_named(field: str) -> None:
    events = chain(5)
    events[2] = dataclasses.replace(events[2], **{field: "mallory"})
    report = verify_chain(events, head_seq=5, head_hash=events[-1].hash)
    assert not report.ok
    assert report.first_bad_seq == 3


def test_a_deleted_middle_event_is_named() -> None:
    events = chain(5)
    del events[1]
    report = verify_chain(events, head_seq=5, head_hash=events[-1].hash)
    assert not report.ok
    assert report.first_bad_seq == 2


def test_a_deleted_last_event_is_detected_through_the_head() -> None:
    events = chain(5)
    report = verify_chain(events[:-1], head_seq=5, head_hash=events[-1].hash)
    assert not report.ok
    assert report.first_bad_seq == 5


def test_naive_and_aware_times_hash_the_same() -> None:
    aware = AuditEvent(datetime(2026, 1, 1, 12, tzinfo=UTC), "a", "x", "ok")
    naive = dataclasses.replace(aware, time=datetime(2026, 1, 1, 12))
    assert (
        seal_event(aware, seq=1, prev_hash=GENESIS_HASH).hash
        == seal_event(naive, seq=1, prev_hash=GENESIS_HASH).hash
    )
