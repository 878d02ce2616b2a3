"""notify_svc's consumer on the real Kafka and PostgreSQL: dedupe, DLQ, email, retries."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from email.message import Message

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from devstack.stack import Stack
from paymesh.notify.v1 import notify_pb2
from paymesh.payment.v1 import payment_pb2
from paymesh_runtime.kafka import TOPIC_PAYMENTS, TOPIC_USERS
from tests.integration.notify_support import (
    RunningNotify,
    eventually,
    harness_database_url,
    migrate,
    new_user,
    notifications_of,
    payment_event,
    produce,
    produce_events,
    read_dlq_with_kcat,
    registered_event,
    running_notify,
    settings_for,
    smtp_sink,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mail() -> Iterator[tuple[int, list[Message]]]:
    with smtp_sink() as sink:
        yield sink


@pytest.fixture(scope="module")
async def notify(infra: Stack, mail: tuple[int, list[Message]]) -> AsyncIterator[RunningNotify]:
    await migrate(infra)
    async with running_notify(settings_for(infra, smtp_port=mail[0])) as running:
        yield running


async def test_an_event_produced_twice_yields_exactly_one_notification(infra: Stack, notify: RunningNotify) -> None:
    payer, payee = new_user(), new_user()
    event = payment_event(payer, payee)
    # A later event of the same payment (same key, same partition) marks the
    # point by which both copies have been consumed.
    marker = payment_event(payer, payee, amount=1)
    marker.aggregate_id = event.aggregate_id
    await produce_events(infra, event, event, marker)

    await eventually(lambda: _has_event(notify, payee, marker.id))
    found = [n for n in await notifications_of(notify, payee) if n.event_id == event.id]
    assert len(found) == 1
    assert found[0].channel == notify_pb2.Notification.EMAIL
    assert found[0].subject == "You received 10.50 USD"


async def _has_event(notify: RunningNotify, user_id: str, event_id: str) -> bool:
    return any(n.event_id == event_id for n in await notifications_of(notify, user_id))


async def test_a_poison_message_lands_in_the_dlq_and_the_partition_moves_on(
    infra: Stack, notify: RunningNotify
) -> None:
    key = f"poison-{uuid.uuid4()}"
    payer, payee = new_user(), new_user()
    after = payment_event(payer, payee)
    after.aggregate_id = key  # same key: same partition, right behind the poison
    await produce(
        infra, TOPIC_PAYMENTS, [(key.encode(), b"\xff\xfe not a protobuf"), (key.encode(), after.SerializeToString())]
    )

    await eventually(lambda: _has_event(notify, payee, after.id))
    dead = await eventually(lambda: _kcat_records_with_key(infra, key, notify))
    assert len(dead) == 1
    record = dead[0]
    assert record.value_length == len(b"\xff\xfe not a protobuf")
    assert record.headers["dlq-reason"] == "UNDECODABLE"
    assert record.headers["dlq-source-topic"] == TOPIC_PAYMENTS
    assert record.headers["dlq-source-offset"].isdigit()
    assert record.headers["content-type"] == "application/x-protobuf"  # original headers kept


async def _kcat_records_with_key(infra: Stack, key: str, notify: RunningNotify) -> list[object]:
    # Only this harness's dead letters: the stack's own notify_svc (another
    # consumer group) may be reading the same topics and dead-letter them too.
    records = await asyncio.to_thread(read_dlq_with_kcat, infra)
    group = notify.settings.consumer_group
    return [r for r in records if r.key == key and r.headers.get("dlq-consumer-group") == group]


async def test_an_envelope_without_a_uuid_id_is_dead_lettered_as_invalid(infra: Stack, notify: RunningNotify) -> None:
    event = payment_event(new_user(), new_user())
    event.id = "not-a-uuid"
    await produce_events(infra, event)
    dead = await eventually(lambda: _kcat_records_with_key(infra, event.aggregate_id, notify))
    assert dead[0].headers["dlq-reason"] == "INVALID_ENVELOPE"  # type: ignore[attr-defined]


async def test_a_redelivered_event_sends_one_email_to_the_registered_address(
    infra: Stack, notify: RunningNotify, mail: tuple[int, list[Message]]
) -> None:
    payer, payee = new_user(), new_user()
    address = f"payee-{uuid.uuid4().hex[:8]}@example.com"
    await produce_events(infra, registered_event(payee, address), topic=TOPIC_USERS)
    event = payment_event(payer, payee, amount=2500)
    marker = payment_event(payer, payee, amount=1)
    marker.aggregate_id = event.aggregate_id
    await produce_events(infra, event, event, marker)

    def to_payee() -> list[Message]:
        return [m for m in mail[1] if m["To"] == address]

    async def welcome_and_both_payments_mailed() -> bool:
        return len(to_payee()) >= 3

    await eventually(welcome_and_both_payments_mailed)
    await asyncio.sleep(0.5)  # room for a wrong second email to arrive
    by_event = [m["X-Paymesh-Event-Id"] for m in to_payee()]
    assert by_event.count(event.id) == 1
    (payment_mail,) = [m for m in to_payee() if m["X-Paymesh-Event-Id"] == event.id]
    assert payment_mail["Subject"] == "You received 25.00 USD"

    async def recorded_as_delivered() -> bool:
        states = [n.state for n in await notifications_of(notify, payee) if n.event_id == event.id]
        return states == [notify_pb2.Notification.DELIVERED]

    await eventually(recorded_as_delivered)


async def test_a_transient_database_error_retries_the_event_without_losing_it(
    infra: Stack, notify: RunningNotify, caplog: pytest.LogCaptureFixture
) -> None:
    """While processed_event is locked, inserts time out (lock_timeout): the
    consumer must retry the record, not skip it, and store it once."""
    payer, payee = new_user(), new_user()
    event = payment_event(payer, payee, state=payment_pb2.Payment.FAILED)
    caplog.set_level(logging.WARNING, logger="notify_svc.consumer")
    engine = create_async_engine(harness_database_url(infra))
    try:
        async with engine.connect() as conn:
            await conn.execute(text("LOCK TABLE processed_event IN ACCESS EXCLUSIVE MODE"))
            await produce_events(infra, event)
            await asyncio.sleep(7)  # longer than the service's 5 s lock_timeout: at least one failed try
            await conn.rollback()
    finally:
        await engine.dispose()
    await eventually(lambda: _has_event(notify, payer, event.id))
    assert [n.event_id for n in await notifications_of(notify, payer)].count(event.id) == 1
    assert any("will be retried" in record.getMessage() for record in caplog.records)


async def test_a_record_the_database_refuses_is_singled_out_of_its_batch_and_dead_lettered(
    infra: Stack, notify: RunningNotify
) -> None:
    """The refused record fails its batch's transaction; the consumer stores the batch
    again one record at a time: the neighbours are stored, the refused one dead-lettered."""
    payer, before_payee, after_payee = new_user(), new_user(), new_user()
    before = payment_event(payer, before_payee)
    refused = payment_event(payer, "u" * 100)  # longer than a user id column: the database refuses it
    after = payment_event(payer, after_payee)
    key = before.aggregate_id
    for event in (refused, after):
        event.aggregate_id = key  # one partition, in this order, most likely one poll
    await produce_events(infra, before, refused, after)

    await eventually(lambda: _has_event(notify, after_payee, after.id))
    assert await _has_event(notify, before_payee, before.id)
    dead = await eventually(lambda: _kcat_records_with_key(infra, key, notify))
    assert [r.headers["dlq-reason"] for r in dead] == ["REJECTED_BY_DATABASE"]  # type: ignore[attr-defined]
    assert dead[0].value_length == len(refused.SerializeToString())  # type: ignore[attr-defined]
    assert not any(n.event_id == refused.id for n in await notifications_of(notify, payer))
