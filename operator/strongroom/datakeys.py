"""Data key seeds: created, wrapped by the KEK, cached unwrapped in memory only.

One seed serves many writes: each value version derives its own DEK from the seed and a random
salt (see :mod:`strongroom.crypto.envelope`). A new seed is started when the configured KEK
changes, after ``max_uses`` versions, or once the seed is older than ``max_age``, so the KEK is
called a handful of times, not once per secret.

The use count is kept in memory, seeded from the store when a key is first loaded; with several
writers the bound is approximate, which is safe because per-version DEKs make nonce reuse under
one key impossible in practice: the bound limits blast radius, it is not a cryptographic limit.

The audit key (:class:`AuditKey`) is a seed of the same kind, kept apart in ``audit_keys``:
it MACs the audit chain (format in :mod:`strongroom.audit`) and never encrypts a value.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import Engine

from strongroom.audit import KEY_ACTION, AuditEvent, ChainKey, Outcome
from strongroom.config import DataKeyPolicy
from strongroom.crypto import new_seed
from strongroom.errors import IntegrityError
from strongroom.keyring import Keyring, WrappedSeed
from strongroom.store import repository as repo
from strongroom.store import transaction
from strongroom.store.schema import DataKeyState


class KeyringLookup(Protocol):
    """Which configured keyring unwraps ``wrapped`` (``owner``: "data key dk-…", for errors)."""

    def __call__(self, wrapped: WrappedSeed, *, owner: str) -> Keyring: ...


@dataclasses.dataclass
class _Active:
    id: str
    seed: bytes = dataclasses.field(repr=False)
    created_at: datetime
    uses: int


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class DataKeys:
    """The seed cache and the policy for starting new seeds; thread-safe."""

    def __init__(
        self,
        engine: Engine,
        keyring: Keyring,
        policy: DataKeyPolicy,
        *,
        actor: str,
        audit: AuditKey,
        lookup: KeyringLookup | None = None,
    ) -> None:
        self._engine = engine
        self._keyring = keyring
        self._policy = policy
        self._actor = actor
        self._audit = audit
        self._lookup = lookup or _same_keyring(keyring)
        self._seeds: dict[str, bytes] = {}
        self._active: _Active | None = None
        self._lock = threading.Lock()

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    # -- writes -----------------------------------------------------------------------------

    def for_write(self) -> tuple[str, bytes]:
        """The (data key id, seed) new versions are encrypted under; starts a seed if due."""
        with self._lock:
            active = self._active
            if active is None or self._expired(active):
                active = self._load_or_create()
                self._active = active
            active.uses += 1
            return active.id, active.seed

    def check(self) -> str:
        """For health probes: is a seed for writes available (loading it if needed)?"""
        with self._lock:
            if self._active is None or self._expired(self._active):
                self._active = self._load_or_create()
            return "ok"

    def start_new(self) -> tuple[str, bytes]:
        """Start a fresh seed now (rekey), whatever the policy says."""
        with self._lock:
            self._active = self._create()
            return self._active.id, self._active.seed

    def _expired(self, active: _Active) -> bool:
        age = datetime.now(UTC) - _aware(active.created_at)
        return active.uses >= self._policy.max_uses or age >= self._policy.max_age

    def _load_or_create(self) -> _Active:
        ring = self._keyring
        with transaction(self._engine) as conn:
            candidates = repo.active_data_keys(conn, ring.provider, ring.kek_id)
            for row in candidates:
                active = _Active(
                    row.id, b"", row.created_at, repo.count_versions_using(conn, row.id)
                )
                if not self._expired(active):
                    active.seed = self._unwrap(row)
                    return active
            newest = repo.newest_data_key(conn)
        if newest is not None and (newest.provider, newest.kek_id) != (ring.provider, ring.kek_id):
            # A KEK the store has never seen: prove the existing data keys still open before
            # forking the store onto it, so a mistyped master key is an error, not a new store.
            self._unwrap(newest)
        return self._create()

    def _create(self) -> _Active:
        ring = self._keyring
        data_key_id = "dk-" + uuid.uuid4().hex
        seed = new_seed()
        wrapped = ring.wrap(seed=seed, context={"data_key_id": data_key_id})
        now = datetime.now(UTC)
        chain = self._audit.current()  # before the transaction: it may call the KEK
        row = repo.DataKeyRow(
            id=data_key_id,
            provider=wrapped.provider,
            kek_id=wrapped.kek_id,
            kek_version=wrapped.kek_version,
            wrapped_seed=wrapped.ciphertext,
            state=DataKeyState.ACTIVE,
            created_at=now,
        )
        with transaction(self._engine) as conn:
            repo.insert_data_key(conn, row)
            repo.append_audit(
                conn,
                AuditEvent(
                    time=now,
                    actor=self._actor,
                    action="datakey.create",
                    outcome=Outcome.OK,
                    key=data_key_id,
                    detail=f"wrapped by {wrapped.provider} KEK {wrapped.kek_id}",
                ),
                key=chain,
            )
        self._seeds[data_key_id] = seed
        return _Active(data_key_id, seed, now, 0)

    # -- reads ------------------------------------------------------------------------------

    def seed(self, data_key_id: str, row: repo.DataKeyRow | None = None) -> bytes:
        """The unwrapped seed of ``data_key_id``, from cache or by one KEK call."""
        cached = self._seeds.get(data_key_id)
        if cached is not None:
            return cached
        if row is None:
            with transaction(self._engine) as conn:
                row = repo.get_data_key(conn, data_key_id)
        if row is None:
            raise IntegrityError(f"data key {data_key_id} is missing from the store")
        with self._lock:
            return self._unwrap(row)

    def _unwrap(self, row: repo.DataKeyRow) -> bytes:
        cached = self._seeds.get(row.id)
        if cached is not None:
            return cached
        wrapped = WrappedSeed(row.provider, row.kek_id, row.kek_version, row.wrapped_seed)
        ring = self._lookup(wrapped, owner=f"data key {row.id}")
        seed = ring.unwrap(wrapped=wrapped, context={"data_key_id": row.id})
        self._seeds[row.id] = seed
        return seed

    def is_cached(self, data_key_id: str) -> bool:
        return data_key_id in self._seeds

    def forget(self) -> None:
        """Drop every cached seed (after a KEK change or in tests)."""
        with self._lock:
            self._seeds.clear()
            self._active = None


def _same_keyring(keyring: Keyring) -> KeyringLookup:
    """Without a KeyringSet: the one keyring, for rows that name exactly it."""

    def lookup(wrapped: WrappedSeed, *, owner: str) -> Keyring:
        if wrapped.provider != keyring.provider or (
            wrapped.provider != "local" and wrapped.kek_id != keyring.kek_id
        ):
            raise IntegrityError(f"{owner} names a KEK outside the configured set")
        return keyring

    return lookup


class AuditKey:
    """The audit chain's key: created on first need, unwrapped once per process; thread-safe.

    Created (wrapped by the configured KEK) in a transaction that holds the chain head's lock
    and writes the first keyed event (``audit.key``) at the ``first_seq`` the row records, so
    two processes starting at once cannot both create one, and the key row alone is proof that
    a keyed chain exists. The unwrapped seed lives only in memory, like the data key seeds.
    """

    def __init__(
        self, engine: Engine, keyring: Keyring, *, actor: str, lookup: KeyringLookup | None = None
    ) -> None:
        self._engine = engine
        self._keyring = keyring
        self._actor = actor
        self._lookup = lookup or _same_keyring(keyring)
        self._key: ChainKey | None = None
        self._lock = threading.Lock()

    def current(self) -> ChainKey:
        """The key new events are linked with; loads or creates it (call outside a transaction)."""
        key = self._key
        if key is not None:
            return key
        with self._lock:
            while self._key is None:
                with transaction(self._engine) as conn:
                    rows = repo.audit_key_rows(conn)
                loaded = self._open(rows)
                self._key = loaded[0] if loaded is not None else self._create()
            return self._key

    def stored(self) -> tuple[ChainKey, int] | None:
        """What the store holds now (the key and its ``first_seq``), for verification only.

        Never creates a key. Read afresh each time; unwrapped only if it is not the one held.
        """
        with transaction(self._engine) as conn:
            rows = repo.audit_key_rows(conn)
        return self._open(rows)

    def wrap_under(self, target: Keyring, row: repo.AuditKeyRow) -> WrappedSeed:
        """``kek rotate``: the same seed, wrapped by ``target`` (one unwrap, one wrap)."""
        return target.wrap(seed=self._unwrap(row), context={"audit_key_id": row.id})

    def forget(self) -> None:
        with self._lock:
            self._key = None

    def _open(self, rows: list[repo.AuditKeyRow]) -> tuple[ChainKey, int] | None:
        if not rows:
            return None
        if len(rows) > 1:
            raise IntegrityError("the store holds more than one audit key")
        row = rows[0]
        held = self._key
        if held is not None and held.id == row.id:
            return held, row.first_seq
        return ChainKey.from_seed(row.id, self._unwrap(row)), row.first_seq

    def _unwrap(self, row: repo.AuditKeyRow) -> bytes:
        wrapped = WrappedSeed(row.provider, row.kek_id, row.kek_version, row.wrapped_seed)
        ring = self._lookup(wrapped, owner=f"audit key {row.id}")
        return ring.unwrap(wrapped=wrapped, context={"audit_key_id": row.id})

    def _create(self) -> ChainKey | None:
        """A new key and its first event; None if another process created one meanwhile."""
        key_id = "ak-" + uuid.uuid4().hex
        seed = new_seed()
        wrapped = self._keyring.wrap(seed=seed, context={"audit_key_id": key_id})
        key = ChainKey.from_seed(key_id, seed)
        now = datetime.now(UTC)
        with transaction(self._engine) as conn:
            head = repo.lock_audit_head(conn)
            if repo.audit_key_rows(conn):
                return None  # lost the race: load the winner's on the next pass
            past = repo.keyed_past(conn)
            if past is not None:
                raise IntegrityError(
                    f"the store has no audit key, yet {past}: the key row was deleted. Not "
                    "starting a new keyed chain over it; restore the audit_keys row (and the "
                    "log) from a backup"
                )
            repo.insert_audit_key(conn, repo.AuditKeyRow(
                id=key_id, provider=wrapped.provider, kek_id=wrapped.kek_id,
                kek_version=wrapped.kek_version, wrapped_seed=wrapped.ciphertext,
                first_seq=head.seq + 1, created_at=now,
            ))  # fmt: skip
            follows = (
                f"follows {head.seq} unkeyed events, head {head.hash[:16]}…" if head.seq
                else "a new chain"
            )  # fmt: skip
            repo.append_audit(conn, AuditEvent(
                time=now, actor=self._actor, action=KEY_ACTION, outcome=Outcome.OK, key=key_id,
                detail=f"keyed audit chain starts; wrapped by {wrapped.provider} KEK "
                       f"{wrapped.kek_id}; {follows}",
            ), key=key)  # fmt: skip
        return key
