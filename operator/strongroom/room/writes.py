"""Writing secrets: new versions (``set``, the operator's ``resolve``), deletion, retiring
previous versions, and handing a secret to a namespace again (``rebind``).

Each new version is sealed under the current data key, recorded in the audit chain and in the
secret's manifest in one transaction (:mod:`strongroom.manifest`); a version is never built on
rows the manifest does not vouch for.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from strongroom import bindings, validate, values
from strongroom.audit import (
    AuditEvent,
    Outcome,
)
from strongroom.crypto import Identity, seal
from strongroom.errors import (
    AlreadyExists,
    IntegrityError,
    NotFound,
    ValidationError,
)
from strongroom.room.calls import AuditedCalls, _aware, _outcome
from strongroom.room.records import SecretValue
from strongroom.store import repository as repo


class _VersionMoved(Exception):  # noqa: N818 - a signal inside resolve(), never raised out of it
    """Another writer committed a version between a read and the write's row lock."""


class SecretWrites(AuditedCalls):
    """The writing calls of :class:`strongroom.api.Strongroom`."""

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
        namespace_uid: str | None = None,
        detail: str = "",
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
        and nothing was produced. ``namespace_uid``: the UID of the reading ManagedSecret's
        namespace; values bound to another one are refused, unbound ones are bound to it
        (:mod:`strongroom.bindings`). ``detail``: for the read's audit event (for whom).
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
                bound: list[AuditEvent] = []
                if found is not None:
                    secret, rows = found[0], found[1]
                    if bindings.needs_binding(secret, namespace_uid):
                        assert namespace_uid is not None  # noqa: S101 - needs_binding says so
                        repo.set_namespace_uid(conn, secret.id, namespace_uid)
                        bound.append(self._event(
                            bindings.BIND_ACTION, Outcome.OK, actor=actor, namespace=namespace,
                            name=name, detail=bindings.bound_detail(namespace_uid)))  # fmt: skip
                    seen = version = secret.current_version
                    description = secret.description
                    current = {row.key: values.decode(self._decrypt(conn, secret, row))
                               for row in rows}  # fmt: skip
                events = [
                    self._event(action, Outcome.OK if version else Outcome.NOT_FOUND, actor=actor,
                                namespace=namespace, name=name, version=version or None,
                                detail=detail),
                    *bound,
                ]  # fmt: skip
                new = dict(produce(current))
                if not new:
                    break
                encoded = validate.write(namespace, name, new, (), limits=limits)
                try:
                    version, events = self._write_version(
                        conn, namespace, name, encoded, write_key, actor=actor,
                        touched=",".join(sorted(encoded)), expect=None if last else seen,
                        audit_first=events, namespace_uid=namespace_uid,
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
        namespace_uid: str | None = None,
    ) -> tuple[int, list[AuditEvent]]:
        """The next version of ``namespace/name`` inside the caller's transaction.

        ``expect``: the current version the caller based its values on; if another writer
        has moved it by the time the row is locked, :class:`_VersionMoved` (row still locked).
        Returns the version and the audit events, already appended: ``audit_first``, then the
        write's own, whose place in the chain the new manifest records. ``namespace_uid``: as
        for :meth:`resolve`; a secret created here starts bound to it.
        """
        removed = removed or set()
        data_key_id, seed = write_key
        now = datetime.now(UTC)
        secret = repo.lock_secret(conn, namespace, name, description or "", now,
                                  absent=expect == 0, namespace_uid=namespace_uid)  # fmt: skip
        if expect is not None and secret.current_version != expect:
            raise _VersionMoved
        detail = ""  # the set event of a secret bound here says to which namespace
        if bindings.needs_binding(secret, namespace_uid):
            assert namespace_uid is not None  # noqa: S101 - needs_binding says so
            repo.set_namespace_uid(conn, secret.id, namespace_uid)
            detail = bindings.bound_detail(namespace_uid)
        elif namespace_uid is not None and not secret.current_version:
            detail = bindings.bound_detail(namespace_uid)  # lock_secret created it bound
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
            version=version, detail=detail,
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
            functools.partial(
                self._failed, "secret.delete", actor=actor, namespace=namespace, name=name
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
            functools.partial(
                self._failed, "secret.destroy", actor=actor, namespace=namespace, name=name
            ),
        )

    def rebind(self, namespace: str, name: str, *, actor: str | None = None) -> str | None:
        """Hand ``namespace/name`` to the namespace of that name whose ManagedSecret syncs it
        next (:mod:`strongroom.bindings`); returns the namespace UID it was bound to, if any.

        An administrator's decision after a namespace was deleted and created again: audited
        with the old UID, and ``updated_at`` moves so that the operator syncs it within seconds.
        """

        def body(conn: Connection) -> tuple[str | None, AuditEvent]:
            self._address(namespace, name)
            secret = self._require(conn, namespace, name, lock=True)
            repo.set_namespace_uid(conn, secret.id, None, now=datetime.now(UTC))
            was = secret.namespace_uid
            event = self._event(
                bindings.REBIND_ACTION, Outcome.OK, actor=actor, namespace=namespace, name=name,
                detail=f"was bound to namespace uid {was}" if was else "was not bound",
            )  # fmt: skip
            return was, event

        return self._audited(
            body,
            lambda exc: self._event(bindings.REBIND_ACTION, _outcome(exc), actor=actor,
                                    namespace=namespace, name=name, detail=str(exc)),
        )  # fmt: skip
