"""The chain detects every edit, deletion, reordering and truncation; keyed, also forgeries."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from strongroom.audit import (
    GENESIS_HASH,
    KEY_ACTION,
    AuditEvent,
    ChainHead,
    ChainKey,
    chain_hash,
    seal_event,
    verify_chain,
)

KEY = ChainKey.from_seed("ak-test", b"\x01" * 32)
START = datetime(2026, 1, 1, tzinfo=UTC)


def chain(n: int, *, key: ChainKey | None = None, legacy: int = 0) -> list[AuditEvent]:
    """``legacy`` unkeyed events, then (with ``key``) the audit.key event and keyed ones."""
    out: list[AuditEvent] = []
    prev = GENESIS_HASH
    for i in range(n):
        keyed = key is not None and i >= legacy
        action = KEY_ACTION if keyed and i == legacy else "secret.get"
        event = AuditEvent(
            START + timedelta(seconds=i), "alice", action, "ok", "ns", f"s{i}",
            key=key.id if action == KEY_ACTION and key is not None else "",
        )  # fmt: skip
        placed = seal_event(event, seq=i + 1, prev_hash=prev, key=key if keyed else None)
        out.append(placed)
        prev = placed.hash
    return out


def head_of(events: list[AuditEvent], key: ChainKey | None = None) -> ChainHead:
    if not events:
        return ChainHead(0, GENESIS_HASH)
    last = events[-1]
    return ChainHead(last.seq, last.hash, key.head(last.seq, last.hash) if key else "")


def forge(events: list[AuditEvent]) -> list[AuditEvent]:
    """What an attacker without the key can do: renumber and relink with plain SHA-256."""
    out: list[AuditEvent] = []
    prev = GENESIS_HASH
    for i, event in enumerate(events):
        placed = dataclasses.replace(event, seq=i + 1, prev_hash=prev)
        object.__setattr__(placed, "hash", chain_hash(prev, placed))
        out.append(placed)
        prev = placed.hash
    return out


def test_an_untouched_chain_verifies() -> None:
    events = chain(5)
    report = verify_chain(events, head=head_of(events))
    assert report.ok
    assert (report.count, report.keyed_from) == (5, None)


def test_an_empty_chain_verifies() -> None:
    assert verify_chain([], head=ChainHead(0, GENESIS_HASH)).ok


@pytest.mark.parametrize("field", ["actor", "action", "outcome", "name"])
def test_an_edited_event_is_named(field: str) -> None:
    events = chain(5)
    events[2] = dataclasses.replace(events[2], **{field: "mallory"})
    report = verify_chain(events, head=head_of(events))
    assert not report.ok
    assert report.first_bad_seq == 3


def test_a_deleted_middle_event_is_named() -> None:
    events = chain(5)
    head = head_of(events)
    del events[1]
    report = verify_chain(events, head=head)
    assert not report.ok
    assert report.first_bad_seq == 2


def test_a_deleted_last_event_is_detected_through_the_head() -> None:
    events = chain(5)
    report = verify_chain(events[:-1], head=head_of(events))
    assert not report.ok
    assert report.first_bad_seq == 5


def test_naive_and_aware_times_hash_the_same() -> None:
    aware = AuditEvent(datetime(2026, 1, 1, 12, tzinfo=UTC), "a", "x", "ok")
    naive = dataclasses.replace(aware, time=datetime(2026, 1, 1, 12))
    for key in (None, KEY):
        assert (
            seal_event(aware, seq=1, prev_hash=GENESIS_HASH, key=key).hash
            == seal_event(naive, seq=1, prev_hash=GENESIS_HASH, key=key).hash
        )


# --- keyed ---------------------------------------------------------------------------------


def test_a_keyed_chain_verifies_only_with_its_key() -> None:
    events = chain(5, key=KEY)
    report = verify_chain(events, head=head_of(events, KEY), key=KEY)
    assert (report.ok, report.count, report.keyed_from) == (True, 5, 1)
    other = ChainKey.from_seed(KEY.id, b"\x02" * 32)
    assert not verify_chain(events, head=head_of(events, KEY), key=other).ok
    assert not verify_chain(events, head=head_of(events, KEY)).ok  # no key: not unkeyed links


def test_the_key_never_shows_in_repr() -> None:
    assert KEY.mac_key.hex() not in repr(KEY)


def test_a_dropped_event_with_the_rest_relinked_without_the_key_is_found() -> None:
    events = chain(6, key=KEY)
    forged = forge([*events[:2], *events[3:]])
    report = verify_chain(forged, head=head_of(forged, KEY), key=KEY)
    assert not report.ok
    assert report.first_bad_seq == 1  # even the first link is a MAC the forger cannot make


def test_a_truncated_chain_with_a_rewritten_head_is_found() -> None:
    events = chain(6, key=KEY)
    kept = events[:4]
    # The attacker can copy the last kept event's link into the head, and any MAC they have
    # seen; not the head MAC of a chain ending there, which was never stored.
    for mac in ("", kept[-1].hash, head_of(events, KEY).mac):
        report = verify_chain(kept, head=ChainHead(4, kept[-1].hash, mac), key=KEY)
        assert not report.ok
        assert "head does not authenticate" in report.reason


def test_an_emptied_log_with_the_head_reset_is_found_while_the_key_exists() -> None:
    report = verify_chain([], head=ChainHead(0, GENESIS_HASH), key=KEY, keyed_from=1)
    assert not report.ok
    assert report.first_bad_seq == 1


def test_two_reordered_events_are_found() -> None:
    events = chain(6, key=KEY)
    swapped = [*events[:2], events[3], events[2], *events[4:]]
    assert not verify_chain(swapped, head=head_of(events, KEY), key=KEY).ok
    forged = forge(swapped)
    report = verify_chain(forged, head=head_of(forged, KEY), key=KEY)
    assert not report.ok


def test_a_keyed_chain_commits_to_the_unkeyed_events_before_it() -> None:
    events = chain(6, key=KEY, legacy=3)
    assert events[3].action == KEY_ACTION and events[3].prev_hash == events[2].hash
    report = verify_chain(events, head=head_of(events, KEY), key=KEY, keyed_from=4)
    assert (report.ok, report.keyed_from) == (True, 4)
    # Rewriting the unkeyed part consistently (plain SHA-256) breaks the first keyed link.
    # Even with the keyed event's prev_hash moved along: its MAC covers the old value.
    edited = forge([events[0], dataclasses.replace(events[1], actor="mallory"), events[2]])
    relinked = dataclasses.replace(events[3], prev_hash=edited[-1].hash)
    edited = [*edited, relinked, *events[4:]]
    report = verify_chain(edited, head=head_of(events, KEY), key=KEY, keyed_from=4)
    assert (report.ok, report.first_bad_seq) == (False, 4)


def test_the_keyed_chain_must_start_with_its_key_event() -> None:
    events = chain(4, key=KEY, legacy=2)
    # Claiming the keyed part starts later lets keyed events pass as unkeyed: they do not.
    assert not verify_chain(events, head=head_of(events, KEY), key=KEY, keyed_from=4).ok
    # Claiming it starts earlier needs an audit.key event there: it is not one.
    assert not verify_chain(events, head=head_of(events, KEY), key=KEY, keyed_from=2).ok
    # Truncated back to the unkeyed part, head and all: the key says the chain went further.
    legacy = events[:2]
    report = verify_chain(legacy, head=head_of(legacy), key=KEY, keyed_from=3)
    assert not report.ok
    assert report.first_bad_seq == 3
