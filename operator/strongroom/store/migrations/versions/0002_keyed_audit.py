"""Keyed audit chain: the audit key's table and the head's MAC.

The audit key itself is not created here: wrapping it needs the KEK, which migrations never
see. The first audited operation after this revision creates it and writes the ``audit.key``
event, whose link commits to the head the unkeyed chain had reached (see strongroom.audit).
Existing events and their unkeyed links are left as they are.

A trigger refuses to move the head without changing its MAC: that is what a Strongroom from
before this revision does, and one still running during an upgrade (a replica not yet
replaced) would otherwise append unkeyed events after keyed ones, which verification must
report as tampering forever after. With the trigger its writes fail (and, audited, do not
happen) until it is replaced. It is a guard against an old writer, not against an attacker.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Tz = sa.DateTime(timezone=True)
SeqType = sa.BigInteger().with_variant(sa.Integer, "sqlite")
_REFUSED = "audit head moved without its MAC: a Strongroom older than schema 0002 is writing"


def upgrade() -> None:
    op.create_table(
        "audit_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("kek_id", sa.String(2048), nullable=False),
        sa.Column("kek_version", sa.String(64), nullable=False),
        sa.Column("wrapped_seed", sa.LargeBinary, nullable=False),
        sa.Column("first_seq", SeqType, nullable=False),
        sa.Column("created_at", Tz, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_keys"),
    )
    # SQLite adds a NOT NULL column only with a default; the one row gets "" (not keyed yet).
    op.add_column(
        "audit_head", sa.Column("mac", sa.String(64), nullable=False, server_default="")
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION strongroom_audit_head_unkeyed() RETURNS trigger LANGUAGE plpgsql "
            f"AS $$ BEGIN RAISE EXCEPTION '{_REFUSED}'; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_head_keyed BEFORE UPDATE ON audit_head FOR EACH ROW "
            "WHEN (NEW.seq <> OLD.seq AND NEW.mac = OLD.mac) "
            "EXECUTE FUNCTION strongroom_audit_head_unkeyed()"
        )
    else:
        op.execute(
            "CREATE TRIGGER audit_head_keyed BEFORE UPDATE ON audit_head "
            "WHEN NEW.seq <> OLD.seq AND NEW.mac = OLD.mac "
            f"BEGIN SELECT RAISE(ABORT, '{_REFUSED}'); END"
        )


def downgrade() -> None:
    op.execute("DROP TRIGGER audit_head_keyed" + (
        " ON audit_head" if op.get_bind().dialect.name == "postgresql" else ""
    ))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION strongroom_audit_head_unkeyed()")
    with op.batch_alter_table("audit_head") as batch:
        batch.drop_column("mac")
    op.drop_table("audit_keys")
