"""Operator commands: `python -m notify_svc <command>` (see docs/notifications.md).

- redrive-dlq [--reason R ...] [--limit N] [--dry-run]: handles the records
  of the dead-letter topic again, once each, oldest first, up to the end the
  topic had when the command started:
  - DELIVERY_FAILED (a delivery that failed its whole retry schedule): the
    notification named by `dlq-notification-id` is made PENDING again, with
    a new schedule, if it is still DEAD_LETTERED (a delivery redelivered
    meanwhile, through the API, is left alone);
  - UNDECODABLE, INVALID_ENVELOPE, REJECTED_BY_DATABASE (poison the consumer
    refused): the record goes back to its `dlq-source-topic` with its key,
    value and original headers, plus `dlq-redriven-from`, for the consumer to
    try again (after a fix); an event id stored meanwhile is deduplicated.
  Progress is the offsets committed by the consumer group
  NOTIFY_REDRIVE_GROUP (after each batch): a second run handles only records
  dead-lettered since. --dry-run prints what would happen and commits
  nothing. Exit status 1 if a record could not be handled (its offset and
  the ones after it are not committed: a later run tries it again).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from notify_svc.settings import NotifySettings
from notify_svc.store import NotifyStore
from paymesh_runtime.app import Command
from paymesh_runtime.db import create_engine
from paymesh_runtime.outbox import kafka_producer_factory
from paymesh_runtime.settings import ServiceSettings

POISON_REASONS = ("UNDECODABLE", "INVALID_ENVELOPE", "REJECTED_BY_DATABASE")
REASONS = ("DELIVERY_FAILED", *POISON_REASONS)
POLL_MS = 1000
Record: TypeAlias = "ConsumerRecord[bytes, bytes]"


def _configure_redrive(parser: argparse.ArgumentParser) -> None:
    parser.description = "Re-drive the dead-letter topic: re-arm failed deliveries, republish poison records."
    parser.add_argument("--reason", action="append", choices=REASONS, help="only records with this dlq-reason")
    parser.add_argument("--limit", type=int, default=0, help="stop after this many records (0: all)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be done; change nothing")


@dataclass
class _Tally:
    handled: int = 0
    skipped: int = 0
    failed: int = 0


class Redrive:
    """One run of redrive-dlq against the topic, the database and the source topics."""

    def __init__(self, settings: NotifySettings, store: NotifyStore, producer: AIOKafkaProducer, args: Any) -> None:
        self._settings = settings
        self._store = store
        self._producer = producer
        self._reasons = frozenset(args.reason or REASONS)
        self._limit = int(args.limit)
        self._dry_run = bool(args.dry_run)
        self.tally = _Tally()

    async def run(self, consumer: AIOKafkaConsumer) -> None:
        topic = self._settings.dlq_topic
        try:
            # The producer's metadata request answers for one topic; the consumer knows only subscribed ones.
            found = await self._producer.partitions_for(topic)
        except KafkaError as error:
            raise SystemExit(f"redrive-dlq: cannot read topic {topic}: {error}") from None
        partitions = [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
        open_partitions = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        while open_partitions and not self._limit_reached():
            batches = await consumer.getmany(*open_partitions, timeout_ms=POLL_MS, max_records=100)
            for tp, records in batches.items():
                handled_until, failed = await self._handle(records, ends[tp])
                if handled_until > records[0].offset and not self._dry_run:
                    await consumer.commit({tp: OffsetAndMetadata(handled_until, "")})
                if failed or handled_until >= ends[tp]:
                    open_partitions.discard(tp)

    def _limit_reached(self) -> bool:
        return bool(self._limit) and self.tally.handled + self.tally.skipped >= self._limit

    async def _handle(self, records: Sequence[Record], end: int) -> tuple[int, bool]:
        """Handles records in order: the offset after the last one handled, and whether one failed (the
        records from it on stay uncommitted, for a later run)."""
        handled_until = records[0].offset
        for record in records:
            if record.offset >= end or self._limit_reached():
                break
            try:
                await self._one(record)
            except Exception as error:
                self.tally.failed += 1
                print(f"offset {record.partition}/{record.offset}: FAILED ({type(error).__name__}: {error})")
                return handled_until, True
            handled_until = record.offset + 1
        return handled_until, False

    async def _one(self, record: Record) -> None:
        headers = {key: value.decode(errors="replace") for key, value in record.headers or ()}
        reason = headers.get("dlq-reason", "")
        where = f"offset {record.partition}/{record.offset}: {reason or 'no dlq-reason'}"
        if reason not in self._reasons:
            self.tally.skipped += 1
            print(f"{where}: skipped")
            return
        if reason == "DELIVERY_FAILED":
            await self._rearm(where, headers)
        else:
            await self._republish(where, record, headers)

    async def _rearm(self, where: str, headers: Mapping[str, str]) -> None:
        try:
            notification_id = uuid.UUID(headers.get("dlq-notification-id", ""))
        except ValueError:
            self.tally.skipped += 1
            print(f"{where}: skipped (no dlq-notification-id)")
            return
        if self._dry_run:
            print(f"{where}: would re-arm notification {notification_id}")
        elif await self._store.rearm_dead_letter(notification_id):
            print(f"{where}: notification {notification_id} re-armed")
        else:
            print(f"{where}: notification {notification_id} is not dead-lettered any more; left alone")
        self.tally.handled += 1

    async def _republish(self, where: str, record: Record, headers: Mapping[str, str]) -> None:
        source = headers.get("dlq-source-topic", "")
        if not source:
            self.tally.skipped += 1
            print(f"{where}: skipped (no dlq-source-topic)")
            return
        original = [(key, value) for key, value in record.headers or () if not key.startswith("dlq-")]
        marker = f"{record.topic}/{record.partition}/{record.offset}".encode()
        if self._dry_run:
            print(f"{where}: would republish to {source}")
        else:
            await self._producer.send_and_wait(
                source, value=record.value, key=record.key, headers=[*original, ("dlq-redriven-from", marker)]
            )
            print(f"{where}: republished to {source}")
        self.tally.handled += 1


def _redrive(settings: ServiceSettings, args: argparse.Namespace) -> None:
    notify_settings = cast(NotifySettings, settings)

    async def main() -> int:
        engine = create_engine(notify_settings)
        producer = kafka_producer_factory(notify_settings.kafka_bootstrap_servers)()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=notify_settings.kafka_bootstrap_servers,
            group_id=notify_settings.redrive_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        redrive = Redrive(notify_settings, NotifyStore(engine), producer, args)
        try:
            await producer.start()
            await consumer.start()
            await redrive.run(consumer)
        finally:
            await consumer.stop()
            await producer.stop()
            await engine.dispose()
        tally = redrive.tally
        suffix = " (dry run: nothing changed)" if args.dry_run else ""
        print(f"redrive-dlq: {tally.handled} handled, {tally.skipped} skipped, {tally.failed} failed{suffix}")
        return 1 if tally.failed else 0

    status = asyncio.run(main())
    if status:
        sys.exit(status)


COMMANDS: Mapping[str, tuple[Callable[[argparse.ArgumentParser], None], Command]] = {
    "redrive-dlq": (_configure_redrive, _redrive),
}
