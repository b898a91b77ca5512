"""The audit chain: every access is an event, and every event is linked to its predecessor.

Canonical form of an event (UTF-8)::

    canonical = JSON [seq, time, actor, action, namespace, name, key, version, outcome, detail]
    canonical = JSON [seq, ..., detail, origin]       (only when origin is not empty)

with ``time`` as naive UTC ISO 8601 to the microsecond. ``seq`` starts at 1 and has no gaps.
``origin`` (schema 0005) says who stood behind a call made on someone's behalf: the values API
(:mod:`strongroom.server`) records the caller's Kubernetes UID, groups, source address and the
authorization decision there, as compact JSON. Events without one keep the ten-field form, so
every chain written before 0005 verifies unchanged.

**Keyed links** (every event written since schema revision 0002). The store holds one **audit
key**: a 32-byte seed in ``audit_keys``, wrapped by the KEK like the data key seeds (wrap context
``{"audit_key_id": <id>}``) and unwrapped only in memory, once per process. With
``K = HMAC-SHA256(seed, "strongroom/audit/v2 key")``, an event's ``hash`` column holds::

    hex HMAC-SHA256(K, "strongroom/audit/v2 event\n" || prev_hash || "\n" || canonical)

where ``prev_hash`` is the previous event's ``hash`` (64 zeros before the first event). The
first keyed event is ``audit.key``, written in the transaction that stores the key, at the
sequence number the key row records (``first_seq``); its ``prev_hash`` is the head of the chain
as it was, so a chain begun before the key existed is committed to, not replaced.

**Unkeyed links** (events written before revision 0002, and only those)::

    hex SHA-256(prev_hash || "\n" || canonical)

**Head.** A one-row table keeps ``(seq, hash, mac)``: the last event's number and link, and::

    mac = hex HMAC-SHA256(K, "strongroom/audit/v2 head\n" || seq || "\n" || hash)

rewritten once per transaction (the one that appends). The head MAC is stored nowhere else.

What verification catches, when the attacker has the database but not the KEK: an edited,
inserted, dropped or reordered event, however the links after it are recomputed (its MAC, or
the next one's, no longer fits, and recomputing a MAC needs ``K``); the newest events deleted
and the head rewritten to match (the head MAC of the shorter chain was never stored, so it
cannot be copied from a row); the log emptied and the head reset (the audit key row survives
and says the keyed chain starts at ``first_seq``, which is then missing; with the key row
deleted too, the data keys remain, and creating each of them was an audited event); the audit
key row deleted or replaced (the keyed events no longer verify); the unkeyed events before the
first keyed one edited and rehashed (that event's MAC covers their head).

What the database alone cannot show, and only a head recorded outside it (a checkpoint) can:
a consistent copy of an *older* state of the same database (a backup restored; a head row saved
earlier put back after truncating the log to it); and a store whose audit key and keyed events
were all deleted and replaced by a forged chain of unkeyed events, which looks like a store
upgraded from revision 0001 and not used since (``strongroom audit verify`` says "not keyed").

**Checkpoint.** A head recorded outside the store (the operator publishes one,
:mod:`strongroom.operator.checkpoint`) is the pair ``SEQ:MAC``::

    MAC = hex HMAC-SHA256(K, "strongroom/audit/v2 head\n" || SEQ || "\n" || link of event SEQ)

that is, the head MAC the store held when its head was event ``SEQ``. The store keeps only its
current head's MAC, but anyone with the audit key can recompute the MAC of any earlier head from
that event's link, so a checkpoint needs nothing else. A store *reaches* a checkpoint when its
head is at ``SEQ`` or beyond and the MAC recomputed from its event ``SEQ`` is ``MAC``; as each
link covers all before it, the store then holds exactly the checkpointed chain up to ``SEQ``.
Anything else is a failure, never a reason to adopt the checkpoint: a head behind ``SEQ`` (an
older copy, a truncated or an emptied log), a store with no audit key (the keyed chain deleted),
or another link at ``SEQ`` (another store, or an older copy written to since). Computing a MAC
needs ``K``, so nobody without the KEK can make a checkpoint that a store other than the one it
was taken from reaches; a checkpoint can only be replayed (an older true one put back).

Events never carry a value: only who, when, what and the outcome.
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol, TypeVar

T = TypeVar("T")

GENESIS_HASH = "0" * 64

MAX_DETAIL_LENGTH = 200

KEY_ACTION = "audit.key"
"""The action of the first keyed event, written with the audit key it starts."""

MANIFEST_ACTION = "secret.manifest"
"""A manifest given to a secret written before manifests existed (:mod:`strongroom.manifest`)."""

MANIFESTS_BEGIN = "manifest.init"
"""Written once per store: from this event on, every secret has a manifest."""

SECRET_WRITES = ("secret.set", "secret.destroy", "secret.delete", MANIFEST_ACTION, MANIFESTS_BEGIN)
"""Actions that change what a secret holds. Each one that succeeds writes (or, for a delete,
removes) the secret's manifest in its transaction, so the manifest can be checked against the
newest of them (:mod:`strongroom.manifest`); the store indexes them for that."""

_KEY_LABEL = b"strongroom/audit/v2 key"
_EVENT_LABEL = b"strongroom/audit/v2 event\n"
_HEAD_LABEL = b"strongroom/audit/v2 head\n"


ORIGIN: contextvars.ContextVar[str] = contextvars.ContextVar("strongroom_audit_origin", default="")
"""The origin every event created in this context carries (see ``canonical`` above).

