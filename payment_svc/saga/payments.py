"""Payments: PENDING → (REQUIRES_CAPTURE →) PROCESSING → SUCCEEDED, or FAILED / CANCELED.

The flow is the same for every source; what a step does depends on it
(wallet_source.py, card_source.py):
  authorize: hold the wallet's funds, or authorize the card;
  settle:    capture the hold into the destination, or capture the card and
             credit the destination from the settlement account;
  cancel:    release the hold, or void the authorization.

Few transactions per payment: each commit carries a step's result, the state
change it causes, its event, the next step's STARTED row with the lease
renewed, and, once the payment rests, the idempotency response and the lease's
release. The commit hands back a PaymentRecord, so the next step needs no read.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import func
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
from payment_svc.records import Transition
from payment_svc.saga.steps import Driven, Steps, recorded_response
from payment_svc.store import AnyRow
from paymesh.payment.v1 import payment_pb2
from paymesh_runtime.errors import FailedPrecondition, PaymeshError
from paymesh_runtime.money import Money


@dataclass(frozen=True)
class PaymentRecord:
    """A payment as this replica last committed (or read) it."""

    row: AnyRow
    transitions: tuple[Transition, ...]
    # The step recorded STARTED, with the lease renewed, in that same commit: its call may go at once.
    started: str | None = None
    # The payment rests and that commit gave the lease back.
    released: bool = False

    @property
    def payment_id(self) -> uuid.UUID:
        return uuid.UUID(str(self.row.payment_id))

    def message(self) -> payment_pb2.Payment:
        return views.payment(self.row, self.transitions)


def first_step(row: AnyRow) -> str:
    if not row.source_wallet_id:
        return "authorize"
    return "transfer" if row.capture_method == CaptureMethod.AUTOMATIC else "hold"


def _check_transition(current: str, target: str) -> None:
    check_payment_transition(PaymentState(current), PaymentState(target))


class PaymentLog:
    """Commits what a payment's steps produce: one transaction per result."""

    def __init__(self, steps: Steps, events: PaymentEvents, keys: IdempotencyKeys) -> None:
        self._steps = steps
        self._events = events
        self._keys = keys

    async def load(self, payment_id: uuid.UUID) -> PaymentRecord:
        async with self._steps.engine.connect() as conn:
            row = await store.get_row(conn, "payment", payment_id)
            if row is None:
                raise LookupError(f"payment {payment_id} vanished")
            found = await store.transitions_of(conn, [payment_id])
        return PaymentRecord(row, tuple(found[payment_id]))

    async def create(self, conn: AsyncConnection, values: dict[str, Any]) -> PaymentRecord:
        """Inserts a PENDING payment leased to this replica, its event, and its first step STARTED."""
        row, created = await store.insert_resource(conn, "payment", values | self._steps.lease_values())
        record = PaymentRecord(row, (created,))
        await self._events.payment_changed(conn, record.message(), "")
        step = first_step(row)
        await store.start_step(conn, row.payment_id, step, f"{row.payment_id}:{step}", self._steps.owner)
        return replace(record, started=step)

    async def payment_changed(self, conn: AsyncConnection, row: AnyRow, previous_state: str) -> None:
        """Writes the payment's event for a state change made outside a drive."""
        found = await store.transitions_of(conn, [row.payment_id])
        await self._events.payment_changed(conn, views.payment(row, found[row.payment_id]), previous_state)

    async def commit(
        self,
        record: PaymentRecord,
        *,
        step: str | None = None,
        status: str = "DONE",
        result_ref: str = "",
        to_state: PaymentState | None = None,
        reason: str = "",
        values: dict[str, Any] | None = None,
        error: PaymeshError | None = None,
        next_step: str | None = None,
    ) -> PaymentRecord:
        """One transaction: step result, state change + transition, event, next step, idempotency response."""
        p, owner = record.row, self._steps.owner
        changes = dict(values or {})
        target = to_state if to_state is not None and to_state != p.state else None
        resting = target is not None and target in RESTING_PAYMENT_STATES
        if resting:
            changes |= {"lease_owner": None, "lease_expires_at": None}
        elif next_step is not None:
            changes["lease_expires_at"] = func.now() + self._steps.config.lease
        transitions = record.transitions
        async with self._steps.engine.begin() as conn:
            row, transition = await self._steps.write_result(
                conn, "payment", p, p.payment_id, step=step, status=status, result_ref=result_ref, to_state=target,
                reason=reason, values=changes, check_transition=_check_transition,
            )  # fmt: skip
            if transition is not None:
                transitions += (transition,)
                message = views.payment(row, transitions)
                await self._events.payment_changed(conn, message, p.state)
                if resting:
                    await self._keys.complete(conn, p.payment_id, recorded_response(message, error))
            if next_step is not None and not resting:
                await store.start_step(conn, p.payment_id, next_step, f"{p.payment_id}:{next_step}", owner)
        self._steps.after_commit(step, status)
        return PaymentRecord(row, transitions, None if resting else next_step, resting)

    async def fail(
        self,
        record: PaymentRecord,
        code: str,
        message: str,
        *,
        step: str | None,
        error: PaymeshError | None = None,
    ) -> PaymentRecord:
        return await self.commit(
            record,
            step=step,
            status="FAILED",
            to_state=PaymentState.FAILED,
            reason=code,
            values={"failure_code": code, "failure_message": message},
            error=error,
        )

    async def authorized(
        self, record: PaymentRecord, step: str, result_ref: str, reason: str, values: dict[str, Any]
    ) -> PaymentRecord:
        """Funds held or card authorized: wait for a manual capture, or go on to capture at once."""
        p = record.row
        if p.capture_method == CaptureMethod.MANUAL:
            values["capture_before"] = datetime.now(UTC) + self._steps.config.capture_window
            return await self.commit(
                record, step=step, result_ref=result_ref, to_state=PaymentState.REQUIRES_CAPTURE, reason=reason,
                values=values,
            )  # fmt: skip
        values["capture_requested"] = p.amount
        return await self.commit(
            record, step=step, result_ref=result_ref, to_state=PaymentState.PROCESSING, reason=reason, values=values,
            next_step="capture",
        )  # fmt: skip

    async def succeeded(self, record: PaymentRecord, step: str | None, result_ref: str, amount: Money) -> PaymentRecord:
        return await self.commit(
            record,
            step=step,
            result_ref=result_ref,
            to_state=PaymentState.SUCCEEDED,
            reason="captured",
            values={"amount_captured": amount.amount},
        )


