"""The transactional outbox: events commit with the change that caused them,
and a relay publishes them to Kafka afterwards.

Writer: `Outbox.enqueue(conn, ...)` inserts the event in the caller's
transaction, numbering it per aggregate (gap-free `sequence`).

Relay: `OutboxRelay.run()` publishes unpublished rows in order with an
idempotent producer (acks=all) and then deletes their positions from
`outbox_pending`, where a trigger put them when they were written: an outbox
row itself is written once and never updated. Rows are kept for `retention`
(to inspect or replay them), then deleted in batches. Rows are split into
shards by aggregate; each shard is owned by one relay replica at a time
through a PostgreSQL advisory lock held on the relay's connection, so several
replicas share the work without ever publishing one aggregate's events out of
order. Delivery is at least once: a crash between publishing and deleting
the pending positions republishes the batch, and consumers deduplicate on the
event id.

A round reads up to `batch_size` pending rows (in position order, so in
order per aggregate), hands them all to the producer without waiting for each
(it batches them per partition; `linger_ms`), waits for every acknowledgement
and deletes their pending positions in one statement. Idle, the relay polls less
and less often (from `idle_seconds` doubling up to `max_idle_seconds`) and a
replica without shards tries to claim some every `claim_every_seconds`; a
round that found rows polls again after `idle_seconds` (200 ms), a round that
found a full batch at once. The 200 ms are a trade: events reach Kafka up to
0.2 s later (they are not on the payment's path: a payment is answered at
its commit), and each round, with its SELECT, produce request and
DELETE, serves four times as many rows as at 50 ms. At 200 payments/s that
took 0.35 ms of CPU off each payment and p99 from 147-222 to 123-139 ms
(docs/performance.md, "Relays that poll less often"). (LISTEN/NOTIFY would wake it sooner,
but a NOTIFY in the writer's transaction serializes every such commit on one
database-wide lock: a cost on the money path to save a poll on an idle one.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from opentelemetry import propagate
from opentelemetry.trace import Span, SpanKind
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Integer,
    Interval,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    bindparam,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paymesh.events.v1 import events_pb2
from paymesh_runtime import failures
from paymesh_runtime.metrics import OUTBOX_OLDEST_AGE, OUTBOX_PUBLISHED, OUTBOX_RELAY_PAUSES
from paymesh_runtime.settings import ServiceSettings
from paymesh_runtime.sql import compiled_once
from paymesh_runtime.telemetry_spans import carrier_of, end_with_error, span_from_carrier
from paymesh_runtime.wire import timestamp_parts

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-protobuf; proto=paymesh.events.v1.Event"
SHARDS = 8
# Advisory lock namespace ("pmob"), so shard locks never collide with others.
LOCK_NAMESPACE = 0x706D6F62


# CASE: the lock is tried only for shards not owned yet (AND does not fix an evaluation order).
_CLAIM_SHARDS = text(
    "SELECT shard FROM generate_series(0, :last) AS shard "
    "WHERE CASE WHEN shard = ANY(:owned) THEN false ELSE pg_try_advisory_lock(:ns, shard) END"
).bindparams(bindparam("owned", type_=ARRAY(Integer())), bindparam("last", type_=Integer()))


# The age of the oldest unpublished row: the first pending position's row (positions grow with time,
# so it is the oldest but for a transaction that was slow to commit), one probe of each primary key.
_OLDEST_UNPUBLISHED_AGE = text(
    "SELECT coalesce(extract(epoch FROM now() - min(o.created_at)), 0) "
    "FROM (SELECT position FROM outbox_pending ORDER BY position LIMIT 1) AS first JOIN outbox o USING (position)"
)

# The oldest pending rows of some shards, in position order (so in order per aggregate).
_PENDING_BATCH = text(
    "SELECT o.position, o.event_id, o.topic, o.aggregate_id, o.payload, o.headers "
    "FROM outbox_pending p JOIN outbox o USING (position) "
    "WHERE p.shard = ANY(:shards) ORDER BY p.position LIMIT :limit"
).bindparams(bindparam("shards", type_=ARRAY(SmallInteger())), bindparam("limit", type_=Integer()))

_PUBLISHED = text("DELETE FROM outbox_pending WHERE position = ANY(:positions)").bindparams(
    bindparam("positions", type_=ARRAY(BigInteger()))
)

# Published rows past the retention, among the first `limit` rows that are not pending: a scan of at
# most that many rows however long the table (the created_at test comes after the LIMIT, so young rows
# are never read beyond it; time and position grow together, so the old rows are the first ones).
# SKIP LOCKED keeps two replicas pruning at once off each other's rows.
_PRUNE = text(
    "DELETE FROM outbox WHERE position = ANY(ARRAY("
    "SELECT head.position FROM ("
    "SELECT o.position, o.created_at FROM outbox o "
    "WHERE NOT EXISTS (SELECT FROM outbox_pending p WHERE p.position = o.position) "
    "ORDER BY o.position LIMIT :limit FOR UPDATE OF o SKIP LOCKED"
    ") AS head WHERE head.created_at < now() - :retention))"
).bindparams(bindparam("limit", type_=Integer()), bindparam("retention", type_=Interval()))


def outbox_tables(metadata: MetaData) -> tuple[Table, Table]:
    """The outbox and per-aggregate sequence tables, in a service's metadata, as the migrations leave them
    (`OUTBOX_MIGRATIONS`). Rows of `outbox` are written once and never updated: which ones still wait
    for the relay is `outbox_pending`'s business (`create_outbox_pending`)."""
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
    )
    sequences = Table(
        "outbox_sequence",
        metadata,
        Column("aggregate_id", String(200), primary_key=True),
        Column("last_sequence", BigInteger, nullable=False),
    )
    return outbox, sequences


