"""Queries, one function per question, all taking an open :class:`Connection`.

The caller owns the transaction, so an operation and its audit event commit or fail together.
Rows come back as frozen dataclasses; ciphertext stays opaque bytes here (the store never
imports the crypto layer).
"""

from __future__ import annotations

import dataclasses
import hmac
import weakref
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert

from strongroom.audit import (
    KEY_ACTION,
    MANIFEST_ACTION,
    MANIFESTS_BEGIN,
    AuditEvent,
    AuditPublisher,
    ChainHead,
    ChainKey,
    seal_event,
)
from strongroom.errors import AuditError, IntegrityError
from strongroom.store.engine import before_commit
from strongroom.store.prepared import Prepared
from strongroom.store.schema import (
    SECRET_WRITES_WHERE,
    DataKeyState,
    VersionState,
    audit_events,
    audit_head,
    audit_keys,
    data_keys,
    secret_versions,
    secrets,
)


@dataclasses.dataclass(frozen=True)
class SecretRow:
    id: int
    namespace: str
    name: str
    description: str
    current_version: int
    created_at: datetime
    updated_at: datetime
    manifest: str | None = None
    manifest_counter: int | None = None
    manifest_key: str | None = None
    manifest_mac: str | None = None
    namespace_uid: str | None = None


@dataclasses.dataclass(frozen=True)
class StoredManifest:
    """The manifest columns as written (format: :mod:`strongroom.crypto.manifest`)."""

    body: str
    counter: int
    key: str
    mac: str


@dataclasses.dataclass(frozen=True)
class VersionRow:
    id: int
    secret_id: int
    version: int
    key: str
    data_key_id: str
    format: int
    salt: bytes | None
    nonce: bytes | None
    ciphertext: bytes | None = dataclasses.field(repr=False)
    state: str
    created_by: str
    created_at: datetime


@dataclasses.dataclass(frozen=True)
class NewVersion:
    key: str
    data_key_id: str
    format: int
    salt: bytes
    nonce: bytes
    ciphertext: bytes = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class DataKeyRow:
    id: str
    provider: str
    kek_id: str
    kek_version: str
    wrapped_seed: bytes = dataclasses.field(repr=False)
    state: str
    created_at: datetime


# --- secrets -------------------------------------------------------------------------------


def _secret(row: Any) -> SecretRow:
    return SecretRow(**row._mapping)


_SECRET_COLUMNS = (
    secrets.c.id,
    secrets.c.namespace,
    secrets.c.name,
    secrets.c.description,
    secrets.c.current_version,
    secrets.c.created_at,
    secrets.c.updated_at,
    secrets.c.manifest,
    secrets.c.manifest_counter,
    secrets.c.manifest_key,
    secrets.c.manifest_mac,
    secrets.c.namespace_uid,
)

_VERSION_COLUMNS = (
    secret_versions.c.id,
    secret_versions.c.secret_id,
    secret_versions.c.version,
    secret_versions.c.key,
    secret_versions.c.data_key_id,
    secret_versions.c.format,
    secret_versions.c.salt,
    secret_versions.c.nonce,
    secret_versions.c.ciphertext,
    secret_versions.c.state,
    secret_versions.c.created_by,
    secret_versions.c.created_at,
)


# Hot-path statements are built once and run through store.prepared (on SQLite, the driver's
# cursor with the statement compiled once). Their rows are read by position.
_SELECT_SECRET = select(*_SECRET_COLUMNS).where(
    secrets.c.namespace == bindparam("namespace"), secrets.c.name == bindparam("name")
)
_FIND_SECRET = Prepared(_SELECT_SECRET)
_LOCK_SECRET = Prepared(_SELECT_SECRET.with_for_update())
_NEW_SECRET_COLUMNS = ("namespace", "name", "description", "current_version", "created_at",
                       "updated_at", "namespace_uid")  # fmt: skip
_INSERT_SECRET = Prepared(insert(secrets), column_keys=_NEW_SECRET_COLUMNS)


def find_secret(
    conn: Connection, namespace: str, name: str, *, lock: bool = False
) -> SecretRow | None:
    """The secret's row; ``lock``: held until the transaction ends (``FOR UPDATE``)."""
    query = _LOCK_SECRET if lock else _FIND_SECRET
    row = query.first(conn, {"namespace": namespace, "name": name})
    return None if row is None else SecretRow(*row)


def lock_secret_by_id(conn: Connection, secret_id: int) -> SecretRow | None:
    row = conn.execute(
        select(*_SECRET_COLUMNS).where(secrets.c.id == secret_id).with_for_update()
    ).first()
    return None if row is None else _secret(row)


