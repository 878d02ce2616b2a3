"""The index the outbox relay prunes published rows by.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

from paymesh_runtime.outbox import create_outbox_prune_index

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_outbox_prune_index(op.get_bind())


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS outbox_published")
