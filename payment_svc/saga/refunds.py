"""Refunds: PENDING → SUCCEEDED or FAILED, never more in total than the payment captured.

The amount is reserved on the payment under its row lock when the refund is
created (CHECK refund_reserved <= amount_captured), so racing refunds cannot
pass the captured amount; a failed refund gives its reservation back.
  wallet payment: post payee → payer.
  card payment:   debit the payee into settlement, then refund the card; a
                  processor refusal reverses the debit. A refund the
                  processor accepts as pending rests PENDING until its
                  webhook reports success or failure (payment_svc.webhooks).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from payment_svc import store, views
from payment_svc.events import PaymentEvents
from payment_svc.idempotency import IdempotencyKeys
from payment_svc.lifecycle import PaymentState, RefundState, check_refund_transition, check_refundable, refund_amount
from payment_svc.processor import Operation, Outcome, Processor, ProcessorRejected, ProcessorResult
from payment_svc.saga.steps import Driven, Interrupted, Steps, dependency_unavailable, recorded_response
from payment_svc.store import AnyRow
from payment_svc.wallet_client import (
    SETTLEMENT,
    Posting,
    WalletClient,
    WalletRefused,
    WalletUnavailable,
    wallet_account,
)
from paymesh_runtime.money import Money


def _check_transition(current: str, target: str) -> None:
    check_refund_transition(RefundState(current), RefundState(target))


class RefundFlow:
    def __init__(
        self, steps: Steps, wallet_svc: WalletClient, processor: Processor, events: PaymentEvents, keys: IdempotencyKeys
    ) -> None:
        self._steps = steps
        self._wallet_svc = wallet_svc
        self._processor = processor
        self._events = events
        self._keys = keys

    async def open(
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
        row, _ = await store.insert_resource(
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
        await self._events.refund_changed(
            conn, views.refund(row), payer_id=p.payer_id, payee_id=p.payee_id, created=True
        )

    async def drive(self, refund_id: uuid.UUID) -> Driven:
        return await self._steps.drive("refund", refund_id, self._advance)

    async def _advance(self, refund_id: uuid.UUID) -> Driven:
        r = await self._steps.load("refund", refund_id)
        if RefundState(r.state) is RefundState.PENDING:
            p = await self._steps.load("payment", r.payment_id)
            if r.processor_outcome == Outcome.PENDING:
                # Its webhook has not come in time: ask the processor.
                if await self._poll(r, p):
                    await self._settle(await self._steps.load("refund", refund_id), p)
            elif r.processor_outcome is not None:
                await self._settle(r, p)
            elif p.source_wallet_id:
                await self._refund_wallet_payment(r, p)
            else:
                await self._refund_card_payment(r, p)
            r = await self._steps.load("refund", refund_id)
        return Driven(views.refund(r))

    async def _commit(
        self,
        r: AnyRow,
        p: AnyRow,
        *,
        step: str | None,
        status: str = "DONE",
        result_ref: str = "",
        to_state: RefundState | None = None,
        reason: str = "",
        values: dict[str, Any] | None = None,
    ) -> None:
        """One transaction: step result, state change + transition, event, idempotency response."""
        async with self._steps.engine.begin() as conn:
            row, _ = await self._steps.write_result(
                conn, "refund", r, r.refund_id, step=step, status=status, result_ref=result_ref, to_state=to_state,
                reason=reason, values=values or {},
                check_transition=_check_transition,
            )  # fmt: skip
            if to_state is not None:
                await store.settle_refund(conn, r.payment_id, r.amount, succeeded=to_state is RefundState.SUCCEEDED)
                await self._events.refund_changed(
                    conn, views.refund(row), payer_id=p.payer_id, payee_id=p.payee_id, created=False
                )
            if to_state is not None or row.processor_outcome == "PENDING":
                # Final, or resting until the processor's webhook: CreateRefund answers with it.
                await self._keys.complete(conn, r.refund_id, recorded_response(views.refund(row), None))
        self._steps.after_commit(step, status)

    async def _refund_wallet_payment(self, r: AnyRow, p: AnyRow) -> None:
        amount = Money(r.currency, r.amount)
        postings = [
            Posting(wallet_account(p.destination_wallet_id), -amount),
            Posting(wallet_account(p.source_wallet_id), amount),
        ]
        transaction_id = await self._post_leg(r, p, "post", postings, f"refund of payment {p.payment_id}")
        if transaction_id is None:
            return
        await self._commit(
            r, p, step="post", result_ref=transaction_id, to_state=RefundState.SUCCEEDED, reason="refunded"
        )

    async def _post_leg(self, r: AnyRow, p: AnyRow, step: str, postings: list[Posting], description: str) -> str | None:
        """Posts a refund's ledger leg as saga step `step`; on a refusal fails the refund and returns None."""

        async def post(ref: str) -> str:
            tx = await self._wallet_svc.post(ref, postings, str(r.refund_id), description)
            return str(tx.transaction_id)

        try:
            return await self._steps.run("refund", r.refund_id, step, post)
        except WalletRefused as refused:
            await self._commit(
                r, p, step=step, status="FAILED", to_state=RefundState.FAILED, reason=refused.failure_code,
                values={"failure_code": refused.failure_code},
            )  # fmt: skip
            return None
        except WalletUnavailable:
            raise Interrupted(dependency_unavailable("wallet_svc")) from None

    async def _refund_card_payment(self, r: AnyRow, p: AnyRow) -> None:
        amount = Money(r.currency, r.amount)
        debit = (await self._steps.of(r.refund_id)).get("debit")
        if debit is None or debit.status == "STARTED":
            postings = [Posting(wallet_account(p.destination_wallet_id), -amount), Posting(SETTLEMENT, amount)]
            description = f"card refund of payment {p.payment_id}"
            transaction_id = await self._post_leg(r, p, "debit", postings, description)
            if transaction_id is None:
                return
            await self._commit(r, p, step="debit", result_ref=transaction_id)

        async def refund(ref: str) -> ProcessorResult:
            return await self._processor.refund(
                idempotency_key=ref, authorization_ref=p.authorization_ref, amount=amount
            )

        async def find(ref: str) -> ProcessorResult | None:
            return await self._processor.find(
                Operation.REFUND, idempotency_key=ref, authorization_ref=p.authorization_ref
            )

        try:
            result = await self._steps.processor_step("refund", r.refund_id, "refund", refund, find)
        except ProcessorRejected as error:
            result = ProcessorResult(Outcome.DECLINED, "", "processor_rejected", error.message)
        if result.outcome is Outcome.DECLINED:
            await self._fail_card_refund(r, p, result.decline_code, step="refund")
        elif result.outcome is Outcome.PENDING:
            # Accepted; the processor reports the result later by webhook. The refund rests PENDING until then.
            await self._commit(
                r, p, step="refund", result_ref=result.processor_ref,
                values={
                    "processor_ref": result.processor_ref,
                    "processor_outcome": Outcome.PENDING.value,
                    **self._steps.recheck_later(),
                },
            )  # fmt: skip
        else:
            await self._commit(
                r, p, step="refund", result_ref=result.processor_ref, to_state=RefundState.SUCCEEDED,
                reason="refunded", values={"processor_ref": result.processor_ref or None},
            )  # fmt: skip

    async def _poll(self, r: AnyRow, p: AnyRow) -> bool:
        async def find(ref: str) -> ProcessorResult | None:
            return await self._processor.find(
                Operation.REFUND, idempotency_key=ref, authorization_ref=p.authorization_ref
            )

        return await self._steps.poll("refund", r.refund_id, "refund", find)

    async def _settle(self, r: AnyRow, p: AnyRow) -> None:
        """Applies the outcome the processor reported (webhook or poll) for a pending or unknown card refund."""
        async with self._steps.engine.begin() as conn:
            status = "DONE" if r.processor_outcome == Outcome.SUCCEEDED else "FAILED"
            await store.close_started_step(conn, r.refund_id, "refund", status, r.processor_ref or "")
        if r.processor_outcome == Outcome.SUCCEEDED:
            await self._commit(r, p, step=None, to_state=RefundState.SUCCEEDED, reason="refunded")
        else:
            await self._fail_card_refund(r, p, r.processor_decline_code, step=None)

    async def _fail_card_refund(self, r: AnyRow, p: AnyRow, decline_code: str, *, step: str | None) -> None:
        """The card was not refunded: the payee's debit goes back, then the refund fails."""
        code = decline_code or "refund_declined"
        await self._reverse_debit(r, p, Money(r.currency, r.amount))
        await self._commit(
            r, p, step=step, status="FAILED", to_state=RefundState.FAILED, reason=code, values={"failure_code": code}
        )

    async def _reverse_debit(self, r: AnyRow, p: AnyRow, amount: Money) -> None:
        postings = [Posting(SETTLEMENT, -amount), Posting(wallet_account(p.destination_wallet_id), amount)]

        async def post(ref: str) -> str:
            tx = await self._wallet_svc.post(ref, postings, str(r.refund_id), f"reversal of refund {r.refund_id}")
            return str(tx.transaction_id)

        try:
            transaction_id = await self._steps.run("refund", r.refund_id, "reverse", post)
        except (WalletRefused, WalletUnavailable):
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
        await self._commit(r, p, step="reverse", result_ref=transaction_id)
