"""The delivery worker: sends pending emails and webhooks, retries, dead-letters.

Any number of replicas run it. Each loop claims a batch of due deliveries
(FOR UPDATE SKIP LOCKED plus a lease, see store.claim_due), attempts them
concurrently, then records the round's outcomes in one statement, each only
if its claim still holds: delivered; retried later (exponential backoff with
full jitter); or, after the last attempt, dead-lettered — the row then waits
for the DLQ topic, and publishing it is retried until Kafka takes it.

Delivery is at least once. A crash after the recipient accepted and before
the outcome is recorded (at the end of the round, within the lease: every
send is bounded by its timeout, and the lease exceeds twice the timeouts)
repeats the send once the lease expires: email keeps its Message-ID and
webhooks their Paymesh-Event-Id, for the recipient to dedupe.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from notify_svc import webhooks
from notify_svc.dead_letters import DeadLetterProducer
from notify_svc.mailer import Email, SmtpMailer
from notify_svc.store import CANCELED, DEAD_LETTERED, DELIVERED, EMAIL, PENDING, Delivery, NotifyStore, Outcome
from paymesh_runtime import failures
from paymesh_runtime.backoff import full_jitter
from paymesh_runtime.sealing import SecretSealer
from paymesh_runtime.webhook_signatures import SIGNATURE_HEADER, signature_header

log = logging.getLogger(__name__)
# How often a worker looks for dead letters it did not make itself.
DEAD_LETTER_CHECK_SECONDS = 10.0


class DeliveryFailed(Exception):
    """An attempt that did not reach the recipient; the message is safe to store."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_base_seconds: float
    backoff_max_seconds: float
    lease_seconds: float
    batch_size: int
    poll_seconds: float


class WebhookSender:
    """POSTs one signed event to a merchant endpoint."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        sealer: SecretSealer,
        *,
        timeout_seconds: float,
        allow_private_hosts: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._sealer = sealer
        self._timeout = timeout_seconds
        self._allow_private = allow_private_hosts
        self._clock = clock

    async def send(self, delivery: Delivery) -> None:
        assert delivery.url is not None
        assert delivery.secret_sealed is not None
        secret = self._sealer.open(str(delivery.endpoint_id), delivery.secret_sealed).decode()
        body = delivery.body.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "paymesh-webhooks/1",
            SIGNATURE_HEADER: signature_header(secret, int(self._clock()), body),
            webhooks.EVENT_ID_HEADER: str(delivery.event_id),
            webhooks.EVENT_TYPE_HEADER: delivery.event_type,
        }
        try:
            async with asyncio.timeout(self._timeout):
                if not self._allow_private:
                    await _refuse_private_destination(delivery.url)
                response = await self._client.post(delivery.url, content=body, headers=headers)
        except TimeoutError:
            raise DeliveryFailed(f"no answer within {self._timeout:.0f}s") from None
        except httpx.HTTPError as error:
            raise DeliveryFailed(f"{type(error).__name__}: {error}") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"endpoint answered HTTP {response.status_code}")


async def _refuse_private_destination(url: str) -> None:
    """Host names are checked where they point now, not only when registered."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise DeliveryFailed(f"cannot resolve the endpoint's host: {error}") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not webhooks.address_is_public(address):
            raise DeliveryFailed("the endpoint's host resolves to a non-public address")


class DeliveryWorker:
    """Claims due deliveries and attempts them, until cancelled."""

    def __init__(
        self,
        store: NotifyStore,
        mailer: SmtpMailer,
        webhook_sender: WebhookSender,
        dead_letters: DeadLetterProducer,
        policy: RetryPolicy,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._mailer = mailer
        self._webhooks = webhook_sender
        self._dead_letters = dead_letters
        self._policy = policy
        self._random = rand
        # When to look for dead letters to publish next: at once after this worker made
        # one, else now and then (a replica may have died before publishing its own).
        self._next_dead_letter_check = 0.0

    async def run(self) -> None:
        while True:
            try:
                worked = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database is down: wait and retry
                log.warning("delivery worker paused: %s", failures.describe(error))
                worked = 0
            if not worked:
                await asyncio.sleep(self._policy.poll_seconds)

    async def run_once(self) -> int:
        """One round: attempt a batch of due deliveries, record the outcomes, publish dead letters."""
        deliveries = await self._store.claim_due(self._policy.batch_size, self._policy.lease_seconds)
        outcomes = await asyncio.gather(*(self._attempt(delivery) for delivery in deliveries))
        applied = await self._store.record_outcomes(outcomes)
        for outcome in outcomes:
            if outcome.state == DEAD_LETTERED:
                self._next_dead_letter_check = 0.0
            elif outcome.state == DELIVERED and outcome.delivery.notification_id not in applied:
                log.info(
                    "delivery %s was sent after its claim lapsed or it was canceled", outcome.delivery.notification_id
                )
        return len(deliveries) + await self._publish_dead_letters()

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

    async def _attempt(self, delivery: Delivery) -> Outcome:
        if delivery.channel != EMAIL and delivery.url is None:
            return Outcome(delivery, CANCELED, "endpoint deleted")
        try:
            await self._send(delivery)
        except Exception as error:
            return self._failed(delivery, _describe(error))
        return Outcome(delivery, DELIVERED)

    async def _send(self, delivery: Delivery) -> None:
        if delivery.channel != EMAIL:
            await self._webhooks.send(delivery)
            return
        if not delivery.email:
            # user.registered arrives on another topic and may come later.
            raise DeliveryFailed("the recipient's email address is not known yet")
        await self._mailer.send(
            Email(
                to=delivery.email,
                subject=delivery.subject,
                body=delivery.body,
                message_id=f"<{delivery.notification_id}@paymesh>",
                event_id=str(delivery.event_id),
            )
        )

    def _failed(self, delivery: Delivery, error: str) -> Outcome:
        policy = self._policy
        if delivery.attempts >= policy.max_attempts:
            log.warning(
                "delivery %s dead-lettered after %d attempts: %s", delivery.notification_id, delivery.attempts, error
            )
            return Outcome(delivery, DEAD_LETTERED, error)
        delay = full_jitter(delivery.attempts, policy.backoff_base_seconds, policy.backoff_max_seconds, self._random)
        return Outcome(delivery, PENDING, error, retry_in_seconds=delay)


def _describe(error: Exception) -> str:
    # Never the request itself: it carries the signature.
    if isinstance(error, DeliveryFailed):
        return str(error)
    return f"{type(error).__name__}: {error}"
