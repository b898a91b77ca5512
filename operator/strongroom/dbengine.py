"""A PostgreSQL server the operator issues short-lived roles on (a ``DatabaseEngine``).

Why a module of its own: it is the only place that speaks SQL to an application database, so
the rules that keep a tenant's input out of that SQL are in one place:

- **Role templates** are the engine owner's SQL (a cluster administrator's, the CRD being
  cluster-scoped). Their placeholders are the only holes: ``{{name}}`` becomes an identifier and
  ``{{password}}`` / ``{{expiry}}`` literals, each quoted by psycopg (:mod:`psycopg.sql`), never
  pasted. A placeholder written inside quotes in the template (``"{{name}}"``,
  ``'{{password}}'``) has those quotes replaced by the driver's quoting; any other placeholder,
  or one in the wrong kind of quotes, makes the template invalid.
- **Names and passwords are the operator's**: a role is named ``<prefix><owner hash>_<random>``
  (``_a``/``_b`` for the alternating pair), so no tenant string reaches an identifier.
- **The password never reaches the server in clear**: ``{{password}}`` is the SCRAM-SHA-256
  verifier of the generated password (RFC 5802/7677, as ``libpq``'s ``PQencryptPasswordConn``
  builds it), which PostgreSQL stores as given: a statement log or ``pg_stat_activity`` shows
  no usable password.

Each role the operator creates carries a comment (``COMMENT ON ROLE``) naming its owner, so
that a start-up pass can find roles the store does not know (an operator killed between
``CREATE ROLE`` and the store write) and drop them. The comment is JSON::

    {"strongroom": 1, "namespace": "...", "name": "...", "key": "...", "issued": "<ISO-8601>"}
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from strongroom.errors import StrongroomError

__all__ = [
    "DEFAULT_PREFIX", "PLACEHOLDERS", "EngineError", "EngineInvalidError", "EngineSpec",
    "EngineUnreachableError",
    "IssuedRole", "RoleTemplate", "TaggedRole", "compose", "role_name", "scram_verifier",
]  # fmt: skip

DEFAULT_PREFIX = "strongroom_"
PLACEHOLDERS = ("name", "password", "expiry")
MAX_STATEMENTS = 32
MAX_STATEMENT_LENGTH = 4096
SCRAM_ITERATIONS = 4096
CONNECT_TIMEOUT = 5
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PREFIX = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_HOST = re.compile(r"^[A-Za-z0-9.:\-\[\]]{1,253}$")
# A placeholder, with the quotes written around it (if any) captured to be replaced.
_HOLE = re.compile(r"""(?P<open>["']?)\{\{\s*(?P<name>[A-Za-z_]+)\s*\}\}(?P<close>["']?)""")
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class EngineError(StrongroomError):
    """The engine's server refused or did not answer; the message carries no password."""


class EngineUnreachableError(EngineError):
    """No admin session: the server did not answer, or refused the admin's login."""


class EngineInvalidError(StrongroomError):
    """A DatabaseEngine's spec cannot be used (the message names the field)."""


@dataclasses.dataclass(frozen=True)
class RoleTemplate:
    """A named set of statements run to create a role (one transaction)."""

    name: str
    creation: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class EngineSpec:
    """A ``DatabaseEngine`` as the operator reads it (checked again: the CRD may be older)."""

    name: str
    host: str
    port: int
    database: str
    sslmode: str
    credentials_secret: str
    ca_secret: str | None
    namespace_selector: Mapping[str, Any]
    roles: Mapping[str, RoleTemplate]
    prefix: str = DEFAULT_PREFIX

    @classmethod
    def parse(cls, name: str, spec: Mapping[str, Any]) -> EngineSpec:
        conn = spec.get("connection")
        if not isinstance(conn, Mapping):
            raise EngineInvalidError("spec.connection is required")
        host, database = conn.get("host"), conn.get("database") or "postgres"
        if not isinstance(host, str) or not _HOST.match(host):
            raise EngineInvalidError("spec.connection.host must be a host name or address")
        port = conn.get("port", 5432)
        if not isinstance(port, int) or not 0 < port < 65536:
            raise EngineInvalidError("spec.connection.port must be a port number")
        if not isinstance(database, str) or not 0 < len(database) <= 63:
            raise EngineInvalidError("spec.connection.database must be a database name")
        sslmode = conn.get("sslmode") or "verify-full"
        if sslmode not in _SSLMODES:
            raise EngineInvalidError(f"spec.connection.sslmode must be one of {', '.join(_SSLMODES)}")
        secret = conn.get("credentialsSecret")
        ca = conn.get("caSecret")
        if not isinstance(secret, str) or not _NAME.match(secret):
            raise EngineInvalidError("spec.connection.credentialsSecret must name a Secret")
        if ca is not None and (not isinstance(ca, str) or not _NAME.match(ca)):
            raise EngineInvalidError("spec.connection.caSecret must name a Secret")
        prefix = spec.get("rolePrefix") or DEFAULT_PREFIX
        if not isinstance(prefix, str) or not _PREFIX.match(prefix):
            raise EngineInvalidError("spec.rolePrefix: a lower-case letter, then up to 31 of "
                                     "a-z, 0-9 and _")  # fmt: skip
        selector = spec.get("namespaceSelector")
        if selector is not None and not isinstance(selector, Mapping):
            raise EngineInvalidError("spec.namespaceSelector must be a label selector")
        roles: dict[str, RoleTemplate] = {}
        for raw in spec.get("roles") or ():
            template = _template(raw)
            if template.name in roles:
                raise EngineInvalidError(f"spec.roles: {template.name} is given twice")
            roles[template.name] = template
        if not roles:
            raise EngineInvalidError("spec.roles needs at least one role template")
        return cls(name=name, host=host, port=port, database=database, sslmode=sslmode,
                   credentials_secret=secret, ca_secret=ca, namespace_selector=selector or {},
                   roles=roles, prefix=prefix)  # fmt: skip

    def dsn(self, username: str, password: str) -> str:
        """The application's connection URL (user and password percent-encoded)."""
        from urllib.parse import quote

        host = f"[{self.host}]" if ":" in self.host else self.host
        return (f"postgresql://{quote(username, safe='')}:{quote(password, safe='')}@{host}:"
                f"{self.port}/{quote(self.database, safe='')}?sslmode={self.sslmode}")  # fmt: skip


def _template(raw: object) -> RoleTemplate:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
        raise EngineInvalidError("spec.roles[] needs a name")
    name = raw["name"]
    if not _NAME.match(name) or len(name) > 63:
        raise EngineInvalidError("spec.roles[].name must be a DNS label")
    statements = raw.get("creation")
    if (not isinstance(statements, list) or not statements or len(statements) > MAX_STATEMENTS
            or not all(isinstance(s, str) and 0 < len(s) <= MAX_STATEMENT_LENGTH
                       for s in statements)):  # fmt: skip
        raise EngineInvalidError(f"spec.roles[{name}].creation: 1 to {MAX_STATEMENTS} statements "
                                 f"of at most {MAX_STATEMENT_LENGTH} characters")  # fmt: skip
    for statement in statements:
        _check_holes(name, statement)
    if not any(re.search(r"\{\{\s*name\s*\}\}", s) for s in statements):
        raise EngineInvalidError(f"spec.roles[{name}].creation never names the role ({{{{name}}}})")
    return RoleTemplate(name, tuple(statements))


def _check_holes(role: str, statement: str) -> None:
    for hole in _HOLE.finditer(statement):
        what, opened, closed = hole["name"], hole["open"], hole["close"]
        if what not in PLACEHOLDERS:
            raise EngineInvalidError(f"spec.roles[{role}]: unknown placeholder {{{{{what}}}}} "
                                     f"(known: {', '.join(PLACEHOLDERS)})")  # fmt: skip
        if opened != closed:
            raise EngineInvalidError(f"spec.roles[{role}]: {{{{{what}}}}} has unbalanced quotes")
        if opened and (opened == '"') != (what == "name"):
            raise EngineInvalidError(f"spec.roles[{role}]: {{{{{what}}}}} is quoted as the wrong "
                                     "kind (identifier \"{{name}}\", literal '{{password}}')")  # fmt: skip
    rest = _HOLE.sub("", statement)
    if "{{" in rest or "}}" in rest:
        raise EngineInvalidError(f"spec.roles[{role}]: a placeholder is malformed")


def compose(statement: str, *, name: str, verifier: str, expiry: datetime) -> sql.Composed:
    """``statement`` with its placeholders quoted by psycopg (the surrounding quotes dropped)."""
    values: dict[str, sql.Composable] = {
        "name": sql.Identifier(name),
        "password": sql.Literal(verifier),
        "expiry": sql.Literal(_iso(expiry)),
    }
    parts: list[sql.Composable] = []
    at = 0
    for hole in _HOLE.finditer(statement):
        parts.append(sql.SQL(statement[at:hole.start()]))
        parts.append(values[hole["name"]])
        at = hole.end()
    parts.append(sql.SQL(statement[at:]))
    return sql.Composed(parts)


def scram_verifier(password: str, *, salt: bytes | None = None,
                   iterations: int = SCRAM_ITERATIONS) -> str:  # fmt: skip
    """PostgreSQL's stored form of a SCRAM-SHA-256 password (what ``pg_authid`` keeps)."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def owner_hash(namespace: str, name: str, key: str) -> str:
    return hashlib.sha256(f"{namespace}/{name}/{key}".encode()).hexdigest()[:10]


def role_name(prefix: str, namespace: str, name: str, key: str, suffix: str | None = None) -> str:
    """``<prefix><hash of namespace/name/key>_<suffix or 8 random hex>`` (≤ 63 bytes)."""
    tail = suffix if suffix is not None else os.urandom(4).hex()
    return f"{prefix}{owner_hash(namespace, name, key)}_{tail}"


@dataclasses.dataclass(frozen=True)
class TaggedRole:
    """A role carrying the operator's comment: who it was issued for, and when."""

    role: str
    namespace: str
    name: str
    key: str
    issued: datetime
    valid_until: datetime | None


@dataclasses.dataclass(frozen=True)
class IssuedRole:
    username: str
    password: str = dataclasses.field(repr=False)
    expiry: datetime


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _tag(namespace: str, name: str, key: str, issued: datetime) -> str:
    return json.dumps({"strongroom": 1, "namespace": namespace, "name": name, "key": key,
                       "issued": issued.astimezone(UTC).isoformat()}, sort_keys=True)  # fmt: skip


def _parse_tag(role: str, text: str | None, valid_until: datetime | None) -> TaggedRole | None:
    try:
        raw = json.loads(text or "")
        issued = datetime.fromisoformat(raw["issued"])
        return TaggedRole(role, str(raw["namespace"]), str(raw["name"]), str(raw["key"]),
                          issued, valid_until)  # fmt: skip
    except (ValueError, KeyError, TypeError):
        return None


class EngineConnection:
    """One admin session on the engine's server; every failure is an :class:`EngineError`
    whose message is psycopg's class name and SQLSTATE only (its text may quote a statement)."""

    def __init__(self, conn: psycopg.Connection[Any], spec: EngineSpec) -> None:
        self.conn = conn
        self.spec = spec

    @classmethod
    @contextlib.contextmanager
    def open(cls, spec: EngineSpec, *, user: str, password: str,
             ca_pem: str | None = None) -> Iterator[EngineConnection]:  # fmt: skip
        with contextlib.ExitStack() as stack:
            extra: dict[str, Any] = {}
            if ca_pem:
                directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
                (directory / "ca.crt").write_text(ca_pem)
                extra["sslrootcert"] = str(directory / "ca.crt")
            try:
                conn = psycopg.connect(host=spec.host, port=spec.port, dbname=spec.database,
                                       user=user, password=password, sslmode=spec.sslmode,
                                       connect_timeout=CONNECT_TIMEOUT, autocommit=False,
                                       application_name="strongroom", **extra)  # fmt: skip
            except psycopg.Error as exc:
                raise EngineUnreachableError(f"cannot connect to engine {spec.name} ({spec.host}:{spec.port}"
                                  f"): {_cause(exc)}") from None  # fmt: skip
            stack.callback(conn.close)
            yield cls(conn, spec)

    def _run(self, what: str, statements: list[sql.Composed]) -> None:
        try:
            with self.conn.transaction():
                for statement in statements:
                    self.conn.execute(statement)
        except psycopg.Error as exc:
            raise EngineError(f"engine {self.spec.name}: {what} failed: {_cause(exc)}") from None

    def create(self, template: RoleTemplate, *, username: str, password: str, expiry: datetime,
               owner: tuple[str, str, str], now: datetime) -> IssuedRole:  # fmt: skip
        """Run the template's statements and tag the role, in one transaction."""
        verifier = scram_verifier(password)
        statements: list[sql.Composed] = [
            compose(s, name=username, verifier=verifier, expiry=expiry) for s in template.creation
        ]
        statements.append(sql.SQL("COMMENT ON ROLE {} IS {}").format(
            sql.Identifier(username), sql.Literal(_tag(*owner, now))))  # fmt: skip
        self._run(f"creating a role from template {template.name}", statements)
        return IssuedRole(username, password, expiry)

    def set_password(self, *, username: str, password: str, expiry: datetime,
                     owner: tuple[str, str, str], now: datetime) -> IssuedRole:  # fmt: skip
        """A new password and expiry for an existing role (the ``alternate`` strategy)."""
        self._run("changing a role's password", [
            sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {} VALID UNTIL {}").format(
                sql.Identifier(username), sql.Literal(scram_verifier(password)),
                sql.Literal(_iso(expiry))),
            sql.SQL("COMMENT ON ROLE {} IS {}").format(
                sql.Identifier(username), sql.Literal(_tag(*owner, now))),
        ])  # fmt: skip
        return IssuedRole(username, password, expiry)

    def exists(self, username: str) -> bool:
        try:
            with self.conn.transaction():
                row = self.conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                        (username,)).fetchone()  # fmt: skip
        except psycopg.Error as exc:
            raise EngineError(f"engine {self.spec.name}: reading roles failed: {_cause(exc)}") from None
        return row is not None

    def drop(self, username: str, *, terminate: bool = False) -> None:
        """Drop a role; ``terminate``: end its sessions too (an emergency: a credential believed
        leaked; the admin needs ``pg_signal_backend``). Templates grant through group roles
        (``GRANT app_read TO {{name}}``): a membership goes with the role, whereas a privilege
        granted on an object would make ``DROP ROLE`` fail (and ``DROP OWNED BY`` needs more
        than ``CREATEROLE``)."""
        statements: list[sql.Composed] = []
        if terminate:
            statements.append(sql.SQL(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {}"
            ).format(sql.Literal(username)))  # fmt: skip
        statements.append(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(username)))
        if statements:
            self._run("dropping a role", statements)

    def tagged(self) -> list[TaggedRole]:
        """Every role with the engine's prefix that carries the operator's comment."""
        try:
            with self.conn.transaction():
                rows = self.conn.execute(
                    "SELECT rolname, shobj_description(oid, 'pg_authid'), rolvaliduntil "
                    "FROM pg_roles WHERE starts_with(rolname, %s)", (self.spec.prefix,),
                ).fetchall()  # fmt: skip
        except psycopg.Error as exc:
            raise EngineError(f"engine {self.spec.name}: listing roles failed: {_cause(exc)}") from None
        found = (_parse_tag(str(r[0]), r[1], r[2]) for r in rows)
        return [role for role in found if role is not None]


def _cause(exc: psycopg.Error) -> str:
    """What failed, without psycopg's message (it may quote the statement, hence a verifier)."""
    state = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__}" + (f" (SQLSTATE {state})" if state else "")
