"""The transactional outbox: events commit with the change that caused them,
and a relay publishes them to Kafka afterwards.

Writer: `Outbox.enqueue(conn, ...)` inserts the event in the caller's
transaction, numbering it per aggregate (gap-free `sequence`).

Relay: `OutboxRelay.run()` publishes unpublished rows in order with an
idempotent producer (acks=all) and marks them published; published rows are
kept for `retention` (to inspect or replay them), then deleted in batches. Rows are split into
shards by aggregate; each shard is owned by one relay replica at a time
through a PostgreSQL advisory lock held on the relay's connection, so several
replicas share the work without ever publishing one aggregate's events out of
order. Delivery is at least once: a crash between publishing and marking
republishes the batch, and consumers deduplicate on the event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer
from opentelemetry import propagate
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    bindparam,
    delete,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paymesh.events.v1 import events_pb2
from paymesh_runtime.settings import ServiceSettings
from paymesh_runtime.sql import compiled_once

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-protobuf; proto=paymesh.events.v1.Event"
SHARDS = 8
# Advisory lock namespace ("pmob"), so shard locks never collide with others.
LOCK_NAMESPACE = 0x706D6F62


def outbox_tables(metadata: MetaData) -> tuple[Table, Table]:
    """The outbox and per-aggregate sequence tables, in a service's metadata."""
    outbox = Table(
        "outbox",
        metadata,
        Column("position", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
        Column("topic", String(200), nullable=False),
        Column("shard", SmallInteger, nullable=False),
        Column("aggregate_id", String(200), nullable=False),
        Column("event_type", String(100), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("headers", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True)),
        Index("outbox_unpublished", "shard", "position", postgresql_where=text("published_at IS NULL")),
    )
    sequences = Table(
        "outbox_sequence",
        metadata,
        Column("aggregate_id", String(200), primary_key=True),
        Column("last_sequence", BigInteger, nullable=False),
    )
    return outbox, sequences


def create_outbox_schema(connection: Connection) -> None:
    """Creates the outbox tables; used by each service's first migration."""
    metadata = MetaData()
    outbox_tables(metadata)
    metadata.create_all(connection)


def create_outbox_prune_index(connection: Connection) -> None:
    """The index the relay finds rows to prune by; used by each service's migration after the first."""
    connection.execute(
        text("CREATE INDEX IF NOT EXISTS outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL")
    )


def shard_of(aggregate_id: str) -> int:
    return uuid.uuid5(uuid.NAMESPACE_URL, aggregate_id).int % SHARDS


class Outbox:
    """Writes events into the outbox within the caller's transaction."""

    def __init__(self, outbox: Table, sequences: Table, producer_name: str) -> None:
        self._outbox = outbox
        self._producer_name = producer_name
        self._next_sequence = compiled_once(
            insert(sequences)
            .values(aggregate_id=bindparam("aggregate_id"), last_sequence=1)
            .on_conflict_do_update(
                index_elements=["aggregate_id"], set_={"last_sequence": sequences.c.last_sequence + 1}
            )
            .returning(sequences.c.last_sequence)
        )

    async def enqueue(self, conn: AsyncConnection, *, topic: str, event: events_pb2.Event) -> events_pb2.Event:
        """Completes the envelope (id, sequence, time, producer) and stores it."""
        event.sequence = (await conn.execute(self._next_sequence, {"aggregate_id": event.aggregate_id})).scalar_one()
        event.id = str(uuid.uuid4())
        event.producer = self._producer_name
        event.occurred_at.FromDatetime(datetime.now(UTC))
        headers: dict[str, str] = {"content-type": CONTENT_TYPE, "event-type": event.type}
        propagate.inject(headers)  # traceparent of the change, if traced
        await conn.execute(
            self._outbox.insert().values(
                event_id=uuid.UUID(event.id),
                topic=topic,
                shard=shard_of(event.aggregate_id),
                aggregate_id=event.aggregate_id,
                event_type=event.type,
                payload=event.SerializeToString(),
                headers=headers,
            )
        )
        return event


ProducerFactory = Callable[[], AIOKafkaProducer]


def kafka_producer_factory(bootstrap_servers: str) -> ProducerFactory:
    def make() -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            request_timeout_ms=10_000,
        )

    return make


def outbox_relay(engine: AsyncEngine, outbox: Table, settings: ServiceSettings) -> OutboxRelay:
    """A service's relay, as its settings configure it."""
    return OutboxRelay(
        engine,
        outbox,
        kafka_producer_factory(settings.kafka_bootstrap_servers),
        retention=timedelta(hours=settings.outbox_retention_hours),
    )


