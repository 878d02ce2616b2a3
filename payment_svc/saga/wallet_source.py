"""A payment from a wallet.

AUTOMATIC: one ledger transaction, payer → payee (`transfer`). Requests make it
in batches (payment_svc.transfers); this saga step finishes a payment a batch
left without a definitive answer, posting it again with the same reference.
MANUAL: hold the funds, capture the hold into the destination later, or release it.
"""

from __future__ import annotations

import logging

from payment_svc.lifecycle import CaptureMethod, PaymentState
from payment_svc.saga.payments import PaymentLog, PaymentRecord
from payment_svc.saga.steps import Interrupted, Steps, dependency_unavailable
from payment_svc.store import AnyRow
from payment_svc.wallet_client import Posting, WalletClient, WalletRefused, WalletUnavailable, wallet_account
from paymesh_runtime.errors import PaymeshError
from paymesh_runtime.money import Money

log = logging.getLogger(__name__)


class WalletSource:
    def __init__(
        self, steps: Steps, log: PaymentLog, wallet_svc: WalletClient, automatic_hold_ttl_seconds: int
    ) -> None:
        self._steps = steps
        self._log = log
        self._wallet_svc = wallet_svc
        self._automatic_hold_ttl = automatic_hold_ttl_seconds

    def _hold_ttl(self, p: AnyRow) -> int:
        if p.capture_method == CaptureMethod.MANUAL:
            # Outlives the capture window: our sweeper cancels first, the wallet's is the backstop.
            return int(self._steps.config.capture_window.total_seconds()) + 3600
        return self._automatic_hold_ttl

    async def _create_hold(self, p: AnyRow, reference: str) -> str:
        hold = await self._wallet_svc.create_hold(
            reference, p.source_wallet_id, Money(p.currency, p.amount), str(p.payment_id), self._hold_ttl(p)
        )
        return str(hold.hold_id)

    async def authorize(self, record: PaymentRecord) -> tuple[PaymentRecord, PaymeshError | None]:
        """Transfers an automatic payment; holds the amount of a manual one on the source wallet."""
        p = record.row
        if p.capture_method == CaptureMethod.AUTOMATIC and await self._transfers(record):
            return await self._transfer(record), None
        try:
            hold_id = await self._steps.run(
                "payment", p.payment_id, "hold", lambda ref: self._create_hold(p, ref), started=record.started == "hold"
            )
        except WalletRefused as refused:
            return await self._log.fail(record, refused.failure_code, refused.message, step="hold"), None
        except WalletUnavailable:
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
        return await self._log.authorized(record, "hold", hold_id, "funds_held", {"hold_id": hold_id}), None

    async def _transfers(self, record: PaymentRecord) -> bool:
        """An automatic payment is one transfer, unless it started with a hold (made before transfers)."""
        if record.started is not None:
            return record.started == "transfer"
        return "hold" not in await self._steps.of(record.payment_id)

    async def _transfer(self, record: PaymentRecord) -> PaymentRecord:
        p = record.row
        amount = Money(p.currency, p.amount)
        postings = [
            Posting(wallet_account(p.source_wallet_id), -amount),
            Posting(wallet_account(p.destination_wallet_id), amount),
        ]

        async def transfer(ref: str) -> str:
            tx = await self._wallet_svc.post(ref, postings, str(p.payment_id), f"payment {p.payment_id}")
            return str(tx.transaction_id)

        try:
            transaction_id = await self._steps.run(
                "payment", p.payment_id, "transfer", transfer, started=record.started == "transfer"
            )
        except WalletRefused as refused:
            return await self._log.fail(record, refused.failure_code, refused.message, step="transfer")
        except WalletUnavailable:
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
        record = await self._log.commit(
            record, step="transfer", result_ref=transaction_id, to_state=PaymentState.PROCESSING,
            reason="transfer_posted", values={"capture_requested": p.amount},
        )  # fmt: skip
        return await self._log.succeeded(record, None, transaction_id, amount)

    async def settle(self, record: PaymentRecord) -> PaymentRecord:
        """Captures the hold into the destination wallet (the rest of the hold is released); for a
        transfer, whose step moved the money already, records the success."""
        p = record.row
        if p.capture_method == CaptureMethod.AUTOMATIC and p.hold_id is None:
            return await self._transferred(record)
        amount = Money(p.currency, p.capture_requested)
        destination = wallet_account(p.destination_wallet_id)

        async def capture(ref: str) -> str:
            reply = await self._wallet_svc.capture_hold(ref, p.hold_id, amount, destination, f"payment {p.payment_id}")
            return str(reply.transaction.transaction_id)

        try:
            transaction_id = await self._steps.run(
                "payment", p.payment_id, "capture", capture, started=record.started == "capture"
            )
        except WalletRefused as refused:
            # The hold expired or the destination refuses the credit: give back whatever is still held.
            record = await self.cancel(record)
            return await self._log.fail(record, refused.failure_code, refused.message, step="capture")
        except WalletUnavailable:
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
        return await self._log.succeeded(record, "capture", transaction_id, amount)

    async def _transferred(self, record: PaymentRecord) -> PaymentRecord:
        """A transfer is PROCESSING only once its step is DONE (the money moved): the process stopped
        before the commit of SUCCEEDED, which is all that is left to do. Never a capture: there is no hold."""
        p = record.row
        transfer = (await self._steps.of(p.payment_id)).get("transfer")
        if transfer is None or transfer.status != "DONE":
            # Not a state this code writes: keep the payment for an operator rather than guess.
            log.error("payment %s is PROCESSING without a hold or a posted transfer", p.payment_id)
            raise Interrupted(dependency_unavailable("wallet_svc"))
        return await self._log.succeeded(record, None, transfer.result_ref, Money(p.currency, p.amount))

    async def cancel(self, record: PaymentRecord) -> PaymentRecord:
        """Releases the hold, if there is one."""
        p = record.row
        hold_id = p.hold_id or await self._resolve_hold(p)
        if hold_id is None:
            return record

        async def release(ref: str) -> None:
            await self._wallet_svc.release_hold(ref, hold_id)

        try:
            await self._steps.run("payment", p.payment_id, "release", release)
        except WalletUnavailable:
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
        return await self._log.commit(record, step="release", result_ref=hold_id)

    async def _resolve_hold(self, p: AnyRow) -> str | None:
        """A hold step left STARTED by a crash: replaying it with its reference tells whether a hold exists."""
        step = (await self._steps.of(p.payment_id)).get("hold")
        if step is None or step.status == "FAILED":
            return None
        try:
            return await self._create_hold(p, step.reference)
        except WalletRefused:
            return None
        except WalletUnavailable:
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
