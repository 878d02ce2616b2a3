"""The delivery worker's claim and lease against the real PostgreSQL, on a notify database of this
test's own (no running worker claims its rows): a claim rewrites no index (a HOT update), a leased
delivery is not claimed again until its lease lapses, and then only the new claim's outcome counts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from devstack.stack import Stack
from notify_svc.endpoint_health import DisabledEndpoint, NoticeFor, OwnerNotice
from notify_svc.store import DELIVERED, PENDING, NotifyStore, Outcome
from paymesh_runtime import migrations
from tests.helpers import fresh_database
from tests.integration.notify_support import MIGRATIONS, eventually

pytestmark = pytest.mark.integration

DATABASE = "paymesh_notify_lease_test"
LEASE_SECONDS = 30.0


@pytest.fixture
async def engine(infra: Stack) -> AsyncIterator[AsyncEngine]:
    url = await fresh_database(infra, DATABASE)
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS, url)
    # One connection: the store's statements and this test's statistics queries share a backend, whose
    # counters pg_stat_force_next_flush() makes visible at once.
    own = create_async_engine(url, pool_size=1, max_overflow=0)
    yield own
    await own.dispose()


async def _add_emails(engine: AsyncEngine, due: int, later: int) -> None:
    """`due` emails due now and `later` due in an hour, for one event."""
    event_id = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO processed_event (event_id, event_type) VALUES (:id, 'payment.succeeded')"),
            {"id": event_id},
        )
        await conn.execute(
            text(
                "INSERT INTO notification (notification_id, user_id, channel, event_id, event_type, event_payload, "
                "subject, body, next_attempt_at) "
                "SELECT gen_random_uuid(), 'user-' || i, 'EMAIL', :event, 'payment.succeeded', '\\x00', 'Paid', "
                "'You paid.', CASE WHEN i <= :due THEN now() ELSE now() + interval '1 hour' END "
                "FROM generate_series(1, :n) AS i"
            ),
            {"event": event_id, "due": due, "n": due + later},
        )


async def _updates(engine: AsyncEngine) -> tuple[int, int]:
    """The notification table's updates so far, and how many of them were HOT."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_stat_force_next_flush()"))
        await conn.commit()
        await conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        row = (
            await conn.execute(
                text("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'notification'")
            )
        ).one()
        await conn.commit()
        return int(row[0]), int(row[1])


def _no_notices() -> NoticeFor:
    def notice_for(endpoint: DisabledEndpoint, locale: str | None) -> OwnerNotice:
        raise AssertionError(f"no endpoint is disabled here, yet {endpoint.endpoint_id} was")

    return notice_for


async def test_a_claim_rewrites_no_index(engine: AsyncEngine) -> None:
    await _add_emails(engine, due=10, later=2)
    store = NotifyStore(engine)
    updated, hot = await _updates(engine)

    claimed = await store.claim_due(limit=50, lease_seconds=LEASE_SECONDS)

    assert len(claimed) == 10
    assert all(delivery.attempts == 1 for delivery in claimed)

    async def counted() -> tuple[int, int] | None:  # the claim's counters, flushed when its transaction ended
        now = await _updates(engine)
        return now if now[0] >= updated + 10 else None

    assert await eventually(counted, within=10.0) == (updated + 10, hot + 10)


async def test_a_leased_delivery_is_claimed_again_only_after_its_lease(engine: AsyncEngine) -> None:
    await _add_emails(engine, due=6, later=1)
    store = NotifyStore(engine)
    first = await store.claim_due(limit=50, lease_seconds=LEASE_SECONDS)
    assert len(first) == 6
    assert await store.claim_due(limit=50, lease_seconds=LEASE_SECONDS) == []  # leased, or not due yet

    lapsed = sorted(first, key=lambda delivery: delivery.notification_id)[:2]
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE notification SET lease_expires_at = now() - interval '1 second' "
                "WHERE notification_id = ANY(:ids)"
            ),
            {"ids": [delivery.notification_id for delivery in lapsed]},
        )
    again = await store.claim_due(limit=50, lease_seconds=LEASE_SECONDS)
    assert {d.notification_id for d in again} == {d.notification_id for d in lapsed}
    assert all(d.attempts == 2 for d in again)

    # The first claim's outcomes count only where its claim still holds.
    applied, _ = await store.record_outcomes([Outcome(d, DELIVERED) for d in first], 60.0, _no_notices())
    assert applied == {d.notification_id for d in first} - {d.notification_id for d in lapsed}
    retry = again[0]
    applied, _ = await store.record_outcomes(
        [Outcome(retry, PENDING, "try later", retry_in_seconds=3600.0), Outcome(again[1], DELIVERED)],
        60.0,
        _no_notices(),
    )
    assert applied == {d.notification_id for d in again}

    async with engine.connect() as conn:
        rows = {
            row.notification_id: row
            for row in await conn.execute(
                text(
                    "SELECT notification_id, state, claim_token, lease_expires_at, "
                    "next_attempt_at > now() + interval '59 minutes' AS later FROM notification"
                )
            )
        }
    assert [row.state for row in rows.values()].count(DELIVERED) == 5
    assert all(row.lease_expires_at is None and row.claim_token is None for row in rows.values())
    assert rows[retry.notification_id].state == PENDING
    assert rows[retry.notification_id].later
    assert await store.claim_due(limit=50, lease_seconds=LEASE_SECONDS) == []
