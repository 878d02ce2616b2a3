"""The webhook endpoint and delivery methods of NotifyService: validate, call the store, map to protos.

Endpoints belong to merchants (require_merchant: customers get
PERMISSION_DENIED / MERCHANT_REQUIRED); an endpoint of someone else answers
NOT_FOUND exactly like a missing one (admins excepted), and so do its
deliveries. A test event or redelivery to a disabled endpoint, and a
redelivery of a delivery still PENDING, fail with FAILED_PRECONDITION /
INVALID_STATE_TRANSITION.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from google.protobuf import empty_pb2

from notify_svc import own_events, webhooks
from notify_svc.consumer import event_json
from notify_svc.endpoint_store import DeliveryRecord, EndpointRecord, EndpointStore, OwnEvent, Refusal
from notify_svc.messages import delivery_message, endpoint_message
from paymesh.notify.v1 import notify_pb2
from paymesh_runtime import pagination
from paymesh_runtime.errors import FailedPrecondition, not_found, validation_failed
from paymesh_runtime.identity import Context, User, require_merchant
from paymesh_runtime.pagination import PageTokens
from paymesh_runtime.sealing import SecretSealer

UPDATABLE_FIELDS = ("url", "event_types", "description")


class EndpointApi:
    def __init__(
        self,
        store: EndpointStore,
        sealer: SecretSealer,
        page_tokens: PageTokens,
        *,
        allow_private_hosts: bool,
        default_overlap_seconds: float,
    ) -> None:
        self._store = store
        self._sealer = sealer
        self._pages = page_tokens
        self._allow_private_hosts = allow_private_hosts
        self._default_overlap = default_overlap_seconds

    # --- endpoints -------------------------------------------------------------

    async def create(
        self, request: notify_pb2.CreateWebhookEndpointRequest, context: Context
    ) -> notify_pb2.WebhookEndpoint:
        user = require_merchant(context)
        url = webhooks.validate_url(request.url, self._allow_private_hosts)
        event_types = webhooks.validate_event_types(list(request.event_types))
        description = webhooks.validate_description(request.description)
        endpoint_id = uuid.uuid4()
        secret = webhooks.generate_secret()
        sealed = self._sealer.seal(str(endpoint_id), secret.encode())
        record = await self._store.create_endpoint(endpoint_id, user.user_id, url, event_types, sealed, description)
        created = endpoint_message(record)
        created.secret = secret  # returned this once, never again
        return created

    async def list(
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
            webhook_endpoints=[endpoint_message(row) for row in page], next_page_token=token
        )

    async def get(self, request: notify_pb2.GetWebhookEndpointRequest, context: Context) -> notify_pb2.WebhookEndpoint:
        return endpoint_message(await self._visible(require_merchant(context), request.endpoint_id))

    async def update(
        self, request: notify_pb2.UpdateWebhookEndpointRequest, context: Context
    ) -> notify_pb2.WebhookEndpoint:
        user = require_merchant(context)
        wanted = request.webhook_endpoint
        record = await self._visible(user, wanted.endpoint_id)
        changes: dict[str, object] = {}
        for path in _update_paths(request):
            if path == "url":
                changes["url"] = webhooks.validate_url(wanted.url, self._allow_private_hosts)
            elif path == "event_types":
                changes["event_types"] = webhooks.validate_event_types(list(wanted.event_types))
            else:
                changes["description"] = webhooks.validate_description(wanted.description)
        updated = await self._store.update_endpoint(record.endpoint_id, changes)
        if updated is None:
            raise not_found("webhook_endpoint", wanted.endpoint_id)  # deleted concurrently
        return endpoint_message(updated)

    async def delete(self, request: notify_pb2.DeleteWebhookEndpointRequest, context: Context) -> empty_pb2.Empty:
        record = await self._visible(require_merchant(context), request.endpoint_id)
        if not await self._store.delete_endpoint(record.endpoint_id):
            raise not_found("webhook_endpoint", request.endpoint_id)  # deleted concurrently
        return empty_pb2.Empty()

    async def disable(
        self, request: notify_pb2.DisableWebhookEndpointRequest, context: Context
    ) -> notify_pb2.WebhookEndpoint:
        record = await self._visible(require_merchant(context), request.endpoint_id)
        return self._found(await self._store.disable_endpoint(record.endpoint_id), request.endpoint_id)

    async def enable(
        self, request: notify_pb2.EnableWebhookEndpointRequest, context: Context
    ) -> notify_pb2.WebhookEndpoint:
        record = await self._visible(require_merchant(context), request.endpoint_id)
        return self._found(await self._store.enable_endpoint(record.endpoint_id), request.endpoint_id)

    async def rotate_secret(
        self, request: notify_pb2.RotateWebhookEndpointSecretRequest, context: Context
    ) -> notify_pb2.WebhookEndpoint:
        record = await self._visible(require_merchant(context), request.endpoint_id)
        overlap = self._default_overlap
        if request.HasField("overlap"):
            overlap = webhooks.validate_overlap(request.overlap.ToTimedelta().total_seconds())
        secret = webhooks.generate_secret()
        sealed = self._sealer.seal(str(record.endpoint_id), secret.encode())
        rotated = self._found(await self._store.rotate_secret(record.endpoint_id, sealed, overlap), request.endpoint_id)
        rotated.secret = secret  # returned this once, never again
        return rotated

    # --- deliveries --------------------------------------------------------------

    async def send_test_event(
        self, request: notify_pb2.SendTestWebhookEventRequest, context: Context
    ) -> notify_pb2.WebhookDelivery:
        record = await self._visible(require_merchant(context), request.endpoint_id)
        event = own_events.make(webhooks.TEST_EVENT_TYPE, str(record.endpoint_id))
        own = OwnEvent(uuid.UUID(event.id), event.type, event.SerializeToString(), event_json(event))
        return self._delivered(await self._store.send_own_event(record, own), request.endpoint_id, "", "sendTestEvent")

    async def list_deliveries(
        self, request: notify_pb2.ListWebhookDeliveriesRequest, context: Context
    ) -> notify_pb2.ListWebhookDeliveriesResponse:
        user = require_merchant(context)
        record = await self._visible(user, request.endpoint_id)
        size = pagination.page_size(request.page_size)
        query = ["webhook_deliveries", user.user_id, str(record.endpoint_id)]
        after = self._pages.decode_position(request.page_token, query)
        rows = await self._store.list_deliveries(record.endpoint_id, after, size + 1)
        page, more = rows[:size], len(rows) > size
        token = self._pages.encode_position((page[-1].create_time, page[-1].delivery_id), query) if more else ""
        return notify_pb2.ListWebhookDeliveriesResponse(
            webhook_deliveries=[delivery_message(row) for row in page], next_page_token=token
        )

    async def get_delivery(
        self, request: notify_pb2.GetWebhookDeliveryRequest, context: Context
    ) -> notify_pb2.WebhookDelivery:
        record = await self._visible(require_merchant(context), request.endpoint_id)
        delivery_id = _uuid_or_not_found(request.delivery_id, "webhook_delivery")
        found = await self._store.get_delivery(record.endpoint_id, delivery_id)
        if found is None:
            raise not_found("webhook_delivery", request.delivery_id)
        return delivery_message(found)

    async def redeliver(
        self, request: notify_pb2.RedeliverWebhookDeliveryRequest, context: Context
    ) -> notify_pb2.WebhookDelivery:
        record = await self._visible(require_merchant(context), request.endpoint_id)
        delivery_id = _uuid_or_not_found(request.delivery_id, "webhook_delivery")
        outcome = await self._store.redeliver(record.endpoint_id, delivery_id)
        return self._delivered(outcome, request.endpoint_id, request.delivery_id, "redeliver")

    # --- helpers -----------------------------------------------------------------

    async def _visible(self, user: User, endpoint_id: str) -> EndpointRecord:
        """The endpoint if the caller owns it (or is an admin); NOT_FOUND alike for missing and foreign."""
        parsed = _uuid_or_not_found(endpoint_id, "webhook_endpoint")
        record = await self._store.get_endpoint(parsed)
        if record is None or not user.may_see(record.owner_id):
            raise not_found("webhook_endpoint", endpoint_id)
        return record

    @staticmethod
    def _found(record: EndpointRecord | None, endpoint_id: str) -> notify_pb2.WebhookEndpoint:
        if record is None:
            raise not_found("webhook_endpoint", endpoint_id)  # deleted concurrently
        return endpoint_message(record)

    @staticmethod
    def _delivered(
        outcome: DeliveryRecord | Refusal, endpoint_id: str, delivery_id: str, action: str
    ) -> notify_pb2.WebhookDelivery:
        if outcome is Refusal.NO_ENDPOINT:
            raise not_found("webhook_endpoint", endpoint_id)
        if outcome is Refusal.NO_DELIVERY:
            raise not_found("webhook_delivery", delivery_id)
        if isinstance(outcome, Refusal):
            state = "DISABLED" if outcome is Refusal.DISABLED else "PENDING"
            whose = "the endpoint is disabled" if outcome is Refusal.DISABLED else "the delivery is still pending"
            raise FailedPrecondition(
                "INVALID_STATE_TRANSITION", f"cannot {action}: {whose}", metadata={"state": state, "action": action}
            )
        return delivery_message(outcome)


def _update_paths(request: notify_pb2.UpdateWebhookEndpointRequest) -> Sequence[str]:
    """The fields to change: update_mask's, or (AIP-134) those set in the request."""
    paths = list(dict.fromkeys(request.update_mask.paths))
    if not paths:
        wanted = request.webhook_endpoint
        paths = [name for name, value in (("url", wanted.url), ("event_types", wanted.event_types),
                                          ("description", wanted.description)) if value]  # fmt: skip
    unknown = [path for path in paths if path not in UPDATABLE_FIELDS]
    if unknown:
        raise validation_failed("update_mask", f"{unknown[0]!r} cannot be updated; only {', '.join(UPDATABLE_FIELDS)}")
    if not paths:
        raise validation_failed("update_mask", "nothing to update")
    return paths


def _uuid_or_not_found(value: str, resource_type: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise not_found(resource_type, value) from None