A context variable rather than a parameter, so that the store's own events (``secret.set``,
``secret.get``…) carry it without every ``Strongroom`` method growing one: the values API sets
it around each call it makes for a caller (:func:`with_origin`), and the group-commit writer
runs each unit in its submitter's context (:mod:`strongroom.store.batching`).
"""


def with_origin(origin: str, call: Callable[[], T]) -> T:
    """Run ``call`` with :data:`ORIGIN` set to ``origin`` (in this thread's context)."""
    token = ORIGIN.set(origin)
    try:
        return call()
    finally:
        ORIGIN.reset(token)


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
    origin: str = dataclasses.field(default_factory=ORIGIN.get)

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
        if self.origin:
            fields.append(self.origin)
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclasses.dataclass(frozen=True)
class ChainKey:
    """The audit key, unwrapped: what links and the head are MACed with. ``repr`` hides it."""

    id: str
    mac_key: bytes = dataclasses.field(repr=False)
    _keyed: hmac.HMAC = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Keyed once; each MAC copies the keyed state (half the cost of hmac.digest's setup).
        object.__setattr__(self, "_keyed", hmac.new(self.mac_key, digestmod=hashlib.sha256))

    @classmethod
    def from_seed(cls, key_id: str, seed: bytes) -> ChainKey:
        # A key of its own, so the stored seed is never used directly as an HMAC key.
        return cls(key_id, hmac.digest(seed, _KEY_LABEL, "sha256"))

    def link(self, prev_hash: str, event: AuditEvent) -> str:
        return self._mac(_EVENT_LABEL + prev_hash.encode("ascii") + b"\n" + event.canonical())

    def head(self, seq: int, link: str) -> str:
        return self._mac(_HEAD_LABEL + str(seq).encode("ascii") + b"\n" + link.encode("ascii"))

    def _mac(self, message: bytes) -> str:
        mac = self._keyed.copy()
        mac.update(message)
        return mac.hexdigest()


@dataclasses.dataclass(frozen=True)
class ChainHead:
    """The head row: the last event's number and link, and the head's MAC ("" when unkeyed)."""

    seq: int
    hash: str
    mac: str = ""


def utc_naive(moment: datetime) -> datetime:
    """SQLite drops time zones and PostgreSQL adds them: hash the same naive UTC either way."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def chain_hash(prev_hash: str, event: AuditEvent) -> str:
    """The unkeyed link of schema 0001, kept to verify the events written before the key."""
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + event.canonical()).hexdigest()


def seal_event(
    event: AuditEvent, *, seq: int, prev_hash: str, key: ChainKey | None
) -> AuditEvent:
    """Give ``event`` its place in the chain (``key=None``: the old unkeyed format)."""
    placed = dataclasses.replace(event, seq=seq, prev_hash=prev_hash, hash="")
    link = chain_hash(prev_hash, placed) if key is None else key.link(prev_hash, placed)
    object.__setattr__(placed, "hash", link)  # still being built
    return placed


class AuditPublisher(Protocol):
    """Receives each transaction's sealed events, in chain order, just before it commits.

    Raising stops the commit: the transaction rolls back and the operation fails
    (:mod:`strongroom.auditsinks` does so in ``require`` mode when no sink took the events).
    """

    def publish(self, events: Sequence[AuditEvent]) -> None: ...


@dataclasses.dataclass(frozen=True)
class ChainReport:
    ok: bool
    count: int
    first_bad_seq: int | None = None
    reason: str = ""
    keyed_from: int | None = None
    """Sequence number of the first keyed event; None while the chain has no audit key."""


def verify_chain(
    events: Iterable[AuditEvent],
    *,
    head: ChainHead,
    key: ChainKey | None = None,
    keyed_from: int = 1,
    since: tuple[int, str] = (0, GENESIS_HASH),
) -> ChainReport:
    """Walk the chain in ``seq`` order; report the first event that does not fit.

    ``since``: (seq, link) of an event already walked, whose successors ``events`` are: the
    walk goes on from there rather than from the start (``count`` is still the last seq).

    With ``key``, events from ``keyed_from`` on must carry its MACs, the event at
    ``keyed_from`` must be the ``audit.key`` event naming it, the chain must reach it, and the
    head must carry its MAC; events before it are checked as unkeyed links. Without ``key``
    (a store that has no audit key yet) every event must be an unkeyed link.
    """
    walked = _walk(events, key, keyed_from, since)
    if isinstance(walked, ChainReport):
        return walked
    count, last = walked
    problem = _head_problem(head, count, last, key, keyed_from)
    if problem is not None:
        return ChainReport(False, count, problem[0], problem[1])
    return ChainReport(True, count, keyed_from=None if key is None else keyed_from)


def _walk(
    events: Iterable[AuditEvent], key: ChainKey | None, keyed_from: int, since: tuple[int, str]
) -> ChainReport | tuple[int, str]:
    """Every link in order: a report of the first bad one, or (count, last link)."""
    expected_seq = since[0] + 1
    prev = since[1]
    for event in events:
        count = expected_seq - 1
        if event.seq != expected_seq:
            return ChainReport(False, count, expected_seq, f"event {expected_seq} is missing")
        if event.prev_hash != prev:
            return ChainReport(False, count, event.seq, "does not link to the previous event")
        if key is not None and event.seq >= keyed_from:
            if event.seq == keyed_from and (event.action != KEY_ACTION or event.key != key.id):
                return ChainReport(
                    False, count, event.seq, "is not the event that starts the keyed chain"
                )
            if not hmac.compare_digest(key.link(prev, event), event.hash):
                return ChainReport(False, count, event.seq, "content does not match its MAC")
        elif chain_hash(prev, event) != event.hash:
            return ChainReport(False, count, event.seq, "content does not match its hash")
        prev = event.hash
        expected_seq += 1
    return expected_seq - 1, prev


def _head_problem(
    head: ChainHead, count: int, last: str, key: ChainKey | None, keyed_from: int
) -> tuple[int, str] | None:
    """(first bad seq, reason) if the head does not close a chain of ``count`` events."""
    if head.seq != count:
        return count + 1, f"chain ends at event {count} but the head records {head.seq}"
    if count and head.hash != last:
        return count, "last event does not match the chain head"
    if key is None:
        return None
    if count < keyed_from:
        return count + 1, (
            f"the audit key starts the chain at event {keyed_from} but the chain ends at "
            f"event {count}: events were deleted"
        )
    if not hmac.compare_digest(head.mac, key.head(head.seq, last)):
        return count, (
            "the chain head does not authenticate: events after it were deleted or the head "
            "was rewritten"
        )
    return None


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A head recorded outside the store: ``SEQ:MAC`` (format in the module docstring)."""

    seq: int
    mac: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.mac}"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """``SEQ:MAC``: a positive sequence number and 64 lowercase hex characters."""
        seq, sep, mac = text.strip().partition(":")
        if not sep or not seq.isdigit() or int(seq) < 1:
            raise ValueError("a checkpoint is SEQ:MAC with SEQ a positive event number")
        if len(mac) != 64 or not set(mac) <= _HEX:
            raise ValueError("a checkpoint's MAC is 64 lowercase hex characters")
        return cls(int(seq), mac)


_HEX = frozenset("0123456789abcdef")


def checkpoint_of(key: ChainKey, head: ChainHead) -> Checkpoint:
    """The checkpoint of ``head`` (whose MAC the caller has checked, or is about to)."""
    return Checkpoint(head.seq, key.head(head.seq, head.hash))


def checkpoint_problem(
    checkpoint: Checkpoint, *, head: ChainHead, link: str | None, key: ChainKey | None
) -> str | None:
    """Why a store with ``head`` (``link``: its event ``checkpoint.seq``'s, if it has one) does
    not reach ``checkpoint``, in one line; None when it does.

    A checkpoint ahead of the store is a failure like any other: the check never moves toward
    the checkpoint, so a forged one can only make it fail.
    """
    if head.seq < checkpoint.seq:
        return (
            f"the store's audit head is event {head.seq}, behind the checkpoint at event "
            f"{checkpoint.seq}: the database is an older copy, or was truncated or emptied"
        )
    if key is None:
        return (
            f"the store's audit chain has no audit key, but the checkpoint at event "
            f"{checkpoint.seq} was keyed: the keyed chain was deleted or the database replaced"
        )
    if link is None:
        return f"event {checkpoint.seq} of the checkpoint is missing from the store's audit log"
    if not hmac.compare_digest(key.head(checkpoint.seq, link), checkpoint.mac):
        return (
            f"at event {checkpoint.seq} the store's audit chain differs from the checkpoint: "
            "the database was replaced, or is an older copy written to since"
        )
    return None


def clip(text: str) -> str:
    """Keep details short; they describe, they never dump."""
    return text if len(text) <= MAX_DETAIL_LENGTH else text[: MAX_DETAIL_LENGTH - 1] + "…"