def write_manifest(
    conn: Connection, secret_id: int, manifest: StoredManifest, *, replaces: str | None
) -> bool:
    """Store a manifest in place of the one whose MAC is ``replaces`` (None: of none yet).

    Compare-and-set, like a rewrap: False when another writer replaced it meanwhile.
    """
    mac = secrets.c.manifest_mac
    result = conn.execute(
        update(secrets)
        .where(secrets.c.id == secret_id, mac.is_(None) if replaces is None else mac == replaces)
        .values(**_manifest_values(manifest))
    )
    return bool(result.rowcount)


def _manifest_values(manifest: StoredManifest) -> dict[str, object]:
    return {
        "manifest": manifest.body,
        "manifest_counter": manifest.counter,
        "manifest_key": manifest.key,
        "manifest_mac": manifest.mac,
    }


def unmanifested_secrets(conn: Connection) -> list[SecretRow]:
    """Secrets written before manifests existed (none once the store has begun them)."""
    rows = conn.execute(
        select(*_SECRET_COLUMNS)
        .where(secrets.c.manifest_mac.is_(None), secrets.c.current_version > 0)
        .order_by(secrets.c.id)
    )
    return [_secret(row) for row in rows]


def secrets_on_retired_manifest_keys(conn: Connection, *, after_id: int, limit: int) -> list[int]:
    """Ids of secrets whose manifest is authenticated under a retired data key (rekey's list)."""
    rows = conn.execute(
        select(secrets.c.id)
        .where(
            secrets.c.id > after_id,
            secrets.c.manifest_key.in_(
                select(data_keys.c.id).where(data_keys.c.state == DataKeyState.RETIRED)
            ),
        )
        .order_by(secrets.c.id)
        .limit(limit)
    )
    return [int(r[0]) for r in rows]


@dataclasses.dataclass(frozen=True)
class Write:
    """A successful write of a secret in the audit chain (an action in SECRET_WRITES)."""

    seq: int
    action: str


def _writes_of(namespace: Any, name: Any) -> Any:
    # The predicate is the index's, written out (see schema.SECRET_WRITES_WHERE).
    return and_(
        audit_events.c.namespace == namespace, audit_events.c.name == name,
        text(SECRET_WRITES_WHERE),
    )  # fmt: skip


_NEWEST_WRITE = Prepared(
    select(audit_events.c.seq, audit_events.c.action)
    .where(_writes_of(bindparam("namespace"), bindparam("name")))
    .order_by(audit_events.c.seq.desc())
    .limit(1)
)


def newest_write(conn: Connection, namespace: str, name: str) -> Write | None:
    """The newest write of ``namespace/name`` recorded in the audit chain."""
    row = _NEWEST_WRITE.first(conn, {"namespace": namespace, "name": name})
    return None if row is None else Write(int(row[0]), str(row[1]))


def lock_secret(
    conn: Connection,
    namespace: str,
    name: str,
    description: str,
    now: datetime,
    *,
    absent: bool = False,
    namespace_uid: str | None = None,
) -> SecretRow:
    """The secret's row, created if absent, locked until the transaction ends.

    Concurrent writers of one secret then take turns (``FOR UPDATE`` on PostgreSQL; SQLite's
    ``BEGIN IMMEDIATE`` already serialises writers), so two of them never claim the same
    version number; ``ON CONFLICT DO NOTHING`` lets two creators meet without an error.
    ``absent``: this transaction has just read that there is no such row, so go straight to
    creating it (on SQLite nobody can have created it since; on PostgreSQL the insert still
    meets a concurrent creator without an error). ``namespace_uid``: the binding a row created
    here starts with (strongroom.bindings).
    """
    where = {"namespace": namespace, "name": name}
    if not absent:
        row = _LOCK_SECRET.first(conn, where)
        if row is not None:
            return SecretRow(*row)
    values = {
        "namespace": namespace,
        "name": name,
        "description": description,
        "current_version": 0,
        "created_at": now,
        "updated_at": now,
        "namespace_uid": namespace_uid,
    }
    if conn.dialect.name == "sqlite":
        # BEGIN IMMEDIATE holds the only write lock: nobody can have created it meanwhile.
        return SecretRow(id=_INSERT_SECRET.insert(conn, values), **values)  # type: ignore[arg-type]
    conn.execute(
        pg_insert(secrets)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["namespace", "name"])
    )
    return _secret(conn.execute(_LOCK_SECRET.statement, where).one())


_SET_NAMESPACE_UID = (
    update(secrets)
    .where(secrets.c.id == bindparam("sid"))
    .values(namespace_uid=bindparam("uid"))
)


