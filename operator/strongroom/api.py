"""The public Python API: :class:`Strongroom`, a store of envelope-encrypted, audited secrets.

Every call is one database transaction that includes its audit event, so an access that cannot
be audited does not happen (fail closed, as Vault does). A failed call (not found, invalid
input, integrity failure) is audited too, in its own transaction, before the error is raised.
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import hmac
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine

from strongroom import validate, values
from strongroom.audit import (
    SECRET_WRITES,
    AuditEvent,
    ChainKey,
    ChainReport,
    Checkpoint,
    Outcome,
    checkpoint_of,
    checkpoint_problem,
    clip,
    verify_chain,
)
from strongroom.auditsinks import AuditSinks
from strongroom.config import Settings
from strongroom.crypto import Identity, Sealed, open_sealed, seal
from strongroom.datakeys import AuditKey, DataKeys
from strongroom.errors import (
    AlreadyExists,
    AuditError,
    IntegrityError,
    NotFound,
    StoreError,
    StrongroomError,
    ValidationError,
)
from strongroom.keyring import Keyring, KeyringSet, build_keyring
from strongroom.manifest import Manifests
from strongroom.metrics import STORE_OPS, STORE_SECONDS
from strongroom.store import create_store_engine, ensure_schema, transaction
from strongroom.store import repository as repo
from strongroom.store.batching import TransactionBatcher

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class SecretValue:
    """A decrypted version of a secret. ``repr`` never shows the data."""

    namespace: str
    name: str
    version: int
    data: Mapping[str, Any] = dataclasses.field(repr=False)
    description: str = ""


@dataclasses.dataclass(frozen=True)
class SecretInfo:
    """What ``list`` shows: names and metadata, never values."""

    namespace: str
    name: str
    version: int
    keys: tuple[str, ...]
    description: str
    updated_at: datetime


class _VersionMoved(Exception):  # noqa: N818 - a signal inside resolve(), never raised out of it
    """Another writer committed a version between a read and the write's row lock."""