# Each service's migrations apply these in order (its first migration the first, and so on); they are
# frozen as they shipped, so that a database migrated long ago and a new one end up the same.
_FIRST_OUTBOX = (
    """CREATE TABLE outbox (
        position BIGSERIAL PRIMARY KEY,
        event_id UUID NOT NULL UNIQUE,
        topic VARCHAR(200) NOT NULL,
        shard SMALLINT NOT NULL,
        aggregate_id VARCHAR(200) NOT NULL,
        event_type VARCHAR(100) NOT NULL,
        payload BYTEA NOT NULL,
        headers JSONB NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        published_at TIMESTAMP WITH TIME ZONE
    )""",
    "CREATE INDEX outbox_unpublished ON outbox (shard, position) WHERE published_at IS NULL",
    "CREATE TABLE outbox_sequence (aggregate_id VARCHAR(200) PRIMARY KEY, last_sequence BIGINT NOT NULL)",
)

# The pending positions: one small row per event not yet published, added by a statement-level
# trigger (so every writer, the SQL functions included, is covered without knowing) and deleted by
# the relay once Kafka has the event. Before, the relay marked each published row (`published_at`):
# a non-HOT update, published_at being in both partial indexes, so a second copy of the whole row
# with three index entries, and vacuum behind it, for every event.
_PENDING_OUTBOX = (
    "CREATE TABLE outbox_pending (position BIGINT PRIMARY KEY, shard SMALLINT NOT NULL)",
    "INSERT INTO outbox_pending (position, shard) SELECT position, shard FROM outbox WHERE published_at IS NULL",
    """CREATE FUNCTION outbox_pending_add() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO outbox_pending (position, shard) SELECT position, shard FROM inserted;
      RETURN NULL;
    END $$""",
    "CREATE TRIGGER outbox_pending_add AFTER INSERT ON outbox REFERENCING NEW TABLE AS inserted"
    " FOR EACH STATEMENT EXECUTE FUNCTION outbox_pending_add()",
    "DROP INDEX outbox_published",
    "DROP INDEX outbox_unpublished",
    "ALTER TABLE outbox DROP COLUMN published_at",
)
_UNDO_PENDING_OUTBOX = (
    "ALTER TABLE outbox ADD COLUMN published_at TIMESTAMP WITH TIME ZONE",
    "UPDATE outbox SET published_at = now() WHERE position NOT IN (SELECT position FROM outbox_pending)",
    "CREATE INDEX outbox_unpublished ON outbox (shard, position) WHERE published_at IS NULL",
    "CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL",
    "DROP TRIGGER outbox_pending_add ON outbox",
    "DROP FUNCTION outbox_pending_add()",
    "DROP TABLE outbox_pending",
)


def create_outbox_schema(connection: Connection) -> None:
    """The outbox's first version; each service's first migration."""
    _execute_all(connection, _FIRST_OUTBOX)


def create_outbox_prune_index(connection: Connection) -> None:
    """The index the relay found rows to prune by, until `create_outbox_pending`; each service's second
    outbox migration."""
    connection.execute(
        text("CREATE INDEX IF NOT EXISTS outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL")
    )


def create_outbox_pending(connection: Connection) -> None:
    """Rows written once, and the pending positions beside them; each service's third outbox migration."""
    _execute_all(connection, _PENDING_OUTBOX)


