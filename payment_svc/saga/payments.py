"""Payments: PENDING → (REQUIRES_CAPTURE →) PROCESSING → SUCCEEDED, or FAILED / CANCELED.

The flow is the same for every source; what a step does depends on it
(wallet_source.py, card_source.py):
  authorize: hold the wallet's funds, or authorize the card;
  settle:    capture the hold into the destination, or capture the card and
             credit the destination from the settlement account;
  cancel:    release the hold, or void the authorization.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from payment_svc import store, views
from payment_svc.events import PaymentEvents
from payment_svc.idempotency import IdempotencyKeys
from payment_svc.lifecycle import (
    RESTING_PAYMENT_STATES,
    CaptureMethod,
    PaymentState,
    capture_amount,
    check_cancelable,
    check_capturable,
    check_payment_transition,
)
from payment_svc.saga.steps import Driven, LeaseLost, Steps, recorded_response
from payment_svc.store import AnyRow
from paymesh.payment.v1 import payment_pb2
from paymesh_runtime.errors import FailedPrecondition, PaymeshError
from paymesh_runtime.money import Money


class PaymentLog:
    """Commits what a payment's steps produce: one transaction per result."""

    def __init__(self, steps: Steps, events: PaymentEvents, keys: IdempotencyKeys) -> None:
        self._steps = steps
        self._events = events
        self._keys = keys

    async def message(self, conn: AsyncConnection, row: AnyRow) -> payment_pb2.Payment:
        found = await store.transitions_of(conn, [row.payment_id])
        return views.payment(row, found[row.payment_id])

    async def payment_changed(self, conn: AsyncConnection, row: AnyRow, previous_state: str) -> payment_pb2.Payment:
        """Writes the payment's event for a state change; returns the payment as the event shows it."""
        message = await self.message(conn, row)
        await self._events.payment_changed(conn, message, previous_state)
        return message

    async def commit(
        self,
        p: AnyRow,
        *,
        step: str | None = None,
        status: str = "DONE",
        result_ref: str = "",
        to_state: PaymentState | None = None,
        reason: str = "",
        values: dict[str, Any] | None = None,
        error: PaymeshError | None = None,
    ) -> AnyRow:
        """One transaction: step result, state change + transition, event, idempotency response."""
        owner = self._steps.owner
        async with self._steps.engine.begin() as conn:
            if step is not None:
                await store.finish_step(conn, p.payment_id, step, status, result_ref, reason)
            if to_state is not None and to_state != p.state:
                check_payment_transition(PaymentState(p.state), to_state)
                row = await store.change_state(
                    conn, "payment", p.payment_id, owner=owner, from_state=p.state, to_state=to_state,
                    reason=reason, values=values,
                )  # fmt: skip
            else:
                row = await store.update_leased(conn, "payment", p.payment_id, owner, values or {})
            if row is None:
                raise LeaseLost(f"payment {p.payment_id}")
            if row.state != p.state:
                message = await self.payment_changed(conn, row, p.state)
                if PaymentState(row.state) in RESTING_PAYMENT_STATES:
                    await self._keys.complete(conn, p.payment_id, recorded_response(message, error))
        self._steps.after_commit(step, status)
        return row

    async def fail(
        self, p: AnyRow, code: str, message: str, *, step: str | None, error: PaymeshError | None = None
    ) -> None:
        await self.commit(
            p,
            step=step,
            status="FAILED",
            to_state=PaymentState.FAILED,
            reason=code,
            values={"failure_code": code, "failure_message": message},
            error=error,
        )

    async def authorized(self, p: AnyRow, step: str, result_ref: str, reason: str, values: dict[str, Any]) -> None:
        """Funds held or card authorized: wait for a manual capture, or go on to capture."""
        if p.capture_method == CaptureMethod.MANUAL:
            values["capture_before"] = datetime.now(UTC) + self._steps.config.capture_window
            target = PaymentState.REQUIRES_CAPTURE
        else:
            values["capture_requested"] = p.amount
            target = PaymentState.PROCESSING
        await self.commit(p, step=step, result_ref=result_ref, to_state=target, reason=reason, values=values)

    async def succeeded(self, p: AnyRow, step: str, result_ref: str, amount: Money) -> None:
        await self.commit(
            p,
            step=step,
            result_ref=result_ref,
            to_state=PaymentState.SUCCEEDED,
            reason="captured",
            values={"amount_captured": amount.amount},
        )


