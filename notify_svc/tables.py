"""notify_svc's tables (SQLAlchemy Core), as migrations/versions create them.

The invariants live in the schema: one processed row per event id; one
notification per (event, EMAIL, user), (event, SMS or PUSH, user) and
(event, WEBHOOK, endpoint); states and channels by CHECK; an endpoint's
secrets erased on deletion; a previous secret only with its expiry.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

metadata = MetaData()

processed_event = Table(
    "processed_event",
    metadata,
    Column("event_id", UUID(as_uuid=True), primary_key=True),
    Column("event_type", String(100), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

user_contact = Table(
    "user_contact",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("email", String(254), nullable=False),
    Column("display_name", String(100), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

webhook_endpoint = Table(
    "webhook_endpoint",
    metadata,
    Column("endpoint_id", UUID(as_uuid=True), primary_key=True),
    Column("owner_id", String(64), nullable=False),
    Column("url", Text, nullable=False),
    Column("event_types", ARRAY(String(100)), nullable=False),
    Column("secret_sealed", LargeBinary),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("deleted_at", DateTime(timezone=True)),
    Column("description", String(500), nullable=False, server_default=""),
    Column("disabled_at", DateTime(timezone=True)),
    Column("disabled_reason", String(16)),
    Column("failing_since", DateTime(timezone=True)),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("previous_secret_sealed", LargeBinary),
    Column("previous_secret_expires_at", DateTime(timezone=True)),
)

notification = Table(
    "notification",
    metadata,
    Column("notification_id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("endpoint_id", UUID(as_uuid=True), ForeignKey("webhook_endpoint.endpoint_id")),
    Column("event_id", UUID(as_uuid=True), ForeignKey("processed_event.event_id"), nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("event_payload", LargeBinary, nullable=False),
    Column("subject", String(300), nullable=False),
    Column("body", Text, nullable=False),
    Column("body_html", Text),
    Column("state", String(16), nullable=False, server_default="PENDING"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("claim_token", UUID(as_uuid=True)),
    # While a worker attempts it: until then no other worker claims it (no index names it: migration 0005).
    Column("lease_expires_at", DateTime(timezone=True)),
    Column("last_error", String(500)),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("delivered_time", DateTime(timezone=True)),
    Column("dlq_published_at", DateTime(timezone=True)),
    Column("schedule_start", DateTime(timezone=True)),
    Column("schedule_offset", Integer, nullable=False, server_default="0"),
)

delivery_attempt = Table(
    "delivery_attempt",
    metadata,
    Column("notification_id", UUID(as_uuid=True), ForeignKey("notification.notification_id"), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("start_time", DateTime(timezone=True), nullable=False),
    Column("latency_ms", Integer, nullable=False),
    Column("status_code", Integer),
    Column("response_body", String(1024)),
    Column("error", String(500)),
)

notification_preference = Table(
    "notification_preference",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("locale", String(8), nullable=False, server_default="en"),
    Column("default_email", Boolean, nullable=False),
    Column("default_sms", Boolean, nullable=False),
    Column("default_push", Boolean, nullable=False),
    Column("event_channels", JSONB, nullable=False),
    Column("phone_number", String(16)),
    Column("push_subscription_sealed", LargeBinary),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Channels and delivery states, as stored (the proto enum values' names).
EMAIL = "EMAIL"
WEBHOOK = "WEBHOOK"
SMS = "SMS"
PUSH = "PUSH"
PENDING = "PENDING"
DELIVERED = "DELIVERED"
DEAD_LETTERED = "DEAD_LETTERED"
CANCELED = "CANCELED"
MAX_ERROR_LENGTH = 500
MAX_SUBJECT_LENGTH = 300
MAX_RESPONSE_BODY_LENGTH = 1024
