"""The delivery worker: sends pending emails, SMS, push notifications and webhooks, retries, dead-letters.

Any number of replicas run it. Each loop claims a batch of due deliveries
(FOR UPDATE SKIP LOCKED plus a lease, see store.claim_due), attempts them
concurrently (each on its channel: notify_svc.channels, or
notify_svc.webhook_sender), then records the round's outcomes, each only if
its claim still holds: delivered; retried later (notify_svc.retry:
exponential backoff with full jitter, webhooks for a window of days); or,
once the schedule is over, dead-lettered — the row then waits for the DLQ
topic, and publishing it is retried until Kafka takes it. A message that
cannot be delivered at all (its phone number or subscription was removed) is
CANCELED. Webhook attempts are logged with their status, latency and the
start of the answer, and judge their endpoint: failing for too long, or 410
Gone, disables it and emails its owner (notify_svc.endpoint_health).

Delivery is at least once. A crash after the recipient accepted and before
the outcome is recorded (at the end of the round, within the lease: every
send is bounded by its timeout, and the lease exceeds twice the timeouts)
repeats the send once the lease expires: email keeps its Message-ID and
webhooks their webhook-id, for the recipient to dedupe.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from opentelemetry.trace import SpanKind, Status, StatusCode

from notify_svc import own_events, webhooks
from notify_svc.channels import Channel
from notify_svc.dead_letters import DeadLetterProducer
from notify_svc.delivery_records import DeliveryFailed, Undeliverable
from notify_svc.endpoint_health import DisabledEndpoint, OwnerNotice
from notify_svc.retry import Schedule, next_retry
from notify_svc.store import (
    CANCELED,
    DEAD_LETTERED,
    DELIVERED,
    EMAIL,
    PENDING,
    WEBHOOK,
    Delivery,
    NotifyStore,
    Outcome,
)
from notify_svc.templates import DEFAULT_LOCALE, Templates
from notify_svc.webhook_sender import WebhookSender
from paymesh_runtime import failures, metrics
from paymesh_runtime.telemetry_spans import EVENT_TRACES, span_from_carrier

log = logging.getLogger(__name__)
# How often a worker looks for dead letters it did not make itself.
DEAD_LETTER_CHECK_SECONDS = 10.0
# How often a worker erases previous signing secrets whose overlap has ended.
SECRET_SWEEP_SECONDS = 60.0
_SPAN_NAMES = {EMAIL: "smtp send", "WEBHOOK": "webhook POST"}


__all__ = ["DeliveryFailed", "DeliveryWorker", "RetryPolicy", "WebhookSender"]


@dataclass(frozen=True)
class RetryPolicy:
    personal: Schedule  # email, SMS and push
    webhook: Schedule
    disable_after_seconds: float  # an endpoint failing this long is disabled
    lease_seconds: float
    batch_size: int
    poll_seconds: float


class DeliveryWorker:
    """Claims due deliveries and attempts them, until cancelled."""

    def __init__(
        self,
        store: NotifyStore,
        channels: Mapping[str, Channel],
        webhook_sender: WebhookSender,
        dead_letters: DeadLetterProducer,
        policy: RetryPolicy,
        templates: Templates,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._channels = channels
        self._webhooks = webhook_sender
        self._dead_letters = dead_letters
        self._policy = policy
        self._templates = templates
        self._random = rand
        # When to look for dead letters to publish next: at once after this worker made
        # one, else now and then (a replica may have died before publishing its own).
        self._next_dead_letter_check = 0.0
        self._next_secret_sweep = 0.0
        # The last round's outcomes while they are not recorded yet (run_once).
        self._unrecorded: list[Outcome] = []

    async def run(self) -> None:
        while True:
            # A round is not interrupted by a graceful stop: what it has sent is known only
            # once record_outcomes has run, and a message sent but not recorded goes again
            # after its lease. Each send is bounded by its channel's timeout, so the stop
            # waits at most one round; only a crash leaves the at-least-once window.
            round_ = asyncio.create_task(self._round(), name="delivery round")
            try:
                worked = await asyncio.shield(round_)
            except asyncio.CancelledError:
                await round_
                raise
            if not worked:
                await asyncio.sleep(self._policy.poll_seconds)

    async def _round(self) -> int:
        try:
            return await self.run_once()
        except Exception as error:  # the database is down: wait and retry
            log.warning("delivery worker paused: %s", failures.describe(error))
            return 0

    async def run_once(self) -> int:
        """One round: attempt a batch of due deliveries, record the outcomes, publish dead letters.

        Outcomes that could not be recorded (the database went away after the sends) are kept and
        recorded first in the next round, before anything new is claimed: within the lease, so the
        messages are not sent again."""
        if self._unrecorded:
            await self._record(self._unrecorded)
            self._unrecorded = []
        deliveries = await self._store.claim_due(self._policy.batch_size, self._policy.lease_seconds)
        outcomes = await asyncio.gather(*(self._observed(delivery) for delivery in deliveries))
        self._unrecorded = outcomes
        await self._record(outcomes)
        self._unrecorded = []
        await self._sweep_secrets()
        return len(deliveries) + await self._publish_dead_letters()

    async def _record(self, outcomes: list[Outcome]) -> None:
        applied, disabled = await self._store.record_outcomes(
            outcomes, self._policy.disable_after_seconds, self._owner_notice
        )
        for endpoint in disabled:
            log.warning("webhook endpoint %s disabled (%s); its owner is told", endpoint.endpoint_id, endpoint.reason)
        for outcome in outcomes:
            if outcome.state == DEAD_LETTERED:
                self._next_dead_letter_check = 0.0
            elif outcome.state == DELIVERED and outcome.delivery.notification_id not in applied:
                log.info(
                    "delivery %s was sent after its claim lapsed or it was canceled", outcome.delivery.notification_id
                )

    async def _publish_dead_letters(self) -> int:
        if time.monotonic() < self._next_dead_letter_check:
            return 0
        try:
            published = await self._store.publish_dead_letters(
                self._dead_letters.send_dead_letter, self._policy.batch_size
            )
        except Exception as error:  # Kafka is down: the rows wait for the next round
            log.warning("dead letters wait for Kafka: %s", failures.describe(error))
            return 0
        if published < self._policy.batch_size:
            self._next_dead_letter_check = time.monotonic() + DEAD_LETTER_CHECK_SECONDS
        return published

    async def _sweep_secrets(self) -> None:
        if time.monotonic() < self._next_secret_sweep:
            return
        self._next_secret_sweep = time.monotonic() + SECRET_SWEEP_SECONDS
        await self._store.erase_expired_secrets()

    async def _observed(self, delivery: Delivery) -> Outcome:
        """`_attempt`, timed and counted (paymesh_runtime.metrics), and a span in its event's trace when that
        trace is sampled and this process consumed the event (paymesh_runtime.telemetry_spans.EVENT_TRACES)."""
        channel = delivery.channel.lower()
        carrier = EVENT_TRACES.carrier(str(delivery.event_id))
        span = span_from_carrier(_SPAN_NAMES.get(delivery.channel, f"{channel} send"), carrier, SpanKind.CLIENT)
        start = time.perf_counter()
        outcome = await self._attempt(delivery)
        attempted = outcome.state != CANCELED
        metrics.delivery_attempted(channel, outcome.state, time.perf_counter() - start if attempted else None)
        if span is not None:
            span.set_attributes(
                {"paymesh.delivery.attempt": delivery.attempts, "paymesh.delivery.outcome": outcome.state,
                 "paymesh.event.type": delivery.event_type}
            )  # fmt: skip
            if outcome.state != DELIVERED:
                span.set_status(Status(StatusCode.ERROR, outcome.state))
            span.end()
        return outcome

    async def _attempt(self, delivery: Delivery) -> Outcome:
        if delivery.channel == WEBHOOK:
            return await self._attempt_webhook(delivery)
        try:
            await self._channels[delivery.channel].send(delivery)
        except Undeliverable as error:
            return Outcome(delivery, CANCELED, str(error))
        except Exception as error:
            return self._failed(delivery, _describe(error), self._policy.personal)
        return Outcome(delivery, DELIVERED)

    async def _attempt_webhook(self, delivery: Delivery) -> Outcome:
        if delivery.url is None:
            return Outcome(delivery, CANCELED, "endpoint deleted or disabled")
        try:
            attempt = await self._webhooks.send(delivery)
        except Exception as error:  # before any request (a secret that does not open): no attempt to log
            return self._failed(delivery, _describe(error), self._policy.webhook)
        if attempt.accepted:
            return Outcome(delivery, DELIVERED, attempt=attempt)
        failed = self._failed(delivery, attempt.error or "failed", self._policy.webhook)
        return dataclasses.replace(failed, attempt=attempt)

    def _failed(self, delivery: Delivery, error: str, schedule: Schedule) -> Outcome:
        delay = next_retry(schedule, delivery.schedule_attempt, delivery.schedule_age_seconds, self._random)
        if delay is None:
            log.warning(
                "delivery %s dead-lettered after %d attempts: %s", delivery.notification_id, delivery.attempts, error
            )
            return Outcome(delivery, DEAD_LETTERED, error)
        return Outcome(delivery, PENDING, error, retry_in_seconds=delay)

    def _owner_notice(self, endpoint: DisabledEndpoint, locale: str | None) -> OwnerNotice:
        """The email telling an endpoint's owner that it was disabled, in the owner's locale."""
        template = "endpoint_disabled_gone" if endpoint.reason == "GONE" else "endpoint_disabled_failing"
        since = endpoint.failing_since.isoformat(timespec="seconds") if endpoint.failing_since else ""
        params = {"url": endpoint.url, "endpoint_id": str(endpoint.endpoint_id), "since": since}
        message = self._templates.render(template, locale or DEFAULT_LOCALE, params, with_html=True)
        event = own_events.make(webhooks.ENDPOINT_DISABLED_EVENT_TYPE, str(endpoint.endpoint_id))
        return OwnerNotice(
            uuid.UUID(event.id), event.type, event.SerializeToString(), message.subject, message.text, message.html
        )


def _describe(error: Exception) -> str:
    # Never the request itself: it carries the signature.
    if isinstance(error, DeliveryFailed):
        return str(error)
    return f"{type(error).__name__}: {error}"