class Strongroom:
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

    # -- validation: the rules are strongroom.validate's ------------------------------------

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

    # -- auditing ---------------------------------------------------------------------------

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
            except (ValidationError, NotFound, IntegrityError, AlreadyExists) as exc:
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
        except (ValidationError, NotFound, IntegrityError, AlreadyExists) as exc:
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

    # -- operations -------------------------------------------------------------------------

    def set(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, Any],
        *,
        remove: Iterable[str] = (),
        replace: bool = False,
        if_absent: bool = False,
        description: str | None = None,
        actor: str | None = None,
    ) -> int:
        """Write a new version: ``data`` merged over the current keys (or replacing them).

        Returns the new version number. Unchanged keys are re-encrypted under the new version,
        because each ciphertext is bound to its version number.
        """
        removed = set(remove)
        touched = ",".join(sorted({str(k) for k in (*data, *removed)}))
        failure = functools.partial(self._failed, "secret.set", actor=actor, namespace=namespace,
                                    name=name, key=touched)  # fmt: skip

        def check() -> dict[str, bytes]:
            encoded = validate.write(namespace, name, data, removed, limits=self.settings.limits,
                                     description_text=description)  # fmt: skip
            if not encoded and not removed and description is None:
                raise ValidationError("nothing to set: give at least one KEY=VALUE")
            return encoded

        encoded = self._checked(failure, check)
        # Outside the transaction: starting a seed opens a transaction of its own (and may call
        # the KEK), which must not nest inside SQLite's write lock.
        write_key = self.data_keys.for_write()

        def body(conn: Connection) -> tuple[int, list[AuditEvent]]:
            return self._write_version(
                conn, namespace, name, encoded, write_key, removed=removed, replace=replace,
                if_absent=if_absent, description=description, actor=actor, touched=touched,
            )  # fmt: skip

        return self._audited(body, failure)

    def resolve(
        self,
        namespace: str,
        name: str,
        produce: Callable[[Mapping[str, Any]], Mapping[str, Any]],
        *,
        actor: str | None = None,
        action: str = "operator.read",
    ) -> SecretValue | None:
        """Read the current values and write what ``produce`` adds to them, in one transaction.

        For the operator's reconcile: a new ManagedSecret costs one transaction instead of a
        read and then a write, and a value is generated from what that transaction read. On
        SQLite it holds the write lock throughout. On PostgreSQL, if another writer commits
        between the read and the write's row lock, the values are read again under the lock
        and ``produce`` is asked again: it may run twice, so it must have no side effects and,
        as it runs inside the transaction, do no I/O. ``produce`` gets the current values ({}
        when there are none) and returns the keys to add or replace. Audited as the read
        (``action``; ``not_found`` when nothing is stored) and, when something is written,
        ``secret.set``. Returns the resulting version's values, or None when nothing is stored
        and nothing was produced.
        """
        failure = functools.partial(self._failed, action, actor=actor, namespace=namespace,
                                    name=name)  # fmt: skip
        limits = self.settings.limits
        self._checked(failure, lambda: validate.reference(namespace, name, limits=limits,
                                                          write=True))  # fmt: skip
        write_key = self.data_keys.for_write()

        def body(conn: Connection) -> tuple[SecretValue | None, list[AuditEvent]]:
            # Two passes at most: on PostgreSQL another writer can commit a version between
            # this read and the write's row lock; then the values are read again under the
            # lock and ``produce`` decides again, so a value set meanwhile is never overwritten
            # by one generated for its absence. (SQLite's write lock rules this out.)
            for last in (False, True):
                current: dict[str, Any] = {}
                version, seen, description = 0, 0, ""
                found = self.manifests.read(conn, namespace, name, None)
                if found is not None:
                    secret, rows = found[0], found[1]
                    seen = version = secret.current_version
                    description = secret.description
                    current = {row.key: values.decode(self._decrypt(conn, secret, row))
                               for row in rows}  # fmt: skip
                events = [
                    self._event(action, Outcome.OK if version else Outcome.NOT_FOUND, actor=actor,
                                namespace=namespace, name=name, version=version or None)
                ]  # fmt: skip
                new = dict(produce(current))
                if not new:
                    break
                encoded = validate.write(namespace, name, new, (), limits=limits)
                try:
                    version, events = self._write_version(
                        conn, namespace, name, encoded, write_key, actor=actor,
                        touched=",".join(sorted(encoded)), expect=None if last else seen,
                        audit_first=events,
                    )  # fmt: skip
                except _VersionMoved:
                    continue
                current.update(new)
                break
            if not version:
                return None, events
            return SecretValue(namespace, name, version, current, description), events

        return self._audited(body, failure)

    def _write_version(
        self,
        conn: Connection,
        namespace: str,
        name: str,
        encoded: Mapping[str, bytes],
        write_key: tuple[str, bytes],
        *,
        removed: builtins.set[str] | None = None,
        replace: bool = False,
        if_absent: bool = False,
        description: str | None = None,
        actor: str | None,
        touched: str,
        expect: int | None = None,
        audit_first: Iterable[AuditEvent] = (),
    ) -> tuple[int, list[AuditEvent]]:
        """The next version of ``namespace/name`` inside the caller's transaction.

        ``expect``: the current version the caller based its values on; if another writer
        has moved it by the time the row is locked, :class:`_VersionMoved` (row still locked).
        Returns the version and the audit events, already appended: ``audit_first``, then the
        write's own, whose place in the chain the new manifest records.
        """
        removed = removed or set()
        data_key_id, seed = write_key
        now = datetime.now(UTC)
        secret = repo.lock_secret(conn, namespace, name, description or "", now,
                                  absent=expect == 0)  # fmt: skip
        if expect is not None and secret.current_version != expect:
            raise _VersionMoved
        if if_absent and secret.current_version:
            raise AlreadyExists(f"{namespace}/{name} already exists")
        plain: dict[str, bytes] = {}
        previous = None
        if not secret.current_version:
            if expect != 0:  # (resolve has just asked, in this transaction)
                self.manifests.check_absent(conn, namespace, name)
        else:
            # What the new version builds on must be what the manifest says, or a removed row
            # would silently drop out of it (and a set-back version would come back).
            current_rows = repo.version_rows(conn, secret.id, secret.current_version)
            previous = self.manifests.open(conn, secret)
            self.manifests.match(previous, secret.current_version, current_rows)
            for row in [] if replace else current_rows:
                if row.key not in encoded and row.key not in removed:
                    plain[row.key] = self._decrypt(conn, secret, row)
            missing = removed - {row.key for row in current_rows}
            if missing and not replace:
                raise NotFound(f"{namespace}/{name} has no key {sorted(missing)[0]!r} to remove")
        plain.update(encoded)
        if not plain:
            raise ValidationError("a secret must keep at least one key; delete it instead")
        validate.secret_size(plain, limits=self.settings.limits)
        version = secret.current_version + 1
        rows = []
        for key, raw in plain.items():
            sealed = seal(seed, Identity(namespace, name, key, version, data_key_id), raw)
            rows.append(
                repo.NewVersion(
                    key, data_key_id, sealed.format_version, sealed.salt, sealed.nonce,
                    sealed.ciphertext,
                )
            )  # fmt: skip
        who = validate.printable(actor or self.settings.actor)[:255]
        event = self._event(
            "secret.set", Outcome.OK, actor=actor, namespace=namespace, name=name, key=touched,
            version=version,
        )  # fmt: skip
        placed = repo.append_audits(conn, [*audit_first, event], key=self.audit_key.current())
        manifest = self.manifests.for_version(
            secret, previous, version, rows, event=placed[-1],
            keep_versions=self.settings.keep_versions, write_key=write_key,
        )  # fmt: skip
        repo.add_version(
            conn, secret=secret, version=version, rows=rows, created_by=who, now=now,
            description=description, keep_versions=self.settings.keep_versions,
            manifest=manifest,
        )  # fmt: skip
        return version, placed

    def get(
        self,
        namespace: str,
        name: str,
        key: str | None = None,
        *,
        version: int | None = None,
        actor: str | None = None,
        action: str = "secret.get",
    ) -> SecretValue:
        """Decrypt the current (or a given) version, all keys or one."""

        def body(conn: Connection) -> tuple[SecretValue, AuditEvent]:
            self._address(namespace, name, key)
            found = self.manifests.read(conn, namespace, name, version)
            if found is None:
                raise NotFound(f"secret {namespace}/{name} not found")
            secret, rows, _manifest, live = found
            wanted = secret.current_version if version is None else version
            if live is None:
                if rows:
                    raise NotFound(f"version {wanted} of {namespace}/{name} was destroyed")
                raise NotFound(f"{namespace}/{name} has no version {version}")
            if key is not None:
                rows = [row for row in rows if row.key == key]
                if not rows:
                    raise NotFound(f"{namespace}/{name} has no key {key!r}")
            data = {row.key: values.decode(self._decrypt(conn, secret, row)) for row in rows}
            event = self._event(
                action,
                Outcome.OK,
                actor=actor,
                namespace=namespace,
                name=name,
                key=key or "",
                version=wanted,
            )
            return SecretValue(namespace, name, wanted, data, secret.description), event

        return self._audited(
            body,
            lambda exc: self._event(
                action,
                _outcome(exc),
                actor=actor,
                namespace=namespace,
                name=name,
                key=key or "",
                version=version,
                detail=str(exc),
            ),
            read_only=True,
        )

    def verify(
        self, namespace: str, name: str, key: str, candidate: Any, *, actor: str | None = None
    ) -> bool:
        """Constant-time comparison of ``candidate`` with the stored value (pgpm's verify)."""
        try:
            validate.depth(candidate, limit=self.settings.limits.max_json_depth)
            wanted = values.encode(candidate)
        except ValidationError:
            wanted = b""

        def body(conn: Connection) -> tuple[bool, AuditEvent]:
            self._address(namespace, name, key)
            found = self.manifests.read(conn, namespace, name, None)
            if found is None:
                raise NotFound(f"secret {namespace}/{name} not found")
            secret = found[0]
            rows = [row for row in found[1] if row.key == key]
            if not rows:
                raise NotFound(f"{namespace}/{name} has no key {key!r}")
            stored = self._decrypt(conn, secret, rows[0])
            match = hmac.compare_digest(stored, wanted)
            event = self._event(
                "secret.verify",
                Outcome.OK if match else Outcome.MISMATCH,
                actor=actor,
                namespace=namespace,
                name=name,
                key=key,
                version=secret.current_version,
            )
            return match, event

        return self._audited(
            body,
            lambda exc: self._event(
                "secret.verify",
                _outcome(exc),
                actor=actor,
                namespace=namespace,
                name=name,
                key=key,
                detail=str(exc),
            ),
            read_only=True,
        )

    def list(
        self, namespace: str | None = None, *, actor: str | None = None
    ) -> builtins.list[SecretInfo]:
        """Names, versions and key names; never a value."""

        def body(conn: Connection) -> tuple[builtins.list[SecretInfo], AuditEvent]:
            if namespace is not None:
                validate.namespace(namespace, limits=self.settings.limits, write=False)
            rows = repo.list_secrets(conn, namespace)
            keys = repo.keys_of_versions(conn, [row.id for row in rows])
            infos = [
                SecretInfo(
                    row.namespace,
                    row.name,
                    row.current_version,
                    tuple(keys.get(row.id, ())),
                    row.description,
                    row.updated_at,
                )
                for row in rows
            ]
            event = self._event(
                "secret.list",
                Outcome.OK,
                actor=actor,
                namespace=namespace or "",
                detail=f"{len(infos)} secrets",
            )
            return infos, event

        return self._audited(
            body,
            lambda exc: self._event(
                "secret.list",
                _outcome(exc),
                actor=actor,
                namespace=namespace or "",
                detail=str(exc),
            ),
            read_only=True,
        )

    def delete(self, namespace: str, name: str, *, actor: str | None = None) -> int:
        """Delete a secret and every version of it; returns the version it had."""

        def body(conn: Connection) -> tuple[int, AuditEvent]:
            self._address(namespace, name)
            secret = repo.find_secret(conn, namespace, name)
            if secret is None or secret.current_version == 0:
                return 0, self._removed(conn, namespace, name, actor)
            repo.delete_secret(conn, secret.id)
            event = self._event(
                "secret.delete",
                Outcome.OK,
                actor=actor,
                namespace=namespace,
                name=name,
                version=secret.current_version,
            )
            return secret.current_version, event

        return self._audited(
            body,
            lambda exc: self._event(
                "secret.delete",
                _outcome(exc),
                actor=actor,
                namespace=namespace,
                name=name,
                detail=str(exc),
            ),
        )

    def _removed(
        self, conn: Connection, namespace: str, name: str, actor: str | None
    ) -> AuditEvent:
        """``delete`` of a secret that is not there: not found, unless the audit chain says it
        exists, which only removing its rows behind the store's back does. Then the deletion is
        recorded, so that the name can be used again (reads and writes refuse it until then)."""
        try:
            self.manifests.check_absent(conn, namespace, name)
        except IntegrityError:
            return self._event(
                "secret.delete", Outcome.OK, actor=actor, namespace=namespace, name=name,
                detail="its rows had been removed from the database",
            )  # fmt: skip
        raise NotFound(f"secret {namespace}/{name} not found")

    def retire_previous(
        self, namespace: str, name: str, *, grace: timedelta, actor: str | None = None
    ) -> int:
        """Destroy versions older than the current one once it is ``grace`` old.

        This is ``rotation.keepPrevious``: clients still holding the previous value keep working
        for the grace period, after which the old ciphertext is erased.
        """

        def body(conn: Connection) -> tuple[int, AuditEvent | None]:
            self._address(namespace, name)
            secret = self._require(conn, namespace, name)
            if secret.current_version <= 1 or datetime.now(UTC) - _aware(secret.updated_at) < grace:
                return 0, None
            if conn.dialect.name != "sqlite":  # the manifest is rewritten from what is read now
                secret = self._require(conn, namespace, name, lock=True)
            manifest = self.manifests.open(conn, secret)
            if len(manifest.versions) == 1:  # nothing but the current version holds values
                return 0, None
            destroyed = repo.destroy_versions_before(conn, secret.id, secret.current_version)
            event = self._event(
                "secret.destroy", Outcome.OK, actor=actor, namespace=namespace, name=name,
                version=secret.current_version - 1,
                detail=f"versions before {secret.current_version} destroyed after {grace}",
            )  # fmt: skip
            placed = repo.append_audit(conn, event, key=self.audit_key.current())
            renewed = self.manifests.after_destroy(conn, secret, manifest, event=placed)
            repo.write_manifest(conn, secret.id, renewed, replaces=secret.manifest_mac)
            return destroyed, placed

        return self._audited(
            body,
            lambda exc: self._event(
                "secret.destroy",
                _outcome(exc),
                actor=actor,
                namespace=namespace,
                name=name,
                detail=str(exc),
            ),
        )

    def changed_since(self, since: datetime) -> builtins.list[tuple[str, str, int, datetime]]:
        """(namespace, name, version, updated) of secrets written after ``since``.

        Metadata only, for the operator's store watch; not audited, as it reveals no value.
        """
        with transaction(self.engine) as conn:
            return repo.changed_since(conn, since)

    def history(self, namespace: str, name: str) -> builtins.list[tuple[int, str, str, datetime]]:
        """(version, state, created by, created at), newest first; metadata only."""
        self._address(namespace, name)
        with transaction(self.engine) as conn:
            secret = self._require(conn, namespace, name)
            return repo.version_history(conn, secret.id)

    # -- audit ------------------------------------------------------------------------------

    def audit_verify(self) -> ChainReport:
        """Check every link and the head with the audit key (format: :mod:`strongroom.audit`).

        Raises :class:`IntegrityError` when the audit key row itself is unusable (two of them,
        or one naming a KEK outside the configured set), and a keyring error when the KEK
        cannot unwrap it.
        """
        stored = self.audit_key.stored()
        with self.engine.connect() as conn:
            head = repo.audit_chain_head(conn)
            if head is None:
                return ChainReport(False, 0, 1, "the chain head row is missing")
            key, first_seq = stored if stored is not None else (None, 1)
            report = verify_chain(repo.iter_audit(conn), head=head, key=key, keyed_from=first_seq)
            if report.ok and report.count == 0 and repo.has_data_keys(conn):
                # Creating a data key is audited, so it always leaves an event behind.
                return ChainReport(
                    False, 0, 1, "the log is empty but the store holds data keys: it was emptied"
                )
            return report

    def audit_checkpoint(self) -> Checkpoint | None:
        """The chain's current head as a checkpoint (:mod:`strongroom.audit`), to publish
        outside the store; None while the chain has no audit key (nothing keyed to publish).

        Raises :class:`IntegrityError` when the head row does not authenticate: a rewritten
        head is never published.
        """
        stored = self.audit_key.stored()
        if stored is None:
            return None
        key = stored[0]
        with self.engine.connect() as conn:
            head = repo.audit_chain_head(conn)
        if head is None or not hmac.compare_digest(head.mac, key.head(head.seq, head.hash)):
            raise IntegrityError("the audit chain head does not authenticate")
        return checkpoint_of(key, head)

    def audit_check_checkpoint(self, checkpoint: Checkpoint) -> str | None:
        """Why this store does not reach ``checkpoint``, in one line; None when it does.

        Reads the head and one event (cheap at any log size); :meth:`audit_verify` walks the
        whole chain. Neither moves the checkpoint.
        """
        stored = self.audit_key.stored()
        with self.engine.connect() as conn:
            head = repo.audit_chain_head(conn)
            link = repo.audit_link_at(conn, checkpoint.seq)
        if head is None:
            return "the store's audit chain head row is missing"
        key = None if stored is None else stored[0]
        problem = checkpoint_problem(checkpoint, head=head, link=link, key=key)
        if problem is None and key is not None and not hmac.compare_digest(
            head.mac, key.head(head.seq, head.hash)
        ):
            problem = (
                "the store's audit chain head does not authenticate: events after it were "
                "deleted or the head was rewritten"
            )
        return problem

    def audit_tail(self, count: int = 20) -> builtins.list[AuditEvent]:
        with self.engine.connect() as conn:
            return repo.audit_tail(conn, count)

    def audit_recorded(self, action: str, namespace: str, name: str, *,
                       since: datetime) -> AuditEvent | None:  # fmt: skip
        """The newest ``action`` event on ``namespace``/``name`` since ``since``, if one is among
        the last 10 000 events: whether something done once was recorded already."""
        with self.engine.connect() as conn:
            return repo.audit_find_recent(conn, action=action, namespace=namespace, name=name,
                                          since=since, window=10_000)  # fmt: skip

    def audit_events(self) -> Iterator[AuditEvent]:
        with self.engine.connect() as conn:
            yield from repo.iter_audit(conn)

    def record(self, event: AuditEvent) -> None:
        """Append an event for an action taken outside the store (the operator's syncs)."""
        if event.action in SECRET_WRITES:  # those are the store's own: manifests count them
            raise ValidationError(f"{event.action} events are written by the store itself")
        key = self._chain_key()
        try:
            self._in_transaction(lambda conn: repo.append_audit(conn, event, key=key))
        except StoreError as exc:
            raise AuditError(f"could not write the audit event: {exc}") from None

    # -- internals --------------------------------------------------------------------------

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


def _preload(conn: Connection, data_key_id: str, room: Strongroom) -> repo.DataKeyRow | None:
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
    return Outcome.ERROR