def drop_outbox_pending(connection: Connection) -> None:
    """Undoes `create_outbox_pending` (rows still pending are the unpublished ones again)."""
    _execute_all(connection, _UNDO_PENDING_OUTBOX)


OUTBOX_MIGRATIONS: tuple[Callable[[Connection], None], ...] = (
    create_outbox_schema,
    create_outbox_prune_index,
    create_outbox_pending,
)


def create_outbox(connection: Connection) -> None:
    """The outbox as the migrations leave it, at once: for a scratch database of a test or a bench."""
    for migration in OUTBOX_MIGRATIONS:
        migration(connection)


def _execute_all(connection: Connection, statements: Sequence[str]) -> None:
    for statement in statements:
        connection.execute(text(statement))


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
        sequence = (await conn.execute(self._next_sequence, {"aggregate_id": event.aggregate_id})).scalar_one()
        headers = self._seal(event, sequence, datetime.now(UTC), trace_context())
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

    async def enqueue_many(self, conn: asyncpg.Connection, events: Sequence[PendingEvent], now: datetime) -> None:
        """Stores many events in the caller's asyncpg transaction, in order: one statement numbers them
        per aggregate (aggregates in a fixed order, so concurrent writers never deadlock), one inserts them."""
        if not events:
            return
        counts = Counter(pending.event.aggregate_id for pending in events)
        aggregates = sorted(counts)
        rows = await conn.fetch(_NEXT_SEQUENCES, aggregates, [counts[a] for a in aggregates])
        next_sequence = {row["aggregate_id"]: row["last_sequence"] - counts[row["aggregate_id"]] + 1 for row in rows}
        sequences = []
        for pending in events:
            sequences.append(next_sequence[pending.event.aggregate_id])
            next_sequence[pending.event.aggregate_id] += 1
        await conn.execute(_INSERT_MANY, *self.rows(events, sequences, now).columns())

    def rows(self, events: Sequence[PendingEvent], sequences: Sequence[int], now: datetime) -> OutboxRows:
        """The events sealed with the given sequence numbers, as the columns of outbox rows: for a
        writer whose own statement inserts them (`INSERT INTO outbox ... SELECT * FROM unnest(...)`)."""
        rows = OutboxRows()
        for pending, sequence in zip(events, sequences, strict=True):
            event = pending.event
            headers = self._seal(event, sequence, now, pending.trace_context)
            rows.event_ids.append(uuid.UUID(event.id))
            rows.topics.append(pending.topic)
            rows.shards.append(shard_of(event.aggregate_id))
            rows.aggregate_ids.append(event.aggregate_id)
            rows.event_types.append(event.type)
            rows.payloads.append(event.SerializeToString())
            rows.headers.append(json.dumps(headers))
        return rows

    def _seal(
        self, event: events_pb2.Event, sequence: int, now: datetime, context: Mapping[str, str]
    ) -> dict[str, str]:
        """Completes the envelope (sequence, id, producer, time); returns the Kafka headers."""
        event.sequence = sequence
        event.id = str(uuid.uuid4())
        event.producer = self._producer_name
        occurred_at = event.occurred_at
        occurred_at.seconds, occurred_at.nanos = timestamp_parts(now)
        return {"content-type": CONTENT_TYPE, "event-type": event.type, **context}


@dataclass
class OutboxRows:
    """Sealed events as the columns of outbox rows, in the order of INSERT_COLUMNS."""

    event_ids: list[uuid.UUID] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    shards: list[int] = field(default_factory=list)
    aggregate_ids: list[str] = field(default_factory=list)
    event_types: list[str] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)  # JSON objects

    def columns(self) -> tuple[list[Any], ...]:
        return (self.event_ids, self.topics, self.shards, self.aggregate_ids, self.event_types, self.payloads,
                self.headers)  # fmt: skip


# The outbox columns an `unnest` of OutboxRows.columns() fills, and their array types.
INSERT_COLUMNS = "event_id, topic, shard, aggregate_id, event_type, payload, headers"
INSERT_TYPES = ("uuid[]", "text[]", "smallint[]", "text[]", "text[]", "bytea[]", "jsonb[]")


@dataclass(frozen=True)
class PendingEvent:
    """An event to store with `Outbox.enqueue_many`, with the trace context of the change that caused it."""

    topic: str
    event: events_pb2.Event
    trace_context: Mapping[str, str]


