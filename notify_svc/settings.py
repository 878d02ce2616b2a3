"""Notify service settings: environment variables prefixed NOTIFY_."""

from __future__ import annotations

from typing import Literal, Self

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

    # --- deliveries (email, SMS, push) ----------------------------------------------
    delivery_max_attempts: int = Field(
        8, ge=1, le=50, description="Attempts of an email, SMS or push notification before it is dead-lettered."
    )
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
    webhook_timeout_seconds: float = Field(
        5.0, gt=0, description="Timeout of one webhook POST (and of one push request): short, a slow endpoint fails."
    )
    webhook_retry_window_seconds: float = Field(
        259200.0,
        gt=0,
        description="How long a webhook delivery is retried (exponential backoff with full jitter), from its first "
        "attempt or its redelivery; the last attempt falls at the end of the window. Default 3 days, as Stripe.",
    )
    webhook_backoff_base_seconds: float = Field(30.0, gt=0, description="First webhook retry pause (then doubling).")
    webhook_backoff_max_seconds: float = Field(21600.0, gt=0, description="Longest pause between two webhook attempts.")
    webhook_max_attempts: int = Field(
        60, ge=1, le=200, description="Upper bound on a webhook delivery's attempts within its retry window."
    )
    webhook_disable_after_seconds: float = Field(
        259200.0,
        gt=0,
        description="An endpoint whose every attempt failed for this long is disabled and its owner emailed "
        "(a 410 Gone disables at once). Default 3 days.",
    )
    webhook_secret_overlap_seconds: float = Field(
        86400.0,
        ge=0,
        le=604800,
        description="Default overlap of a secret rotation: how long the previous secret keeps signing too.",
    )
    webhook_allow_private_hosts: bool = Field(
        False,
        description="Accept webhook and push URLs on loopback and private addresses (local stack and tests only; "
        "in production this stays false so merchants cannot aim deliveries at the internal network).",
    )
    secret_encryption_key: SecretStr = Field(
        SecretStr(""),
        description="Encrypts webhook signing secrets and push subscriptions at rest: 32 random bytes, base64.",
    )

    # --- email ------------------------------------------------------------------
    smtp_host: str = Field("127.0.0.1", description="SMTP server (relay or local sink) that email goes to.")
    smtp_port: int = Field(1025, ge=1, le=65535, description="SMTP port.")
    smtp_timeout_seconds: float = Field(10.0, gt=0, description="Timeout of one SMTP conversation.")
    email_sender: str = Field("paymesh <no-reply@paymesh.local>", description="From: address of notification email.")

    # --- SMS --------------------------------------------------------------------
    sms_provider: Literal["log", "twilio"] = Field(
        "log",
        description='"log" sends nothing and logs that it did not (the default); "twilio" sends through '
        "Twilio's Messaging API with its official library.",
    )
    sms_sender: str = Field("", description="The From number (E.164) or Messaging Service SID (MG...) of SMS.")
    twilio_account_sid: str = Field("", description="Twilio account SID (AC...).")
    twilio_auth_token: SecretStr = Field(SecretStr(""), description="Twilio auth token.")
    twilio_api_base_url: str = Field(
        "",
        description="Where Twilio's API is reached instead of https://api.twilio.com: the local stack's fake "
        "provider (devstack/providers.py). Empty in production.",
    )
    sms_timeout_seconds: float = Field(10.0, gt=0, description="Timeout of one request to the SMS provider.")

    # --- push -------------------------------------------------------------------
    push_provider: Literal["log", "webpush"] = Field(
        "log",
        description='"log" sends nothing and logs that it did not (the default); "webpush" sends Web Push '
        "(RFC 8030/8291, VAPID) to each user's registered subscription.",
    )
    push_vapid_private_key: SecretStr = Field(
        SecretStr(""), description="VAPID private key (raw P-256 scalar, base64url) that signs Web Push requests."
    )
    push_vapid_subject: str = Field(
        "mailto:ops@paymesh.local", description="VAPID `sub` claim: a mailto: or https: contact for push services."
    )

    # --- the DLQ re-drive command -------------------------------------------------
    redrive_group: str = Field(
        "notify_svc_dlq_redrive",
        min_length=1,
        description="Consumer group of `python -m notify_svc redrive-dlq`: its committed offsets mark what was "
        "re-driven.",
    )

    @model_validator(mode="after")
    def _lease_outlives_a_send(self) -> Self:
        # A lease shorter than a send would let a second worker retry a
        # delivery that is still being sent: two sends at once.
        longest = max(self.webhook_timeout_seconds, self.smtp_timeout_seconds, self.sms_timeout_seconds)
        if self.delivery_lease_seconds <= longest * 2:
            raise ValueError("NOTIFY_DELIVERY_LEASE_SECONDS must exceed twice the webhook, SMTP and SMS timeouts")
        return self

    @model_validator(mode="after")
    def _providers_are_configured(self) -> Self:
        # Fail at start rather than at the first message.
        if self.sms_provider == "twilio" and not (
            self.twilio_account_sid and self.twilio_auth_token.get_secret_value() and self.sms_sender
        ):
            raise ValueError("NOTIFY_SMS_PROVIDER=twilio needs TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and SMS_SENDER")
        if self.push_provider == "webpush" and not self.push_vapid_private_key.get_secret_value():
            raise ValueError("NOTIFY_PUSH_PROVIDER=webpush needs NOTIFY_PUSH_VAPID_PRIVATE_KEY")
        return self