class OutboxRelay:
    """Publishes outbox rows to Kafka; safe to run in several replicas."""

    def __init__(
        self,
        engine: AsyncEngine,
        outbox: Table,
        make_producer: ProducerFactory,
        *,
        batch_size: int = 500,
        idle_seconds: float = 0.05,
        max_backoff_seconds: float = 5.0,
        retention: timedelta = timedelta(hours=24),
        prune_every_seconds: float = 60.0,
        prune_batch_size: int = 5000,
    ) -> None:
        self._engine = engine
        self._outbox = outbox
        self._make_producer = make_producer
        self._batch_size = batch_size
        self._idle = idle_seconds
        self._max_backoff = max_backoff_seconds
        self._retention = retention
        self._prune_every = prune_every_seconds
        self._prune_batch = prune_batch_size
        self.published = 0

    async def run(self) -> None:
        """Relays until cancelled, surviving Kafka and database outages."""
        backoff = 0.2
        while True:
            try:
                await self._relay_with_fresh_resources()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Kafka or PostgreSQL is down: wait, retry.
                log.warning("outbox relay paused: %s: %s", type(error).__name__, error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
            else:
                backoff = 0.2

    async def _relay_with_fresh_resources(self) -> None:
        producer = self._make_producer()
        try:
            await producer.start()
            async with self._engine.connect() as conn:
                # Autocommit: a poll is one round trip, not three (BEGIN, SELECT, COMMIT); the shard
                # locks are session-level advisory locks, held across statements anyway.
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                try:
                    await self._relay(conn, producer)
                finally:
                    with contextlib.suppress(Exception):
                        await conn.execute(text("SELECT pg_advisory_unlock_all()"))
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def _relay(self, conn: AsyncConnection, producer: AIOKafkaProducer) -> None:
        owned: list[int] = []
        next_prune = time.monotonic()
        while True:
            if len(owned) < SHARDS:
                owned = await self._claim_shards(conn, owned)
            sent = await self.relay_batch(conn, producer, owned) if owned else 0
            if time.monotonic() >= next_prune:
                await self.prune(conn)
                next_prune = time.monotonic() + self._prune_every
            if sent < self._batch_size:
                await asyncio.sleep(self._idle if owned else 1.0)

    async def prune(self, conn: AsyncConnection) -> int:
        """Deletes up to a batch of rows published longer than the retention ago; returns how many.

        Any replica may prune (SKIP LOCKED keeps them off each other's rows);
        a row not yet published is never deleted.
        """
        o = self._outbox
        due = (
            select(o.c.position)
            .where(o.c.published_at < func.now() - self._retention)
            .order_by(o.c.published_at)
            .limit(self._prune_batch)
            .with_for_update(skip_locked=True)
        )
        result = await conn.execute(delete(o).where(o.c.position.in_(due.scalar_subquery())))
        pruned = int(result.rowcount or 0)  # type: ignore[attr-defined]
        if pruned:
            log.info("pruned %d published outbox rows", pruned)
        return pruned

    async def _claim_shards(self, conn: AsyncConnection, owned: list[int]) -> list[int]:
        for shard in range(SHARDS):
            if shard in owned:
                continue
            got = await conn.scalar(
                text("SELECT pg_try_advisory_lock(:ns, :shard)"), {"ns": LOCK_NAMESPACE, "shard": shard}
            )
            if got:
                owned.append(shard)
        return owned

    async def relay_batch(self, conn: AsyncConnection, producer: AIOKafkaProducer, shards: list[int]) -> int:
        """Publishes the oldest unpublished rows of `shards`; returns how many."""
        o = self._outbox
        rows = (
            await conn.execute(
                o.select()
                .where(o.c.published_at.is_(None), o.c.shard.in_(shards))
                .order_by(o.c.position)
                .limit(self._batch_size)
            )
        ).all()
        if not rows:
            return 0
        pending = [
            await producer.send(
                row.topic,
                value=row.payload,
                key=row.aggregate_id.encode(),
                headers=[(k, str(v).encode()) for k, v in row.headers.items()]
                + [("event-id", str(row.event_id).encode())],
            )
            for row in rows
        ]
        await asyncio.gather(*pending)
        await conn.execute(
            o.update().where(o.c.position.in_([row.position for row in rows])).values(published_at=func.now())
        )
        self.published += len(rows)
        return len(rows)