def set_namespace_uid(
    conn: Connection, secret_id: int, uid: str | None, *, now: datetime | None = None
) -> None:
    """Bind (or, ``None``, unbind) a secret to a namespace UID; ``now`` also moves
    ``updated_at``, so that the operator's store watch syncs the secret again (a rebind)."""
    statement = _SET_NAMESPACE_UID if now is None else _SET_NAMESPACE_UID.values(updated_at=now)
    conn.execute(statement, {"sid": secret_id, "uid": uid})


def changed_since(conn: Connection, since: datetime) -> list[tuple[str, str, int, datetime]]:
    rows = conn.execute(
        select(secrets.c.namespace, secrets.c.name, secrets.c.current_version,
               secrets.c.updated_at)
        .where(secrets.c.updated_at > since)
        .order_by(secrets.c.updated_at)
    )  # fmt: skip
    return [(str(a), str(b), int(c), d) for a, b, c, d in rows]


def list_secrets(conn: Connection, namespace: str | None) -> list[SecretRow]:
    query = select(*_SECRET_COLUMNS).order_by(secrets.c.namespace, secrets.c.name)
    if namespace is not None:
        query = query.where(secrets.c.namespace == namespace)
    return [_secret(row) for row in conn.execute(query)]


def keys_of_versions(conn: Connection, secret_ids: Sequence[int]) -> dict[int, list[str]]:
    """Key names (not values) of each secret's current version, for masked listings."""
    if not secret_ids:
        return {}
    rows = conn.execute(
        select(secret_versions.c.secret_id, secret_versions.c.key)
        .join(secrets, secrets.c.id == secret_versions.c.secret_id)
        .where(
            secret_versions.c.secret_id.in_(secret_ids),
            secret_versions.c.version == secrets.c.current_version,
        )
        .order_by(secret_versions.c.key)
    )
    out: dict[int, list[str]] = {}
    for secret_id, key in rows:
        out.setdefault(secret_id, []).append(key)
    return out


def delete_secret(conn: Connection, secret_id: int) -> None:
    conn.execute(delete(secret_versions).where(secret_versions.c.secret_id == secret_id))
    conn.execute(delete(secrets).where(secrets.c.id == secret_id))


# --- versions ------------------------------------------------------------------------------


_VERSION_ROWS = Prepared(
    select(*_VERSION_COLUMNS)
    .where(
        secret_versions.c.secret_id == bindparam("secret_id"),
        secret_versions.c.version == bindparam("version"),
    )
    .order_by(secret_versions.c.key)
)
_INSERT_VERSION = Prepared(
    insert(secret_versions),
    column_keys=("secret_id", "version", "key", "data_key_id", "format", "salt", "nonce",
                 "ciphertext", "state", "created_by", "created_at"),
)  # fmt: skip
_MARK_PREVIOUS = Prepared(
    update(secret_versions)
    .where(
        secret_versions.c.secret_id == bindparam("sid"),
        secret_versions.c.version == bindparam("old_version"),
    )
    .values(state=VersionState.PREVIOUS)
)
_ADVANCE = (
    update(secrets)
    .where(secrets.c.id == bindparam("sid"))
    .values(
        current_version=bindparam("new_version"),
        updated_at=bindparam("now"),
        manifest=bindparam("m_body"),
        manifest_counter=bindparam("m_counter"),
        manifest_key=bindparam("m_key"),
        manifest_mac=bindparam("m_mac"),
    )
)
_ADVANCE_SECRET = Prepared(_ADVANCE)
_ADVANCE_SECRET_DESCRIBED = Prepared(_ADVANCE.values(description=bindparam("new_description")))


# The newest write of the secret, in the same statement (and so the same snapshot) as the
# manifest it is compared with: on PostgreSQL a second statement could see a later write.
_NEWEST_WRITE_OF_SECRET = (
    select(func.max(audit_events.c.seq))
    .where(_writes_of(secrets.c.namespace, secrets.c.name))
    .scalar_subquery()
)
_READ_VERSION = Prepared(
    select(
        *_SECRET_COLUMNS,
        _NEWEST_WRITE_OF_SECRET.label("newest_write"),
        *(c.label(f"v_{c.name}") for c in _VERSION_COLUMNS),
    )
    .join(secret_versions, secret_versions.c.secret_id == secrets.c.id)
    .where(
        secrets.c.namespace == bindparam("namespace"),
        secrets.c.name == bindparam("name"),
        secret_versions.c.version
        == func.coalesce(bindparam("version", type_=Integer), secrets.c.current_version),
    )
    .order_by(secret_versions.c.key)
)


