"""The machinery every call of :class:`strongroom.api.Strongroom` runs on.

Every call is one database transaction that includes its audit event, so an access that cannot
be audited does not happen (fail closed, as Vault does). A failed call (not found, invalid
input, integrity failure) is audited too, in its own transaction, before the error is raised.
The reads, the writes and the audit log's own reads are mixins on this base
(:mod:`strongroom.room.reads`, :mod:`~strongroom.room.writes`, :mod:`~strongroom.room.auditlog`),
each a room of its own; :class:`~strongroom.api.Strongroom` puts them together and opens them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine

from strongroom import validate
from strongroom.audit import (
    SECRET_WRITES,
    AuditEvent,
    ChainKey,
    Outcome,
    clip,
)
from strongroom.auditsinks import AuditSinks
from strongroom.config import Settings
from strongroom.crypto import Identity, Sealed, open_sealed
from strongroom.datakeys import AuditKey, DataKeys
from strongroom.errors import (
    AlreadyExists,
    AuditError,
    IntegrityError,
    NamespaceMismatch,
    NotFound,
    StoreError,
    StrongroomError,
    ValidationError,
)
from strongroom.keyring import KeyringSet
from strongroom.manifest import Manifests
from strongroom.metrics import STORE_OPS, STORE_SECONDS
from strongroom.store import repository as repo
from strongroom.store import transaction
from strongroom.store.batching import TransactionBatcher

T = TypeVar("T")
# What a body raises to refuse an operation: audited as a failure, then raised to the caller.
_REFUSALS = (ValidationError, NotFound, IntegrityError, AlreadyExists, NamespaceMismatch)


class AuditedCalls:
    """Transactions with their audit events, validation, decryption; set up by Strongroom."""

    settings: Settings
    engine: Engine
    keyrings: KeyringSet
    audit_key: AuditKey
    data_keys: DataKeys
    manifests: Manifests
    sinks: AuditSinks | None
    _batcher: TransactionBatcher | None
    _walked: tuple[int, str]

    def _checked(
        self, failure: Callable[[StrongroomError], AuditEvent], check: Callable[[], T]
    ) -> T:
        """Validate input before any transaction; a refusal is audited like any other failure."""
        try:
            return check()
        except ValidationError as exc:
            self._audit_failure(failure(exc))
            raise

    def _address(self, namespace: str, name: str, key: str | None = None) -> None:
        """A secret (and key) to read or delete: raises inside a body, which audits it."""
        validate.reference(namespace, name, limits=self.settings.limits, write=False)
        if key is not None:
            validate.key(key, limits=self.settings.limits, write=False)

    def _event(
        self,
        action: str,
        outcome: str,
        *,
        actor: str | None,
        namespace: str = "",
        name: str = "",
        key: str = "",
        version: int | None = None,
        detail: str = "",
    ) -> AuditEvent:
        # Escaped (validate.printable): a refused input is recorded as it came, and can neither
        # break the row (a lone surrogate, NUL) nor forge a line where the log is printed.
        return AuditEvent(
            time=datetime.now(UTC),
            actor=clip(validate.printable(actor or self.settings.actor)),
            action=action,
            outcome=outcome,
            namespace=validate.printable(namespace)[:253],
            name=validate.printable(name)[:253],
            key=clip(validate.printable(key)),
            version=version,
            detail=clip(validate.printable(detail)),
        )

    def _failed(self, action: str, exc: StrongroomError, **fields: Any) -> AuditEvent:
        return self._event(action, _outcome(exc), detail=str(exc), **fields)

    def _audited(
        self,
        body: Callable[[Connection], tuple[T, AuditEvent | list[AuditEvent] | None]],
        failure: Callable[[StrongroomError], AuditEvent],
        *,
        read_only: bool = False,
    ) -> T:
        """Run ``body`` and its audit event in one transaction; audit failures too.

        A failed write is rolled back and audited in a transaction of its own. A failed read
        (``read_only``) has written nothing, so its audit event commits in the same one.
        """
        start = time.perf_counter()
        key = self._chain_key()
        try:
            self.manifests.ready()
        except StoreError as exc:
            raise AuditError(
                f"not done: the store's manifests could not be begun ({exc})"
            ) from None

        def attempt(conn: Connection) -> tuple[T | None, list[AuditEvent], StrongroomError | None]:
            failed: StrongroomError | None = None
            try:
                result, event = body(conn)
            except _REFUSALS as exc:
                if not read_only:
                    raise
                result, event, failed = None, failure(exc), exc
            events = event if isinstance(event, list) else [] if event is None else [event]
            # A write appends its own event first (its manifest names the event's place).
            repo.append_audits(conn, [one for one in events if not one.seq], key=key)
            return result, events, failed

        try:
            result, done, failed = self._in_transaction(attempt)
            for one in done:
                _observe(one.action, one.outcome, time.perf_counter() - start)
        except StoreError as exc:
            raise AuditError(f"not done: the operation or its audit event failed ({exc})") from None
        except _REFUSALS as exc:
            self._audit_failure(failure(exc), key)
            raise
        if failed is not None:
            raise failed
        return cast(T, result)  # body returned it, as nothing failed

    def _audit_failure(self, event: AuditEvent, key: ChainKey | None = None) -> None:
        """Record a failed operation in a transaction of its own (the operation's rolled back)."""
        chain_key = key or self._chain_key()
        try:
            self._in_transaction(lambda conn: repo.append_audit(conn, event, key=chain_key))
        except StoreError as audit_exc:
            raise AuditError(f"could not audit a failed {event.action}: {audit_exc}") from None

    def _in_transaction(self, work: Callable[[Connection], T]) -> T:
        """One transaction of its own, or a share of one with :meth:`group_commit` on."""
        if self._batcher is not None:
            return self._batcher.run(work)
        with transaction(self.engine) as conn:
            return work(conn)

    def record(self, event: AuditEvent) -> None:
        """Append an event for an action taken outside the store (the operator's syncs)."""
        if event.action in SECRET_WRITES:  # those are the store's own: manifests count them
            raise ValidationError(f"{event.action} events are written by the store itself")
        key = self._chain_key()
        try:
            self._in_transaction(lambda conn: repo.append_audit(conn, event, key=key))
        except StoreError as exc:
            raise AuditError(f"could not write the audit event: {exc}") from None

    def _chain_key(self) -> ChainKey:
        """The audit key, before any transaction (loading or creating it may call the KEK)."""
        try:
            return self.audit_key.current()
        except StoreError as exc:
            raise AuditError(f"not done: the audit key could not be read ({exc})") from None

    def _require(
        self, conn: Connection, namespace: str, name: str, *, lock: bool = False
    ) -> repo.SecretRow:
        secret = repo.find_secret(conn, namespace, name, lock=lock)
        if secret is None or secret.current_version == 0:
            raise NotFound(f"secret {namespace}/{name} not found")
        return secret

    def _decrypt(self, conn: Connection, secret: repo.SecretRow, row: repo.VersionRow) -> bytes:
        if row.ciphertext is None or row.salt is None or row.nonce is None:
            raise NotFound(
                f"version {row.version} of {secret.namespace}/{secret.name} was destroyed"
            )
        seed = self.data_keys.seed(row.data_key_id, _preload(conn, row.data_key_id, self))
        identity = Identity(secret.namespace, secret.name, row.key, row.version, row.data_key_id)
        return open_sealed(seed, identity, Sealed(row.salt, row.nonce, row.ciphertext, row.format))


def _preload(conn: Connection, data_key_id: str, room: AuditedCalls) -> repo.DataKeyRow | None:
    """Fetch the data key row inside the caller's transaction only on a cache miss."""
    if room.data_keys.is_cached(data_key_id):
        return None
    return repo.get_data_key(conn, data_key_id)


_METRIC_CHILDREN: dict[tuple[str, str], tuple[Any, Any]] = {}


def _observe(action: str, outcome: str, seconds: float) -> None:
    """Record a store operation; labelled children are cached (this is the hot path)."""
    children = _METRIC_CHILDREN.get((action, outcome))
    if children is None:
        children = (STORE_OPS.labels(action, outcome), STORE_SECONDS.labels(action))
        _METRIC_CHILDREN[(action, outcome)] = children
    children[0].inc()
    children[1].observe(seconds)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _outcome(exc: StrongroomError) -> str:
    if isinstance(exc, NotFound):
        return Outcome.NOT_FOUND
    if isinstance(exc, ValidationError):
        return Outcome.INVALID
    if isinstance(exc, NamespaceMismatch):
        return Outcome.DENIED
    return Outcome.ERROR
