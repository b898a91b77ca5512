"""Initial schema: data keys, secrets, versions, and the audit chain.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Tz = sa.DateTime(timezone=True)
SeqType = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("kek_id", sa.String(2048), nullable=False),
        sa.Column("kek_version", sa.String(64), nullable=False),
        sa.Column("wrapped_seed", sa.LargeBinary, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", Tz, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_data_keys"),
    )
    op.create_table(
        "secrets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("current_version", sa.Integer, nullable=False),
        sa.Column("created_at", Tz, nullable=False),
        sa.Column("updated_at", Tz, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_secrets"),
        sa.UniqueConstraint("namespace", "name", name="uq_secrets_namespace_name"),
    )
    op.create_table(
        "secret_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("secret_id", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("key", sa.String(253), nullable=False),
        sa.Column("data_key_id", sa.String(40), nullable=False),
        sa.Column("format", sa.Integer, nullable=False),
        sa.Column("salt", sa.LargeBinary, nullable=True),
        sa.Column("nonce", sa.LargeBinary, nullable=True),
        sa.Column("ciphertext", sa.LargeBinary, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", Tz, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_secret_versions"),
        sa.ForeignKeyConstraint(
            ["secret_id"],
            ["secrets.id"],
            ondelete="CASCADE",
            name="fk_secret_versions_secret_id_secrets",
        ),
        sa.ForeignKeyConstraint(
            ["data_key_id"], ["data_keys.id"], name="fk_secret_versions_data_key_id_data_keys"
        ),
        sa.UniqueConstraint(
            "secret_id", "version", "key", name="uq_secret_versions_secret_version_key"
        ),
    )
    op.create_index("ix_secret_versions_data_key_id", "secret_versions", ["data_key_id"])
    op.create_table(
        "audit_events",
        sa.Column("seq", SeqType, primary_key=True, autoincrement=False),
        sa.Column("time", Tz, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_events"),
    )
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", SeqType, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": "0" * 64}])


def downgrade() -> None:
    op.drop_table("audit_head")
    op.drop_table("audit_events")
    op.drop_index("ix_secret_versions_data_key_id", table_name="secret_versions")
    op.drop_table("secret_versions")
    op.drop_table("secrets")
    op.drop_table("data_keys")
