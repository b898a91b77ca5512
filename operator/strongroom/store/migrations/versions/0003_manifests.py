"""Manifests: four columns on ``secrets``, an index of each secret's writes, a guard trigger.

The manifests themselves are not computed here: authenticating one needs a data key seed, and
migrations never see the KEK. The first Strongroom that opens the store afterwards gives every
secret its manifest in one transaction and writes the ``manifest.init`` event, after which a
secret without one is an integrity failure (see strongroom.manifest).

``ix_audit_events_writes`` indexes only the successful events that change a secret (its
predicate is the one strongroom.store.schema builds from strongroom.audit.SECRET_WRITES, written
out here so this revision never changes), so reads, whose events are most of the log, do not pay
for it.

A trigger refuses to move ``current_version`` without changing ``manifest_mac``: that is what a
Strongroom from before this revision does when it writes a version, and one still running during
an upgrade would otherwise leave a secret whose manifest no longer matches, unreadable until
repaired. With the trigger its writes fail (and, audited, do not happen) until it is replaced.
Like 0002's, it guards against an old writer, not against an attacker, who can drop it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SeqType = sa.BigInteger().with_variant(sa.Integer, "sqlite")
_WRITES = (
    "action IN ('secret.set', 'secret.destroy', 'secret.delete', 'secret.manifest', "
    "'manifest.init') AND outcome = 'ok'"
)
_REFUSED = "version moved without its manifest: a Strongroom older than schema 0003 is writing"


def upgrade() -> None:
    op.add_column("secrets", sa.Column("manifest", sa.Text, nullable=True))
    op.add_column("secrets", sa.Column("manifest_counter", SeqType, nullable=True))
    op.add_column("secrets", sa.Column("manifest_key", sa.String(40), nullable=True))
    op.add_column("secrets", sa.Column("manifest_mac", sa.String(64), nullable=True))
    op.create_index(
        "ix_audit_events_writes",
        "audit_events",
        ["namespace", "name", "seq"],
        sqlite_where=sa.text(_WRITES),
        postgresql_where=sa.text(_WRITES),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION strongroom_secret_unmanifested() RETURNS trigger LANGUAGE plpgsql "
            f"AS $$ BEGIN RAISE EXCEPTION '{_REFUSED}'; END $$"
        )
        op.execute(
            "CREATE TRIGGER secrets_manifested BEFORE UPDATE ON secrets FOR EACH ROW "
            "WHEN (NEW.current_version <> OLD.current_version "
            "AND NEW.manifest_mac IS NOT DISTINCT FROM OLD.manifest_mac) "
            "EXECUTE FUNCTION strongroom_secret_unmanifested()"
        )
    else:
        op.execute(
            "CREATE TRIGGER secrets_manifested BEFORE UPDATE ON secrets "
            "WHEN NEW.current_version <> OLD.current_version "
            "AND NEW.manifest_mac IS OLD.manifest_mac "
            f"BEGIN SELECT RAISE(ABORT, '{_REFUSED}'); END"
        )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.execute("DROP TRIGGER secrets_manifested" + (" ON secrets" if postgres else ""))
    if postgres:
        op.execute("DROP FUNCTION strongroom_secret_unmanifested()")
    op.drop_index("ix_audit_events_writes", table_name="audit_events")
    # Not a batch (copy and move) on SQLite: dropping the old secrets table would cascade to
    # every secret_versions row, foreign keys being on. SQLite drops a plain column in place
    # since 3.35.
    for column in ("manifest_mac", "manifest_key", "manifest_counter", "manifest"):
        op.execute(f"ALTER TABLE secrets DROP COLUMN {column}")
