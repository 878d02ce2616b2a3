"""Asynchronous processor results: signed webhooks, verified, deduplicated by event id, applied once.

A payout the processor accepted (PROCESSING) waits for `payout.paid` or
`payout.failed`. The event is verified by the adapter (signature and
timestamp), its id is recorded in the same transaction that stores the
outcome on the payout (a redelivery finds the id and changes nothing), and
the saga then captures the hold into the settlement account or releases it.
An event for a payout not known yet answers NOT_FOUND without recording the
id, so the processor's retry delivers it again later.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_svc import store
from payment_svc.processor import Outcome, Processor, WebhookEvent
from payment_svc.saga import Saga
from paymesh_runtime.errors import not_found


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
        if event.type.startswith("payout."):
            return await self._payout_result(event)
        async with self._engine.begin() as conn:
            fresh = await store.record_webhook_event(conn, processor, event.event_id, event.type, event.processor_ref)
        return not fresh

    async def _payout_result(self, event: WebhookEvent) -> bool:
        payout_id: uuid.UUID | None = None
        async with self._engine.begin() as conn:
            payout = await store.payout_by_processor_ref(conn, event.processor_ref)
            if payout is None:
                raise not_found("payout", event.processor_ref)
            fresh = await store.record_webhook_event(
                conn, self._processor.name, event.event_id, event.type, event.processor_ref
            )
            final = event.outcome in (Outcome.SUCCEEDED, Outcome.DECLINED)
            if fresh and final and payout.processor_outcome is None:
                await conn.execute(
                    store.payouts.update()
                    .where(store.payouts.c.payout_id == payout.payout_id, store.payouts.c.processor_outcome.is_(None))
                    .values(
                        processor_outcome=event.outcome.value,
                        processor_decline_code=event.decline_code,
                        next_attempt_at=func.now(),
                    )
                )
                payout_id = payout.payout_id
        if payout_id is not None:
            await self._saga.try_drive("payout", payout_id)
        return not fresh