def trace_context() -> dict[str, str]:
    """The current span's W3C trace context (traceparent, tracestate), empty if none: an event carries
    the one of the change that caused it."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


_NEXT_SEQUENCES = """
INSERT INTO outbox_sequence (aggregate_id, last_sequence)
SELECT * FROM unnest($1::text[], $2::bigint[])
ON CONFLICT (aggregate_id) DO UPDATE SET last_sequence = outbox_sequence.last_sequence + EXCLUDED.last_sequence
RETURNING aggregate_id, last_sequence
"""
_INSERT_MANY = f"""
INSERT INTO outbox ({INSERT_COLUMNS})
SELECT * FROM unnest({", ".join(f"${n}::{t}" for n, t in enumerate(INSERT_TYPES, start=1))})
"""  # noqa: S608 (constants)


ProducerFactory = Callable[[], AIOKafkaProducer]


def partition_of(key: bytes, partitions: Sequence[int]) -> int:
    """The partition of a keyed record, as the Java client and aiokafka's send() choose it."""
    index: int = (murmur2(key) & 0x7FFFFFFF) % len(partitions)
    return partitions[index]


async def _send_in_batches(producer: AIOKafkaProducer, rows: Sequence[Any]) -> list[asyncio.Future[Any]]:
    """Hands `rows` to the producer as one record batch per partition (more when a batch fills up), in
    order within each partition, and returns the futures of the broker's acknowledgements.

    The partition is the one send() would pick (the Java client's murmur2 of the key, so one
    aggregate's events stay in order on one partition), but a batch is built once instead of each
    record going through send()'s per-record bookkeeping.

    A row whose trace is sampled gets a PRODUCER span (`<topic> publish`), a child of the span that
    wrote the event, ended when the broker acknowledges it; the record then carries that span's
    traceparent, so the consumer's span is the publish span's child. Other rows cost one string test.
    """
    partitions = {topic: sorted(await producer.partitions_for(topic)) for topic in {row.topic for row in rows}}
    by_partition: dict[tuple[str, int], list[Any]] = {}
    for row in rows:
        key = row.aggregate_id.encode()
        partition = partition_of(key, partitions[row.topic])
        by_partition.setdefault((row.topic, partition), []).append((key, row))
    acknowledged: list[asyncio.Future[Any]] = []
    for (topic, partition), keyed in by_partition.items():
        batch, spans = producer.create_batch(), list[Span]()
        for key, row in keyed:
            span = _publish_span(topic, partition, row)
            fields = row.headers if span is None else {**row.headers, **carrier_of(span)}
            headers = [(k, str(v).encode()) for k, v in fields.items()] + [("event-id", str(row.event_id).encode())]
            if batch.append(key=key, value=row.payload, timestamp=None, headers=headers) is None:
                acknowledged.append(_ending(spans, await producer.send_batch(batch, topic, partition=partition)))
                batch, spans = producer.create_batch(), list[Span]()
                batch.append(key=key, value=row.payload, timestamp=None, headers=headers)
            if span is not None:
                spans.append(span)
        acknowledged.append(_ending(spans, await producer.send_batch(batch, topic, partition=partition)))
    return acknowledged


def _publish_span(topic: str, partition: int, row: Any) -> Span | None:
    """The PRODUCER span of a row whose trace is sampled, a child of the span that wrote the event."""
    span = span_from_carrier(f"{topic} publish", row.headers, SpanKind.PRODUCER)
    if span is not None:
        span.set_attributes(
            {
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.destination.name": topic,
                "messaging.destination.partition.id": str(partition),
                "messaging.message.id": str(row.event_id),
            }
        )
    return span


def _ending(spans: list[Span], acknowledgement: asyncio.Future[Any]) -> asyncio.Future[Any]:
    """`acknowledgement`, which ends the publish spans of its batch when it resolves."""

    def end(done: asyncio.Future[Any]) -> None:
        error = None if done.cancelled() else done.exception()
        for span in spans:
            end_with_error(span, error)

    if spans:
        acknowledgement.add_done_callback(end)
    return acknowledgement


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


def outbox_relay(engine: AsyncEngine, settings: ServiceSettings) -> OutboxRelay:
    """A service's relay, as its settings configure it."""
    return OutboxRelay(
        engine,
        kafka_producer_factory(settings.kafka_bootstrap_servers),
        retention=timedelta(hours=settings.outbox_retention_hours),
    )


