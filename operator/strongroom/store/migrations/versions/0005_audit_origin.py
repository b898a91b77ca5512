"""Who stood behind an API call: ``audit_events.origin``.

NULL for every existing event and for the events of the CLI and the operator; the values API
(strongroom.server) records its caller's Kubernetes UID, groups, source address and the
authorization decision there. An event with an origin hashes it as an eleventh canonical field
(strongroom.audit), one without keeps the ten-field form, so existing chains verify unchanged.

Revision ID: 0005
Revises: 0004
Create Date: 2027-01-10
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("origin", sa.Text(), nullable=True))


def downgrade() -> None:
    # In place, as 0003's downgrade explains. Events with an origin no longer verify after a
    # downgrade (their MAC covers it): downgrade only a store the values API never wrote to.
    op.execute("ALTER TABLE audit_events DROP COLUMN origin")
