"""The outbox relay deletes published rows once they are older than the retention,
and never a row that is not published yet (real PostgreSQL, wallet_svc's outbox)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from devstack.stack import Stack
from paymesh_runtime.outbox import OutboxRelay, kafka_producer_factory, shard_of
from tests.integration.wallet_support import migrate
from wallet_svc import store

pytestmark = pytest.mark.integration


def _row(published_ago: timedelta | None) -> dict[str, object]:
    aggregate = f"prune-test-{uuid.uuid4()}"
    return {
        "event_id": uuid.uuid4(),
        "topic": "paymesh.prune-test",
        "shard": shard_of(aggregate),
        "aggregate_id": aggregate,
        "event_type": "test.pruned",
        "payload": b"",
        "headers": {},
        "published_at": None if published_ago is None else func.now() - published_ago,
    }


async def test_published_rows_past_the_retention_are_deleted_and_nothing_else(infra: Stack) -> None:
    await migrate(infra)
    engine = create_async_engine(infra.database_url("wallet"))
    o = store.outbox
    try:
        rows = {"old": _row(timedelta(days=2)), "recent": _row(timedelta(minutes=5)), "unpublished": _row(None)}
        async with engine.begin() as conn:
            for row in rows.values():
                await conn.execute(o.insert().values(**row))
        relay = OutboxRelay(engine, o, kafka_producer_factory(infra.kafka_bootstrap), retention=timedelta(hours=1))
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            assert await relay.prune(conn) >= 1
            left = set(
                (
                    await conn.execute(
                        select(o.c.aggregate_id).where(o.c.aggregate_id.in_([r["aggregate_id"] for r in rows.values()]))
                    )
                ).scalars()
            )
        assert left == {rows["recent"]["aggregate_id"], rows["unpublished"]["aggregate_id"]}
    finally:
        await engine.dispose()
