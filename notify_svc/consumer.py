"""The event consumer: Kafka records → notifications, once per event id.

Semantics (docs/notifications.md):
- At least once in, exactly once stored. Offsets are committed by hand,
  only after the database transaction that recorded the event committed; the
  event id (processed_event) is inserted in that same transaction, so a
  record read twice (relay republish, rebalance, crash before the commit of
  the offset) adds nothing the second time.
- Poison input (undecodable bytes, an envelope without a UUID id, content the
  database refuses) goes to the DLQ topic with headers saying why, and the
  offset moves on: one bad record never blocks a partition.
- Anything else (the database is down, a lock timed out, the DLQ cannot be
  written) is transient: the partition rewinds to the record and retries it
  with backoff; no offset past it is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry import propagate, trace
from sqlalchemy.exc import DataError, IntegrityError

from notify_svc.dead_letters import DeadLetterProducer, poison_headers
from notify_svc.notifications import plan_for
from notify_svc.store import IncomingEvent, NotifyStore
from paymesh.events.v1 import events_pb2
from paymesh_runtime.backoff import full_jitter

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

ConsumerFactory = Callable[[], AIOKafkaConsumer]
MAX_EVENT_TYPE_LENGTH = 100
POLL_TIMEOUT_MS = 1000
MAX_RECORDS = 200


class PoisonMessage(Exception):
    """A record no retry can ever handle."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TransientError(Exception):
    """A record that may succeed later; its offset must not be committed."""


def kafka_consumer_factory(bootstrap_servers: str, group_id: str, topics: Sequence[str]) -> ConsumerFactory:
    def make() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            # A new group reads the topics from the start: dedupe makes it safe.
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )

    return make


def decode_event(value: bytes | None) -> events_pb2.Event:
    """The envelope of a record value, or PoisonMessage."""
    if value is None:
        raise PoisonMessage("UNDECODABLE", "the record has no value")
    event = events_pb2.Event()
    try:
        event.ParseFromString(value)
    except (DecodeError, ValueError) as error:
        raise PoisonMessage("UNDECODABLE", f"not a paymesh.events.v1.Event: {error}") from None
    try:
        uuid.UUID(event.id)
    except ValueError:
        raise PoisonMessage("INVALID_ENVELOPE", "the event id is not a UUID") from None
    if not event.type or len(event.type) > MAX_EVENT_TYPE_LENGTH:
        raise PoisonMessage("INVALID_ENVELOPE", "the event type is empty or too long")
    return event


def event_json(event: events_pb2.Event) -> str:
    """The event as merchants receive it: proto JSON with the edge's conventions
    (snake_case names, every field printed), compact and with sorted keys."""
    as_dict = json_format.MessageToDict(
        event, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return json.dumps(as_dict, separators=(",", ":"), sort_keys=True)


class EventConsumer:
    """Consumes the event topics until cancelled, surviving Kafka and database outages."""

    def __init__(
        self,
        store: NotifyStore,
        dead_letters: DeadLetterProducer,
        make_consumer: ConsumerFactory,
        *,
        consumer_group: str,
        retry_base_seconds: float = 0.5,
        retry_max_seconds: float = 30.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._dead_letters = dead_letters
        self._make_consumer = make_consumer
        self._consumer_group = consumer_group
        self._retry_base = retry_base_seconds
        self._retry_max = retry_max_seconds
        self._random = rand
        self._failures = 0  # consecutive transient failures, for the backoff

    async def run(self) -> None:
        while True:
            consumer = self._make_consumer()
            try:
                await consumer.start()
                await self._consume(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Kafka unreachable, rebalance during commit...
                log.warning("event consumer restarting: %s: %s", type(error).__name__, error)
                await self._pause()
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_RECORDS)
            stalled = False
            for partition, records in batches.items():
                stalled |= not await self._consume_partition(consumer, partition, records)
            if stalled:
                await self._pause()
            elif batches:
                self._failures = 0

    async def _consume_partition(
        self, consumer: AIOKafkaConsumer, partition: TopicPartition, records: Sequence[ConsumerRecord[Any, Any]]
    ) -> bool:
        """Handles records in order; True if all were handled. Commits what was."""
        next_offset: int | None = None
        complete = True
        for record in records:
            try:
                await self.handle(record)
            except TransientError as error:
                log.warning(
                    "event at %s[%d]@%d will be retried: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    error,
                )
                consumer.seek(partition, record.offset)
                complete = False
                break
            next_offset = record.offset + 1
        if next_offset is not None:
            await consumer.commit({partition: next_offset})
        return complete

    async def handle(self, record: ConsumerRecord[Any, Any]) -> str:
        """Handles one record: "stored", "duplicate" or "dead-lettered"; else TransientError."""
        headers = [(key, value) for key, value in record.headers or ()]
        carrier = {key: value.decode(errors="replace") for key, value in headers if isinstance(value, bytes)}
        with tracer.start_as_current_span(
            f"{record.topic} process", context=propagate.extract(carrier), kind=trace.SpanKind.CONSUMER
        ):
            try:
                event = decode_event(record.value)
                incoming = IncomingEvent(uuid.UUID(event.id), event.type, record.value, lambda: event_json(event))
                plan = plan_for(event)
            except PoisonMessage as poison:
                return await self._dead_letter(record, headers, poison.reason, str(poison))
            try:
                stored = await self._store.record_event(incoming, plan)
            except (DataError, IntegrityError) as error:
                # The database refuses this content; a retry would be refused too.
                return await self._dead_letter(record, headers, "REJECTED_BY_DATABASE", type(error).__name__)
            except Exception as error:
                raise TransientError(f"{type(error).__name__}: {error}") from error
            return "stored" if stored else "duplicate"

    async def _dead_letter(
        self, record: ConsumerRecord[Any, Any], headers: list[tuple[str, bytes]], reason: str, error: str
    ) -> str:
        log.warning("dead-lettering %s[%d]@%d: %s: %s", record.topic, record.partition, record.offset, reason, error)
        source = (record.topic, record.partition, record.offset)
        dlq_headers = poison_headers(headers, reason, error, source, self._consumer_group)
        try:
            await self._dead_letters.send(record.key, record.value, dlq_headers)
        except Exception as failure:
            raise TransientError(f"cannot write the DLQ: {type(failure).__name__}: {failure}") from failure
        return "dead-lettered"

    async def _pause(self) -> None:
        self._failures += 1
        await asyncio.sleep(max(0.1, full_jitter(self._failures, self._retry_base, self._retry_max, self._random)))
