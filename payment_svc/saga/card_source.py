"""A payment from a card: authorize with the processor, capture, credit the destination from settlement.

Compensation: a declined capture voids the authorization; a destination that
refuses the credit after the card was charged gets the card refunded.
"""

from __future__ import annotations

import logging

from payment_svc.ledger import SETTLEMENT, Ledger, LedgerRefused, LedgerUnavailable, Posting, wallet_account
from payment_svc.processor import (
    Outcome,
    Processor,
    ProcessorError,
    ProcessorRejected,
    ProcessorResult,
    ProcessorTimeout,
    ProcessorUnavailable,
)
from payment_svc.saga.payments import PaymentLog
from payment_svc.saga.steps import Interrupted, Steps, dependency_unavailable, processor_unavailable
from payment_svc.store import AnyRow
from paymesh_runtime.errors import PaymeshError
from paymesh_runtime.money import Money

log = logging.getLogger(__name__)


class CardSource:
    def __init__(self, steps: Steps, log: PaymentLog, processor: Processor, ledger: Ledger) -> None:
        self._steps = steps
        self._log = log
        self._processor = processor
        self._ledger = ledger

    async def authorize(self, p: AnyRow) -> PaymeshError | None:
        money = Money(p.currency, p.amount)

        async def authorize(ref: str) -> ProcessorResult:
            return await self._processor.authorize(idempotency_key=ref, card_token=p.card_token, amount=money)

        try:
            result = await self._steps.run("payment", p.payment_id, "authorize", authorize)
        except ProcessorUnavailable as error:
            # Fail fast: nothing was charged. The creating call answers UNAVAILABLE.
            failure = processor_unavailable(self._processor.name, p.payment_id)
            await self._log.fail(p, "processor_unavailable", error.message, step="authorize", error=failure)
            return failure
        except ProcessorTimeout as error:
            # No answer: an authorization may exist, but it is never captured and lapses at the processor.
            await self._log.fail(p, "processor_timeout", error.message, step="authorize")
            return None
        except ProcessorRejected as error:
            await self._log.fail(p, "processor_rejected", error.message, step="authorize")
            return None
        if result.outcome is Outcome.DECLINED:
            await self._log.fail(p, result.decline_code or "card_declined", result.message, step="authorize")
            return None
        if result.outcome is Outcome.PENDING:
            raise Interrupted(dependency_unavailable("the payment processor"))
        values = {"authorization_ref": result.processor_ref}
        await self._log.authorized(p, "authorize", result.processor_ref, "authorized", values)
        return None

    async def settle(self, p: AnyRow) -> None:
        steps = await self._steps.of(p.payment_id)
        amount = Money(p.currency, p.capture_requested)
        capture, credit = steps.get("capture"), steps.get("credit")
        if credit is not None and credit.status == "FAILED":
            await self._refund_captured_card(p, amount, credit.detail)
            return
        captured = capture is not None and capture.status == "DONE"
        if not captured and not await self._capture(p, amount):
            return
        await self._credit_destination(p, amount)

    async def _capture(self, p: AnyRow, amount: Money) -> bool:
        async def capture(ref: str) -> ProcessorResult:
            return await self._processor.capture(
                idempotency_key=ref, authorization_ref=p.authorization_ref, amount=amount
            )

        try:
            result = await self._steps.processor_call(
                p.payment_id, lambda: self._steps.run("payment", p.payment_id, "capture", capture)
            )
        except ProcessorRejected as error:
            result = ProcessorResult(Outcome.DECLINED, "", "processor_rejected", error.message)
        if result.outcome is Outcome.PENDING:
            raise Interrupted(dependency_unavailable("the payment processor"))
        if result.outcome is Outcome.DECLINED:
            await self.cancel(p)
            await self._log.fail(p, result.decline_code or "capture_declined", result.message, step="capture")
            return False
        await self._log.commit(p, step="capture", result_ref=result.processor_ref)
        return True

    async def _credit_destination(self, p: AnyRow, amount: Money) -> None:
        postings = [Posting(SETTLEMENT, -amount), Posting(wallet_account(p.destination_wallet_id), amount)]

        async def credit(ref: str) -> str:
            tx = await self._ledger.post(ref, postings, str(p.payment_id), f"card payment {p.payment_id}")
            return str(tx.transaction_id)

        try:
            transaction_id = await self._steps.run("payment", p.payment_id, "credit", credit)
        except LedgerRefused as refused:
            # The card is charged but the destination refuses the money: give it back to the card.
            await self._log.commit(p, step="credit", status="FAILED", reason=refused.failure_code)
            await self._refund_captured_card(p, amount, refused.failure_code)
            return
        except LedgerUnavailable:
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
        await self._log.succeeded(p, "credit", transaction_id, amount)

    async def _refund_captured_card(self, p: AnyRow, amount: Money, code: str) -> None:
        async def refund(ref: str) -> ProcessorResult:
            return await self._processor.refund(
                idempotency_key=ref, authorization_ref=p.authorization_ref, amount=amount
            )

        result = await self._steps.processor_call(
            p.payment_id, lambda: self._steps.run("payment", p.payment_id, "compensate", refund)
        )
        if result.outcome is Outcome.DECLINED:
            # Money would be lost: keep retrying rather than finishing; operators see the attempts grow.
            log.error("payment %s: compensating card refund declined (%s)", p.payment_id, result.decline_code)
            raise Interrupted(dependency_unavailable("the payment processor"))
        await self._log.commit(p, step="compensate", result_ref=result.processor_ref)
        await self._log.fail(p, code, "the destination wallet refused the credit; the card was refunded", step=None)

    async def cancel(self, p: AnyRow) -> None:
        """Voids the authorization, if there is one."""
        authorization = p.authorization_ref or await self._resolve_authorization(p)
        if authorization is None:
            return

        async def void(ref: str) -> ProcessorResult:
            return await self._processor.void(idempotency_key=ref, authorization_ref=authorization)

        try:
            result = await self._steps.processor_call(
                p.payment_id, lambda: self._steps.run("payment", p.payment_id, "void", void)
            )
        except ProcessorRejected:
            result = ProcessorResult(Outcome.DECLINED, "")
        # A declined void means nothing is left to void (already voided or lapsed).
        await self._log.commit(p, step="void", result_ref=result.processor_ref, reason=result.decline_code)

    async def _resolve_authorization(self, p: AnyRow) -> str | None:
        """An authorize step left STARTED by a crash: ask again with the same key."""
        step = (await self._steps.of(p.payment_id)).get("authorize")
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
