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
backoff, and the recovery worker drives it again later.
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from payment_svc import store, views
from payment_svc.events import PaymentEvents
from payment_svc.idempotency import OK, IdempotencyKeys, Recorded
from payment_svc.ledger import SETTLEMENT, Ledger, LedgerRefused, LedgerUnavailable, Posting, wallet_account
from payment_svc.lifecycle import (
    FINAL_PAYOUT_STATES,
    RESTING_PAYMENT_STATES,
    RESTING_PAYOUT_STATES,
    CaptureMethod,
    PaymentState,
    PayoutState,
    RefundState,
    capture_amount,
    check_cancelable,
    check_capturable,
    check_payment_transition,
    check_payout_transition,
    check_refund_transition,
    check_refundable,
    refund_amount,
)
from payment_svc.processor import (
    Outcome,
    Processor,
    ProcessorError,
    ProcessorRejected,
    ProcessorResult,
    ProcessorTimeout,
    ProcessorUnavailable,
)
from payment_svc.store import AnyRow
from paymesh.payment.v1 import payment_pb2
from paymesh_runtime.errors import Aborted, FailedPrecondition, PaymeshError, Unavailable
from paymesh_runtime.grpc_errors import status_for
from paymesh_runtime.money import Money

log = logging.getLogger(__name__)
T = TypeVar("T")


class Interrupted(Exception):
    """A step got no definitive answer; the recovery worker resumes the resource later."""

    def __init__(self, error: PaymeshError) -> None:
        super().__init__(error.message)
        self.error = error


class LeaseLost(Exception):
    """Another replica took the resource over (this one was too slow); stop touching it."""


def dependency_unavailable(what: str) -> Unavailable:
    return Unavailable(
        "DEPENDENCY_UNAVAILABLE",
        f"{what} did not answer; the operation continues in the background, retry with the same idempotency key",
    )


def processor_unavailable(processor: str, resource_id: uuid.UUID) -> Unavailable:
    return Unavailable(
        "PROCESSOR_UNAVAILABLE",
        "the payment processor is unavailable; nothing was charged",
        metadata={"processor": processor, "resource_id": str(resource_id)},
    )


@dataclass(frozen=True)
class SagaConfig:
    worker_id: str
    lease: timedelta
    capture_window: timedelta
    automatic_hold_ttl_seconds: int
    payout_hold_ttl_seconds: int
    retry_backoff: timedelta
    max_retry_backoff: timedelta
    crash_after_step: str = ""


@dataclass(frozen=True)
class Driven:
    """Where a drive left a resource: its message, and the error its creating call answers with, if any."""

    message: Any
    error: PaymeshError | None = None


def _sigkill(step: str) -> None:
    log.warning("PAYMENT_CRASH_AFTER_STEP=%s: killing this process with SIGKILL", step)
    os.kill(os.getpid(), signal.SIGKILL)


def _recorded(message: Any, error: PaymeshError | None) -> Recorded:
    if error is None:
        return Recorded(OK, message.SerializeToString())
    status = status_for(error)
    return Recorded(status.code, status.SerializeToString())


