"""The orchestration of payments, refunds and payouts, persisted step by step.

Every external effect is one saga step with a deterministic reference
`<resource id>:<step>` that is both the wallet's idempotency reference and
the processor's idempotency key. A step is written STARTED (and the lease
renewed) before its call; its result commits DONE or FAILED together with the
state change it causes, the transition row, the outbox event and, once the
resource reaches the state its creating call answers with, the idempotency
key's response. A crash anywhere therefore leaves either nothing, or a
STARTED step that is replayed with the same reference (repeating no effect),
or a committed result the next step builds on.

Forward steps:
  wallet payment:  hold → (REQUIRES_CAPTURE →) capture (CaptureHold into the destination) → SUCCEEDED
  card payment:    authorize → (REQUIRES_CAPTURE →) capture (processor) → credit (settlement → destination)
  refund (wallet): post (payee → payer)
  refund (card):   debit (payee → settlement) → refund (processor)
  payout:          hold → payout (processor; often PROCESSING until a webhook) → capture into settlement
Compensation (a definitive refusal after money moved or was reserved):
  release the hold · void the authorization · refund the captured card when
  the credit cannot complete · reverse the payee debit when the processor
  refuses a refund · release a payout's hold when the processor refuses it.

A call without a definitive answer (wallet_svc down, processor timeout)
raises Interrupted: the resource keeps its state, its lease is released with a
backoff, and the recovery worker drives it again later. A processor step whose
call may have acted is recorded outcome_unknown and resolved by asking the
processor with the same reference, never by assuming it failed.

Modules: steps (the step log and leases), payments with wallet_source and
card_source, refunds, payouts.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from payment_svc.events import PaymentEvents
from payment_svc.idempotency import IdempotencyKeys
from payment_svc.processor import Processor
from payment_svc.saga.card_source import CardSource
from payment_svc.saga.payments import PaymentFlow, PaymentLog, PaymentRecord
from payment_svc.saga.payouts import PayoutFlow
from payment_svc.saga.refunds import RefundFlow
from payment_svc.saga.steps import Driven, Interrupted, SagaConfig, Steps, kill_this_process
from payment_svc.saga.wallet_source import WalletSource
from payment_svc.wallet_client import WalletClient
from paymesh_runtime.money import Money

__all__ = ["Driven", "Interrupted", "PaymentRecord", "Saga", "SagaConfig"]

log = logging.getLogger(__name__)


class Saga:
    """The entry points the service, the webhook handler and the recovery worker use."""

    def __init__(
        self,
        engine: AsyncEngine,
        wallet_svc: WalletClient,
        processor: Processor,
        events: PaymentEvents,
        keys: IdempotencyKeys,
        config: SagaConfig,
        crash: Callable[[str], None] = kill_this_process,
    ) -> None:
        self._steps = Steps(engine, processor, config, crash)
        payment_log = self._payment_log = PaymentLog(self._steps, events, keys)
        self._payments = PaymentFlow(
            self._steps,
            payment_log,
            wallet=WalletSource(self._steps, payment_log, wallet_svc, config.automatic_hold_ttl_seconds),
            card=CardSource(self._steps, payment_log, processor, wallet_svc),
        )
        self._refunds = RefundFlow(self._steps, wallet_svc, processor, events, keys)
        self._payouts = PayoutFlow(self._steps, wallet_svc, processor, events, keys, config.payout_hold_ttl_seconds)

    @property
    def owner(self) -> str:
        return self._steps.owner

    def lease_values(self) -> dict[str, Any]:
        """Columns that lease a new refund or payout to this replica."""
        return self._steps.lease_values()

    async def open_payment(self, conn: AsyncConnection, values: dict[str, Any]) -> PaymentRecord:
        """Creates a payment in the caller's transaction, leased to this replica, its first step started."""
        return await self._payment_log.create(conn, values)

    async def drive_payment(self, payment_id: uuid.UUID, record: PaymentRecord | None = None) -> Driven:
        return await self._payments.drive(payment_id, record)

    async def drive_refund(self, refund_id: uuid.UUID) -> Driven:
        return await self._refunds.drive(refund_id)

    async def drive_payout(self, payout_id: uuid.UUID) -> Driven:
        return await self._payouts.drive(payout_id)

    async def begin_capture(self, payment_id: uuid.UUID, requested: Money | None) -> None:
        await self._payments.begin_capture(payment_id, requested)

    async def request_cancel(self, payment_id: uuid.UUID, reason: str) -> None:
        await self._payments.request_cancel(payment_id, reason)

    async def open_refund(
        self,
        conn: AsyncConnection,
        payment_id: uuid.UUID,
        refund_id: uuid.UUID,
        requested: Money | None,
        reason: str,
        requested_by: str,
        lease_values: dict[str, Any],
    ) -> None:
        await self._refunds.open(conn, payment_id, refund_id, requested, reason, requested_by, lease_values)

    async def try_drive(self, kind: str, resource_id: uuid.UUID) -> None:
        """Drives a resource if no other replica works on it; interruptions are left to the recovery worker."""
        if not await self._steps.claim(kind, resource_id):
            return
        drives: dict[str, Callable[[uuid.UUID], Awaitable[Driven]]] = {
            "payment": self.drive_payment,
            "refund": self.drive_refund,
            "payout": self.drive_payout,
        }
        try:
            await drives[kind](resource_id)
        except Interrupted as interrupted:
            log.info("%s %s interrupted: %s", kind, resource_id, interrupted)