def read_version(
    conn: Connection, namespace: str, name: str, version: int | None
) -> tuple[SecretRow, list[VersionRow], int | None] | None:
    """A secret, the rows of one version (default: current) and the sequence number of the
    secret's newest write in the audit chain, in one round trip."""
    rows = _READ_VERSION.all(conn, {"namespace": namespace, "name": name, "version": version})
    if not rows:
        return None
    offset = len(_SECRET_COLUMNS)
    secret = SecretRow(*rows[0][:offset])
    newest = rows[0][offset]
    return (
        secret,
        [VersionRow(*row[offset + 1 :]) for row in rows],
        None if newest is None else int(newest),
    )


def version_rows(conn: Connection, secret_id: int, version: int) -> list[VersionRow]:
    rows = _VERSION_ROWS.all(conn, {"secret_id": secret_id, "version": version})
    return [VersionRow(*row) for row in rows]


def add_version(
    conn: Connection,
    *,
    secret: SecretRow,
    version: int,
    rows: Iterable[NewVersion],
    created_by: str,
    now: datetime,
    description: str | None,
    keep_versions: int,
    manifest: StoredManifest,
) -> None:
    """Write version ``version`` as current; the old current becomes previous; prune history.

    ``manifest`` is written in the same statement that moves ``current_version``, as the
    schema's trigger requires.
    """
    _INSERT_VERSION.execute_many(
        conn,
        [
            {
                "secret_id": secret.id,
                "version": version,
                "key": row.key,
                "data_key_id": row.data_key_id,
                "format": row.format,
                "salt": row.salt,
                "nonce": row.nonce,
                "ciphertext": row.ciphertext,
                "state": VersionState.CURRENT,
                "created_by": created_by,
                "created_at": now,
            }
            for row in rows
        ],
    )
    if secret.current_version:
        _MARK_PREVIOUS.execute(conn, {"sid": secret.id, "old_version": secret.current_version})
    if kept_from(version, keep_versions) > 1:
        destroy_versions_before(conn, secret.id, kept_from(version, keep_versions))
    params: dict[str, object] = {
        "sid": secret.id, "new_version": version, "now": now, "m_body": manifest.body,
        "m_counter": manifest.counter, "m_key": manifest.key, "m_mac": manifest.mac,
    }  # fmt: skip
    if description is None:
        _ADVANCE_SECRET.execute(conn, params)
    else:
        _ADVANCE_SECRET_DESCRIBED.execute(conn, {**params, "new_description": description})


def kept_from(version: int, keep_versions: int) -> int:
    """The oldest version whose values a write of ``version`` keeps (older ones are destroyed)."""
    return max(1, version - keep_versions + 1)


def live_rows(conn: Connection, secret_id: int) -> list[VersionRow]:
    """Every row of the secret that still holds a value, by version and key."""
    rows = conn.execute(
        select(*_VERSION_COLUMNS)
        .where(secret_versions.c.secret_id == secret_id, secret_versions.c.ciphertext.is_not(None))
        .order_by(secret_versions.c.version, secret_versions.c.key)
    )
    return [VersionRow(**row._mapping) for row in rows]


_DESTROY_BEFORE = Prepared(
    update(secret_versions)
    .where(
        secret_versions.c.secret_id == bindparam("sid"),
        secret_versions.c.version < bindparam("before"),
        secret_versions.c.state != VersionState.DESTROYED,
    )
    .values(state=VersionState.DESTROYED, ciphertext=None, salt=None, nonce=None)
)


def destroy_versions_before(conn: Connection, secret_id: int, version: int) -> int:
    """Erase the ciphertext of versions older than ``version``; the row stays as history."""
    return _DESTROY_BEFORE.execute(conn, {"sid": secret_id, "before": version})


def version_history(conn: Connection, secret_id: int) -> list[tuple[int, str, str, datetime]]:
    """(version, state, created_by, created_at) per version, newest first."""
    rows = conn.execute(
        select(
            secret_versions.c.version,
            func.min(secret_versions.c.state),
            func.min(secret_versions.c.created_by),
            func.min(secret_versions.c.created_at),
        )
        .where(secret_versions.c.secret_id == secret_id)
        .group_by(secret_versions.c.version)
        .order_by(secret_versions.c.version.desc())
    )
    return [(int(v), str(s), str(b), t) for v, s, b, t in rows]


# --- data keys -----------------------------------------------------------------------------

_DATA_KEY_COLUMNS = (
    data_keys.c.id,
    data_keys.c.provider,
    data_keys.c.kek_id,
    data_keys.c.kek_version,
    data_keys.c.wrapped_seed,
    data_keys.c.state,
    data_keys.c.created_at,
)


def insert_data_key(conn: Connection, row: DataKeyRow) -> None:
    conn.execute(insert(data_keys).values(**dataclasses.asdict(row)))


