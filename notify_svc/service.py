"""NotifyService's gRPC servicer: ListNotifications here, the other methods in their own modules.

A notification is visible to its recipient or an admin: ListNotifications
lists the caller's own, and every user's for an admin (newest first, like
ListPayments; the page token is bound to which of the two lists it pages).
Webhook endpoints and their deliveries belong to merchants
(notify_svc.endpoint_api); notification preferences to each user alone
(notify_svc.preference_api).
"""

from __future__ import annotations

from google.protobuf import empty_pb2

from notify_svc.endpoint_api import EndpointApi
from notify_svc.messages import notification_message
from notify_svc.preference_api import PreferenceApi
from notify_svc.store import NotifyStore
from paymesh.notify.v1 import notify_pb2, notify_pb2_grpc
from paymesh_runtime import pagination
from paymesh_runtime.identity import Context, require_user
from paymesh_runtime.pagination import PageTokens


class NotifyService(notify_pb2_grpc.NotifyServiceServicer):
    def __init__(
        self, store: NotifyStore, endpoints: EndpointApi, preferences: PreferenceApi, page_tokens: PageTokens
    ) -> None:
        self._store = store
        self._endpoints = endpoints
        self._preferences = preferences
        self._pages = page_tokens

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
            notifications=[notification_message(row) for row in page], next_page_token=token
        )

    # --- webhook endpoints (notify_svc.endpoint_api) ------------------------------

    async def CreateWebhookEndpoint(
        self, request: notify_pb2.CreateWebhookEndpointRequest, context: Context
    ) -> notify_pb2.WebhookEndpoint:
        return await self._endpoints.create(request, context)

    async def ListWebhookEndpoints(
        self, request: notify_pb2.ListWebhookEndpointsRequest, context: Context
    ) -> notify_pb2.ListWebhookEndpointsResponse:
        return await self._endpoints.list(request, context)

    async def GetWebhookEndpoint(
        self, request: notify_pb2.GetWebhookEndpointRequest, context: Context
    ) -> notify_pb2.WebhookEndpoint:
        return await self._endpoints.get(request, context)

    async def UpdateWebhookEndpoint(
        self, request: notify_pb2.UpdateWebhookEndpointRequest, context: Context
    ) -> notify_pb2.WebhookEndpoint:
        return await self._endpoints.update(request, context)

    async def DeleteWebhookEndpoint(
        self, request: notify_pb2.DeleteWebhookEndpointRequest, context: Context
    ) -> empty_pb2.Empty:
        return await self._endpoints.delete(request, context)

    async def DisableWebhookEndpoint(
        self, request: notify_pb2.DisableWebhookEndpointRequest, context: Context
    ) -> notify_pb2.WebhookEndpoint:
        return await self._endpoints.disable(request, context)

    async def EnableWebhookEndpoint(
        self, request: notify_pb2.EnableWebhookEndpointRequest, context: Context
    ) -> notify_pb2.WebhookEndpoint:
        return await self._endpoints.enable(request, context)

    async def RotateWebhookEndpointSecret(
        self, request: notify_pb2.RotateWebhookEndpointSecretRequest, context: Context
    ) -> notify_pb2.WebhookEndpoint:
        return await self._endpoints.rotate_secret(request, context)

    # --- webhook deliveries (notify_svc.endpoint_api) -----------------------------

    async def SendTestWebhookEvent(
        self, request: notify_pb2.SendTestWebhookEventRequest, context: Context
    ) -> notify_pb2.WebhookDelivery:
        return await self._endpoints.send_test_event(request, context)

    async def ListWebhookDeliveries(
        self, request: notify_pb2.ListWebhookDeliveriesRequest, context: Context
    ) -> notify_pb2.ListWebhookDeliveriesResponse:
        return await self._endpoints.list_deliveries(request, context)

    async def GetWebhookDelivery(
        self, request: notify_pb2.GetWebhookDeliveryRequest, context: Context
    ) -> notify_pb2.WebhookDelivery:
        return await self._endpoints.get_delivery(request, context)

    async def RedeliverWebhookDelivery(
        self, request: notify_pb2.RedeliverWebhookDeliveryRequest, context: Context
    ) -> notify_pb2.WebhookDelivery:
        return await self._endpoints.redeliver(request, context)

    # --- notification preferences (notify_svc.preference_api) ----------------------

    async def GetNotificationPreferences(
        self, request: notify_pb2.GetNotificationPreferencesRequest, context: Context
    ) -> notify_pb2.NotificationPreferences:
        return await self._preferences.get(request, context)

    async def UpdateNotificationPreferences(
        self, request: notify_pb2.UpdateNotificationPreferencesRequest, context: Context
    ) -> notify_pb2.NotificationPreferences:
        return await self._preferences.update(request, context)
