"""The dead-letter topic: events notify_svc could not handle, and why.

Two kinds of record go there, both with the reason in headers:
- poison input from the consumer (`dlq-reason` UNDECODABLE, INVALID_ENVELOPE
  or REJECTED_BY_DATABASE): the record's key, value and headers exactly as
  read, plus `dlq-source-topic/-partition/-offset` and `dlq-consumer-group`;
- deliveries that failed every attempt (`dlq-reason` DELIVERY_FAILED): the
  event envelope, plus `dlq-channel`, `dlq-attempts`, `dlq-error`,
  `dlq-notification-id` and, for webhooks, `dlq-endpoint-id`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from notify_svc.delivery_records import DeadLetter
from paymesh_runtime.outbox import CONTENT_TYPE, ProducerFactory

Headers = list[tuple[str, bytes]]
PRODUCER = "notify_svc"
MAX_HEADER_TEXT = 500


def poison_headers(
    original: Sequence[tuple[str, bytes]],
    reason: str,
    error: str,
    source: tuple[str, int, int],
    consumer_group: str,
) -> Headers:
    topic, partition, offset = source
    return [
        *original,
        ("dlq-reason", reason.encode()),
        ("dlq-error", error[:MAX_HEADER_TEXT].encode()),
        ("dlq-source-topic", topic.encode()),
        ("dlq-source-partition", str(partition).encode()),
        ("dlq-source-offset", str(offset).encode()),
        ("dlq-producer", PRODUCER.encode()),
        # Which consumer group gave up on it: each group reads every record.
        ("dlq-consumer-group", consumer_group.encode()),
    ]


def delivery_headers(letter: DeadLetter) -> Headers:
    headers = [
        ("content-type", CONTENT_TYPE.encode()),
        ("event-id", str(letter.event_id).encode()),
        ("event-type", letter.event_type.encode()),
        ("dlq-reason", b"DELIVERY_FAILED"),
        ("dlq-channel", letter.channel.encode()),
        ("dlq-attempts", str(letter.attempts).encode()),
        ("dlq-error", letter.last_error[:MAX_HEADER_TEXT].encode()),
        ("dlq-notification-id", str(letter.notification_id).encode()),
        ("dlq-producer", PRODUCER.encode()),
    ]
    if letter.endpoint_id is not None:
        headers.append(("dlq-endpoint-id", str(letter.endpoint_id).encode()))
    return headers


class DeadLetterProducer:
    """Sends to the DLQ topic with one idempotent producer, (re)started on demand."""

    def __init__(self, make_producer: ProducerFactory, topic: str) -> None:
        self._make_producer = make_producer
        self._topic = topic
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def send(self, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        """Returns once the broker acknowledged the record (acks=all)."""
        producer = await self._started()
        try:
            await producer.send_and_wait(self._topic, value=value, key=key, headers=headers)
        except Exception:
            await self._discard(producer)
            raise

    async def send_dead_letter(self, letter: DeadLetter) -> None:
        await self.send(str(letter.event_id).encode(), letter.event_payload, delivery_headers(letter))

    async def close(self) -> None:
        if self._producer is not None:
            await self._discard(self._producer)

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = self._make_producer()
                try:
                    await producer.start()
                except Exception:
                    with contextlib.suppress(Exception):
                        await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def _discard(self, producer: AIOKafkaProducer) -> None:
        # A failed producer is replaced on the next send rather than trusted again.
        async with self._lock:
            if self._producer is producer:
                self._producer = None
        with contextlib.suppress(Exception):
            await producer.stop()
