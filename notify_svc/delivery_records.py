"""What the delivery worker handles: a claimed delivery, an attempt, its outcome, a dead letter. No I/O."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime


class DeliveryFailed(Exception):
    """An attempt that did not reach the recipient and may next time; the message is safe to store."""


class Undeliverable(Exception):
    """A message no retry can deliver (its address was removed, the provider refuses it); safe to store."""


@dataclass(frozen=True)
class Delivery:
    """A claimed delivery, with what the worker needs to attempt it."""

    notification_id: uuid.UUID
    claim_token: uuid.UUID
    channel: str
    user_id: str
    event_id: uuid.UUID
    event_type: str
    subject: str
    body: str
    attempts: int  # including the attempt this claim is for
    email: str | None  # EMAIL: the recipient's address, if known yet
    endpoint_id: uuid.UUID | None
    url: str | None  # WEBHOOK: None once the endpoint was deleted or disabled
    secret_sealed: bytes | None = field(default=None, repr=False)
    # WEBHOOK during a rotation's overlap: the previous secret, which signs too.
    previous_secret_sealed: bytes | None = field(default=None, repr=False)
    body_html: str | None = None  # EMAIL: the HTML alternative
    phone_number: str | None = field(default=None, repr=False)  # SMS: where to, if still registered
    push_subscription_sealed: bytes | None = field(default=None, repr=False)  # PUSH: where to
    # The retry schedule this attempt belongs to (a redelivery starts a new one): which attempt of it
    # this is, and how long ago it started.
    schedule_attempt: int = 1
    schedule_age_seconds: float = 0.0


@dataclass(frozen=True)
class Attempt:
    """One webhook request and how it ended (the attempt log ListWebhookDeliveries shows)."""

    start_time: datetime
    latency_ms: int
    status_code: int | None  # None: no HTTP answer
    response_body: str | None
    error: str | None  # None: accepted

    @property
    def accepted(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Outcome:
    """How one claimed delivery's attempt ended."""

    delivery: Delivery
    state: str  # DELIVERED, DEAD_LETTERED, CANCELED, or PENDING to retry
    error: str | None = None  # why it failed (or was canceled)
    retry_in_seconds: float | None = None  # PENDING: when to try again
    attempt: Attempt | None = None  # WEBHOOK: the request made, for the attempt log


@dataclass(frozen=True)
class DeadLetter:
    notification_id: uuid.UUID
    channel: str
    event_id: uuid.UUID
    event_type: str
    event_payload: bytes
    endpoint_id: uuid.UUID | None
    attempts: int
    last_error: str
