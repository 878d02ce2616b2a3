"""NotifyService's API: who may see and do what, validation, pagination."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from devstack.stack import Stack
from notify_svc.store import webhook_endpoint
from paymesh.notify.v1 import notify_pb2
from tests.integration.notify_support import (
    RunningNotify,
    as_user,
    error_reason,
    eventually,
    harness_database_url,
    migrate,
    new_user,
    notifications_of,
    payment_event,
    produce_events,
    running_notify,
    settings_for,
)

pytestmark = pytest.mark.integration
URL = "http://127.0.0.1:9/hook"


@pytest.fixture(scope="module")
async def notify(infra: Stack) -> AsyncIterator[RunningNotify]:
    await migrate(infra)
    async with running_notify(settings_for(infra)) as running:
        yield running


async def _create(
    notify: RunningNotify, user: str, role: str = "MERCHANT", url: str = URL
) -> notify_pb2.WebhookEndpoint:
    request = notify_pb2.CreateWebhookEndpointRequest(url=url, event_types=["payment.succeeded"])
    return await notify.stub.CreateWebhookEndpoint(request, metadata=as_user(user, role))


async def _fails(call: object, code: grpc.StatusCode, reason: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert (caught.value.code(), error_reason(caught.value)) == (code, reason)


async def test_a_user_lists_only_their_own_notifications_page_by_page(infra: Stack, notify: RunningNotify) -> None:
    alice, bob = new_user(), new_user()
    events = [payment_event(new_user(), alice, amount=100 + i) for i in range(3)]
    await produce_events(infra, *events, payment_event(new_user(), bob))

    async def alice_has_three() -> bool:
        return len(await notifications_of(notify, alice)) == 3

    await eventually(alice_has_three)
    assert all(n.user_id == bob for n in await notifications_of(notify, bob))
    assert not {n.event_id for n in await notifications_of(notify, bob)} & {e.id for e in events}

    seen: list[str] = []
    token = ""
    for _ in range(3):
        page = await notify.stub.ListNotifications(
            notify_pb2.ListNotificationsRequest(page_size=1, page_token=token), metadata=as_user(alice)
        )
        assert len(page.notifications) == 1
        seen.append(page.notifications[0].notification_id)
        token = page.next_page_token
    assert token == ""
    assert len(set(seen)) == 3
    times = [n.create_time.ToDatetime() for n in await notifications_of(notify, alice)]
    assert times == sorted(times, reverse=True)


async def test_a_page_token_of_another_user_is_refused(notify: RunningNotify, infra: Stack) -> None:
    alice = new_user()
    await produce_events(infra, *(payment_event(new_user(), alice) for _ in range(2)))

    async def two() -> bool:
        return len(await notifications_of(notify, alice)) == 2

    await eventually(two)
    page = await notify.stub.ListNotifications(
        notify_pb2.ListNotificationsRequest(page_size=1), metadata=as_user(alice)
    )
    stolen = notify.stub.ListNotifications(
        notify_pb2.ListNotificationsRequest(page_size=1, page_token=page.next_page_token), metadata=as_user(new_user())
    )
    await _fails(stolen, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


async def _pages(
    notify: RunningNotify, user: str, role: str, page_size: int
) -> list[notify_pb2.ListNotificationsResponse]:
    pages, token = [], ""
    while True:
        page = await notify.stub.ListNotifications(
            notify_pb2.ListNotificationsRequest(page_size=page_size, page_token=token), metadata=as_user(user, role)
        )
        pages.append(page)
        token = page.next_page_token
        if not token:
            return pages


async def test_an_admin_lists_every_users_notifications_newest_first(infra: Stack, notify: RunningNotify) -> None:
    alice, shop, admin = new_user(), new_user(), new_user()
    events = [payment_event(alice, shop, amount=200 + i) for i in range(2)]
    await produce_events(infra, *events)

    async def delivered() -> bool:
        return len(await notifications_of(notify, alice)) == 2 and len(await notifications_of(notify, shop)) == 2

    await eventually(delivered)
    expected = {n.notification_id for user in (alice, shop) for n in await notifications_of(notify, user)}

    pages = await _pages(notify, admin, "ADMIN", page_size=3)
    listed = [n for page in pages for n in page.notifications]
    ids = [n.notification_id for n in listed]
    assert len(pages) > 1
    assert expected <= set(ids)  # both recipients' notifications
    assert len(ids) == len(set(ids))  # the cursor neither repeats nor skips across pages
    assert {n.user_id for n in listed} >= {alice, shop}
    order = [(n.create_time.ToDatetime(), uuid.UUID(n.notification_id)) for n in listed]
    assert order == sorted(order, reverse=True)

    # Customers and merchants still see only their own.
    assert {n.user_id for n in await notifications_of(notify, alice)} == {alice}
    assert {n.user_id for n in await notifications_of(notify, shop, "MERCHANT")} == {shop}
    # A page token is bound to its listing: the admin's is refused to a customer, and the other way round.
    await _fails(
        notify.stub.ListNotifications(
            notify_pb2.ListNotificationsRequest(page_size=3, page_token=pages[0].next_page_token),
            metadata=as_user(alice),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )
    (alice_first, _) = await _pages(notify, alice, "CUSTOMER", page_size=1)
    await _fails(
        notify.stub.ListNotifications(
            notify_pb2.ListNotificationsRequest(page_size=1, page_token=alice_first.next_page_token),
            metadata=as_user(admin, "ADMIN"),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )


async def test_listing_needs_a_signed_in_user(notify: RunningNotify) -> None:
    await _fails(
        notify.stub.ListNotifications(notify_pb2.ListNotificationsRequest()),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )


async def test_a_customer_cannot_create_a_webhook_endpoint(notify: RunningNotify) -> None:
    await _fails(_create(notify, new_user(), role="CUSTOMER"), grpc.StatusCode.PERMISSION_DENIED, "MERCHANT_REQUIRED")


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "not a url", "http://example.com/plain-http", ""])
async def test_a_bad_url_is_invalid_argument(notify: RunningNotify, url: str) -> None:
    await _fails(_create(notify, new_user(), url=url), grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")


async def test_without_event_types_creation_is_invalid_argument(notify: RunningNotify) -> None:
    request = notify_pb2.CreateWebhookEndpointRequest(url=URL)
    call = notify.stub.CreateWebhookEndpoint(request, metadata=as_user(new_user(), "MERCHANT"))
    await _fails(call, grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")


async def test_another_merchant_can_neither_get_nor_delete_an_endpoint(notify: RunningNotify) -> None:
    alice, bob = new_user(), new_user()
    endpoint = await _create(notify, alice)
    get = notify_pb2.GetWebhookEndpointRequest(endpoint_id=endpoint.endpoint_id)
    delete = notify_pb2.DeleteWebhookEndpointRequest(endpoint_id=endpoint.endpoint_id)

    await _fails(
        notify.stub.GetWebhookEndpoint(get, metadata=as_user(bob, "MERCHANT")),
        grpc.StatusCode.NOT_FOUND,
        "RESOURCE_NOT_FOUND",
    )
    await _fails(
        notify.stub.DeleteWebhookEndpoint(delete, metadata=as_user(bob, "MERCHANT")),
        grpc.StatusCode.NOT_FOUND,
        "RESOURCE_NOT_FOUND",
    )
    listed = await notify.stub.ListWebhookEndpoints(
        notify_pb2.ListWebhookEndpointsRequest(), metadata=as_user(bob, "MERCHANT")
    )
    assert list(listed.webhook_endpoints) == []

    mine = await notify.stub.GetWebhookEndpoint(get, metadata=as_user(alice, "MERCHANT"))
    assert (mine.owner_id, mine.url, mine.secret) == (alice, URL, "")  # the secret is never shown again
    admin = await notify.stub.GetWebhookEndpoint(get, metadata=as_user(new_user(), "ADMIN"))
    assert admin.endpoint_id == endpoint.endpoint_id


async def test_an_owner_lists_and_deletes_endpoints(notify: RunningNotify) -> None:
    alice = new_user()
    created = [await _create(notify, alice) for _ in range(3)]
    listed = await notify.stub.ListWebhookEndpoints(
        notify_pb2.ListWebhookEndpointsRequest(page_size=2), metadata=as_user(alice, "MERCHANT")
    )
    rest = await notify.stub.ListWebhookEndpoints(
        notify_pb2.ListWebhookEndpointsRequest(page_size=2, page_token=listed.next_page_token),
        metadata=as_user(alice, "MERCHANT"),
    )
    ids = [e.endpoint_id for e in [*listed.webhook_endpoints, *rest.webhook_endpoints]]
    assert ids == [e.endpoint_id for e in created]
    assert rest.next_page_token == ""

    gone = notify_pb2.DeleteWebhookEndpointRequest(endpoint_id=created[0].endpoint_id)
    await notify.stub.DeleteWebhookEndpoint(gone, metadata=as_user(alice, "MERCHANT"))
    await _fails(
        notify.stub.DeleteWebhookEndpoint(gone, metadata=as_user(alice, "MERCHANT")),
        grpc.StatusCode.NOT_FOUND,
        "RESOURCE_NOT_FOUND",
    )
    await _fails(
        notify.stub.GetWebhookEndpoint(
            notify_pb2.GetWebhookEndpointRequest(endpoint_id="not-a-uuid"), metadata=as_user(alice, "MERCHANT")
        ),
        grpc.StatusCode.NOT_FOUND,
        "RESOURCE_NOT_FOUND",
    )


async def test_the_signing_secret_is_stored_encrypted(infra: Stack, notify: RunningNotify) -> None:
    endpoint = await _create(notify, new_user())
    engine = create_async_engine(harness_database_url(infra))
    try:
        async with engine.connect() as conn:
            sealed = await conn.scalar(
                select(webhook_endpoint.c.secret_sealed).where(webhook_endpoint.c.endpoint_id == endpoint.endpoint_id)
            )
    finally:
        await engine.dispose()
    assert sealed
    assert endpoint.secret.encode() not in sealed
