"""``data[].database``: a PostgreSQL role issued for the ManagedSecret, renewed before it expires.

What the operator does for a ``{engine, role, ttl, strategy}`` item at every sync (the SQL is in
:mod:`strongroom.dbengine`, the README shows it):

1. Read the ``DatabaseEngine`` (cluster-scoped) and check that this namespace is one its
   ``namespaceSelector`` selects (``Ready=False EngineNotAllowed`` otherwise: a tenant cannot
   point at an engine meant for another); read its admin credentials from the Secret it names in
   the operator's own namespace (``POD_NAMESPACE``).
2. List the roles tagged for this item on the server. The credential is **due** when there is
   none stored, the stored role is gone from the server, two thirds of the TTL have passed
   since it was issued (the tag says when), or an emergency rotation asks for it.
3. When due, issue the next one: ``rotate`` creates a new role from the template (a new name each
   time); ``alternate`` keeps two fixed roles (``…_a``, ``…_b``) and gives the one *not* in use
   a new password and expiry (AWS Secrets Manager's alternating users: clients of the current
   one never see it change). The caller stores username, password and DSN as a new version
   and syncs the Secret as for any change (rollout restarts included).
4. After the Secret is written (:meth:`Databases.settle`): a ``rotate`` role older than the
   current one is dropped once ``rotation.keepPrevious`` has passed since the current one was
   issued (without keepPrevious: once it has expired); a role issued *after* the current one was
   never stored (an operator killed between ``CREATE ROLE`` and the store write) and is
   dropped at once. The start-up pass (:meth:`Databases.reconcile_orphans`) applies the same
   rule to every tagged role, and drops those whose ManagedSecret's store entry is gone.

A renewal that fails is ``Ready=False RenewalFailed`` with the expiry in the message, a third of
the TTL before the credential expires; the Secret keeps the credential that still works.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import logging
import os
import secrets
import signal
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client import CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from strongroom.api import Strongroom
from strongroom.audit import AuditEvent, Outcome
from strongroom.dbengine import (
    EngineConnection,
    EngineError,
    EngineInvalidError,
    EngineSpec,
    EngineUnreachableError,
    IssuedRole,
    TaggedRole,
    owner_hash,
    role_name,
)
from strongroom.dbitem import DatabaseItem
from strongroom.errors import NotFound, StrongroomError
from strongroom.kubewrites import read_json
from strongroom.metrics import CREDENTIAL_EXPIRY
from strongroom.spec import DataItem

__all__ = [
    "DATABASES_OFF",
    "ENGINE_KIND",
    "ENGINE_PLURAL",
    "Databases",
    "Issue",
    "database_step",
    "next_time",
    "releases_roles",
    "selects",
]

log = logging.getLogger("strongroom.database")

GROUP = "strongroom.io"
VERSION = "v1alpha1"
ENGINE_KIND = "DatabaseEngine"
ENGINE_PLURAL = "databaseengines"
PASSWORD_LENGTH = 40
DROP_ACTION = "database.drop"
# Fault injection for one test (tests/integration/test_database_credentials.py): the process
# kills itself (SIGKILL) between CREATE ROLE and the store write, the window the start-up
# orphan pass exists for. Nothing else reads it.
FAULT_ENV = "STRONGROOM_TEST_FAULT"
ISSUE_ACTION = "database.issue"


DATABASES_OFF = "DatabaseEnginesOff"


class Reason:
    ENGINE_NOT_FOUND = "EngineNotFound"
    ENGINE_INVALID = "EngineInvalid"
    ENGINE_NOT_ALLOWED = "EngineNotAllowed"
    ENGINE_UNAVAILABLE = "EngineUnavailable"
    RENEWAL_FAILED = "RenewalFailed"


@dataclasses.dataclass
class Issue:
    """What the database items of one sync produced (nothing secret but ``values``)."""

    values: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    events: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    issued: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> ISO time
    next_due: datetime | None = None
    failure: tuple[str, str] | None = None  # (reason, message)
    permanent: bool = False

    def apply(self, stored: dict[str, Any], generated: dict[str, str],
              events: list[tuple[str, str, str]]) -> None:  # fmt: skip
        """Once ``values`` are stored: what the sync goes on with."""
        stored.update(self.values)
        generated.update(self.issued)
        events.extend(self.events)


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes' label selector semantics (matchLabels and matchExpressions, ANDed); an
    unknown operator selects nothing (deny by default)."""
    checks: dict[str, Callable[[Any, list[Any]], bool]] = {
        "In": lambda key, values: labels.get(key) in values,
        "NotIn": lambda key, values: labels.get(key) not in values,
        "Exists": lambda key, _values: key in labels,
        "DoesNotExist": lambda key, _values: key not in labels,
    }
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or ():
        check = checks.get(expr.get("operator"))
        if check is None or not check(expr.get("key"), list(expr.get("values") or ())):
            return False
    return True