class Source(Protocol):
    """What a payment's steps do for one kind of source (a wallet, a card)."""

    async def authorize(self, p: AnyRow) -> PaymeshError | None: ...

    async def settle(self, p: AnyRow) -> None: ...

    async def cancel(self, p: AnyRow) -> None: ...


class PaymentFlow:
    def __init__(self, steps: Steps, log: PaymentLog, wallet: Source, card: Source) -> None:
        self._steps = steps
        self._log = log
        self._wallet = wallet
        self._card = card

    def _source(self, p: AnyRow) -> Source:
        return self._wallet if p.source_wallet_id else self._card

    async def drive(self, payment_id: uuid.UUID) -> Driven:
        """Advances a leased payment until it rests (REQUIRES_CAPTURE or final) or is interrupted."""
        return await self._steps.drive("payment", payment_id, self._advance)

    async def _advance(self, payment_id: uuid.UUID) -> Driven:
        error: PaymeshError | None = None
        while True:
            p = await self._steps.load("payment", payment_id)
            state = PaymentState(p.state)
            if p.requested_action == "CANCEL":
                await self._cancel(p)
            elif state is PaymentState.PENDING:
                error = await self._source(p).authorize(p)
            elif state is PaymentState.PROCESSING:
                await self._source(p).settle(p)
            else:
                async with self._steps.engine.connect() as conn:
                    return Driven(await self._log.message(conn, p), error)

    async def _cancel(self, p: AnyRow) -> None:
        reason = p.action_reason or "canceled"
        if PaymentState(p.state) not in (PaymentState.PENDING, PaymentState.REQUIRES_CAPTURE):
            await self._log.commit(p, values={"requested_action": None})
            return
        await self._source(p).cancel(p)
        await self._log.commit(
            await self._steps.load("payment", p.payment_id),
            to_state=PaymentState.CANCELED,
            reason=reason,
            values={"requested_action": None},
        )

    # --- requests that start work on an existing payment ------------------------------

    async def begin_capture(self, payment_id: uuid.UUID, requested: Money | None) -> None:
        """REQUIRES_CAPTURE → PROCESSING under the payment's row lock (two racing captures: one wins)."""
        async with self._steps.engine.begin() as conn:
            p = await store.get_row(conn, "payment", payment_id, for_update=True)
            assert p is not None
            check_capturable(PaymentState(p.state))
            if p.requested_action is not None:
                raise FailedPrecondition(
                    "INVALID_STATE_TRANSITION",
                    "the payment is being canceled",
                    metadata={"state": p.state, "action": "capture"},
                )
            amount = capture_amount(Money(p.currency, p.amount), requested)
            await self._steps.claim_locked(conn, "payment", payment_id)
            row = await store.change_state(
                conn,
                "payment",
                payment_id,
                owner=self._steps.owner,
                from_state=p.state,
                to_state=PaymentState.PROCESSING,
                reason="capture_requested",
                values={"capture_requested": amount.amount},
            )
            assert row is not None  # the row lock and the lease are ours
            await self._log.payment_changed(conn, row, p.state)

    async def request_cancel(self, payment_id: uuid.UUID, reason: str) -> None:
        """Marks a PENDING or REQUIRES_CAPTURE payment for cancellation and takes its lease."""
        async with self._steps.engine.begin() as conn:
            p = await store.get_row(conn, "payment", payment_id, for_update=True)
            assert p is not None
            if p.requested_action is None:
                check_cancelable(PaymentState(p.state))
            await self._steps.claim_locked(conn, "payment", payment_id)
            await store.update_leased(
                conn, "payment", payment_id, self._steps.owner, {"requested_action": "CANCEL", "action_reason": reason}
            )