def get_data_key(conn: Connection, data_key_id: str) -> DataKeyRow | None:
    row = conn.execute(select(*_DATA_KEY_COLUMNS).where(data_keys.c.id == data_key_id)).first()
    return None if row is None else DataKeyRow(**row._mapping)


def active_data_keys(conn: Connection, provider: str, kek_id: str) -> list[DataKeyRow]:
    """Active keys of one KEK, newest first."""
    rows = conn.execute(
        select(*_DATA_KEY_COLUMNS)
        .where(
            data_keys.c.provider == provider,
            data_keys.c.kek_id == kek_id,
            data_keys.c.state == DataKeyState.ACTIVE,
        )
        .order_by(data_keys.c.created_at.desc())
    )
    return [DataKeyRow(**row._mapping) for row in rows]


def newest_data_key(conn: Connection) -> DataKeyRow | None:
    row = conn.execute(
        select(*_DATA_KEY_COLUMNS).order_by(data_keys.c.created_at.desc()).limit(1)
    ).first()
    return None if row is None else DataKeyRow(**row._mapping)


def all_data_keys(conn: Connection) -> list[DataKeyRow]:
    return [
        DataKeyRow(**row._mapping)
        for row in conn.execute(select(*_DATA_KEY_COLUMNS).order_by(data_keys.c.created_at))
    ]


def count_versions_using(conn: Connection, data_key_id: str) -> int:
    value = conn.execute(
        select(func.count())
        .select_from(secret_versions)
        .where(secret_versions.c.data_key_id == data_key_id)
    ).scalar_one()
    return int(value)


def retire_data_key(conn: Connection, data_key_id: str) -> None:
    conn.execute(
        update(data_keys)
        .where(and_(data_keys.c.id == data_key_id))
        .values(state=DataKeyState.RETIRED)
    )


def rewrap_data_key(
    conn: Connection,
    old: DataKeyRow,
    *,
    provider: str,
    kek_id: str,
    kek_version: str,
    wrapped_seed: bytes,
) -> bool:
    """Point a data key at a new wrapping of the same seed; False if someone got there first."""
    return _rewrap(conn, data_keys, old, provider=provider, kek_id=kek_id,
                   kek_version=kek_version, wrapped_seed=wrapped_seed)  # fmt: skip


def _rewrap(conn: Connection, table: Table, old: DataKeyRow | AuditKeyRow, **new: Any) -> bool:
    """Compare-and-set a seed's wrapping: only if the row still names the KEK it was read with."""
    result = conn.execute(
        update(table)
        .where(
            table.c.id == old.id,
            table.c.provider == old.provider,
            table.c.kek_id == old.kek_id,
            table.c.kek_version == old.kek_version,
        )
        .values(**new)
    )
    return bool(result.rowcount)


def retire_other_data_keys(conn: Connection, keep_id: str) -> int:
    result = conn.execute(
        update(data_keys)
        .where(data_keys.c.id != keep_id, data_keys.c.state == DataKeyState.ACTIVE)
        .values(state=DataKeyState.RETIRED)
    )
    return int(result.rowcount)


@dataclasses.dataclass(frozen=True)
class StaleVersion:
    """A stored value still encrypted under a retired data key (rekey's work list)."""

    namespace: str
    name: str
    row: VersionRow


def _on_retired_keys() -> Any:
    return and_(
        secret_versions.c.ciphertext.is_not(None),
        secret_versions.c.data_key_id.in_(
            select(data_keys.c.id).where(data_keys.c.state == DataKeyState.RETIRED)
        ),
    )


def stale_versions(conn: Connection, *, after_id: int, limit: int) -> list[StaleVersion]:
    rows = conn.execute(
        select(secrets.c.namespace, secrets.c.name, *_VERSION_COLUMNS)
        .join(secrets, secrets.c.id == secret_versions.c.secret_id)
        .where(_on_retired_keys(), secret_versions.c.id > after_id)
        .order_by(secret_versions.c.id)
        .limit(limit)
    )
    return [
        StaleVersion(row[0], row[1], VersionRow(*row[2:]))  # type: ignore[call-arg]
        for row in rows
    ]


def count_stale_versions(conn: Connection) -> int:
    return int(
        conn.execute(
            select(func.count()).select_from(secret_versions).where(_on_retired_keys())
        ).scalar_one()
    )


def reencrypt_version(
    conn: Connection,
    row: VersionRow,
    *,
    data_key_id: str,
    salt: bytes,
    nonce: bytes,
    ciphertext: bytes,
) -> bool:
    result = conn.execute(
        update(secret_versions)
        .where(secret_versions.c.id == row.id,
               secret_versions.c.data_key_id == row.data_key_id)
        .values(data_key_id=data_key_id, salt=salt, nonce=nonce, ciphertext=ciphertext)
    )  # fmt: skip
    return bool(result.rowcount)


