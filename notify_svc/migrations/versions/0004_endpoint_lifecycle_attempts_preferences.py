"""Endpoint lifecycle (description, disable, secret rotation, failure tracking), the attempt log of
webhook deliveries, SMS and PUSH notifications, and users' notification preferences.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # --- webhook endpoints ------------------------------------------------------------
    op.add_column("webhook_endpoint", sa.Column("description", sa.String(500), nullable=False, server_default=""))
    op.add_column("webhook_endpoint", sa.Column("disabled_at", sa.DateTime(timezone=True)))
    op.add_column("webhook_endpoint", sa.Column("disabled_reason", sa.String(16)))
    op.add_column("webhook_endpoint", sa.Column("failing_since", sa.DateTime(timezone=True)))
    op.add_column(
        "webhook_endpoint",
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.add_column("webhook_endpoint", sa.Column("previous_secret_sealed", sa.LargeBinary))
    op.add_column("webhook_endpoint", sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True)))
    op.create_check_constraint(
        "webhook_endpoint_disabled_reason",
        "webhook_endpoint",
        "(disabled_at IS NULL) = (disabled_reason IS NULL) "
        "AND (disabled_reason IS NULL OR disabled_reason IN ('BY_OWNER', 'FAILING', 'GONE'))",
    )
    # A previous secret exists only with its expiry, and never on a deleted endpoint.
    op.create_check_constraint(
        "webhook_endpoint_previous_secret",
        "webhook_endpoint",
        "(previous_secret_sealed IS NULL) = (previous_secret_expires_at IS NULL) "
        "AND (deleted_at IS NULL OR previous_secret_sealed IS NULL)",
    )

    # --- notifications: SMS and PUSH, HTML email, redelivery --------------------------
    op.drop_constraint("notification_channel_known", "notification", type_="check")
    op.create_check_constraint(
        "notification_channel_known", "notification", "channel IN ('EMAIL', 'WEBHOOK', 'SMS', 'PUSH')"
    )
    op.add_column("notification", sa.Column("body_html", sa.Text))
    op.create_check_constraint("notification_html_is_email", "notification", "body_html IS NULL OR channel = 'EMAIL'")
    # A redelivery starts a new retry schedule: it begins at schedule_start (NULL: create_time),
    # after schedule_offset attempts made before it.
    op.add_column("notification", sa.Column("schedule_start", sa.DateTime(timezone=True)))
    op.add_column("notification", sa.Column("schedule_offset", sa.Integer, nullable=False, server_default="0"))
    op.create_check_constraint(
        "notification_schedule_offset", "notification", "schedule_offset >= 0 AND schedule_offset <= attempts"
    )
    # One SMS and one push notification per event and user, like one email.
    op.create_index(
        "notification_personal_once",
        "notification",
        ["event_id", "user_id", "channel"],
        unique=True,
        postgresql_where=sa.text("channel IN ('SMS', 'PUSH')"),
    )
    # ListWebhookDeliveries: an endpoint's deliveries, newest first.
    op.create_index(
        "notification_deliveries_by_endpoint",
        "notification",
        ["endpoint_id", sa.text("create_time DESC"), sa.text("notification_id DESC")],
        postgresql_where=sa.text("channel = 'WEBHOOK'"),
    )

    # --- the attempt log of webhook deliveries ----------------------------------------
    op.create_table(
        "delivery_attempt",
        sa.Column(
            "notification_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("notification.notification_id"),
            primary_key=True,
        ),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("latency_ms", sa.Integer, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("response_body", sa.String(1024)),
        sa.Column("error", sa.String(500)),
        sa.CheckConstraint("attempt >= 1", name="delivery_attempt_number"),
        sa.CheckConstraint("latency_ms >= 0", name="delivery_attempt_latency"),
        sa.CheckConstraint("status_code IS NULL OR status_code BETWEEN 100 AND 599", name="delivery_attempt_status"),
    )

    # --- users' notification preferences ----------------------------------------------
    op.create_table(
        "notification_preference",
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("locale", sa.String(8), nullable=False, server_default="en"),
        sa.Column("default_email", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("default_sms", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("default_push", sa.Boolean, nullable=False, server_default=sa.false()),
        # {"payment.succeeded": ["SMS"], ...}: the channels chosen per event type.
        sa.Column("event_channels", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("phone_number", sa.String(16)),
        sa.Column("push_subscription_sealed", sa.LargeBinary),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("jsonb_typeof(event_channels) = 'object'", name="notification_preference_event_channels"),
        sa.CheckConstraint(r"phone_number ~ '^\+[1-9][0-9]{6,14}$'", name="notification_preference_phone_e164"),
    )


def downgrade() -> None:
    op.drop_table("notification_preference")
    op.drop_table("delivery_attempt")
    op.drop_index("notification_deliveries_by_endpoint", table_name="notification")
    op.drop_index("notification_personal_once", table_name="notification")
    op.drop_constraint("notification_schedule_offset", "notification", type_="check")
    op.drop_column("notification", "schedule_offset")
    op.drop_column("notification", "schedule_start")
    op.drop_constraint("notification_html_is_email", "notification", type_="check")
    op.drop_column("notification", "body_html")
    op.drop_constraint("notification_channel_known", "notification", type_="check")
    op.create_check_constraint("notification_channel_known", "notification", "channel IN ('EMAIL', 'WEBHOOK')")
    op.drop_constraint("webhook_endpoint_previous_secret", "webhook_endpoint", type_="check")
    op.drop_constraint("webhook_endpoint_disabled_reason", "webhook_endpoint", type_="check")
    for column in (
        "previous_secret_expires_at",
        "previous_secret_sealed",
        "update_time",
        "failing_since",
        "disabled_at",
        "disabled_reason",
        "description",
    ):
        op.drop_column("webhook_endpoint", column)
