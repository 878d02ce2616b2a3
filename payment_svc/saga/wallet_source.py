"""A payment from a wallet: hold the funds, capture the hold into the destination, or release it."""

from __future__ import annotations

from payment_svc.ledger import Ledger, LedgerRefused, LedgerUnavailable, wallet_account
from payment_svc.lifecycle import CaptureMethod
from payment_svc.saga.payments import PaymentLog, PaymentRecord
from payment_svc.saga.steps import Interrupted, Steps, dependency_unavailable
from payment_svc.store import AnyRow
from paymesh_runtime.errors import PaymeshError
from paymesh_runtime.money import Money


class WalletSource:
    def __init__(self, steps: Steps, log: PaymentLog, ledger: Ledger, automatic_hold_ttl_seconds: int) -> None:
        self._steps = steps
        self._log = log
        self._ledger = ledger
        self._automatic_hold_ttl = automatic_hold_ttl_seconds

    def _hold_ttl(self, p: AnyRow) -> int:
        if p.capture_method == CaptureMethod.MANUAL:
            # Outlives the capture window: our sweeper cancels first, the wallet's is the backstop.
            return int(self._steps.config.capture_window.total_seconds()) + 3600
        return self._automatic_hold_ttl

    async def _create_hold(self, p: AnyRow, reference: str) -> str:
        hold = await self._ledger.create_hold(
            reference, p.source_wallet_id, Money(p.currency, p.amount), str(p.payment_id), self._hold_ttl(p)
        )
        return str(hold.hold_id)

    async def authorize(self, record: PaymentRecord) -> tuple[PaymentRecord, PaymeshError | None]:
        """Holds the payment's amount on the source wallet."""
        p = record.row
        try:
            hold_id = await self._steps.run(
                "payment", p.payment_id, "hold", lambda ref: self._create_hold(p, ref), started=record.started == "hold"
            )
        except LedgerRefused as refused:
            return await self._log.fail(record, refused.failure_code, refused.message, step="hold"), None
        except LedgerUnavailable:
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
        return await self._log.authorized(record, "hold", hold_id, "funds_held", {"hold_id": hold_id}), None

    async def settle(self, record: PaymentRecord) -> PaymentRecord:
        """Captures the hold into the destination wallet (the rest of the hold is released)."""
        p = record.row
        amount = Money(p.currency, p.capture_requested)
        destination = wallet_account(p.destination_wallet_id)

        async def capture(ref: str) -> str:
            reply = await self._ledger.capture_hold(ref, p.hold_id, amount, destination, f"payment {p.payment_id}")
            return str(reply.transaction.transaction_id)

        try:
            transaction_id = await self._steps.run(
                "payment", p.payment_id, "capture", capture, started=record.started == "capture"
            )
        except LedgerRefused as refused:
            # The hold expired or the destination refuses the credit: give back whatever is still held.
            record = await self.cancel(record)
            return await self._log.fail(record, refused.failure_code, refused.message, step="capture")
        except LedgerUnavailable:
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
        return await self._log.succeeded(record, "capture", transaction_id, amount)

    async def cancel(self, record: PaymentRecord) -> PaymentRecord:
        """Releases the hold, if there is one."""
        p = record.row
        hold_id = p.hold_id or await self._resolve_hold(p)
        if hold_id is None:
            return record

        async def release(ref: str) -> None:
            await self._ledger.release_hold(ref, hold_id)

        try:
            await self._steps.run("payment", p.payment_id, "release", release)
        except LedgerUnavailable:
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
        return await self._log.commit(record, step="release", result_ref=hold_id)

    async def _resolve_hold(self, p: AnyRow) -> str | None:
        """A hold step left STARTED by a crash: replaying it with its reference tells whether a hold exists."""
        step = (await self._steps.of(p.payment_id)).get("hold")
        if step is None or step.status == "FAILED":
            return None
        try:
            return await self._create_hold(p, step.reference)
        except LedgerRefused:
            return None
        except LedgerUnavailable:
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
