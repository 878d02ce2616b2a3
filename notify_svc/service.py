"""NotifyService gRPC handlers: validate, call the store, map to protos.

A notification is visible to its recipient or an admin: ListNotifications
lists the caller's own, and every user's for an admin (newest first, like
ListPayments; the page token is bound to which of the two lists it pages).
Webhook endpoints belong to merchants; an endpoint of someone else answers
NOT_FOUND (admins excepted).
"""

from __future__ import annotations

import uuid

from google.protobuf import empty_pb2

from notify_svc import webhooks
from notify_svc.store import EndpointRecord, NotificationRecord, NotifyStore
from paymesh.notify.v1 import notify_pb2, notify_pb2_grpc
from paymesh_runtime import pagination
from paymesh_runtime.errors import not_found
from paymesh_runtime.identity import Context, User, require_merchant, require_user
from paymesh_runtime.pagination import PageTokens
from paymesh_runtime.sealing import SecretSealer
from paymesh_runtime.wire import timestamp


class NotifyService(notify_pb2_grpc.NotifyServiceServicer):
    def __init__(
        self, store: NotifyStore, sealer: SecretSealer, page_tokens: PageTokens, *, allow_private_hosts: bool
    ) -> None:
        self._store = store
        self._pages = page_tokens
        self._sealer = sealer
        self._allow_private_hosts = allow_private_hosts

    async def ListNotifications(
        self, request: notify_pb2.ListNotificationsRequest, context: Context
    ) -> notify_pb2.ListNotificationsResponse:
        user = require_user(context)
        size = pagination.page_size(request.page_size)
        # Admins page through everyone's notifications; a token of one listing
        # is refused by the other (INVALID_PAGE_TOKEN), as for ListPayments.
        recipient = None if user.is_admin else user.user_id
        query = ["notifications", "*" if recipient is None else recipient]
        after = self._pages.decode_position(request.page_token, query)
        rows = await self._store.list_notifications(recipient, after, size + 1)
        page, more = rows[:size], len(rows) > size
        token = self._pages.encode_position((page[-1].create_time, page[-1].notification_id), query) if more else ""
        return notify_pb2.ListNotificationsResponse(
            notifications=[_notification(row) for row in page], next_page_token=token
        )

    async def CreateWebhookEndpoint(
        self, request: notify_pb2.CreateWebhookEndpointRequest, context: Context
    ) -> notify_pb2.WebhookEndpoint:
        user = require_merchant(context)
        url = webhooks.validate_url(request.url, self._allow_private_hosts)
        event_types = webhooks.validate_event_types(list(request.event_types))
        endpoint_id = uuid.uuid4()
        secret = webhooks.generate_secret()
        sealed = self._sealer.seal(str(endpoint_id), secret.encode())
        record = await self._store.create_endpoint(endpoint_id, user.user_id, url, event_types, sealed)
        created = _endpoint(record)
        created.secret = secret  # returned this once, never again
        return created

    async def ListWebhookEndpoints(
        self, request: notify_pb2.ListWebhookEndpointsRequest, context: Context
    ) -> notify_pb2.ListWebhookEndpointsResponse:
        user = require_merchant(context)
        size = pagination.page_size(request.page_size)
        query = ["webhook_endpoints", user.user_id]
        after = self._pages.decode_position(request.page_token, query)
        rows = await self._store.list_endpoints(user.user_id, after, size + 1)
        page, more = rows[:size], len(rows) > size
        token = self._pages.encode_position((page[-1].create_time, page[-1].endpoint_id), query) if more else ""
        return notify_pb2.ListWebhookEndpointsResponse(
            webhook_endpoints=[_endpoint(row) for row in page], next_page_token=token
        )

    async def GetWebhookEndpoint(
        self, request: notify_pb2.GetWebhookEndpointRequest, context: Context
    ) -> notify_pb2.WebhookEndpoint:
        user = require_merchant(context)
        return _endpoint(await self._visible_endpoint(user, request.endpoint_id))

    async def DeleteWebhookEndpoint(
        self, request: notify_pb2.DeleteWebhookEndpointRequest, context: Context
    ) -> empty_pb2.Empty:
        user = require_merchant(context)
        record = await self._visible_endpoint(user, request.endpoint_id)
        if not await self._store.delete_endpoint(record.endpoint_id):
            raise not_found("webhook_endpoint", request.endpoint_id)  # deleted concurrently
        return empty_pb2.Empty()

    async def _visible_endpoint(self, user: User, endpoint_id: str) -> EndpointRecord:
        """The endpoint if the caller owns it (or is an admin); NOT_FOUND alike for missing and foreign."""
        try:
            parsed = uuid.UUID(endpoint_id)
        except ValueError:
            raise not_found("webhook_endpoint", endpoint_id) from None
        record = await self._store.get_endpoint(parsed)
        if record is None or not user.may_see(record.owner_id):
            raise not_found("webhook_endpoint", endpoint_id)
        return record


def _notification(row: NotificationRecord) -> notify_pb2.Notification:
    return notify_pb2.Notification(
        notification_id=str(row.notification_id),
        user_id=row.user_id,
        channel=row.channel,  # the enum value's name
        event_id=str(row.event_id),
        event_type=row.event_type,
        subject=row.subject,
        body=row.body,
        state=row.state,
        attempts=row.attempts,
        create_time=timestamp(row.create_time),
        delivered_time=timestamp(row.delivered_time),
    )


def _endpoint(row: EndpointRecord) -> notify_pb2.WebhookEndpoint:
    return notify_pb2.WebhookEndpoint(
        endpoint_id=str(row.endpoint_id),
        owner_id=row.owner_id,
        url=row.url,
        event_types=list(row.event_types),
        create_time=timestamp(row.create_time),
    )
