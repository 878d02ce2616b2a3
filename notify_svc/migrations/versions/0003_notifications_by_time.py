"""Every user's notifications, newest first: the admin listing's index.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "notification_by_time", "notification", [sa.text("create_time DESC"), sa.text("notification_id DESC")]
    )


def downgrade() -> None:
    op.drop_index("notification_by_time", table_name="notification")