class Saga:
    def __init__(
        self,
        engine: AsyncEngine,
        ledger: Ledger,
        processor: Processor,
        events: PaymentEvents,
        keys: IdempotencyKeys,
        config: SagaConfig,
        crash: Callable[[str], None] = _sigkill,
    ) -> None:
        self._engine = engine
        self._ledger = ledger
        self._processor = processor
        self._events = events
        self._keys = keys
        self._config = config
        self._crash = crash

    @property
    def owner(self) -> str:
        return self._config.worker_id

    # --- shared plumbing --------------------------------------------------------------

    async def load(self, kind: str, resource_id: uuid.UUID) -> AnyRow:
        async with self._engine.connect() as conn:
            row = await store.get_row(conn, kind, resource_id)
        if row is None:
            raise LookupError(f"{kind} {resource_id} vanished")
        return row

    async def _steps(self, resource_id: uuid.UUID) -> dict[str, AnyRow]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(store.saga_steps.select().where(store.saga_steps.c.resource_id == resource_id))
            return {row.step: row for row in rows}

    async def _run_step(self, kind: str, resource_id: uuid.UUID, step: str, call: Callable[[str], Awaitable[T]]) -> T:
        """Renews the lease, records the step STARTED, then makes its call with the step's reference."""
        reference = f"{resource_id}:{step}"
        async with self._engine.begin() as conn:
            if await store.claim(conn, kind, resource_id, self.owner, self._config.lease) is None:
                raise LeaseLost(f"{kind} {resource_id}")
            await store.start_step(conn, resource_id, step, reference)
        return await call(reference)

    def _after_commit(self, step: str | None, status: str) -> None:
        if step and status == "DONE" and step == self._config.crash_after_step:
            self._crash(step)

    async def _finish(self, kind: str, resource_id: uuid.UUID, attempts: int, *, interrupted: bool) -> None:
        """Gives the lease back; after an interruption with a growing delay before the next attempt."""
        delay = None
        if interrupted:
            base = self._config.retry_backoff.total_seconds()
            delay = timedelta(
                seconds=min(base * 2 ** min(attempts, 16), self._config.max_retry_backoff.total_seconds())
            )
        async with self._engine.begin() as conn:
            await store.release(conn, kind, resource_id, self.owner, delay)

    async def _drive(
        self, kind: str, resource_id: uuid.UUID, advance: Callable[[uuid.UUID], Awaitable[Driven]]
    ) -> Driven:
        try:
            driven = await advance(resource_id)
        except LeaseLost:
            raise Interrupted(dependency_unavailable("this replica's lease lapsed; another replica")) from None
        except Interrupted:
            row = await self.load(kind, resource_id)
            await self._finish(kind, resource_id, row.attempts, interrupted=True)
            raise
        except Exception:
            row = await self.load(kind, resource_id)
            await self._finish(kind, resource_id, row.attempts, interrupted=True)
            raise
        await self._finish(kind, resource_id, 0, interrupted=False)
        return driven

    # --- payments ---------------------------------------------------------------------

    async def drive_payment(self, payment_id: uuid.UUID) -> Driven:
        """Advances a leased payment until it rests (REQUIRES_CAPTURE or final) or is interrupted."""
        return await self._drive("payment", payment_id, self._advance_payment)

    async def _advance_payment(self, payment_id: uuid.UUID) -> Driven:
        error: PaymeshError | None = None
        while True:
            p = await self.load("payment", payment_id)
            state = PaymentState(p.state)
            if p.requested_action == "CANCEL":
                await self._cancel_payment(p)
            elif state is PaymentState.PENDING:
                error = await (self._hold(p) if p.source_wallet_id else self._authorize(p))
            elif state is PaymentState.PROCESSING:
                await (self._capture_hold(p) if p.source_wallet_id else self._settle_card(p))
            else:
                async with self._engine.connect() as conn:
                    return Driven(await self._payment_message(conn, p), error)

    async def _payment_message(self, conn: AsyncConnection, row: AnyRow) -> payment_pb2.Payment:
        found = await store.transitions_of(conn, [row.payment_id])
        return views.payment(row, found[row.payment_id])

    async def _commit_payment(
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
        async with self._engine.begin() as conn:
            if step is not None:
                await store.finish_step(conn, p.payment_id, step, status, result_ref, reason)
            if to_state is not None and to_state != p.state:
                check_payment_transition(PaymentState(p.state), to_state)
                row = await store.change_state(
                    conn,
                    "payment",
                    p.payment_id,
                    owner=self.owner,
                    from_state=p.state,
                    to_state=to_state,
                    reason=reason,
                    values=values,
                )
            else:
                row = await store.update_leased(conn, "payment", p.payment_id, self.owner, values or {})
            if row is None:
                raise LeaseLost(f"payment {p.payment_id}")
            if row.state != p.state:
                message = await self._payment_message(conn, row)
                await self._events.payment_changed(conn, message, p.state)
                if PaymentState(row.state) in RESTING_PAYMENT_STATES:
                    await self._keys.complete(conn, p.payment_id, _recorded(message, error))
        self._after_commit(step, status)
        return row

    async def _fail_payment(
        self, p: AnyRow, code: str, message: str, *, step: str | None, error: PaymeshError | None = None
    ) -> None:
        await self._commit_payment(
            p,
            step=step,
            status="FAILED",
            to_state=PaymentState.FAILED,
            reason=code,
            values={"failure_code": code, "failure_message": message},
            error=error,
        )

    def _authorized_state(self, p: AnyRow, values: dict[str, Any]) -> PaymentState:
        if p.capture_method == CaptureMethod.MANUAL:
            values["capture_before"] = datetime.now(UTC) + self._config.capture_window
            return PaymentState.REQUIRES_CAPTURE
        values["capture_requested"] = p.amount
        return PaymentState.PROCESSING

    def _hold_ttl(self, p: AnyRow) -> int:
        if p.capture_method == CaptureMethod.MANUAL:
            # Outlives the capture window: our sweeper cancels first, the wallet's is the backstop.
            return int(self._config.capture_window.total_seconds()) + 3600
        return self._config.automatic_hold_ttl_seconds

    async def _create_hold(self, p: AnyRow, reference: str) -> str:
        hold = await self._ledger.create_hold(
            reference, p.source_wallet_id, Money(p.currency, p.amount), str(p.payment_id), self._hold_ttl(p)
        )
        return str(hold.hold_id)

    async def _hold(self, p: AnyRow) -> PaymeshError | None:
        try:
            hold_id = await self._run_step("payment", p.payment_id, "hold", lambda ref: self._create_hold(p, ref))
        except LedgerRefused as refused:
            await self._fail_payment(p, refused.failure_code, refused.message, step="hold")
            return None
        except LedgerUnavailable:
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
        values: dict[str, Any] = {"hold_id": hold_id}
        target = self._authorized_state(p, values)
        await self._commit_payment(
            p, step="hold", result_ref=hold_id, to_state=target, reason="funds_held", values=values
        )
        return None

    async def _capture_hold(self, p: AnyRow) -> None:
        amount = Money(p.currency, p.capture_requested)
        destination = wallet_account(p.destination_wallet_id)

        async def capture(ref: str) -> str:
            reply = await self._ledger.capture_hold(ref, p.hold_id, amount, destination, f"payment {p.payment_id}")
            return str(reply.transaction.transaction_id)

        try:
            transaction_id = await self._run_step("payment", p.payment_id, "capture", capture)
        except LedgerRefused as refused:
            # The hold expired or the destination refuses the credit: give back whatever is still held.
            await self._release_hold(p)
            await self._fail_payment(p, refused.failure_code, refused.message, step="capture")
            return
        except LedgerUnavailable:
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
        await self._commit_payment(
            p,
            step="capture",
            result_ref=transaction_id,
            to_state=PaymentState.SUCCEEDED,
            reason="captured",
            values={"amount_captured": amount.amount},
        )

    async def _release_hold(self, p: AnyRow) -> None:
        hold_id = p.hold_id or await self._resolve_hold(p)
        if hold_id is None:
            return

        async def release(ref: str) -> None:
            await self._ledger.release_hold(ref, hold_id)

        try:
            await self._run_step("payment", p.payment_id, "release", release)
        except LedgerUnavailable:
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
        await self._commit_payment(p, step="release", result_ref=hold_id)

    async def _resolve_hold(self, p: AnyRow) -> str | None:
        """A hold step left STARTED by a crash: replaying it with its reference tells whether a hold exists."""
        step = (await self._steps(p.payment_id)).get("hold")
        if step is None or step.status == "FAILED":
            return None
        try:
            return await self._create_hold(p, step.reference)
        except LedgerRefused:
            return None
        except LedgerUnavailable:
            raise Interrupted(dependency_unavailable("wallet_svc")) from None

    async def _processor_call(
        self, resource_id: uuid.UUID, call: Callable[[], Awaitable[ProcessorResult]]
    ) -> ProcessorResult:
        """A processor call after which the saga must go on later when there is no definitive answer."""
        try:
            return await call()
        except ProcessorRejected:
            raise
        except ProcessorUnavailable as error:
            raise Interrupted(processor_unavailable(self._processor.name, resource_id)) from error
        except ProcessorError as error:
            raise Interrupted(dependency_unavailable("the payment processor")) from error

    async def _authorize(self, p: AnyRow) -> PaymeshError | None:
        money = Money(p.currency, p.amount)

        async def authorize(ref: str) -> ProcessorResult:
            return await self._processor.authorize(idempotency_key=ref, card_token=p.card_token, amount=money)

        try:
            result = await self._run_step("payment", p.payment_id, "authorize", authorize)
        except ProcessorUnavailable as error:
            # Fail fast: nothing was charged. The creating call answers UNAVAILABLE.
            failure = processor_unavailable(self._processor.name, p.payment_id)
            await self._fail_payment(p, "processor_unavailable", error.message, step="authorize", error=failure)
            return failure
        except ProcessorTimeout as error:
            # No answer: an authorization may exist, but it is never captured and lapses at the processor.
            await self._fail_payment(p, "processor_timeout", error.message, step="authorize")
            return None
        except ProcessorRejected as error:
            await self._fail_payment(p, "processor_rejected", error.message, step="authorize")
            return None
        if result.outcome is Outcome.DECLINED:
            await self._fail_payment(p, result.decline_code or "card_declined", result.message, step="authorize")
            return None
        if result.outcome is Outcome.PENDING:
            raise Interrupted(dependency_unavailable("the payment processor"))
        values: dict[str, Any] = {"authorization_ref": result.processor_ref}
        target = self._authorized_state(p, values)
        await self._commit_payment(
            p, step="authorize", result_ref=result.processor_ref, to_state=target, reason="authorized", values=values
        )
        return None

    async def _settle_card(self, p: AnyRow) -> None:
        steps = await self._steps(p.payment_id)
        amount = Money(p.currency, p.capture_requested)
        capture, credit = steps.get("capture"), steps.get("credit")
        if credit is not None and credit.status == "FAILED":
            await self._refund_captured_card(p, amount, credit.detail)
            return
        captured = capture is not None and capture.status == "DONE"
        if not captured and not await self._capture_card(p, amount):
            return
        await self._credit_destination(p, amount)

    async def _capture_card(self, p: AnyRow, amount: Money) -> bool:
        async def capture(ref: str) -> ProcessorResult:
            return await self._processor.capture(
                idempotency_key=ref, authorization_ref=p.authorization_ref, amount=amount
            )

        try:
            result = await self._processor_call(
                p.payment_id, lambda: self._run_step("payment", p.payment_id, "capture", capture)
            )
        except ProcessorRejected as error:
            result = ProcessorResult(Outcome.DECLINED, "", "processor_rejected", error.message)
        if result.outcome is Outcome.PENDING:
            raise Interrupted(dependency_unavailable("the payment processor"))
        if result.outcome is Outcome.DECLINED:
            await self._void(p)
            await self._fail_payment(p, result.decline_code or "capture_declined", result.message, step="capture")
            return False
        await self._commit_payment(p, step="capture", result_ref=result.processor_ref)
        return True

    async def _credit_destination(self, p: AnyRow, amount: Money) -> None:
        postings = [Posting(SETTLEMENT, -amount), Posting(wallet_account(p.destination_wallet_id), amount)]

        async def credit(ref: str) -> str:
            tx = await self._ledger.post(ref, postings, str(p.payment_id), f"card payment {p.payment_id}")
            return str(tx.transaction_id)

        try:
            transaction_id = await self._run_step("payment", p.payment_id, "credit", credit)
        except LedgerRefused as refused:
            # The card is charged but the destination refuses the money: give it back to the card.
            await self._commit_payment(p, step="credit", status="FAILED", reason=refused.failure_code)
            await self._refund_captured_card(p, amount, refused.failure_code)
            return
        except LedgerUnavailable:
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
        await self._commit_payment(
            p,
            step="credit",
            result_ref=transaction_id,
            to_state=PaymentState.SUCCEEDED,
            reason="captured",
            values={"amount_captured": amount.amount},
        )

    async def _refund_captured_card(self, p: AnyRow, amount: Money, code: str) -> None:
        async def refund(ref: str) -> ProcessorResult:
            return await self._processor.refund(
                idempotency_key=ref, authorization_ref=p.authorization_ref, amount=amount
            )

        result = await self._processor_call(
            p.payment_id, lambda: self._run_step("payment", p.payment_id, "compensate", refund)
        )
        if result.outcome is Outcome.DECLINED:
            # Money would be lost: keep retrying rather than finishing; operators see the attempts grow.
            log.error("payment %s: compensating card refund declined (%s)", p.payment_id, result.decline_code)
            raise Interrupted(dependency_unavailable("the payment processor"))
        await self._commit_payment(p, step="compensate", result_ref=result.processor_ref)
        await self._fail_payment(p, code, "the destination wallet refused the credit; the card was refunded", step=None)

    async def _void(self, p: AnyRow) -> None:
        authorization = p.authorization_ref or await self._resolve_authorization(p)
        if authorization is None:
            return

        async def void(ref: str) -> ProcessorResult:
            return await self._processor.void(idempotency_key=ref, authorization_ref=authorization)

        try:
            result = await self._processor_call(
                p.payment_id, lambda: self._run_step("payment", p.payment_id, "void", void)
            )
        except ProcessorRejected:
            result = ProcessorResult(Outcome.DECLINED, "")
        # A declined void means nothing is left to void (already voided or lapsed).
        await self._commit_payment(p, step="void", result_ref=result.processor_ref, reason=result.decline_code)

    async def _resolve_authorization(self, p: AnyRow) -> str | None:
        """An authorize step left STARTED by a crash: ask again with the same key."""
        step = (await self._steps(p.payment_id)).get("authorize")
        if step is None or step.status == "FAILED":
            return None
        try:
            result = await self._processor.authorize(
                idempotency_key=step.reference, card_token=p.card_token, amount=Money(p.currency, p.amount)
            )
        except ProcessorTimeout:
            return None  # an authorization nobody answers for lapses uncaptured
        except ProcessorError:
            raise Interrupted(dependency_unavailable("the payment processor")) from None
        return result.processor_ref if result.outcome is Outcome.SUCCEEDED else None

    async def _cancel_payment(self, p: AnyRow) -> None:
        reason = p.action_reason or "canceled"
        if PaymentState(p.state) not in (PaymentState.PENDING, PaymentState.REQUIRES_CAPTURE):
            await self._commit_payment(p, values={"requested_action": None})
            return
        if p.source_wallet_id:
            await self._release_hold(p)
        else:
            await self._void(p)
        await self._commit_payment(
            await self.load("payment", p.payment_id),
            to_state=PaymentState.CANCELED,
            reason=reason,
            values={"requested_action": None},
        )

    # --- requests that start work on an existing payment ------------------------------

    async def _claim_locked(self, conn: AsyncConnection, kind: str, resource_id: uuid.UUID) -> None:
        if await store.claim(conn, kind, resource_id, self.owner, self._config.lease) is None:
            raise Aborted(
                "PAYMENT_IN_PROGRESS",
                f"another operation on {kind} {resource_id} is running; retry shortly",
                metadata={"resource_id": str(resource_id)},
            )

    async def begin_capture(self, payment_id: uuid.UUID, requested: Money | None) -> None:
        """REQUIRES_CAPTURE → PROCESSING under the payment's row lock (two racing captures: one wins)."""
        async with self._engine.begin() as conn:
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
            await self._claim_locked(conn, "payment", payment_id)
            row = await store.change_state(
                conn,
                "payment",
                payment_id,
                owner=self.owner,
                from_state=p.state,
                to_state=PaymentState.PROCESSING,
                reason="capture_requested",
                values={"capture_requested": amount.amount},
            )
            assert row is not None  # the row lock and the lease are ours
            await self._events.payment_changed(conn, await self._payment_message(conn, row), p.state)

    async def request_cancel(self, payment_id: uuid.UUID, reason: str) -> None:
        """Marks a PENDING or REQUIRES_CAPTURE payment for cancellation and takes its lease."""
        async with self._engine.begin() as conn:
            p = await store.get_row(conn, "payment", payment_id, for_update=True)
            assert p is not None
            if p.requested_action is None:
                check_cancelable(PaymentState(p.state))
            await self._claim_locked(conn, "payment", payment_id)
            await store.update_leased(
                conn, "payment", payment_id, self.owner, {"requested_action": "CANCEL", "action_reason": reason}
            )

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
        """Reserves the refund's amount on the payment (row lock + CHECK) and creates the refund PENDING."""
        p = await store.get_row(conn, "payment", payment_id, for_update=True)
        assert p is not None
        check_refundable(PaymentState(p.state))
        amount = refund_amount(Money(p.currency, p.amount_captured), p.refund_reserved, requested)
        if not await store.reserve_refund(conn, payment_id, amount.amount):
            raise refund_amount(Money(p.currency, 0), 0, amount)  # type: ignore[misc]  # unreachable under the lock
        row = await store.insert_resource(
            conn,
            "refund",
            {
                "refund_id": refund_id,
                "payment_id": payment_id,
                "requested_by": requested_by,
                "currency": amount.currency,
                "amount": amount.amount,
                "reason": reason,
                "state": RefundState.PENDING.value,
                **lease_values,
            },
        )
        await store.record_transition(conn, "refund", refund_id, "", RefundState.PENDING, "created")
        await self._events.refund_changed(
            conn, views.refund(row), payer_id=p.payer_id, payee_id=p.payee_id, created=True
        )

    async def try_drive(self, kind: str, resource_id: uuid.UUID) -> None:
        """Drives a resource if no other replica works on it; interruptions are left to the recovery worker."""
        async with self._engine.begin() as conn:
            claimed = await store.claim(conn, kind, resource_id, self.owner, self._config.lease)
        if claimed is None:
            return
        drive = {"payment": self.drive_payment, "refund": self.drive_refund, "payout": self.drive_payout}[kind]
        try:
            await drive(resource_id)
        except Interrupted as interrupted:
            log.info("%s %s interrupted: %s", kind, resource_id, interrupted)

    # --- refunds ----------------------------------------------------------------------

    async def drive_refund(self, refund_id: uuid.UUID) -> Driven:
        return await self._drive("refund", refund_id, self._advance_refund)

    async def _advance_refund(self, refund_id: uuid.UUID) -> Driven:
        r = await self.load("refund", refund_id)
        p = await self.load("payment", r.payment_id)
        if RefundState(r.state) is RefundState.PENDING:
            if p.source_wallet_id:
                await self._refund_wallet_payment(r, p)
            else:
                await self._refund_card_payment(r, p)
            r = await self.load("refund", refund_id)
        return Driven(views.refund(r))

    async def _commit_refund(
        self,
        r: AnyRow,
        p: AnyRow,
        *,
        step: str,
        status: str = "DONE",
        result_ref: str = "",
        to_state: RefundState | None = None,
        reason: str = "",
        values: dict[str, Any] | None = None,
    ) -> None:
        async with self._engine.begin() as conn:
            await store.finish_step(conn, r.refund_id, step, status, result_ref, reason)
            if to_state is None:
                row = await store.update_leased(conn, "refund", r.refund_id, self.owner, values or {})
            else:
                check_refund_transition(RefundState(r.state), to_state)
                row = await store.change_state(
                    conn, "refund", r.refund_id, owner=self.owner, from_state=r.state, to_state=to_state,
                    reason=reason, values=values,
                )  # fmt: skip
            if row is None:
                raise LeaseLost(f"refund {r.refund_id}")
            if to_state is not None:
                await store.settle_refund(conn, r.payment_id, r.amount, succeeded=to_state is RefundState.SUCCEEDED)
                message = views.refund(row)
                await self._events.refund_changed(
                    conn, message, payer_id=p.payer_id, payee_id=p.payee_id, created=False
                )
                await self._keys.complete(conn, r.refund_id, _recorded(message, None))
        self._after_commit(step, status)

    async def _refund_wallet_payment(self, r: AnyRow, p: AnyRow) -> None:
        amount = Money(r.currency, r.amount)
        postings = [
            Posting(wallet_account(p.destination_wallet_id), -amount),
            Posting(wallet_account(p.source_wallet_id), amount),
        ]

        transaction_id = await self._post_refund_leg(r, p, "post", postings, f"refund of payment {p.payment_id}")
        if transaction_id is None:
            return
        await self._commit_refund(
            r, p, step="post", result_ref=transaction_id, to_state=RefundState.SUCCEEDED, reason="refunded"
        )

    async def _post_refund_leg(
        self, r: AnyRow, p: AnyRow, step: str, postings: list[Posting], description: str
    ) -> str | None:
        """Posts a refund's ledger leg as saga step `step`; on a refusal fails the refund and returns None."""

        async def post(ref: str) -> str:
            tx = await self._ledger.post(ref, postings, str(r.refund_id), description)
            return str(tx.transaction_id)

        try:
            return await self._run_step("refund", r.refund_id, step, post)
        except LedgerRefused as refused:
            await self._commit_refund(
                r, p, step=step, status="FAILED", to_state=RefundState.FAILED, reason=refused.failure_code,
                values={"failure_code": refused.failure_code},
            )  # fmt: skip
            return None
        except LedgerUnavailable:
            raise Interrupted(dependency_unavailable("wallet_svc")) from None

    async def _refund_card_payment(self, r: AnyRow, p: AnyRow) -> None:
        amount = Money(r.currency, r.amount)
        steps = await self._steps(r.refund_id)
        debit = steps.get("debit")
        if debit is None or debit.status == "STARTED":
            postings = [Posting(wallet_account(p.destination_wallet_id), -amount), Posting(SETTLEMENT, amount)]

            description = f"card refund of payment {p.payment_id}"
            transaction_id = await self._post_refund_leg(r, p, "debit", postings, description)
            if transaction_id is None:
                return
            await self._commit_refund(r, p, step="debit", result_ref=transaction_id)

        async def refund(ref: str) -> ProcessorResult:
            return await self._processor.refund(
                idempotency_key=ref, authorization_ref=p.authorization_ref, amount=amount
            )

        try:
            result = await self._processor_call(
                r.refund_id, lambda: self._run_step("refund", r.refund_id, "refund", refund)
            )
        except ProcessorRejected as error:
            result = ProcessorResult(Outcome.DECLINED, "", "processor_rejected", error.message)
        if result.outcome is Outcome.DECLINED:
            code = result.decline_code or "refund_declined"
            await self._reverse_refund_debit(r, p, amount)
            await self._commit_refund(
                r, p, step="refund", status="FAILED", to_state=RefundState.FAILED,
                reason=code, values={"failure_code": code},
            )  # fmt: skip
            return
        # SUCCEEDED, or PENDING: accepted by the processor, which settles it with the card network.
        await self._commit_refund(
            r, p, step="refund", result_ref=result.processor_ref, to_state=RefundState.SUCCEEDED, reason="refunded",
            values={"processor_ref": result.processor_ref or None},
        )  # fmt: skip

    async def _reverse_refund_debit(self, r: AnyRow, p: AnyRow, amount: Money) -> None:
        postings = [Posting(SETTLEMENT, -amount), Posting(wallet_account(p.destination_wallet_id), amount)]

        async def post(ref: str) -> str:
            tx = await self._ledger.post(ref, postings, str(r.refund_id), f"reversal of refund {r.refund_id}")
            return str(tx.transaction_id)

        try:
            transaction_id = await self._run_step("refund", r.refund_id, "reverse", post)
        except (LedgerRefused, LedgerUnavailable):
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
        await self._commit_refund(r, p, step="reverse", result_ref=transaction_id)

    # --- payouts ----------------------------------------------------------------------

    async def drive_payout(self, payout_id: uuid.UUID) -> Driven:
        return await self._drive("payout", payout_id, self._advance_payout)

    async def _advance_payout(self, payout_id: uuid.UUID) -> Driven:
        error: PaymeshError | None = None
        while True:
            o = await self.load("payout", payout_id)
            state = PayoutState(o.state)
            if state in FINAL_PAYOUT_STATES:
                return Driven(views.payout(o), error)
            if o.processor_outcome == "SUCCEEDED":
                await self._capture_payout(o)
            elif o.processor_outcome == "DECLINED":
                await self._release_payout(o, o.processor_decline_code or "payout_declined")
            elif state is PayoutState.PROCESSING:
                return Driven(views.payout(o), error)  # the processor's webhook settles it
            elif o.hold_id is None:
                await self._hold_payout(o)
            else:
                error = await self._send_payout(o)

    async def _commit_payout(
        self,
        o: AnyRow,
        *,
        step: str | None,
        status: str = "DONE",
        result_ref: str = "",
        to_state: PayoutState | None = None,
        reason: str = "",
        values: dict[str, Any] | None = None,
        error: PaymeshError | None = None,
    ) -> None:
        async with self._engine.begin() as conn:
            if step is not None:
                await store.finish_step(conn, o.payout_id, step, status, result_ref, reason)
            if to_state is None or to_state == o.state:
                row = await store.update_leased(conn, "payout", o.payout_id, self.owner, values or {})
            else:
                check_payout_transition(PayoutState(o.state), to_state)
                row = await store.change_state(
                    conn, "payout", o.payout_id, owner=self.owner, from_state=o.state, to_state=to_state,
                    reason=reason, values=values,
                )  # fmt: skip
            if row is None:
                raise LeaseLost(f"payout {o.payout_id}")
            if row.state != o.state:
                message = views.payout(row)
                await self._events.payout_changed(conn, message, created=False)
                if PayoutState(row.state) in RESTING_PAYOUT_STATES:
                    await self._keys.complete(conn, o.payout_id, _recorded(message, error))
        self._after_commit(step, status)

    async def _hold_payout(self, o: AnyRow) -> None:
        async def hold(ref: str) -> str:
            created = await self._ledger.create_hold(
                ref, o.wallet_id, Money(o.currency, o.amount), str(o.payout_id), self._config.payout_hold_ttl_seconds
            )
            return str(created.hold_id)

        try:
            hold_id = await self._run_step("payout", o.payout_id, "hold", hold)
        except LedgerRefused as refused:
            await self._commit_payout(
                o, step="hold", status="FAILED", to_state=PayoutState.FAILED, reason=refused.failure_code,
                values={"failure_code": refused.failure_code},
            )  # fmt: skip
            return
        except LedgerUnavailable:
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
        await self._commit_payout(o, step="hold", result_ref=hold_id, values={"hold_id": hold_id})

    async def _send_payout(self, o: AnyRow) -> PaymeshError | None:
        money = Money(o.currency, o.amount)

        async def payout(ref: str) -> ProcessorResult:
            return await self._processor.payout(
                idempotency_key=ref, bank_account_token=o.bank_account_token, amount=money
            )

        try:
            result = await self._run_step("payout", o.payout_id, "payout", payout)
        except ProcessorUnavailable:
            failure = processor_unavailable(self._processor.name, o.payout_id)
            await self._release_payout(o, "processor_unavailable", step="payout", error=failure)
            return failure
        except ProcessorRejected:
            await self._release_payout(o, "processor_rejected", step="payout")
            return None
        except ProcessorTimeout:
            # The payout may have been sent: keep the hold and ask again later with the same key.
            raise Interrupted(dependency_unavailable("the payment processor")) from None
        if result.outcome is Outcome.DECLINED:
            await self._release_payout(o, result.decline_code or "payout_declined", step="payout")
            return None
        values: dict[str, Any] = {"processor_ref": result.processor_ref or None}
        if result.outcome is Outcome.SUCCEEDED:
            values["processor_outcome"] = "SUCCEEDED"
            await self._commit_payout(o, step="payout", result_ref=result.processor_ref, values=values)
        else:
            await self._commit_payout(
                o, step="payout", result_ref=result.processor_ref, to_state=PayoutState.PROCESSING,
                reason="sent_to_processor", values=values,
            )  # fmt: skip
        return None

    async def _capture_payout(self, o: AnyRow) -> None:
        async def capture(ref: str) -> str:
            reply = await self._ledger.capture_hold(
                ref, o.hold_id, Money(o.currency, o.amount), SETTLEMENT, f"payout {o.payout_id}"
            )
            return str(reply.transaction.transaction_id)

        try:
            transaction_id = await self._run_step("payout", o.payout_id, "capture", capture)
        except (LedgerRefused, LedgerUnavailable):
            # The money left through the processor: the capture must happen; retry until it does.
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
        await self._commit_payout(
            o, step="capture", result_ref=transaction_id, to_state=PayoutState.SUCCEEDED, reason="paid"
        )

    async def _release_payout(
        self, o: AnyRow, code: str, *, step: str | None = None, error: PaymeshError | None = None
    ) -> None:
        hold_id = o.hold_id

        async def release(ref: str) -> None:
            await self._ledger.release_hold(ref, hold_id)

        try:
            await self._run_step("payout", o.payout_id, "release", release)
        except (LedgerRefused, LedgerUnavailable):
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
        if step is not None:
            async with self._engine.begin() as conn:
                await store.finish_step(conn, o.payout_id, step, "FAILED", "", code)
        await self._commit_payout(
            o, step="release", result_ref=hold_id, to_state=PayoutState.FAILED, reason=code,
            values={"failure_code": code}, error=error,
        )  # fmt: skip