def database_step(databases: Databases | None, namespace: str, name: str,
                  items: Iterable[DataItem], stored: Mapping[str, Any], *, now: datetime,
                  force: Iterable[str] = (), revoke: bool = False) -> Issue | None:  # fmt: skip
    """The database part of a sync: None when the spec has no database item; an Issue with a
    failure when this operator runs without engines (STRONGROOM_DATABASE_ENGINES)."""
    wanted = [item for item in items if item.database is not None]
    if not wanted:
        return None
    if databases is None:
        return Issue(failure=(DATABASES_OFF, "data[].database: this operator runs without "
                              "database engines (STRONGROOM_DATABASE_ENGINES)"), permanent=True)  # fmt: skip
    return databases.resolve(namespace, name, wanted, stored, now=now, force=force, revoke=revoke)


def releases_roles(spec: Mapping[str, Any]) -> bool:
    """Whether deleting a ManagedSecret of this spec drops its database roles: it has a
    database item and its deletionPolicy is Delete (Retain keeps a Secret that still works)."""
    target = spec.get("target") if isinstance(spec.get("target"), Mapping) else {}
    policy = (target or {}).get("deletionPolicy") or "Delete"
    return policy == "Delete" and any(isinstance(d, Mapping) and d.get("database") is not None
                                      for d in spec.get("data") or ())  # fmt: skip


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _password() -> str:
    """Letters and digits only: a DSN, a shell and a YAML file all take it unquoted."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(PASSWORD_LENGTH))


def next_time(now: datetime, *candidates: datetime | None) -> datetime | None:
    """The earliest of ``candidates``, no sooner than a second from now (the renewal may be
    sooner than the refresh floor, :data:`strongroom.policy.MIN_RESCHEDULE`, only in tests
    with a TTL under the floor)."""
    found = [c for c in candidates if c is not None]
    return max(min(found), now + timedelta(seconds=1)) if found else None


class Databases:
    """The database items of every ManagedSecret: issue, renew, drop. One per operator."""

    def __init__(self, room: Strongroom, core: CoreV1Api, custom: CustomObjectsApi, *,
                 actor: str, operator_namespace: str | None = None) -> None:  # fmt: skip
        self.room = room
        self.core = core
        self.custom = custom
        self.actor = actor
        self.operator_namespace = operator_namespace or os.environ.get("POD_NAMESPACE") or ""
        self._reported: dict[str, tuple[int | None, str]] = {}

    # -- engines ----------------------------------------------------------------------------

    def engine(self, name: str) -> EngineSpec:
        try:
            body = read_json(self.custom.get_cluster_custom_object(
                GROUP, VERSION, ENGINE_PLURAL, name, _preload_content=False))  # fmt: skip
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(f"{ENGINE_KIND} {name} does not exist") from None
            raise
        return EngineSpec.parse(name, body.get("spec") or {})

    def _secret(self, name: str) -> dict[str, str]:
        if not self.operator_namespace:
            raise EngineInvalidError("the operator's namespace is unknown (set POD_NAMESPACE)")
        try:
            body = read_json(self.core.read_namespaced_secret(
                name, self.operator_namespace, _preload_content=False))  # fmt: skip
        except ApiException as exc:
            if exc.status == 404:
                raise EngineInvalidError(f"Secret {self.operator_namespace}/{name} does not "
                                         "exist") from None  # fmt: skip
            raise
        return {k: base64.b64decode(v).decode() for k, v in (body.get("data") or {}).items()}

    @contextlib.contextmanager
    def connect(self, spec: EngineSpec) -> Iterator[EngineConnection]:
        """An admin session, with the credentials (keys ``username``, ``password``) and CA
        (key ``ca.crt``) read from the operator's namespace at every connection."""
        creds = self._secret(spec.credentials_secret)
        if not creds.get("username") or "password" not in creds:
            raise EngineInvalidError(f"Secret {spec.credentials_secret} needs the keys username "
                                     "and password")  # fmt: skip
        ca = self._secret(spec.ca_secret).get("ca.crt") if spec.ca_secret else None
        try:
            with EngineConnection.open(spec, user=creds["username"], password=creds["password"],
                                       ca_pem=ca) as conn:  # fmt: skip
                yield conn
        except EngineUnreachableError as exc:  # raised by open() only: the session never began
            self.report(spec.name, live=None, problem=str(exc))
            raise

    def report(self, engine: str, *, live: int | None, problem: str = "") -> None:
        """The engine's status: Connected, and how many roles the operator issued live there.
        Written only when it changes (a renewal does not cost a status write each time)."""
        state = (live, problem)
        if self._reported.get(engine) == state:
            return
        now = _iso(datetime.now(UTC))
        status: dict[str, Any] = {"conditions": [{
            "type": "Connected", "status": "False" if problem else "True",
            "reason": "ConnectFailed" if problem else "Connected",
            "message": problem[:240] or "the operator's admin session works",
            "lastTransitionTime": now}]}  # fmt: skip
        if live is not None:
            status["liveRoles"] = live
        try:
            self.custom.patch_cluster_custom_object_status(
                GROUP, VERSION, ENGINE_PLURAL, engine, {"status": status}, _preload_content=False)
            self._reported[engine] = state
        except ApiException as exc:  # a status is a report: never a reason to fail a sync
            log.warning("%s %s: status not written (%s)", ENGINE_KIND, engine, exc.status)

    def allowed(self, spec: EngineSpec, namespace: str) -> bool:
        body = read_json(self.core.read_namespace(namespace, _preload_content=False))
        return selects(spec.namespace_selector, (body.get("metadata") or {}).get("labels") or {})

    # -- a sync -----------------------------------------------------------------------------

    def resolve(self, namespace: str, name: str, items: Iterable[DataItem],
                stored: Mapping[str, Any], *, now: datetime, force: Iterable[str] = (),
                revoke: bool = False) -> Issue:  # fmt: skip
        """Issue what is due for each database item (``force``: these keys now, an emergency)."""
        issue = Issue()
        forced = set(force)
        for item in items:
            if item.database is None:
                continue
            try:
                self._resolve_one(issue, (namespace, name, item.key), item.database, stored,
                                  now=now, force=item.key in forced, revoke=revoke)  # fmt: skip
            except NotFound as exc:
                issue.failure = (Reason.ENGINE_NOT_FOUND, str(exc))
            except EngineInvalidError as exc:
                issue.failure = (Reason.ENGINE_INVALID, f"{item.database.engine}: {exc}")
            except EngineError as exc:
                username = stored.get(item.database.username_key)
                reason = Reason.RENEWAL_FAILED if username else Reason.ENGINE_UNAVAILABLE
                issue.failure = (reason, f"data[{item.key}]: {exc}")
            if issue.failure is not None:
                return issue
        return issue

    def _resolve_one(self, issue: Issue, owner: tuple[str, str, str], db: DatabaseItem,
                     stored: Mapping[str, Any], *, now: datetime, force: bool,
                     revoke: bool) -> None:  # fmt: skip
        namespace, name, key = owner
        spec = self.engine(db.engine)
        if db.role not in spec.roles:
            raise EngineInvalidError(f"has no role template {db.role}")
        if not self.allowed(spec, namespace):
            issue.failure = (Reason.ENGINE_NOT_ALLOWED,
                             f"data[{key}]: {ENGINE_KIND} {db.engine} does not serve namespace "
                             f"{namespace} (its namespaceSelector)")  # fmt: skip
            issue.permanent = True
            return
        current = stored.get(db.username_key)
        with self.connect(spec) as conn:
            mine = self._owned(conn, spec, owner)
            held = mine.get(current) if isinstance(current, str) else None
            if held is not None and not force:
                due_at = held.issued + db.renew_after
                if now < due_at:
                    issue.next_due = _earliest(issue.next_due, due_at)
                    self._expiry_metric(owner, held.valid_until)
                    return
            new = self._issue(conn, spec, db, owner, current, now=now)
            if os.environ.get(FAULT_ENV) == "after-create-role":  # tests only: see FAULT_ENV
                os.kill(os.getpid(), signal.SIGKILL)
            if revoke and isinstance(current, str) and current != new.username:
                conn.drop(current, terminate=True)
                self._audit(DROP_ACTION, namespace, name, f"role {current} revoked at once")
        issue.values.update({key: spec.dsn(new.username, new.password),
                             db.username_key: new.username, db.password_key: new.password})  # fmt: skip
        issue.issued[key] = _iso(now)
        issue.next_due = _earliest(issue.next_due, now + db.renew_after)
        self._expiry_metric(owner, new.expiry)
        issue.events.append(("Normal", "CredentialIssued",
                             f"database role {new.username} issued for {key}, valid until "
                             f"{_iso(new.expiry)}"))  # fmt: skip
        self._audit(ISSUE_ACTION, namespace, name,
                    f"role {new.username} ({db.strategy}) on {spec.name} until {_iso(new.expiry)}")

    def _issue(self, conn: EngineConnection, spec: EngineSpec, db: DatabaseItem,
               owner: tuple[str, str, str], current: object, *, now: datetime) -> IssuedRole:  # fmt: skip
        expiry = now + db.ttl
        template = spec.roles[db.role]
        if db.strategy == "alternate":
            pair = [role_name(spec.prefix, *owner, suffix=s) for s in ("a", "b")]
            username = pair[1] if current == pair[0] else pair[0]
            if conn.exists(username):
                return conn.set_password(username=username, password=_password(), expiry=expiry,
                                         owner=owner, now=now)  # fmt: skip
        else:
            username = role_name(spec.prefix, *owner)
        return conn.create(template, username=username, password=_password(), expiry=expiry,
                           owner=owner, now=now)  # fmt: skip

    def _owned(self, conn: EngineConnection, spec: EngineSpec,
               owner: tuple[str, str, str]) -> dict[str, TaggedRole]:  # fmt: skip
        mark = f"{spec.prefix}{owner_hash(*owner)}_"
        tagged = conn.tagged()
        self.report(spec.name, live=len(tagged))
        return {r.role: r for r in tagged
                if r.role.startswith(mark) and (r.namespace, r.name, r.key) == owner}  # fmt: skip

    def settle(self, namespace: str, name: str, items: Iterable[DataItem],
               stored: Mapping[str, Any], *, keep_previous: timedelta | None,
               now: datetime) -> datetime | None:  # fmt: skip
        """Drop the roles no longer needed; returns when the next one falls due (if any)."""
        next_drop: datetime | None = None
        for item in items:
            db = item.database
            if db is None or db.strategy != "rotate":
                continue
            try:
                spec = self.engine(db.engine)
                with self.connect(spec) as conn:
                    mine = self._owned(conn, spec, (namespace, name, item.key))
                    current = mine.get(str(stored.get(db.username_key)))
                    for role in mine.values():
                        if current is not None and role.role == current.role:
                            continue
                        when = _drop_time(role, current, keep_previous)
                        if when <= now:
                            conn.drop(role.role)
                            self._audit(DROP_ACTION, namespace, name,
                                        f"role {role.role} dropped ({_why(role, current)})")  # fmt: skip
                        else:
                            next_drop = _earliest(next_drop, when)
            except (StrongroomError, ApiException) as exc:
                log.warning("%s/%s: cannot drop previous database roles yet: %s", namespace, name,
                            exc)  # fmt: skip
        return next_drop

    def release(self, namespace: str, name: str) -> int:
        """Drop every role issued for ``namespace/name`` on every engine (it is gone)."""
        dropped = 0
        for spec in self._engines():
            with self.connect(spec) as conn:
                for role in conn.tagged():
                    if (role.namespace, role.name) == (namespace, name):
                        conn.drop(role.role, terminate=True)
                        self._audit(DROP_ACTION, namespace, name,
                                    f"role {role.role} dropped: its ManagedSecret is gone")  # fmt: skip
                        with contextlib.suppress(KeyError):  # its expiry is no one's now
                            CREDENTIAL_EXPIRY.remove(namespace, name, role.key)
                        dropped += 1
        return dropped

    def reconcile_orphans(self) -> list[str]:
        """At start: drop the tagged roles the store does not know, audited; returns them.

        Known: the role a ManagedSecret's current version names, and older ones of the same
        item (they wait for keepPrevious, :meth:`settle`). Unknown: one issued after the
        stored role (never stored: the operator died in between), or one whose store entry is
        gone or names no role of that item.
        """
        dropped: list[str] = []
        for spec in self._engines():
            try:
                with self.connect(spec) as conn:
                    by_owner: dict[tuple[str, str, str], list[TaggedRole]] = {}
                    tagged = conn.tagged()
                    for role in tagged:
                        by_owner.setdefault((role.namespace, role.name, role.key), []).append(role)
                    for (namespace, name, _key), roles in by_owner.items():
                        values = self._stored_values(namespace, name)
                        current = next((r for r in roles if r.role in values), None)
                        for role in roles:
                            if current is not None and not role.issued > current.issued:
                                continue
                            conn.drop(role.role, terminate=True)
                            self._audit(DROP_ACTION, namespace, name,
                                        f"orphan role {role.role} dropped at start (the store "
                                        "does not know it)", outcome=Outcome.OK)  # fmt: skip
                            dropped.append(role.role)
                    self.report(spec.name, live=len([r for r in tagged if r.role not in dropped]))
            except (StrongroomError, ApiException) as exc:
                log.warning("engine %s: orphan roles not reconciled: %s", spec.name, exc)
        return dropped

    def _stored_values(self, namespace: str, name: str) -> set[str]:
        try:
            found = self.room.get(namespace, name, actor=self.actor, action="operator.read")
        except NotFound:
            return set()
        return {v for v in found.data.values() if isinstance(v, str)}

    def _engines(self) -> list[EngineSpec]:
        listing = read_json(self.custom.list_cluster_custom_object(
            GROUP, VERSION, ENGINE_PLURAL, _preload_content=False))  # fmt: skip
        engines = []
        for body in listing.get("items") or ():
            try:
                engines.append(EngineSpec.parse(body["metadata"]["name"], body.get("spec") or {}))
            except EngineInvalidError as exc:
                log.warning("%s %s is invalid: %s", ENGINE_KIND, body["metadata"]["name"], exc)
        return engines

    def _expiry_metric(self, owner: tuple[str, str, str], expiry: datetime | None) -> None:
        if expiry is not None:
            CREDENTIAL_EXPIRY.labels(*owner).set(expiry.timestamp())

    def _audit(self, action: str, namespace: str, name: str, detail: str, *,
               outcome: str = Outcome.OK) -> None:  # fmt: skip
        self.room.record(AuditEvent(time=datetime.now(UTC), actor=self.actor, action=action,
                                    outcome=outcome, namespace=namespace, name=name,
                                    version=None, detail=detail[:240]))  # fmt: skip


def _drop_time(role: TaggedRole, current: TaggedRole | None,
               keep_previous: timedelta | None) -> datetime:  # fmt: skip
    """When a role that is not the current one may go."""
    if current is None or role.issued > current.issued:
        return role.issued  # never stored (or nothing is): at once
    if keep_previous is not None:
        return current.issued + keep_previous
    return role.valid_until or role.issued


def _why(role: TaggedRole, current: TaggedRole | None) -> str:
    if current is None or role.issued > current.issued:
        return "never stored"
    return "replaced, grace window over"


def _earliest(first: datetime | None, second: datetime | None) -> datetime | None:
    if first is None:
        return second
    if second is None:
        return first
    return min(first, second)
