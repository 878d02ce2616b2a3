"""The index the outbox relay prunes published rows by.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

from paymesh_runtime.outbox import create_outbox_prune_index

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_outbox_prune_index(op.get_bind())


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS outbox_published")