class OutboxRelay:
    """Publishes outbox rows to Kafka; safe to run in several replicas."""

    def __init__(
        self,
        engine: AsyncEngine,
        make_producer: ProducerFactory,
        *,
        batch_size: int = 500,
        idle_seconds: float = 0.2,
        max_idle_seconds: float = 0.5,
        claim_every_seconds: float = 1.0,
        max_backoff_seconds: float = 5.0,
        retention: timedelta = timedelta(hours=24),
        prune_every_seconds: float = 60.0,
        prune_batch_size: int = 5000,
        lag_every_seconds: float = 5.0,
    ) -> None:
        self._engine = engine
        self._make_producer = make_producer
        self._batch_size = batch_size
        self._idle = idle_seconds
        self._max_idle = max_idle_seconds
        self._claim_every = claim_every_seconds
        self._max_backoff = max_backoff_seconds
        self._retention = retention
        self._prune_every = prune_every_seconds
        self._prune_batch = prune_batch_size
        self._lag_every = lag_every_seconds
        # The last measured age of the oldest unpublished row, and when (monotonic): paymesh_outbox_oldest_...
        self._lag = (0.0, time.monotonic())
        self.published = 0

    async def run(self) -> None:
        """Relays until cancelled, surviving Kafka and database outages; measures the backlog meanwhile."""
        OUTBOX_OLDEST_AGE.set_function(self.oldest_unpublished_age)
        watcher = asyncio.create_task(self._watch_lag(), name="outbox lag")
        try:
            await self._run_relay()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _run_relay(self) -> None:
        backoff = 0.2
        while True:
            try:
                await self._relay_with_fresh_resources()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Kafka or PostgreSQL is down: wait, retry.
                OUTBOX_RELAY_PAUSES.inc()
                log.warning("outbox relay paused: %s", failures.describe(error))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
            else:
                backoff = 0.2

    def oldest_unpublished_age(self) -> float:
        """Seconds the oldest unpublished row has waited: as last measured, plus the time since while it was
        waiting then (an outage that stops the measurements does not freeze the figure)."""
        age, measured_at = self._lag
        return age + (time.monotonic() - measured_at) if age > 0 else 0.0

    async def measure_lag(self) -> float:
        """Measures the age of the oldest unpublished row now (one statement); returns it."""
        async with self._engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            age = float((await conn.execute(_OLDEST_UNPUBLISHED_AGE)).scalar_one())
        self._lag = (age, time.monotonic())
        return age

    async def _watch_lag(self) -> None:
        while True:
            try:
                await self.measure_lag()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the relay logs the outage; the figure keeps growing meanwhile
                log.debug("outbox lag not measured: %s", failures.describe(error))
            await asyncio.sleep(self._lag_every)

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
        next_claim = next_prune = time.monotonic()
        pause = self._idle
        while True:
            if len(owned) < SHARDS and time.monotonic() >= next_claim:
                owned = await self._claim_shards(conn, owned)
                next_claim = time.monotonic() + self._claim_every
            sent = await self.relay_batch(conn, producer, owned) if owned else 0
            if time.monotonic() >= next_prune:
                await self.prune(conn)
                next_prune = time.monotonic() + self._prune_every
            if sent >= self._batch_size:
                continue  # a backlog: the next batch at once
            # Rows came: more are likely soon. None came: wait longer each time, up to the ceiling.
            pause = self._idle if sent else min(pause * 2, self._max_idle)
            await asyncio.sleep(pause if owned else self._claim_every)

    async def prune(self, conn: AsyncConnection) -> int:
        """Deletes up to a batch of rows published longer than the retention ago; returns how many.
        Any replica may prune; a row not yet published is never deleted."""
        result = await conn.execute(_PRUNE, {"limit": self._prune_batch, "retention": self._retention})
        pruned = int(result.rowcount or 0)  # type: ignore[attr-defined]
        if pruned:
            log.info("pruned %d published outbox rows", pruned)
        return pruned

    async def _claim_shards(self, conn: AsyncConnection, owned: list[int]) -> list[int]:
        """Owned shards plus whichever free ones this replica could lock now (one round trip)."""
        claimed = await conn.execute(_CLAIM_SHARDS, {"ns": LOCK_NAMESPACE, "last": SHARDS - 1, "owned": owned})
        return sorted([*owned, *(int(shard) for shard in claimed.scalars())])

    async def relay_batch(self, conn: AsyncConnection, producer: AIOKafkaProducer, shards: list[int]) -> int:
        """Publishes the oldest pending rows of `shards`; returns how many."""
        rows = (await conn.execute(_PENDING_BATCH, {"shards": shards, "limit": self._batch_size})).all()
        if not rows:
            return 0
        await asyncio.gather(*await _send_in_batches(producer, rows))
        await conn.execute(_PUBLISHED, {"positions": [row.position for row in rows]})
        self.published += len(rows)
        for topic, count in Counter(row.topic for row in rows).items():
            OUTBOX_PUBLISHED.labels(topic).inc(count)
        return len(rows)
