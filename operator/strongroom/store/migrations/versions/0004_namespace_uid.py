"""Values bound to their namespace's identity: ``secrets.namespace_uid``.

NULL for every existing secret: the operator records the UID of the namespace whose
ManagedSecret syncs it first (strongroom.bindings), so an upgrade binds each secret to the
namespace that holds it today, without a pass over the store.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("secrets", sa.Column("namespace_uid", sa.String(64), nullable=True))


def downgrade() -> None:
    # In place, as 0003's downgrade explains (a batch copy would cascade to the versions).
    op.execute("ALTER TABLE secrets DROP COLUMN namespace_uid")
