"""The outbox relay against the real PostgreSQL and Kafka, on a database and a topic of
this test's own: two relays never publish a row twice nor out of order, the second
takes over when the first dies, and published rows past the retention are pruned."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import MetaData, delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from devstack.stack import Stack
from paymesh.events.v1 import events_pb2
from paymesh_runtime.outbox import (
    Outbox,
    OutboxRelay,
    create_outbox,
    kafka_producer_factory,
    outbox_tables,
    shard_of,
)
from tests.helpers import fresh_database

pytestmark = pytest.mark.integration

DATABASE = "paymesh_outbox_relay_test"
metadata = MetaData()
outbox, sequences = outbox_tables(metadata)


@pytest.fixture(scope="module")
async def engine(infra: Stack) -> AsyncIterator[AsyncEngine]:
    own = create_async_engine(await fresh_database(infra, DATABASE))
    async with own.begin() as conn:
        await conn.run_sync(create_outbox)
    yield own
    await own.dispose()


async def _new_topic(bootstrap: str) -> str:
    topic = f"paymesh.relay-test.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    return topic


async def _enqueue(engine: AsyncEngine, topic: str, aggregates: list[str], per_aggregate: int) -> set[str]:
    writer = Outbox(outbox, sequences, "relay-test")
    ids = set()
    for _ in range(per_aggregate):
        async with engine.begin() as conn:
            for aggregate in aggregates:
                event = events_pb2.Event(type="test.happened", aggregate_type="test", aggregate_id=aggregate)
                ids.add((await writer.enqueue(conn, topic=topic, event=event)).id)
    return ids


async def _unpublished(engine: AsyncEngine, topic: str) -> int:
    async with engine.connect() as conn:
        query = text("SELECT count(*) FROM outbox_pending JOIN outbox USING (position) WHERE topic = :topic")
        return int(await conn.scalar(query, {"topic": topic}) or 0)


async def _drained(engine: AsyncEngine, topic: str) -> None:
    async with asyncio.timeout(60):
        while True:
            if not await _unpublished(engine, topic):
                return
            await asyncio.sleep(0.1)


async def _read_all(bootstrap: str, topic: str, count: int) -> list[events_pb2.Event]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    found: list[events_pb2.Event] = []
    try:
        async with asyncio.timeout(60):
            while len(found) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found.extend(events_pb2.Event.FromString(record.value) for record in records)
        await asyncio.sleep(1)  # anything published twice would show up now
        for records in (await consumer.getmany(timeout_ms=500)).values():
            found.extend(events_pb2.Event.FromString(record.value) for record in records)
    finally:
        await consumer.stop()
    return found


async def test_two_relays_publish_each_row_once_in_order_and_the_second_takes_over(
    infra: Stack, engine: AsyncEngine
) -> None:
    topic = await _new_topic(infra.kafka_bootstrap)
    aggregates = [f"agg-{uuid.uuid4().hex[:6]}" for _ in range(12)]
    assert len({shard_of(a) for a in aggregates}) > 1  # spread over several shards
    relays = [OutboxRelay(engine, kafka_producer_factory(infra.kafka_bootstrap)) for _ in range(2)]
    first = asyncio.create_task(relays[0].run())
    await asyncio.sleep(1)  # the first takes every free shard
    second = asyncio.create_task(relays[1].run())
    try:
        written = await _enqueue(engine, topic, aggregates, 5)
        await _drained(engine, topic)
        first.cancel()  # the first relay dies: its connection and shard locks go with it
        await asyncio.gather(first, return_exceptions=True)
        written |= await _enqueue(engine, topic, aggregates, 5)
        await _drained(engine, topic)
    finally:
        for task in (first, second):
            task.cancel()
        await asyncio.gather(first, second, return_exceptions=True)
    assert relays[0].published >= 60
    assert relays[1].published >= 60  # the rows written after the first died

    events = await _read_all(infra.kafka_bootstrap, topic, len(written))
    assert sorted(e.id for e in events) == sorted(written)  # every row, none twice
    for aggregate in aggregates:
        assert [e.sequence for e in events if e.aggregate_id == aggregate] == list(range(1, 11))


def _row(age: timedelta) -> dict[str, object]:
    aggregate = f"prune-test-{uuid.uuid4()}"
    return {
        "event_id": uuid.uuid4(),
        "topic": "paymesh.prune-test",
        "shard": shard_of(aggregate),
        "aggregate_id": aggregate,
        "event_type": "test.pruned",
        "payload": b"",
        "headers": {},
        "created_at": func.now() - age,
    }


async def test_published_rows_past_the_retention_are_deleted_and_nothing_else(
    infra: Stack, engine: AsyncEngine
) -> None:
    rows = {
        "old": _row(timedelta(days=2)),
        "recent": _row(timedelta(minutes=5)),
        "old unpublished": _row(timedelta(days=2)),
        "old too": _row(timedelta(days=3)),  # written after "old unpublished", though older
    }
    async with engine.begin() as conn:
        for row in rows.values():
            await conn.execute(outbox.insert().values(**row))
        # Written, each row waits for the relay; all but one are published now.
        published = [rows[name]["aggregate_id"] for name in ("old", "recent", "old too")]
        await conn.execute(
            text(
                "DELETE FROM outbox_pending WHERE position IN "
                "(SELECT position FROM outbox WHERE aggregate_id = ANY(:published))"
            ),
            {"published": published},
        )
    relay = OutboxRelay(engine, kafka_producer_factory(infra.kafka_bootstrap), retention=timedelta(hours=1))
    ours = [r["aggregate_id"] for r in rows.values()]
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            assert await relay.prune(conn) >= 2
            query = select(outbox.c.aggregate_id).where(outbox.c.aggregate_id.in_(ours))
            left = set((await conn.execute(query)).scalars())
    finally:
        # The unpublished row's topic does not exist: left behind, it would stall a relay run on this database later.
        async with engine.begin() as conn:
            await conn.execute(delete(outbox).where(outbox.c.aggregate_id.in_(ours)))
            await conn.execute(text("DELETE FROM outbox_pending"))
    assert left == {rows["recent"]["aggregate_id"], rows["old unpublished"]["aggregate_id"]}


async def test_every_writer_leaves_its_rows_pending_until_the_relay_publishes_them(engine: AsyncEngine) -> None:
    """The trigger covers a plain INSERT, a multi-row one and a rolled-back one (which leaves nothing)."""
    async with engine.begin() as conn:
        await conn.execute(outbox.insert().values(**_row(timedelta())))
        await conn.execute(outbox.insert().values([_row(timedelta()) for _ in range(3)]))
    try:
        async with engine.begin() as conn:
            await conn.execute(outbox.insert().values(**_row(timedelta())))
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    async with engine.begin() as conn:
        counts = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM outbox WHERE topic = 'paymesh.prune-test'),"
                    " (SELECT count(*) FROM outbox_pending JOIN outbox USING (position)"
                    "  WHERE topic = 'paymesh.prune-test' AND outbox_pending.shard = outbox.shard)"
                )
            )
        ).one()
        await conn.execute(text("DELETE FROM outbox WHERE topic = 'paymesh.prune-test'"))
        await conn.execute(text("DELETE FROM outbox_pending"))
    assert tuple(counts) == (4, 4)
