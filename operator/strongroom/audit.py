"""The audit chain: every access is an event, and every event carries its predecessor's hash.

Hash of an event (hex SHA-256)::

    sha256( prev_hash || "\\n" || canonical JSON of
            [seq, time, actor, action, namespace, name, key, version, outcome, detail] )

``seq`` starts at 1 and has no gaps; the first event's ``prev_hash`` is 64 zeros. The store
keeps the last ``(seq, hash)`` in a one-row head table updated in the same transaction, so
deleting the newest events is detected too. Events never carry a value: only who, when, what
and the outcome.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime

GENESIS_HASH = "0" * 64

MAX_DETAIL_LENGTH = 200


class Outcome:
    """Outcome values written to ``audit_events.outcome``."""

    OK = "ok"
    NOT_FOUND = "not_found"
    DENIED = "denied"
    INVALID = "invalid"
    ERROR = "error"
    MISMATCH = "mismatch"


@dataclasses.dataclass(frozen=True)
class AuditEvent:
    """One access, as written; ``seq``, ``prev_hash`` and ``hash`` are filled in on append."""

    time: datetime
    actor: str
    action: str
    outcome: str
    namespace: str = ""
    name: str = ""
    key: str = ""
    version: int | None = None
    detail: str = ""
    seq: int = 0
    prev_hash: str = ""
    hash: str = ""

    def canonical(self) -> bytes:
        fields = [
            self.seq,
            utc_naive(self.time).isoformat(timespec="microseconds"),
            self.actor,
            self.action,
            self.namespace,
            self.name,
            self.key,
            self.version,
            self.outcome,
            self.detail,
        ]
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def utc_naive(moment: datetime) -> datetime:
    """SQLite drops time zones and PostgreSQL adds them: hash the same naive UTC either way."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def chain_hash(prev_hash: str, event: AuditEvent) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + event.canonical()).hexdigest()


def seal_event(event: AuditEvent, *, seq: int, prev_hash: str) -> AuditEvent:
    """Give ``event`` its place in the chain."""
    placed = dataclasses.replace(event, seq=seq, prev_hash=prev_hash, hash="")
    object.__setattr__(placed, "hash", chain_hash(prev_hash, placed))  # still being built
    return placed


@dataclasses.dataclass(frozen=True)
class ChainReport:
    ok: bool
    count: int
    first_bad_seq: int | None = None
    reason: str = ""


def verify_chain(events: Iterable[AuditEvent], *, head_seq: int, head_hash: str) -> ChainReport:
    """Walk the chain in ``seq`` order; report the first event that does not fit."""
    expected_seq = 1
    prev = GENESIS_HASH
    count = 0
    for event in events:
        if event.seq != expected_seq:
            return ChainReport(False, count, expected_seq, f"event {expected_seq} is missing")
        if event.prev_hash != prev:
            return ChainReport(False, count, event.seq, "does not link to the previous event")
        if chain_hash(prev, event) != event.hash:
            return ChainReport(False, count, event.seq, "content does not match its hash")
        prev = event.hash
        expected_seq += 1
        count += 1
    if head_seq != count:
        return ChainReport(
            False, count, count + 1, f"chain ends at event {count} but the head records {head_seq}"
        )
    if count and head_hash != prev:
        return ChainReport(False, count, count, "last event does not match the chain head")
    return ChainReport(True, count)


def clip(text: str) -> str:
    """Keep details short; they describe, they never dump."""
    return text if len(text) <= MAX_DETAIL_LENGTH else text[: MAX_DETAIL_LENGTH - 1] + "…"