def data_key_usage(conn: Connection) -> dict[str, int]:
    """Live (not destroyed) versions per data key id."""
    rows = conn.execute(
        select(secret_versions.c.data_key_id, func.count())
        .where(secret_versions.c.ciphertext.is_not(None))
        .group_by(secret_versions.c.data_key_id)
    )
    return {str(k): int(n) for k, n in rows}


# --- audit key -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AuditKeyRow:
    id: str
    provider: str
    kek_id: str
    kek_version: str
    wrapped_seed: bytes = dataclasses.field(repr=False)
    first_seq: int
    created_at: datetime


_AUDIT_KEY_COLUMNS = (
    audit_keys.c.id,
    audit_keys.c.provider,
    audit_keys.c.kek_id,
    audit_keys.c.kek_version,
    audit_keys.c.wrapped_seed,
    audit_keys.c.first_seq,
    audit_keys.c.created_at,
)


def audit_key_rows(conn: Connection) -> list[AuditKeyRow]:
    """Every audit key row (one in an intact store; none before the first keyed event)."""
    rows = conn.execute(select(*_AUDIT_KEY_COLUMNS).order_by(audit_keys.c.created_at))
    return [AuditKeyRow(**row._mapping) for row in rows]


def insert_audit_key(conn: Connection, row: AuditKeyRow) -> None:
    conn.execute(insert(audit_keys).values(**dataclasses.asdict(row)))


def rewrap_audit_key(
    conn: Connection,
    old: AuditKeyRow,
    *,
    provider: str,
    kek_id: str,
    kek_version: str,
    wrapped_seed: bytes,
) -> bool:
    """Point the audit key at a new wrapping of the same seed; False if someone got there first."""
    return _rewrap(conn, audit_keys, old, provider=provider, kek_id=kek_id,
                   kek_version=kek_version, wrapped_seed=wrapped_seed)  # fmt: skip


def keyed_past(conn: Connection) -> str | None:
    """What in a store without an audit key shows that its chain was keyed once; None: nothing.

    The key row alone proves a keyed chain; these are what an attacker who deleted it would
    also have to find and remove, so that a new key is not silently started over a forged
    unkeyed log (a head MAC, secrets' manifests, keyed-chain events).
    """
    if conn.execute(select(audit_head.c.seq).where(audit_head.c.mac != "")).first():
        return "its chain head carries a MAC"
    manifested = "manifest" in {c["name"] for c in inspect(conn).get_columns("secrets")}
    if manifested and conn.execute(
        select(secrets.c.id).where(secrets.c.manifest.is_not(None)).limit(1)
    ).first():  # (a store below schema 0003, as a test writes one, has no such column)
        return "its secrets carry manifests"
    marks = (KEY_ACTION, MANIFESTS_BEGIN, MANIFEST_ACTION)
    if conn.execute(select(audit_events.c.seq).where(audit_events.c.action.in_(marks)).limit(1)).first():
        return "its log holds events of a keyed chain"
    return None


def has_data_keys(conn: Connection) -> bool:
    return conn.execute(select(data_keys.c.id).limit(1)).first() is not None


# --- audit ---------------------------------------------------------------------------------


_LOCK_HEAD = Prepared(
    select(audit_head.c.seq, audit_head.c.hash, audit_head.c.mac)
    .where(audit_head.c.id == 1)
    .with_for_update()
)
_KEYED_BY = select(func.count()).select_from(audit_keys).where(
    audit_keys.c.first_seq <= bindparam("seq")
)
_EVENT_COLUMNS = ("seq", "time", "actor", "action", "namespace", "name", "key", "version",
                  "outcome", "detail", "prev_hash", "hash")  # fmt: skip
_INSERT_EVENT = Prepared(insert(audit_events), column_keys=_EVENT_COLUMNS)
_INSERT_EVENT_WITH_ORIGIN = Prepared(
    insert(audit_events), column_keys=(*_EVENT_COLUMNS, "origin")
)
_HEAD_CACHE = "strongroom.audit_head"
_ADVANCE_HEAD = Prepared(
    update(audit_head)
    .where(audit_head.c.id == 1)
    .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"), mac=bindparam("new_mac"))
)


_PUBLISHERS: weakref.WeakKeyDictionary[Engine, AuditPublisher] = weakref.WeakKeyDictionary()