class Source(Protocol):
    """What a payment's steps do for one kind of source (a wallet, a card)."""

    async def authorize(self, record: PaymentRecord) -> tuple[PaymentRecord, PaymeshError | None]: ...

    async def settle(self, record: PaymentRecord) -> PaymentRecord: ...

    async def cancel(self, record: PaymentRecord) -> PaymentRecord: ...


class PaymentFlow:
    def __init__(self, steps: Steps, log: PaymentLog, wallet: Source, card: Source) -> None:
        self._steps = steps
        self._log = log
        self._wallet = wallet
        self._card = card

    def _source(self, p: AnyRow) -> Source:
        return self._wallet if p.source_wallet_id else self._card

    async def drive(self, payment_id: uuid.UUID, record: PaymentRecord | None = None) -> Driven:
        """Advances a leased payment until it rests (REQUIRES_CAPTURE or final) or is interrupted.

        `record`: the payment as this replica just committed it (a new payment), or None to read it.
        """

        async def advance(resource_id: uuid.UUID) -> Driven:
            return await self._advance(record or await self._log.load(resource_id))

        return await self._steps.drive("payment", payment_id, advance)

    async def _advance(self, record: PaymentRecord) -> Driven:
        error: PaymeshError | None = None
        while True:
            p = record.row
            state = PaymentState(p.state)
            if p.requested_action == "CANCEL":
                record = await self._cancel(record)
            elif state is PaymentState.PENDING:
                record, error = await self._source(p).authorize(record)
            elif state is PaymentState.PROCESSING:
                record = await self._source(p).settle(record)
            else:
                return Driven(record.message(), error, lease_released=record.released)

    async def _cancel(self, record: PaymentRecord) -> PaymentRecord:
        p = record.row
        changes: dict[str, Any] = {"requested_action": None}
        if PaymentState(p.state) not in (PaymentState.PENDING, PaymentState.REQUIRES_CAPTURE):
            return await self._log.commit(record, values=changes)
        record = await self._source(p).cancel(record)
        reason = p.action_reason or "canceled"
        return await self._log.commit(record, to_state=PaymentState.CANCELED, reason=reason, values=changes)

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
            row, _ = await self._steps.write_result(
                conn, "payment", p, payment_id, step=None, status="", result_ref="", to_state=PaymentState.PROCESSING,
                reason="capture_requested", values={"capture_requested": amount.amount},
                check_transition=_check_transition,
            )  # fmt: skip
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
