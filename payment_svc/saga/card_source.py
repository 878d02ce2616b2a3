"""A payment from a card: authorize with the processor, capture, credit the destination from settlement.

Compensation: a declined capture voids the authorization; a destination that
refuses the credit after the card was charged gets the card refunded.
"""

from __future__ import annotations

import logging

from payment_svc.processor import (
    Operation,
    Outcome,
    Processor,
    ProcessorError,
    ProcessorRejected,
    ProcessorResult,
    ProcessorTimeout,
    ProcessorUnavailable,
)
from payment_svc.saga.payments import PaymentLog, PaymentRecord
from payment_svc.saga.steps import Interrupted, Steps, dependency_unavailable, processor_unavailable
from payment_svc.store import AnyRow
from payment_svc.wallet_client import (
    SETTLEMENT,
    Posting,
    WalletClient,
    WalletRefused,
    WalletUnavailable,
    wallet_account,
)
from paymesh_runtime.errors import PaymeshError
from paymesh_runtime.money import Money

log = logging.getLogger(__name__)


class CardSource:
    def __init__(self, steps: Steps, log: PaymentLog, processor: Processor, wallet_svc: WalletClient) -> None:
        self._steps = steps
        self._log = log
        self._processor = processor
        self._wallet_svc = wallet_svc

    async def authorize(self, record: PaymentRecord) -> tuple[PaymentRecord, PaymeshError | None]:
        p = record.row
        money = Money(p.currency, p.amount)

        async def authorize(ref: str) -> ProcessorResult:
            return await self._processor.authorize(idempotency_key=ref, card_token=p.card_token, amount=money)

        try:
            result = await self._steps.run(
                "payment", p.payment_id, "authorize", authorize, started=record.started == "authorize"
            )
        except ProcessorUnavailable as error:
            # Fail fast: nothing was charged. The creating call answers UNAVAILABLE.
            failure = processor_unavailable(self._processor.name, p.payment_id)
            failed = await self._log.fail(
                record, "processor_unavailable", error.message, step="authorize", error=failure
            )
            return failed, failure
        except ProcessorTimeout as error:
            # No answer: an authorization may exist, but it is never captured and lapses at the processor.
            return await self._log.fail(record, "processor_timeout", error.message, step="authorize"), None
        except ProcessorRejected as error:
            return await self._log.fail(record, "processor_rejected", error.message, step="authorize"), None
        if result.outcome is Outcome.DECLINED:
            code = result.decline_code or "card_declined"
            return await self._log.fail(record, code, result.message, step="authorize"), None
        if result.outcome is Outcome.PENDING:
            raise Interrupted(dependency_unavailable("the payment processor"))
        values = {"authorization_ref": result.processor_ref}
        return await self._log.authorized(record, "authorize", result.processor_ref, "authorized", values), None

    async def settle(self, record: PaymentRecord) -> PaymentRecord:
        p = record.row
        amount = Money(p.currency, p.capture_requested)
        steps = await self._steps.of(p.payment_id)
        capture, credit = steps.get("capture"), steps.get("credit")
        if credit is not None and credit.status == "FAILED":
            return await self._refund_captured_card(record, amount, credit.detail)
        if capture is None or capture.status != "DONE":
            record = await self._capture(record, amount)
            if record.started != "credit":
                return record  # declined: voided and failed
        return await self._credit_destination(record, amount)

    async def _capture(self, record: PaymentRecord, amount: Money) -> PaymentRecord:
        p = record.row

        async def capture(ref: str) -> ProcessorResult:
            return await self._processor.capture(
                idempotency_key=ref, authorization_ref=p.authorization_ref, amount=amount
            )

        async def find(_: str) -> ProcessorResult | None:
            return await self._processor.find(
                Operation.CAPTURE, idempotency_key="", authorization_ref=p.authorization_ref
            )

        started = record.started == "capture"
        try:
            result = await self._steps.processor_step(
                "payment", p.payment_id, "capture", capture, find, started=started
            )
        except ProcessorRejected as error:
            result = ProcessorResult(Outcome.DECLINED, "", "processor_rejected", error.message)
        if result.outcome is Outcome.PENDING:
            raise Interrupted(dependency_unavailable("the payment processor"))
        if result.outcome is Outcome.DECLINED:
            record = await self.cancel(record)
            code = result.decline_code or "capture_declined"
            return await self._log.fail(record, code, result.message, step="capture")
        return await self._log.commit(record, step="capture", result_ref=result.processor_ref, next_step="credit")

    async def _credit_destination(self, record: PaymentRecord, amount: Money) -> PaymentRecord:
        p = record.row
        postings = [Posting(SETTLEMENT, -amount), Posting(wallet_account(p.destination_wallet_id), amount)]

        async def credit(ref: str) -> str:
            tx = await self._wallet_svc.post(ref, postings, str(p.payment_id), f"card payment {p.payment_id}")
            return str(tx.transaction_id)

        try:
            transaction_id = await self._steps.run(
                "payment", p.payment_id, "credit", credit, started=record.started == "credit"
            )
        except WalletRefused as refused:
            # The card is charged but the destination refuses the money: give it back to the card.
            record = await self._log.commit(record, step="credit", status="FAILED", reason=refused.failure_code)
            return await self._refund_captured_card(record, amount, refused.failure_code)
        except WalletUnavailable:
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
        return await self._log.succeeded(record, "credit", transaction_id, amount)

    async def _refund_captured_card(self, record: PaymentRecord, amount: Money, code: str) -> PaymentRecord:
        p = record.row

        async def refund(ref: str) -> ProcessorResult:
            return await self._processor.refund(
                idempotency_key=ref, authorization_ref=p.authorization_ref, amount=amount
            )

        async def find(ref: str) -> ProcessorResult | None:
            return await self._processor.find(
                Operation.REFUND, idempotency_key=ref, authorization_ref=p.authorization_ref
            )

        result = await self._steps.processor_step("payment", p.payment_id, "compensate", refund, find)
        if result.outcome is Outcome.DECLINED:
            # Money would be lost: keep retrying rather than finishing; operators see the attempts grow.
            log.error("payment %s: compensating card refund declined (%s)", p.payment_id, result.decline_code)
            raise Interrupted(dependency_unavailable("the payment processor"))
        record = await self._log.commit(record, step="compensate", result_ref=result.processor_ref)
        message = "the destination wallet refused the credit; the card was refunded"
        return await self._log.fail(record, code, message, step=None)

    async def cancel(self, record: PaymentRecord) -> PaymentRecord:
        """Voids the authorization, if there is one."""
        p = record.row
        authorization = p.authorization_ref or await self._resolve_authorization(p)
        if authorization is None:
            return record

        async def void(ref: str) -> ProcessorResult:
            return await self._processor.void(idempotency_key=ref, authorization_ref=authorization)

        async def find(_: str) -> ProcessorResult | None:
            return await self._processor.find(Operation.VOID, idempotency_key="", authorization_ref=authorization)

        try:
            result = await self._steps.processor_step("payment", p.payment_id, "void", void, find)
        except ProcessorRejected:
            result = ProcessorResult(Outcome.DECLINED, "")
        # A declined void means nothing is left to void (already voided or lapsed).
        return await self._log.commit(record, step="void", result_ref=result.processor_ref, reason=result.decline_code)

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