def publish_audit_to(engine: Engine, publisher: AuditPublisher | None) -> None:
    """Hand every transaction's sealed events on ``engine`` to ``publisher`` (None: stop).

    Called once per transaction that appended events, with all of them in chain order, after
    the head row is written and just before COMMIT (the last thing before it), so a publisher
    that raises undoes the transaction. With group commit the events of every unit that was not
    rolled back are published together, each once; a unit rolled back to its savepoint takes
    its events out of the list (:func:`restore_audit_head`).
    """
    if publisher is None:
        _PUBLISHERS.pop(engine, None)
    else:
        _PUBLISHERS[engine] = publisher


def append_audit(conn: Connection, event: AuditEvent, *, key: ChainKey) -> AuditEvent:
    """Append one event to the chain inside the caller's transaction (see append_audits)."""
    return append_audits(conn, [event], key=key)[0]


def lock_audit_head(conn: Connection) -> ChainHead:
    """Read the head and hold its lock until the transaction ends (creators of the key queue)."""
    seq, link, _mac = _locked_head(conn)
    return ChainHead(int(seq), str(link))


def _locked_head(conn: Connection) -> tuple[Any, ...]:
    """The head row (seq, hash, mac), locked; its absence (only tampering removes it) stops
    every write."""
    head = _LOCK_HEAD.first(conn)
    if head is None:
        raise AuditError(
            "not done: the audit chain's head row is missing (the database was altered), so "
            "no event can be appended; `strongroom audit verify` reports the chain"
        )
    return head


def _check_head(conn: Connection, key: ChainKey, seq: int, link: str, mac: str) -> None:
    """Refuse to extend a head that does not authenticate: a head cut back and rewritten by
    someone without the key would otherwise be blessed by the next append's fresh head MAC.

    An empty MAC is legitimate only before the chain is keyed (the transaction that creates the
    audit key appends its first keyed event on an unkeyed head).
    """
    if mac:
        if not hmac.compare_digest(key.head(seq, link), mac):
            raise IntegrityError("not done: the audit chain's head does not authenticate; "
                                 "`strongroom audit verify` reports the chain")  # fmt: skip
    elif seq and conn.execute(_KEYED_BY, {"seq": seq}).scalar_one():
        raise IntegrityError("not done: the audit chain's head has lost its MAC; "
                             "`strongroom audit verify` reports the chain")  # fmt: skip


def append_audits(
    conn: Connection, events: Sequence[AuditEvent], *, key: ChainKey
) -> list[AuditEvent]:
    """Append events, in order, to the chain inside the caller's transaction (one INSERT).

    Each event is linked by ``key`` (the audit key; see :mod:`strongroom.audit`), and the head
    gets its MAC under the same key when the transaction commits.

    The head row is locked (``FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already
    holds the database write lock), so concurrent writers line up and the chain never forks.
    The head row itself is written once, just before the transaction commits
    (:func:`strongroom.store.engine.transaction` runs :func:`flush_audit_head`), not once per
    event: a reconcile appends three events and a group commit holds dozens of reconciles.
    """
    if not events:
        return []
    root = conn.get_transaction()
    cached = conn.info.get(_HEAD_CACHE)
    if cached is not None and cached[0] is root:
        seq, prev_hash, sealed_here = cached[1], cached[2], cached[4]
    else:  # first append of this transaction: read (and lock) the head
        head_seq, head_hash, head_mac = _locked_head(conn)
        seq, prev_hash, sealed_here = int(head_seq), str(head_hash), []
        _check_head(conn, key, seq, prev_hash, str(head_mac or ""))
    placed: list[AuditEvent] = []
    for event in events:
        sealed = seal_event(event, seq=seq + 1, prev_hash=prev_hash, key=key)
        placed.append(sealed)
        seq, prev_hash = sealed.seq, sealed.hash
    with_origin = any(one.origin for one in placed)
    (_INSERT_EVENT_WITH_ORIGIN if with_origin else _INSERT_EVENT).execute_many(
        conn,
        [
            {
                "seq": one.seq,
                "time": one.time,
                "actor": one.actor,
                "action": one.action,
                "namespace": one.namespace,
                "name": one.name,
                "key": one.key,
                "version": one.version,
                "outcome": one.outcome,
                "detail": one.detail,
                "prev_hash": one.prev_hash,
                "hash": one.hash,
                # Named only when set: the statement then fits a table of any schema since 0002
                # (the upgrade tests write old stores with this code).
                **({"origin": one.origin or None} if with_origin else {}),
            }
            for one in placed
        ],
    )
    # Later appends in the same transaction already hold the head's lock and know its value.
    # Keyed by the transaction object, so a new transaction reads it afresh. The list gathers
    # the transaction's events for the publisher (shared by every mark taken in it).
    sealed_here.extend(placed)
    conn.info[_HEAD_CACHE] = (root, seq, prev_hash, key, sealed_here)
    before_commit(conn, _HEAD_CACHE, flush_audit_head)
    return placed


