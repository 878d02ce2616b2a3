"""The event consumer: Kafka records → notifications, once per event id, a batch at a time.

Semantics (docs/notifications.md):
- At least once in, exactly once stored. Each poll's records (up to
  `max_records`, across partitions) are stored in one database transaction
  (notify_svc.ingest), which also inserts their event ids (processed_event);
  offsets are committed by hand, only after that transaction committed, so a
  record read twice (relay republish, rebalance, crash before the commit of
  the offset) adds nothing the second time. Copies of one event within a
  batch are stored once.
- Poison input (undecodable bytes, an envelope without a UUID id, content the
  database refuses: SQLSTATE class 22 or 23) goes to the DLQ topic with headers saying why, and the
  offset moves on: one bad record never blocks a partition. Content the
  database refuses fails the batch's transaction; the batch is then stored
  one record per transaction, which isolates the record to dead-letter.
- Anything else (the database is down, a lock timed out, the DLQ cannot be
  written) is transient: the partition rewinds to the first record not
  handled and retries it with backoff; no offset past it is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry import trace
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from notify_svc.dead_letters import DeadLetterProducer, poison_headers
from notify_svc.ingest import EventRecorder, IncomingEvent
from notify_svc.notifications import plan_for
from paymesh.events.v1 import events_pb2
from paymesh_runtime import failures, metrics, telemetry
from paymesh_runtime.backoff import full_jitter
from paymesh_runtime.telemetry_spans import EVENT_TRACES

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

ConsumerFactory = Callable[[], AIOKafkaConsumer]
Record: TypeAlias = "ConsumerRecord[Any, Any]"
MAX_EVENT_TYPE_LENGTH = 100
POLL_TIMEOUT_MS = 1000
MAX_RECORDS = 200
# A fetch waits for this much data or FETCH_MAX_WAIT_MS, whichever comes first: under a trickle of
# events (one payment at a time) the broker answers ten fetches a second, not one per event, and each
# poll stores more events per transaction. Notifications wait at most that long for it.
FETCH_MIN_BYTES = 64 * 1024
FETCH_MAX_WAIT_MS = 100
# Offsets are committed at most this often while records keep coming (and at once when a poll finds
# none): a commit is a broker write. Records read again after a crash or a rebalance are duplicates,
# which the event id dedupes (module docstring).
COMMIT_INTERVAL_S = 1.0


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
            fetch_min_bytes=FETCH_MIN_BYTES,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
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


@dataclass
class _Item:
    """One record of a batch, as far as it got."""

    record: Record
    headers: list[tuple[str, bytes]]
    span: trace.Span
    event: IncomingEvent | None = None
    poison: tuple[str, str] | None = None  # (dlq-reason, error) once it is known to be poison
    outcome: str = ""  # "stored", "duplicate" or "dead-lettered" once handled


class EventConsumer:
    """Consumes the event topics until cancelled, surviving Kafka and database outages."""

    def __init__(
        self,
        recorder: EventRecorder,
        dead_letters: DeadLetterProducer,
        make_consumer: ConsumerFactory,
        *,
        consumer_group: str,
        max_records: int = MAX_RECORDS,
        retry_base_seconds: float = 0.5,
        retry_max_seconds: float = 30.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._recorder = recorder
        self._dead_letters = dead_letters
        self._make_consumer = make_consumer
        self._consumer_group = consumer_group
        self._max_records = max_records
        self._retry_base = retry_base_seconds
        self._retry_max = retry_max_seconds
        self._random = rand
        self._failures = 0  # consecutive transient failures, for the backoff
        self._lag = metrics.ConsumerLag()

    async def run(self) -> None:
        while True:
            consumer = self._make_consumer()
            try:
                await consumer.start()
                await self._consume(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Kafka unreachable, rebalance during commit...
                log.warning("event consumer restarting: %s", failures.describe(error))
                await self._pause()
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        uncommitted: dict[TopicPartition, int] = {}  # handled up to (excluding) these offsets, not committed yet
        next_commit = 0.0
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=self._max_records)
                await self._lag.measure(consumer)
                if not batches:
                    await self._commit(consumer, uncommitted)
                    continue
                resume = await self.handle_batch(batches)
                uncommitted |= {tp: offset for tp, offset in resume.items() if offset > batches[tp][0].offset}
                if time.monotonic() >= next_commit:
                    await self._commit(consumer, uncommitted)
                    next_commit = time.monotonic() + COMMIT_INTERVAL_S
                stalled = [tp for tp, offset in resume.items() if offset <= batches[tp][-1].offset]
                for tp in stalled:
                    consumer.seek(tp, resume[tp])
                if stalled:
                    await self._pause()
                else:
                    self._failures = 0
        finally:  # stopping or restarting: what was handled need not be read again
            with contextlib.suppress(Exception):
                await self._commit(consumer, uncommitted)

    @staticmethod
    async def _commit(consumer: AIOKafkaConsumer, uncommitted: dict[TopicPartition, int]) -> None:
        """Commits the handled offsets of the partitions this consumer still owns, and forgets them all."""
        owned = consumer.assignment()
        offsets = {tp: offset for tp, offset in uncommitted.items() if tp in owned}
        uncommitted.clear()
        if offsets:
            await consumer.commit(offsets)

    async def handle_batch(self, batches: Mapping[TopicPartition, Sequence[Record]]) -> dict[TopicPartition, int]:
        """Handles one poll's records; returns per partition the offset to go on from.

        Every record before that offset was stored, found a duplicate or
        dead-lettered; the one at it (if within the batch) must be read again.
        """
        items = {tp: [self._decode(record) for record in records] for tp, records in batches.items()}
        unique: dict[uuid.UUID, _Item] = {}
        for item in (item for partition in items.values() for item in partition):
            if item.event is not None:
                if item.event.event_id in unique:
                    item.outcome = "duplicate"
                else:
                    unique[item.event.event_id] = item
        try:
            stored = await self._recorder.record([item.event for item in unique.values() if item.event])
        except Exception as error:
            if refused_by_database(error):
                resume = await self._isolate(items)
            else:
                log.warning("a batch of %d events will be retried: %s", len(unique), failures.describe(error))
                resume = {tp: records[0].offset for tp, records in batches.items()}
        else:
            for event_id, item in unique.items():
                item.outcome = "stored" if event_id in stored else "duplicate"
            resume = {tp: records[-1].offset + 1 for tp, records in batches.items()}
        for tp, partition in items.items():
            resume[tp] = await self._dead_letter_until(partition, resume[tp])
        for item in (item for partition in items.values() for item in partition):
            if item.span.is_recording():
                item.span.set_attribute("paymesh.outcome", item.outcome or "retried")
            item.span.end()
            if item.outcome:
                metrics.consumed(item.record.topic, item.outcome.replace("-", "_"))
        return resume

    async def _isolate(self, items: Mapping[TopicPartition, Sequence[_Item]]) -> dict[TopicPartition, int]:
        """Stores a refused batch one record per transaction, to single out what the database refuses."""
        resume = {}
        for tp, partition in items.items():
            resume[tp] = partition[-1].record.offset + 1
            for item in partition:
                if item.event is None or item.outcome:
                    continue  # poison already, or a copy of an event earlier in the batch
                try:
                    stored = await self._recorder.record([item.event])
                except Exception as error:
                    if not refused_by_database(error):
                        _will_retry(item.record, error)
                        resume[tp] = item.record.offset
                        break
                    item.poison = ("REJECTED_BY_DATABASE", failures.describe(error))
                else:
                    item.outcome = "stored" if stored else "duplicate"
        return resume

    async def _dead_letter_until(self, partition: Sequence[_Item], resume: int) -> int:
        """Dead-letters the partition's poison records before `resume`, in order; returns where to go on."""
        for item in partition:
            if item.record.offset >= resume:
                break
            if item.poison is None:
                continue
            try:
                await self._dead_letter(item.record, item.headers, *item.poison)
            except TransientError as error:
                _will_retry(item.record, error)
                return int(item.record.offset)
            item.outcome = "dead-lettered"
        return resume

    def _decode(self, record: Record) -> _Item:
        headers = [(key, value) for key, value in record.headers or ()]
        span = tracer.start_span(
            f"{record.topic} process", context=telemetry.remote_context(headers), kind=trace.SpanKind.CONSUMER
        )
        item = _Item(record, headers, span)
        try:
            event = decode_event(record.value)
            EVENT_TRACES.remember(event.id, span)  # its email and webhook spans continue this trace
            item.event = IncomingEvent(
                uuid.UUID(event.id), event.type, record.value, functools.partial(event_json, event), plan_for(event)
            )
        except PoisonMessage as poison:
            item.poison = (poison.reason, str(poison))
        return item

    async def _dead_letter(self, record: Record, headers: list[tuple[str, bytes]], reason: str, error: str) -> None:
        log.warning("dead-lettering %s[%d]@%d: %s: %s", record.topic, record.partition, record.offset, reason, error)
        source = (record.topic, record.partition, record.offset)
        dlq_headers = poison_headers(headers, reason, error, source, self._consumer_group)
        try:
            await self._dead_letters.send(record.key, record.value, dlq_headers)
        except Exception as failure:
            raise TransientError(f"cannot write the DLQ: {failures.describe(failure)}") from failure
        metrics.DEAD_LETTERS.labels("consumer", reason).inc()

    async def _pause(self) -> None:
        self._failures += 1
        await asyncio.sleep(max(0.1, full_jitter(self._failures, self._retry_base, self._retry_max, self._random)))


def refused_by_database(error: Exception) -> bool:
    """The database refuses the content itself (SQLSTATE class 22, data exception, or 23, a constraint):
    a retry would be refused too. SQLAlchemy's asyncpg dialect reports some of these (e.g. a value too
    long for its column) only as DBAPIError, so the SQLSTATE decides."""
    if isinstance(error, DataError | IntegrityError):
        return True
    state = getattr(error.orig, "sqlstate", None) if isinstance(error, DBAPIError) else None
    return isinstance(state, str) and state[:2] in ("22", "23")


def _will_retry(record: Record, error: Exception) -> None:
    log.warning(
        "event at %s[%d]@%d will be retried: %s",
        record.topic,
        record.partition,
        record.offset,
        failures.describe(error),
    )
