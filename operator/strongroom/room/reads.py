"""Reading secrets: values (``get``), constant-time comparison (``verify``), and metadata
(``list``, ``history``, ``changed_since``), each checked against the secret's manifest where a
value is read, and audited."""

from __future__ import annotations

import builtins
import functools
import hmac
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from strongroom import validate, values
from strongroom.audit import (
    AuditEvent,
    Outcome,
)
from strongroom.errors import (
    NotFound,
    ValidationError,
)
from strongroom.room.calls import AuditedCalls, _outcome
from strongroom.room.records import SecretInfo, SecretValue
from strongroom.store import repository as repo
from strongroom.store import transaction


class SecretReads(AuditedCalls):
    """The reading calls of :class:`strongroom.api.Strongroom`."""

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
            functools.partial(
                self._failed, "secret.verify", actor=actor, namespace=namespace, name=name, key=key
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