def flush_audit_head(conn: Connection) -> None:
    """Write the head moved by this transaction's appends, with its MAC, then publish them.

    Runs just before the commit (see :func:`publish_audit_to`).
    """
    cached = conn.info.get(_HEAD_CACHE)
    if cached is not None and cached[0] is conn.get_transaction():
        _root, seq, link, key, sealed_here = cached
        _ADVANCE_HEAD.execute(
            conn, {"new_seq": seq, "new_hash": link, "new_mac": key.head(seq, link)}
        )
        publisher = _PUBLISHERS.get(conn.engine)
        if publisher is not None and sealed_here:
            publisher.publish(sealed_here)


AuditHeadMark = tuple[Any, int, str, ChainKey, list[AuditEvent]] | None


def audit_head_mark(conn: Connection) -> AuditHeadMark:
    """The head as this transaction knows it, to go back to after a savepoint's rollback."""
    cached = conn.info.get(_HEAD_CACHE)
    return cached if cached is not None and cached[0] is conn.get_transaction() else None


def restore_audit_head(conn: Connection, mark: AuditHeadMark) -> None:
    """After rolling back to a savepoint: the head is what it was when the savepoint began.

    The events sealed since then leave the list to be published: they were rolled back.
    """
    if mark is None:
        conn.info.pop(_HEAD_CACHE, None)  # not read yet then: read it from the row again
    else:
        sealed_here = mark[4]
        while sealed_here and sealed_here[-1].seq > mark[1]:
            sealed_here.pop()
        conn.info[_HEAD_CACHE] = mark


_AUDIT_COLUMNS = (
    audit_events.c.time,
    audit_events.c.actor,
    audit_events.c.action,
    audit_events.c.outcome,
    audit_events.c.namespace,
    audit_events.c.name,
    audit_events.c.key,
    audit_events.c.version,
    audit_events.c.detail,
    audit_events.c.seq,
    audit_events.c.prev_hash,
    audit_events.c.hash,
    func.coalesce(audit_events.c.origin, "").label("origin"),
)


def audit_chain_head(conn: Connection) -> ChainHead | None:
    """The head row, or None when it is missing (which only tampering does)."""
    head = conn.execute(
        select(audit_head.c.seq, audit_head.c.hash, audit_head.c.mac).where(audit_head.c.id == 1)
    ).first()
    return None if head is None else ChainHead(int(head.seq), str(head.hash), str(head.mac))


def audit_link_at(conn: Connection, seq: int) -> str | None:
    """The link (``hash``) of event ``seq``, or None when the log has no such event."""
    link = conn.execute(select(audit_events.c.hash).where(audit_events.c.seq == seq)).scalar()
    return None if link is None else str(link)


def iter_audit(
    conn: Connection, batch: int = 5000, *, after: int = 0, upto: int | None = None
) -> Iterator[AuditEvent]:
    """Events in ``seq`` order after ``after`` (and up to ``upto``: a head read before, so
    that events appended meanwhile do not run past it)."""
    last = after
    while True:
        query = select(*_AUDIT_COLUMNS).where(audit_events.c.seq > last)
        if upto is not None:
            query = query.where(audit_events.c.seq <= upto)
        rows = conn.execute(query.order_by(audit_events.c.seq).limit(batch)).all()
        if not rows:
            return
        for row in rows:
            yield AuditEvent(**row._mapping)
        last = int(rows[-1].seq)


def audit_find_recent(conn: Connection, *, action: str, namespace: str, name: str,
                      since: datetime, window: int) -> AuditEvent | None:  # fmt: skip
    """The newest event of ``action`` on ``namespace``/``name`` at ``since`` or later, among the
    last ``window`` events (a range of the primary key: bounded whatever the log's size)."""
    floor = select(func.coalesce(func.max(audit_events.c.seq), 0) - window).scalar_subquery()
    row = conn.execute(
        select(*_AUDIT_COLUMNS)
        .where(audit_events.c.seq > floor, audit_events.c.action == action,
               audit_events.c.namespace == namespace, audit_events.c.name == name,
               audit_events.c.time >= since)
        .order_by(audit_events.c.seq.desc())
        .limit(1)
    ).first()  # fmt: skip
    return None if row is None else AuditEvent(**row._mapping)


def audit_tail(conn: Connection, count: int) -> list[AuditEvent]:
    rows = conn.execute(
        select(*_AUDIT_COLUMNS).order_by(audit_events.c.seq.desc()).limit(count)
    ).all()
    return [AuditEvent(**row._mapping) for row in reversed(rows)]
