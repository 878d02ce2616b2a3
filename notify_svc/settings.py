"""Notify service settings: environment variables prefixed NOTIFY_."""

from __future__ import annotations

from typing import Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from paymesh_runtime.kafka import TOPIC_NOTIFICATIONS_DLQ, TOPIC_PAYMENTS, TOPIC_USERS, TOPIC_WALLETS
from paymesh_runtime.settings import ServiceSettings


class NotifySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFY_", extra="ignore", frozen=True)

    # --- Kafka consumer ---------------------------------------------------------
    consumer_group: str = Field("notify_svc", min_length=1, description="Kafka consumer group of the event consumer.")
    consumer_topics: tuple[str, ...] = Field(
        (TOPIC_PAYMENTS, TOPIC_WALLETS, TOPIC_USERS), description="Event topics consumed (JSON list)."
    )
    dlq_topic: str = Field(TOPIC_NOTIFICATIONS_DLQ, description="Dead-letter topic for poison events and failures.")
    consumer_batch_size: int = Field(
        200, ge=1, le=2000, description="Records read per poll and stored in one database transaction."
    )
    consumer_retry_max_seconds: float = Field(
        30.0, gt=0, description="Longest pause before re-reading an event after a transient database error."
    )

    # --- deliveries (email and webhooks) ----------------------------------------
    delivery_max_attempts: int = Field(8, ge=1, le=50, description="Attempts before a delivery is dead-lettered.")
    delivery_backoff_base_seconds: float = Field(2.0, gt=0, description="First retry pause (then doubling, jittered).")
    delivery_backoff_max_seconds: float = Field(3600.0, gt=0, description="Longest pause between two attempts.")
    delivery_lease_seconds: float = Field(
        60.0, gt=0, description="How long a claimed delivery is reserved for one worker before another may retry it."
    )
    delivery_batch_size: int = Field(
        20, ge=1, le=500, description="Deliveries claimed (and sent concurrently) at once."
    )
    delivery_poll_seconds: float = Field(0.5, gt=0, description="Pause of an idle delivery worker.")

    # --- webhooks ---------------------------------------------------------------
    webhook_timeout_seconds: float = Field(10.0, gt=0, description="Timeout of one webhook POST.")
    webhook_allow_private_hosts: bool = Field(
        False,
        description="Accept webhook URLs on loopback and private addresses (local stack and tests only; "
        "in production this stays false so merchants cannot aim deliveries at the internal network).",
    )
    secret_encryption_key: SecretStr = Field(
        SecretStr(""), description="Encrypts webhook signing secrets at rest: 32 random bytes, base64."
    )

    # --- email ------------------------------------------------------------------
    smtp_host: str = Field("127.0.0.1", description="SMTP server (relay or local sink) that email goes to.")
    smtp_port: int = Field(1025, ge=1, le=65535, description="SMTP port.")
    smtp_timeout_seconds: float = Field(10.0, gt=0, description="Timeout of one SMTP conversation.")
    email_sender: str = Field("paymesh <no-reply@paymesh.local>", description="From: address of notification email.")

    @model_validator(mode="after")
    def _lease_outlives_a_send(self) -> Self:
        # A lease shorter than a send would let a second worker retry a
        # delivery that is still being sent: two sends at once.
        if self.delivery_lease_seconds <= max(self.webhook_timeout_seconds, self.smtp_timeout_seconds) * 2:
            raise ValueError("NOTIFY_DELIVERY_LEASE_SECONDS must exceed twice the webhook and SMTP timeouts")
        return self
