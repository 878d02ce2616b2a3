"""Asynchronous processor results: signed webhooks, verified, deduplicated by event id, applied once.

A payout the processor accepted (PROCESSING) waits for `payout.paid` or
`payout.failed`; a card refund it accepted as pending stays PENDING until
the refund's event reports success or failure. The event is verified by the
adapter (signature and timestamp), its id is recorded in the same
transaction that stores the outcome on the payout or refund (a redelivery
finds the id and changes nothing), and the saga then settles the resource:
capture or release the payout's hold; finish the refund, or reverse the
payee's debit when the card refund failed.

The resource is found by the processor's reference, or, when paymesh never
learned that reference (the call's answer was lost: its outcome is unknown),
by the idempotency key the object was created with, which is the saga step's
reference. An event for a resource not known at all answers NOT_FOUND without
recording the id, so the processor's retry delivers it again later. Events
about other objects are recorded and acknowledged.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncEngine

from payment_svc import store
from payment_svc.processor import Outcome, Processor, WebhookEvent
from payment_svc.saga import Saga
from paymesh_runtime.errors import not_found

# Object kinds whose final outcome a webhook settles.
_SETTLED_BY_WEBHOOK = ("payout", "refund")


class WebhookHandler:
    def __init__(self, engine: AsyncEngine, saga: Saga, processor: Processor) -> None:
        self._engine = engine
        self._saga = saga
        self._processor = processor

    async def handle(self, processor: str, body: bytes, headers: Mapping[str, str]) -> bool:
        """Applies one delivery; returns True if the event had been processed before."""
        if processor != self._processor.name:
            raise not_found("processor", processor)
        event = self._processor.parse_webhook(body, headers)
        if event.object_kind in _SETTLED_BY_WEBHOOK:
            return await self._result(event)
        async with self._engine.begin() as conn:
            fresh = await store.record_webhook_event(conn, processor, event.event_id, event.type, event.processor_ref)
        return not fresh

    async def _result(self, event: WebhookEvent) -> bool:
        kind = event.object_kind
        settled = None
        async with self._engine.begin() as conn:
            resource = await store.by_processor_ref(conn, kind, event.processor_ref)
            if resource is None and event.reference:
                resource = await store.by_step_reference(conn, kind, event.reference)
            if resource is None:
                raise not_found(kind, event.processor_ref)
            fresh = await store.record_webhook_event(
                conn, self._processor.name, event.event_id, event.type, event.processor_ref
            )
            final = event.outcome in (Outcome.SUCCEEDED, Outcome.DECLINED)
            resource_id = resource.payout_id if kind == "payout" else resource.refund_id
            if fresh and final:
                stored = await store.store_processor_outcome(
                    conn, kind, resource_id, event.outcome.value, event.decline_code, event.processor_ref
                )
                settled = resource_id if stored else None
        if settled is not None:
            await self._saga.try_drive(kind, settled)
        return not fresh
