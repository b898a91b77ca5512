"""The tables, as SQLAlchemy Core metadata; the Alembic migrations create exactly these.

Column names that outside tools look at are fixed by DESIGN.md: ``secret_versions``
(``ciphertext``, ``nonce``, ``salt``, ``data_key_id``) and ``audit_events``. Nothing here ever
holds a value in clear: ``ciphertext`` is AES-256-GCM output and ``data_keys.wrapped_seed`` and
``audit_keys.wrapped_seed`` are KEK output. The audit chain's format is :mod:`strongroom.audit`'s,
the ``secrets.manifest*`` columns' is :mod:`strongroom.crypto.manifest`'s.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from strongroom.audit import SECRET_WRITES

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Tz = DateTime(timezone=True)
Seq = BigInteger().with_variant(Integer, "sqlite")

data_keys = Table(
    "data_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("provider", String(16), nullable=False),
    Column("kek_id", String(2048), nullable=False),
    Column("kek_version", String(64), nullable=False, default=""),
    Column("wrapped_seed", LargeBinary, nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", Tz, nullable=False),
)

secrets = Table(
    "secrets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("namespace", String(253), nullable=False),
    Column("name", String(253), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("current_version", Integer, nullable=False, default=0),
    Column("created_at", Tz, nullable=False),
    Column("updated_at", Tz, nullable=False),
    # The manifest (schema 0003): NULL only in a store not yet opened by a Strongroom that
    # writes them. A trigger refuses to move current_version without changing manifest_mac.
    Column("manifest", Text, nullable=True),
    Column("manifest_counter", Seq, nullable=True),
    Column("manifest_key", String(40), nullable=True),
    Column("manifest_mac", String(64), nullable=True),
    # The UID of the Kubernetes namespace whose ManagedSecret first synced it (schema 0004):
    # NULL until then, and again after ``strongroom secret rebind`` (strongroom.bindings).
    Column("namespace_uid", String(64), nullable=True),
    UniqueConstraint("namespace", "name", name="uq_secrets_namespace_name"),
)

secret_versions = Table(
    "secret_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("secret_id", Integer, ForeignKey("secrets.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("key", String(253), nullable=False),
    Column("data_key_id", String(40), ForeignKey("data_keys.id"), nullable=False),
    Column("format", Integer, nullable=False),
    Column("salt", LargeBinary, nullable=True),
    Column("nonce", LargeBinary, nullable=True),
    Column("ciphertext", LargeBinary, nullable=True),
    Column("state", String(16), nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("created_at", Tz, nullable=False),
    UniqueConstraint("secret_id", "version", "key", name="uq_secret_versions_secret_version_key"),
    Index("ix_secret_versions_data_key_id", "data_key_id"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=False),
    Column("time", Tz, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    Column("namespace", String(253), nullable=False),
    Column("name", String(253), nullable=False),
    Column("key", Text, nullable=False),
    Column("version", Integer, nullable=True),
    Column("outcome", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # Who stood behind a call made for someone (the values API's caller), schema 0005:
    # compact JSON, NULL for the store's own and the CLI's events (strongroom.audit).
    Column("origin", Text, nullable=True),
)

# The successful writes of each secret, newest first, without indexing every read's event.
# The predicate is written out, not bound: SQLite uses a partial index only for a query whose
# WHERE repeats its terms literally (repository's queries of writes do).
SECRET_WRITES_WHERE = "action IN ({}) AND outcome = 'ok'".format(
    ", ".join(f"'{action}'" for action in SECRET_WRITES)
)
Index(
    "ix_audit_events_writes",
    audit_events.c.namespace,
    audit_events.c.name,
    audit_events.c.seq,
    sqlite_where=text(SECRET_WRITES_WHERE),
    postgresql_where=text(SECRET_WRITES_WHERE),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("mac", String(64), nullable=False, server_default=""),
)

# The audit key: a seed wrapped by the KEK like a data key's, never used to encrypt values (the
# foreign key from secret_versions cannot reach it). ``first_seq``: the event the keyed chain
# starts at. One row; more than one is refused as tampering.
audit_keys = Table(
    "audit_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("provider", String(16), nullable=False),
    Column("kek_id", String(2048), nullable=False),
    Column("kek_version", String(64), nullable=False, default=""),
    Column("wrapped_seed", LargeBinary, nullable=False),
    Column("first_seq", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("created_at", Tz, nullable=False),
)


class VersionState:
    """``secret_versions.state`` values."""

    PENDING = "pending"
    CURRENT = "current"
    PREVIOUS = "previous"
    DESTROYED = "destroyed"


class DataKeyState:
    """``data_keys.state`` values."""

    ACTIVE = "active"
    RETIRED = "retired"
