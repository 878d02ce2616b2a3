"""Signed merchant webhooks end to end: real Kafka in, a real HTTP receiver process out."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from functools import partial

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from devstack.stack import Stack
from notify_svc.channels import EmailChannel
from notify_svc.consumer import event_json
from notify_svc.dead_letters import DeadLetterProducer
from notify_svc.delivery import DeliveryWorker
from notify_svc.endpoint_store import EndpointStore
from notify_svc.ingest import EventRecorder, IncomingEvent
from notify_svc.mailer import SmtpMailer
from notify_svc.notifications import plan_for
from notify_svc.server import retry_policy
from notify_svc.store import NotifyStore, notification
from notify_svc.templates import Templates
from notify_svc.webhook_sender import WebhookSender
from paymesh.notify.v1 import notify_pb2
from paymesh.payment.v1 import payment_pb2
from paymesh_runtime.db import create_engine
from paymesh_runtime.outbox import kafka_producer_factory
from paymesh_runtime.sealing import SecretSealer, parse_aes256_key
from tests.integration.notify_support import (
    RunningNotify,
    as_user,
    eventually,
    migrate,
    new_user,
    notifications_of,
    payment_event,
    produce_events,
    read_dlq_with_kcat,
    running_notify,
    settings_for,
)
from tests.webhook_receiver import Receiver, receiver_process
from tests.webhook_verifier import paymesh_webhooks

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with receiver_process() as running:
        yield running


@pytest.fixture(scope="module")
async def notify(infra: Stack) -> AsyncIterator[RunningNotify]:
    await migrate(infra)
    async with running_notify(settings_for(infra)) as running:
        yield running


async def _endpoint(notify: RunningNotify, merchant: str, url: str, *types: str) -> notify_pb2.WebhookEndpoint:
    request = notify_pb2.CreateWebhookEndpointRequest(url=url, event_types=list(types))
    return await notify.stub.CreateWebhookEndpoint(request, metadata=as_user(merchant, "MERCHANT"))


def _resigned(secret: str, headers: dict[str, str], body: bytes, age_seconds: int) -> dict[str, str]:
    """The delivery's headers, validly signed with `secret` but `age_seconds` old: a replay."""
    moment = int(time.time()) - age_seconds
    signature = Webhook(secret).sign(headers["webhook-id"], datetime.fromtimestamp(moment, UTC), body.decode())
    return {**headers, "webhook-timestamp": str(moment), "webhook-signature": signature}


async def test_a_merchant_webhook_is_delivered_signed_and_verifies_with_both_verifiers(
    infra: Stack, notify: RunningNotify, receiver: Receiver
) -> None:
    merchant, customer = new_user(), new_user()
    url = receiver.url("ok")
    endpoint = await _endpoint(notify, merchant, url, "payment.succeeded")
    assert endpoint.secret.startswith("whsec_")
    wanted = payment_event(customer, merchant)
    unsubscribed = payment_event(customer, merchant, state=payment_pb2.Payment.FAILED)
    unsubscribed.aggregate_id = wanted.aggregate_id
    after = payment_event(customer, merchant)
    after.aggregate_id = wanted.aggregate_id
    await produce_events(infra, wanted, unsubscribed, after)

    async def both_subscribed_arrived() -> bool:
        return bool(receiver.for_event(url, wanted.id) and receiver.for_event(url, after.id))

    await eventually(both_subscribed_arrived)
    (request,) = receiver.for_event(url, wanted.id)
    headers = request.headers

    # What a merchant does: the Standard Webhooks library, or paymesh's own verifier.
    assert Webhook(endpoint.secret).verify(request.body, headers)["id"] == wanted.id
    assert paymesh_webhooks.verify(request.body, headers, endpoint.secret)["id"] == wanted.id
    assert headers["webhook-id"] == wanted.id
    assert abs(time.time() - int(headers["webhook-timestamp"])) < 120
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    replayed = _resigned(endpoint.secret, headers, request.body, age_seconds=360)
    for body, secret, sent, error in [
        (request.body + b" ", endpoint.secret, headers, paymesh_webhooks.InvalidSignature),
        (request.body, other, headers, paymesh_webhooks.InvalidSignature),
        (request.body, endpoint.secret, replayed, paymesh_webhooks.TimestampOutOfTolerance),
    ]:
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(body, sent)
        with pytest.raises(error):
            paymesh_webhooks.verify(body, sent, secret)

    body = json.loads(request.body)
    assert (body["id"], body["type"]) == (wanted.id, "payment.succeeded")
    assert body["payment_changed"]["payment"]["payee_id"] == merchant
    assert headers["content-type"] == "application/json"
    assert headers["paymesh-event-type"] == "payment.succeeded"
    assert "paymesh-signature" not in headers  # a Standard Webhooks secret: no former header
    assert receiver.for_event(url, unsubscribed.id) == []  # not subscribed

    async def listed_as_delivered() -> list[notify_pb2.Notification]:
        listed = await notifications_of(notify, merchant, "MERCHANT")
        webhooks = [n for n in listed if n.event_id == wanted.id and n.channel == notify_pb2.Notification.WEBHOOK]
        # The receiver answered before the outcome was recorded: wait for it.
        return webhooks if all(n.state == notify_pb2.Notification.DELIVERED for n in webhooks) else []

    webhooks = await eventually(listed_as_delivered)
    assert len(webhooks) == 1
    assert json.loads(webhooks[0].body)["id"] == wanted.id


