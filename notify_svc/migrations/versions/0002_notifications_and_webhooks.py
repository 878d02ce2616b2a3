"""Notifications (one row per delivery), webhook endpoints, the address book.

A notification row is at once what the user lists and the delivery record:
one per (event, EMAIL, user) or (event, WEBHOOK, endpoint), enforced by
partial unique indexes, so a redelivered event never creates a second one.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_contact",
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("display_name", sa.String(100), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "webhook_endpoint",
        sa.Column("endpoint_id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("owner_id", sa.String(64), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("event_types", postgresql.ARRAY(sa.String(100)), nullable=False),
        sa.Column("secret_sealed", sa.LargeBinary),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("deleted_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("cardinality(event_types) BETWEEN 1 AND 50", name="webhook_endpoint_event_types"),
        sa.CheckConstraint("char_length(url) BETWEEN 1 AND 2048", name="webhook_endpoint_url_length"),
        # A deleted endpoint keeps no secret.
        sa.CheckConstraint("(deleted_at IS NULL) = (secret_sealed IS NOT NULL)", name="webhook_endpoint_secret_live"),
    )
    op.create_index(
        "webhook_endpoint_by_owner",
        "webhook_endpoint",
        ["owner_id", "create_time", "endpoint_id"],
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "notification",
        sa.Column("notification_id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("endpoint_id", postgresql.UUID(as_uuid=True), sa.ForeignKey("webhook_endpoint.endpoint_id")),
        sa.Column("event_id", postgresql.UUID(as_uuid=True), sa.ForeignKey("processed_event.event_id"), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("event_payload", sa.LargeBinary, nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="PENDING"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("claim_token", postgresql.UUID(as_uuid=True)),
        sa.Column("last_error", sa.String(500)),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("delivered_time", sa.DateTime(timezone=True)),
        sa.Column("dlq_published_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("channel IN ('EMAIL', 'WEBHOOK')", name="notification_channel_known"),
        sa.CheckConstraint(
            "state IN ('PENDING', 'DELIVERED', 'DEAD_LETTERED', 'CANCELED')", name="notification_state_known"
        ),
        sa.CheckConstraint("(channel = 'WEBHOOK') = (endpoint_id IS NOT NULL)", name="notification_webhook_endpoint"),
        sa.CheckConstraint("(state = 'DELIVERED') = (delivered_time IS NOT NULL)", name="notification_delivered_time"),
        sa.CheckConstraint(
            "dlq_published_at IS NULL OR state = 'DEAD_LETTERED'", name="notification_dlq_only_dead_letters"
        ),
        sa.CheckConstraint("attempts >= 0", name="notification_attempts_non_negative"),
    )
    # The deduplication of deliveries: (event id, channel, recipient).
    op.create_index(
        "notification_email_once",
        "notification",
        ["event_id", "user_id"],
        unique=True,
        postgresql_where=sa.text("channel = 'EMAIL'"),
    )
    op.create_index(
        "notification_webhook_once",
        "notification",
        ["event_id", "endpoint_id"],
        unique=True,
        postgresql_where=sa.text("channel = 'WEBHOOK'"),
    )
    op.create_index(
        "notification_by_user",
        "notification",
        ["user_id", sa.text("create_time DESC"), sa.text("notification_id DESC")],
    )
    op.create_index(
        "notification_due", "notification", ["next_attempt_at"], postgresql_where=sa.text("state = 'PENDING'")
    )
    op.create_index(
        "notification_dead_letter_unpublished",
        "notification",
        ["create_time"],
        postgresql_where=sa.text("state = 'DEAD_LETTERED' AND dlq_published_at IS NULL"),
    )
    op.create_index(
        "notification_by_endpoint", "notification", ["endpoint_id"], postgresql_where=sa.text("state = 'PENDING'")
    )


def downgrade() -> None:
    op.drop_table("notification")
    op.drop_table("webhook_endpoint")
    op.drop_table("user_contact")
