"""The public Python API: :class:`Strongroom`, a store of envelope-encrypted, audited secrets.

Every call is one database transaction that includes its audit event, so an access that cannot
be audited does not happen (fail closed, as Vault does). A failed call (not found, invalid
input, integrity failure) is audited too, in its own transaction, before the error is raised.
"""

from __future__ import annotations

from sqlalchemy import Engine

from strongroom.audit import (
    GENESIS_HASH,
)
from strongroom.auditsinks import AuditSinks
from strongroom.config import Settings
from strongroom.datakeys import AuditKey, DataKeys
from strongroom.keyring import Keyring, KeyringSet, build_keyring
from strongroom.manifest import Manifests
from strongroom.room.auditlog import AuditLogReads
from strongroom.room.reads import SecretReads
from strongroom.room.records import SecretInfo, SecretValue
from strongroom.room.writes import SecretWrites
from strongroom.store import create_store_engine, ensure_schema
from strongroom.store import repository as repo
from strongroom.store.batching import TransactionBatcher

__all__ = ["SecretInfo", "SecretValue", "Strongroom"]


class Strongroom(SecretWrites, SecretReads, AuditLogReads):
    """Open with :meth:`open`; safe to share between threads."""

    def __init__(self, settings: Settings, *, engine: Engine, keyring: Keyring) -> None:
        self.settings = settings
        self.engine = engine
        self.keyrings = KeyringSet(settings, keyring)
        self.audit_key = AuditKey(
            engine, keyring, actor=settings.actor, lookup=self.keyrings.for_wrapped
        )
        self.data_keys = DataKeys(
            engine,
            keyring,
            settings.data_keys,
            actor=settings.actor,
            audit=self.audit_key,
            lookup=self.keyrings.for_wrapped,
        )
        self.manifests = Manifests(engine, self.data_keys, self.audit_key, actor=settings.actor)
        self._batcher: TransactionBatcher | None = None
        self._walked: tuple[int, str] = (0, GENESIS_HASH)  # audit_check_checkpoint's cursor
        # Copies of each transaction's events, sent just before it commits (auditsinks.py).
        self.sinks = AuditSinks.from_settings(settings.audit_sinks)
        if self.sinks is not None:
            repo.publish_audit_to(engine, self.sinks)

    @classmethod
    def open(
        cls, settings: Settings | None = None, *, keyring: Keyring | None = None
    ) -> Strongroom:
        settings = settings or Settings.from_env()
        engine = create_store_engine(settings.database_url)
        try:
            ensure_schema(engine, auto_migrate=settings.auto_migrate)
            ring = keyring or build_keyring(settings)
        except BaseException:
            engine.dispose()
            raise
        return cls(settings, engine=engine, keyring=ring)

    def close(self) -> None:
        if self._batcher is not None:
            self._batcher.close()
            self._batcher = None
        if self.sinks is not None:
            repo.publish_audit_to(self.engine, None)
            self.sinks.close()
        self.data_keys.forget()
        self.audit_key.forget()
        self.manifests.forget()
        self.engine.dispose()

    def __enter__(self) -> Strongroom:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def group_commit(self) -> bool:
        """Let concurrent calls from this process share transactions (SQLite only).

        For a long-running process with many threads (the operator). On SQLite all writers
        are serialised anyway, so sharing a transaction loses no concurrency and saves a
        BEGIN/COMMIT hand-over per call. On PostgreSQL calls run side by side until the audit
        chain's head row, and a shared transaction holding several secrets' row locks could
        deadlock with another process, so it stays off there. Returns whether it is on.
        """
        if self.engine.dialect.name == "sqlite" and self._batcher is None:
            self._batcher = TransactionBatcher(self.engine)
        return self._batcher is not None