async def test_a_failing_receiver_is_retried_then_dead_lettered(
    infra: Stack, notify: RunningNotify, receiver: Receiver
) -> None:
    merchant = new_user()
    url = receiver.url("status/503")
    endpoint = await _endpoint(notify, merchant, url, "*")
    event = payment_event(new_user(), merchant)
    await produce_events(infra, event)

    async def dead_lettered() -> list[object]:
        found = await notifications_of(notify, merchant, "MERCHANT")
        return [
            n
            for n in found
            if n.event_id == event.id
            and n.channel == notify_pb2.Notification.WEBHOOK
            and n.state == notify_pb2.Notification.DEAD_LETTERED
        ]

    (dead,) = await eventually(dead_lettered)
    assert dead.attempts == notify.settings.webhook_max_attempts  # type: ignore[attr-defined]
    assert len(receiver.for_event(url, event.id)) == notify.settings.webhook_max_attempts

    async def in_dlq() -> list[object]:
        records = await asyncio.to_thread(read_dlq_with_kcat, infra)
        return [r for r in records if r.headers.get("dlq-endpoint-id") == endpoint.endpoint_id]

    (record,) = await eventually(in_dlq)
    headers = record.headers  # type: ignore[attr-defined]
    assert headers["dlq-reason"] == "DELIVERY_FAILED"
    assert headers["event-id"] == event.id
    assert headers["dlq-channel"] == "WEBHOOK"
    assert headers["dlq-attempts"] == str(notify.settings.webhook_max_attempts)
    assert "503" in headers["dlq-error"]
    assert record.value_length == len(event.SerializeToString())  # type: ignore[attr-defined]


async def test_a_deleted_endpoint_receives_nothing_more(
    infra: Stack, notify: RunningNotify, receiver: Receiver
) -> None:
    merchant = new_user()
    url = receiver.url("ok")
    endpoint = await _endpoint(notify, merchant, url, "payment.succeeded")
    await notify.stub.DeleteWebhookEndpoint(
        notify_pb2.DeleteWebhookEndpointRequest(endpoint_id=endpoint.endpoint_id),
        metadata=as_user(merchant, "MERCHANT"),
    )
    event = payment_event(new_user(), merchant)
    marker = payment_event(merchant, merchant)  # a deposit: an email for the merchant
    marker.aggregate_id = event.aggregate_id
    await produce_events(infra, event, marker)

    async def marker_consumed() -> bool:
        return any(n.event_id == marker.id for n in await notifications_of(notify, merchant, "MERCHANT"))

    await eventually(marker_consumed)
    await asyncio.sleep(0.5)
    assert receiver.requests(url) == []


async def test_racing_workers_deliver_each_webhook_exactly_once(notify: RunningNotify, receiver: Receiver) -> None:
    """Several replicas claim from one table: SKIP LOCKED and the lease keep
    them off each other's deliveries. Four workers here race the running
    service's own worker (same database, same key)."""
    settings = notify.settings.model_copy(update={"delivery_batch_size": 5})
    engine = create_engine(settings)
    store = NotifyStore(engine)
    templates = Templates.load()
    sealer = SecretSealer(parse_aes256_key(settings.secret_encryption_key.get_secret_value(), "key"))
    dead_letters = DeadLetterProducer(kafka_producer_factory(settings.kafka_bootstrap_servers), settings.dlq_topic)
    merchant = new_user()
    events = [payment_event(new_user(), merchant, event_type="payment.race") for _ in range(40)]
    url = receiver.url("ok")
    try:
        endpoint_id = uuid.uuid4()
        sealed = sealer.seal(str(endpoint_id), b"whsec_cmFjZXJhY2VyYWNlcmFjZXJhY2VyYWNlcmFjZXI=")
        await EndpointStore(engine).create_endpoint(endpoint_id, merchant, url, ["payment.race"], sealed)
        incoming = [
            IncomingEvent(
                uuid.UUID(event.id),
                event.type,
                event.SerializeToString(),
                partial(event_json, event),
                plan_for(event),
            )
            for event in events
        ]
        assert await EventRecorder(engine, templates).record(incoming) == {e.event_id for e in incoming}

        async with httpx.AsyncClient(timeout=2.0) as http:
            sender = WebhookSender(http, sealer, timeout_seconds=2.0)
            # Emails go nowhere (port 1) and are retried: only the webhooks are counted.
            channels = {"EMAIL": EmailChannel(SmtpMailer("127.0.0.1", 1, "x@y", 1.0))}
            workers = [
                DeliveryWorker(store, channels, sender, dead_letters, retry_policy(settings), templates)
                for _ in range(4)
            ]

            async def drain(worker: DeliveryWorker) -> None:
                while await _pending(engine, endpoint_id):
                    if not await worker.run_once():
                        await asyncio.sleep(0.02)

            await asyncio.gather(*(drain(worker) for worker in workers))

        delivered = [r.headers["webhook-id"] for r in receiver.requests(url)]
        assert sorted(delivered) == sorted(event.id for event in events)
    finally:
        await dead_letters.close()
        await engine.dispose()


async def _pending(engine: AsyncEngine, endpoint_id: uuid.UUID) -> int:
    async with engine.connect() as conn:
        query = select(func.count()).where(notification.c.endpoint_id == endpoint_id, notification.c.state == "PENDING")
        return int(await conn.scalar(query))
