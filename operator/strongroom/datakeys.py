"""Data key seeds: created, wrapped by the KEK, cached unwrapped in memory only.

One seed serves many writes: each value version derives its own DEK from the seed and a random
salt (see :mod:`strongroom.crypto.envelope`). A new seed is started when the configured KEK
changes, after ``max_uses`` versions, or once the seed is older than ``max_age``, so the KEK is
called a handful of times, not once per secret.

The use count is kept in memory, seeded from the store when a key is first loaded; with several
writers the bound is approximate, which is safe because per-version DEKs make nonce reuse under
one key impossible in practice: the bound limits blast radius, it is not a cryptographic limit.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine

from strongroom.audit import AuditEvent, Outcome
from strongroom.config import DataKeyPolicy
from strongroom.crypto import new_seed
from strongroom.errors import IntegrityError, UnwrapError
from strongroom.keyring import Keyring, WrappedSeed
from strongroom.store import repository as repo
from strongroom.store import transaction
from strongroom.store.schema import DataKeyState

KeyringLookup = Callable[[WrappedSeed], Keyring]


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
        lookup: KeyringLookup | None = None,
    ) -> None:
        self._engine = engine
        self._keyring = keyring
        self._policy = policy
        self._actor = actor
        self._lookup = lookup or self._same_keyring
        self._seeds: dict[str, bytes] = {}
        self._active: _Active | None = None
        self._lock = threading.Lock()

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    def _same_keyring(self, wrapped: WrappedSeed) -> Keyring:
        if wrapped.provider != self._keyring.provider:
            raise UnwrapError(
                f"data key was wrapped by the {wrapped.provider} KEK {wrapped.kek_id}, "
                f"but STRONGROOM_KEK is {self._keyring.provider}"
            )
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
        seed = self._lookup(wrapped).unwrap(wrapped=wrapped, context={"data_key_id": row.id})
        self._seeds[row.id] = seed
        return seed

    def is_cached(self, data_key_id: str) -> bool:
        return data_key_id in self._seeds

    def forget(self) -> None:
        """Drop every cached seed (after a KEK change or in tests)."""
        with self._lock:
            self._seeds.clear()
            self._active = None
