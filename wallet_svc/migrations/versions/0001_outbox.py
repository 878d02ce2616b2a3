"""The transactional outbox.

Revision ID: 0001
Revises:
"""

from alembic import op

from paymesh_runtime.outbox import create_outbox_schema

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_outbox_schema(op.get_bind())
