"""Webhook endpoints over their life: retries and the attempt log, disabling (failing too long, 410 Gone) with an
email to the owner, secret rotation, test events, redelivery, updates, and who may do what. Real Kafka,
PostgreSQL, SMTP sink and a receiver process."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from email.message import Message
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from devstack.stack import Stack
from paymesh.notify.v1 import notify_pb2
from paymesh_runtime.kafka import TOPIC_USERS
from tests.integration.notify_support import (
    RunningNotify,
    as_user,
    error_reason,
    eventually,
    migrate,
    new_user,
    payment_event,
    produce_events,
    registered_event,
    running_notify,
    settings_for,
    smtp_sink,
)
from tests.webhook_receiver import Received, Receiver, receiver_process
from tests.webhook_verifier import paymesh_webhooks

pytestmark = pytest.mark.integration
Endpoint = notify_pb2.WebhookEndpoint
DISABLE_AFTER_SECONDS = 3.0


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with receiver_process() as running:
        yield running


@pytest.fixture(scope="module")
def mail() -> Iterator[tuple[int, list[Message]]]:
    with smtp_sink() as sink:
        yield sink


@pytest.fixture(scope="module")
async def notify(infra: Stack, mail: tuple[int, list[Message]]) -> AsyncIterator[RunningNotify]:
    await migrate(infra)
    settings = settings_for(
        infra,
        smtp_port=mail[0],
        # Attempts every 0.05-0.2 s for a while; an endpoint failing for 3 s is disabled.
        webhook_max_attempts=60,
        webhook_disable_after_seconds=DISABLE_AFTER_SECONDS,
    )
    async with running_notify(settings) as running:
        yield running


async def _create(notify: RunningNotify, merchant: str, url: str, *types: str, description: str = "") -> Endpoint:
    request = notify_pb2.CreateWebhookEndpointRequest(
        url=url, event_types=list(types or ["*"]), description=description
    )
    return await notify.stub.CreateWebhookEndpoint(request, metadata=as_user(merchant, "MERCHANT"))


async def _deliveries(notify: RunningNotify, merchant: str, endpoint_id: str) -> list[notify_pb2.WebhookDelivery]:
    request = notify_pb2.ListWebhookDeliveriesRequest(endpoint_id=endpoint_id, page_size=200)
    reply = await notify.stub.ListWebhookDeliveries(request, metadata=as_user(merchant, "MERCHANT"))
    return list(reply.webhook_deliveries)


async def _endpoint(notify: RunningNotify, merchant: str, endpoint_id: str) -> Endpoint:
    request = notify_pb2.GetWebhookEndpointRequest(endpoint_id=endpoint_id)
    return await notify.stub.GetWebhookEndpoint(request, metadata=as_user(merchant, "MERCHANT"))


async def _fails(call: Any, code: grpc.StatusCode, reason: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert (caught.value.code(), error_reason(caught.value)) == (code, reason)
    return caught.value


async def _send_test(notify: RunningNotify, merchant: str, endpoint_id: str) -> notify_pb2.WebhookDelivery:
    request = notify_pb2.SendTestWebhookEventRequest(endpoint_id=endpoint_id)
    return await notify.stub.SendTestWebhookEvent(request, metadata=as_user(merchant, "MERCHANT"))


async def _arrived(receiver: Receiver, url: str, event_id: str, count: int = 1) -> list[Received]:
    async def enough() -> list[Received]:
        found = receiver.for_event(url, event_id)
        return found if len(found) >= count else []

    return await eventually(enough)


async def _registered_merchant(infra: Stack) -> tuple[str, str]:
    merchant = new_user()
    address = f"merchant-{merchant[:8]}@example.com"
    await produce_events(infra, registered_event(merchant, address), topic=TOPIC_USERS)
    return merchant, address


async def test_a_receiver_failing_three_times_gets_the_fourth_attempt_and_the_log_shows_all_four(
    infra: Stack, notify: RunningNotify, receiver: Receiver
) -> None:
    merchant = new_user()
    url = receiver.url("fail/3")
    endpoint = await _create(notify, merchant, url, "payment.succeeded")
    event = payment_event(new_user(), merchant)
    await produce_events(infra, event)

    async def delivered() -> list[notify_pb2.WebhookDelivery]:
        found = await _deliveries(notify, merchant, endpoint.endpoint_id)
        return [d for d in found if d.state == notify_pb2.Notification.DELIVERED]

    (delivery,) = await eventually(delivered)
    assert delivery.event_id == event.id
    assert delivery.attempt_count == 4
    assert [a.attempt for a in delivery.attempts] == [1, 2, 3, 4]
    assert [a.status_code for a in delivery.attempts] == [500, 500, 500, 200]
    assert [a.response_body for a in delivery.attempts[:3]] == ["failing on purpose"] * 3
    assert delivery.attempts[3].response_body == '{"received": true}'
    assert all(a.error for a in delivery.attempts[:3])
    assert not delivery.attempts[3].error
    assert all(a.latency.ToTimedelta().total_seconds() < 5 for a in delivery.attempts)
    # Every attempt carried the same webhook-id, the receiver's dedupe key.
    assert {r.headers["webhook-id"] for r in receiver.requests(url)} == {event.id}
    assert (await _endpoint(notify, merchant, endpoint.endpoint_id)).HasField("failing_since") is False


async def test_an_endpoint_failing_longer_than_the_window_is_disabled_and_its_owner_emailed(
    infra: Stack, notify: RunningNotify, receiver: Receiver, mail: tuple[int, list[Message]]
) -> None:
    merchant, address = await _registered_merchant(infra)
    url = receiver.url("status/503")
    # Payments only: the merchant's user.registered may be consumed after the endpoint exists.
    endpoint = await _create(notify, merchant, url, "payment.succeeded")
    await produce_events(infra, payment_event(new_user(), merchant))

    async def disabled() -> Endpoint | None:
        found = await _endpoint(notify, merchant, endpoint.endpoint_id)
        return found if found.state == Endpoint.DISABLED else None

    started = time.monotonic()
    found = await eventually(disabled)
    assert found.disabled_reason == Endpoint.FAILING
    assert time.monotonic() - started >= DISABLE_AFTER_SECONDS - 0.5  # not before the window
    failed = receiver.requests(url)
    assert failed[-1].at - failed[0].at >= DISABLE_AFTER_SECONDS - 0.5

    (email,) = await eventually(lambda: _disabled_mail_to(mail, address))
    parts = {part.get_content_type(): part.get_payload(decode=True).decode() for part in email.walk()
             if not part.is_multipart()}  # fmt: skip
    assert endpoint.endpoint_id in parts["text/plain"]
    assert url in parts["text/html"]
    # Its retrying delivery stopped, and a later event is not delivered to it.
    (delivery,) = await _deliveries(notify, merchant, endpoint.endpoint_id)
    assert delivery.state == notify_pb2.Notification.CANCELED
    before = len(receiver.requests(url))
    marker = payment_event(new_user(), merchant)
    await produce_events(infra, marker)
    await asyncio.sleep(1.0)
    assert len(receiver.requests(url)) == before


async def test_a_410_gone_disables_the_endpoint_at_once(
    infra: Stack, notify: RunningNotify, receiver: Receiver, mail: tuple[int, list[Message]]
) -> None:
    merchant, address = await _registered_merchant(infra)
    url = receiver.url("status/410")
    endpoint = await _create(notify, merchant, url, "payment.succeeded")
    await produce_events(infra, payment_event(new_user(), merchant))

    async def disabled() -> Endpoint | None:
        found = await _endpoint(notify, merchant, endpoint.endpoint_id)
        return found if found.state == Endpoint.DISABLED else None

    found = await eventually(disabled)
    assert found.disabled_reason == Endpoint.GONE
    assert len(receiver.requests(url)) == 1
    await eventually(lambda: _disabled_mail_to(mail, address))


async def _disabled_mail_to(mail: tuple[int, list[Message]], address: str) -> list[Message]:
    """The endpoint-disabled emails to `address` (a registered user also gets a welcome email)."""
    return [m for m in list(mail[1]) if m["To"] == address and m["Subject"] == "Your webhook endpoint was disabled"]


async def test_a_disabled_endpoint_gets_nothing_until_enabled_again(
    infra: Stack, notify: RunningNotify, receiver: Receiver
) -> None:
    merchant = new_user()
    url = receiver.url("ok")
    endpoint = await _create(notify, merchant, url)
    owner = as_user(merchant, "MERCHANT")
    off = await notify.stub.DisableWebhookEndpoint(
        notify_pb2.DisableWebhookEndpointRequest(endpoint_id=endpoint.endpoint_id), metadata=owner
    )
    assert (off.state, off.disabled_reason) == (Endpoint.DISABLED, Endpoint.BY_OWNER)
    await _fails(
        _send_test(notify, merchant, endpoint.endpoint_id),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE_TRANSITION",
    )
    missed = payment_event(new_user(), merchant)
    await produce_events(infra, missed)
    await asyncio.sleep(1.0)
    on = await notify.stub.EnableWebhookEndpoint(
        notify_pb2.EnableWebhookEndpointRequest(endpoint_id=endpoint.endpoint_id), metadata=owner
    )
    assert on.state == Endpoint.ENABLED
    assert not on.HasField("disable_time")
    later = payment_event(new_user(), merchant)
    await produce_events(infra, later)
    await _arrived(receiver, url, later.id)
    assert receiver.for_event(url, missed.id) == []


async def test_during_a_rotation_overlap_both_secrets_sign_and_after_it_only_the_new_one(
    notify: RunningNotify, receiver: Receiver
) -> None:
    merchant = new_user()
    url = receiver.url("ok")
    endpoint = await _create(notify, merchant, url)
    old = endpoint.secret
    rotated = await notify.stub.RotateWebhookEndpointSecret(
        notify_pb2.RotateWebhookEndpointSecretRequest(endpoint_id=endpoint.endpoint_id, overlap=Duration(seconds=4)),
        metadata=as_user(merchant, "MERCHANT"),
    )
    new = rotated.secret
    assert new.startswith("whsec_")
    assert new != old
    assert rotated.HasField("previous_secret_expire_time")
    assert (await _endpoint(notify, merchant, endpoint.endpoint_id)).secret == ""  # shown once only

    during = await _send_test(notify, merchant, endpoint.endpoint_id)
    (request,) = await _arrived(receiver, url, during.event_id)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        assert Webhook(secret).verify(request.body, request.headers)["type"] == "webhook.test"
        assert paymesh_webhooks.verify(request.body, request.headers, secret)["id"] == during.event_id

    overlap_end = rotated.previous_secret_expire_time.ToDatetime().timestamp()
    await asyncio.sleep(max(0.0, overlap_end - time.time()) + 0.5)
    after = await _send_test(notify, merchant, endpoint.endpoint_id)
    (request,) = await _arrived(receiver, url, after.event_id)
    assert len(request.headers["webhook-signature"].split(" ")) == 1
    assert paymesh_webhooks.verify(request.body, request.headers, new)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(request.body, request.headers)
    with pytest.raises(paymesh_webhooks.InvalidSignature):
        paymesh_webhooks.verify(request.body, request.headers, old)


async def test_a_test_event_arrives_and_is_listed(notify: RunningNotify, receiver: Receiver) -> None:
    merchant = new_user()
    url = receiver.url("ok")
    endpoint = await _create(notify, merchant, url, "payment.succeeded")
    sent = await _send_test(notify, merchant, endpoint.endpoint_id)
    assert (sent.event_type, sent.state) == ("webhook.test", notify_pb2.Notification.PENDING)
    (request,) = await _arrived(receiver, url, sent.event_id)
    event = paymesh_webhooks.verify(request.body, request.headers, endpoint.secret)
    assert (event["type"], event["aggregate_id"], event["producer"]) == (
        "webhook.test",
        endpoint.endpoint_id,
        "notify_svc",
    )

    async def listed() -> bool:
        found = await _deliveries(notify, merchant, endpoint.endpoint_id)
        return [(d.delivery_id, d.state) for d in found] == [(sent.delivery_id, notify_pb2.Notification.DELIVERED)]

    await eventually(listed)


async def test_a_delivered_delivery_is_sent_again_on_request_with_the_same_webhook_id(
    infra: Stack, notify: RunningNotify, receiver: Receiver
) -> None:
    merchant = new_user()
    url = receiver.url("ok")
    endpoint = await _create(notify, merchant, url)
    event = payment_event(new_user(), merchant)
    await produce_events(infra, event)
    await _arrived(receiver, url, event.id)

    async def delivered() -> list[notify_pb2.WebhookDelivery]:
        found = await _deliveries(notify, merchant, endpoint.endpoint_id)
        return [d for d in found if d.state == notify_pb2.Notification.DELIVERED]

    (delivery,) = await eventually(delivered)
    again = await notify.stub.RedeliverWebhookDelivery(
        notify_pb2.RedeliverWebhookDeliveryRequest(endpoint_id=endpoint.endpoint_id, delivery_id=delivery.delivery_id),
        metadata=as_user(merchant, "MERCHANT"),
    )
    assert again.state == notify_pb2.Notification.PENDING
    first, second = await _arrived(receiver, url, event.id, count=2)
    assert first.body == second.body

    async def twice() -> notify_pb2.WebhookDelivery | None:
        found = await notify.stub.GetWebhookDelivery(
            notify_pb2.GetWebhookDeliveryRequest(endpoint_id=endpoint.endpoint_id, delivery_id=delivery.delivery_id),
            metadata=as_user(merchant, "MERCHANT"),
        )
        return found if found.state == notify_pb2.Notification.DELIVERED and found.attempt_count == 2 else None

    assert [a.status_code for a in (await eventually(twice)).attempts] == [200, 200]


async def test_a_delivery_still_being_retried_cannot_be_redelivered(
    infra: Stack, notify: RunningNotify, receiver: Receiver
) -> None:
    merchant = new_user()
    url = receiver.url("fail/1000")
    endpoint = await _create(notify, merchant, url)
    event = payment_event(new_user(), merchant)
    await produce_events(infra, event)
    await _arrived(receiver, url, event.id)
    (delivery,) = await _deliveries(notify, merchant, endpoint.endpoint_id)
    request = notify_pb2.RedeliverWebhookDeliveryRequest(
        endpoint_id=endpoint.endpoint_id, delivery_id=delivery.delivery_id
    )
    error = await _fails(
        notify.stub.RedeliverWebhookDelivery(request, metadata=as_user(merchant, "MERCHANT")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE_TRANSITION",
    )
    assert "pending" in (error.details() or "")


async def test_an_endpoint_is_updated_by_mask_or_by_the_fields_set(notify: RunningNotify) -> None:
    merchant = new_user()
    owner = as_user(merchant, "MERCHANT")
    endpoint = await _create(notify, merchant, "http://127.0.0.1:9/a", "payment.succeeded", description="first")
    changed = await notify.stub.UpdateWebhookEndpoint(
        notify_pb2.UpdateWebhookEndpointRequest(
            webhook_endpoint=Endpoint(endpoint_id=endpoint.endpoint_id, url="http://127.0.0.1:9/b"),
            update_mask=FieldMask(paths=["url", "description"]),
        ),
        metadata=owner,
    )
    assert (changed.url, changed.description, list(changed.event_types)) == (
        "http://127.0.0.1:9/b",
        "",
        ["payment.succeeded"],
    )
    implied = await notify.stub.UpdateWebhookEndpoint(
        notify_pb2.UpdateWebhookEndpointRequest(
            webhook_endpoint=Endpoint(endpoint_id=endpoint.endpoint_id, event_types=["refund.succeeded", "*"])
        ),
        metadata=owner,
    )
    assert (implied.url, list(implied.event_types)) == ("http://127.0.0.1:9/b", ["refund.succeeded", "*"])
    for request in [
        notify_pb2.UpdateWebhookEndpointRequest(
            webhook_endpoint=Endpoint(endpoint_id=endpoint.endpoint_id, owner_id="someone-else"),
            update_mask=FieldMask(paths=["owner_id"]),
        ),
        notify_pb2.UpdateWebhookEndpointRequest(webhook_endpoint=Endpoint(endpoint_id=endpoint.endpoint_id)),
        notify_pb2.UpdateWebhookEndpointRequest(
            webhook_endpoint=Endpoint(endpoint_id=endpoint.endpoint_id, description="x" * 501)
        ),
        notify_pb2.UpdateWebhookEndpointRequest(
            webhook_endpoint=Endpoint(endpoint_id=endpoint.endpoint_id, url="http://example.com/plain-http")
        ),
    ]:
        await _fails(
            notify.stub.UpdateWebhookEndpoint(request, metadata=owner),
            grpc.StatusCode.INVALID_ARGUMENT,
            "VALIDATION_FAILED",
        )
    assert (await _endpoint(notify, merchant, endpoint.endpoint_id)).owner_id == merchant


async def test_another_merchant_sees_and_touches_none_of_an_endpoints_deliveries(notify: RunningNotify) -> None:
    alice, mallory, shopper, admin = new_user(), new_user(), new_user(), new_user()
    endpoint = await _create(notify, alice, "http://127.0.0.1:9/alice")
    sent = await _send_test(notify, alice, endpoint.endpoint_id)
    target = {"endpoint_id": endpoint.endpoint_id}
    calls = [
        ("ListWebhookDeliveries", notify_pb2.ListWebhookDeliveriesRequest(**target)),
        ("GetWebhookDelivery", notify_pb2.GetWebhookDeliveryRequest(**target, delivery_id=sent.delivery_id)),
        (
            "RedeliverWebhookDelivery",
            notify_pb2.RedeliverWebhookDeliveryRequest(**target, delivery_id=sent.delivery_id),
        ),
        ("SendTestWebhookEvent", notify_pb2.SendTestWebhookEventRequest(**target)),
        ("RotateWebhookEndpointSecret", notify_pb2.RotateWebhookEndpointSecretRequest(**target)),
        ("DisableWebhookEndpoint", notify_pb2.DisableWebhookEndpointRequest(**target)),
        ("EnableWebhookEndpoint", notify_pb2.EnableWebhookEndpointRequest(**target)),
        (
            "UpdateWebhookEndpoint",
            notify_pb2.UpdateWebhookEndpointRequest(
                webhook_endpoint=Endpoint(endpoint_id=endpoint.endpoint_id, description="mine now")
            ),
        ),
    ]
    for method, request in calls:
        call = getattr(notify.stub, method)
        await _fails(
            call(request, metadata=as_user(mallory, "MERCHANT")), grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"
        )
        await _fails(call(request, metadata=as_user(shopper)), grpc.StatusCode.PERMISSION_DENIED, "MERCHANT_REQUIRED")
    # A delivery id of another endpoint is not found under this one.
    other = await _create(notify, alice, "http://127.0.0.1:9/alice-2")
    wrong = notify_pb2.GetWebhookDeliveryRequest(endpoint_id=other.endpoint_id, delivery_id=sent.delivery_id)
    await _fails(
        notify.stub.GetWebhookDelivery(wrong, metadata=as_user(alice, "MERCHANT")),
        grpc.StatusCode.NOT_FOUND,
        "RESOURCE_NOT_FOUND",
    )
    seen = await notify.stub.ListWebhookDeliveries(
        notify_pb2.ListWebhookDeliveriesRequest(**target), metadata=as_user(admin, "ADMIN")
    )
    assert [d.delivery_id for d in seen.webhook_deliveries] == [sent.delivery_id]
    assert (await _endpoint(notify, alice, endpoint.endpoint_id)).description == ""


async def test_deliveries_are_paged_newest_first_with_tokens_bound_to_the_endpoint(notify: RunningNotify) -> None:
    merchant = new_user()
    endpoint = await _create(notify, merchant, "http://127.0.0.1:9/pages")
    sent = [await _send_test(notify, merchant, endpoint.endpoint_id) for _ in range(3)]
    owner = as_user(merchant, "MERCHANT")
    seen, token = [], ""
    while True:
        page = await notify.stub.ListWebhookDeliveries(
            notify_pb2.ListWebhookDeliveriesRequest(endpoint_id=endpoint.endpoint_id, page_size=2, page_token=token),
            metadata=owner,
        )
        seen += [d.delivery_id for d in page.webhook_deliveries]
        token = page.next_page_token
        if not token:
            break
        other = await _create(notify, merchant, f"http://127.0.0.1:9/{uuid.uuid4().hex}")
        await _fails(
            notify.stub.ListWebhookDeliveries(
                notify_pb2.ListWebhookDeliveriesRequest(endpoint_id=other.endpoint_id, page_token=token),
                metadata=owner,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_PAGE_TOKEN",
        )
    assert seen == [d.delivery_id for d in reversed(sent)]
