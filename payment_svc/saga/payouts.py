"""Payouts: hold the wallet → send to the processor → capture the hold into settlement, or release it.

The processor often answers PENDING: the payout rests PROCESSING until its
signed webhook stores the outcome (payment_svc.webhooks), then the flow
captures or releases the hold. A webhook that does not come within
`processor_poll` is not waited for forever: the recovery worker asks the
processor (polls) and stores the outcome it reports.

The hold is released only on a definite answer that no money left: a decline,
a refusal of the request, or a processor that cannot have received it. A
payout whose send may have reached the processor (timeout, lost connection,
5xx, crash) keeps its hold until the processor, asked again with the same key,
says what happened (Steps.processor_step).
"""

from __future__ import annotations

import uuid
from typing import Any

from payment_svc import store, views
from payment_svc.events import PaymentEvents
from payment_svc.idempotency import IdempotencyKeys
from payment_svc.lifecycle import FINAL_PAYOUT_STATES, RESTING_PAYOUT_STATES, PayoutState, check_payout_transition
from payment_svc.processor import (
    Operation,
    Outcome,
    Processor,
    ProcessorRejected,
    ProcessorResult,
    ProcessorUnavailable,
)
from payment_svc.saga.steps import (
    Driven,
    Interrupted,
    Steps,
    dependency_unavailable,
    processor_unavailable,
    recorded_response,
)
from payment_svc.store import AnyRow
from payment_svc.wallet_client import SETTLEMENT, WalletClient, WalletRefused, WalletUnavailable
from paymesh_runtime.errors import PaymeshError
from paymesh_runtime.money import Money


def _check_transition(current: str, target: str) -> None:
    check_payout_transition(PayoutState(current), PayoutState(target))


class PayoutFlow:
    def __init__(
        self,
        steps: Steps,
        wallet_svc: WalletClient,
        processor: Processor,
        events: PaymentEvents,
        keys: IdempotencyKeys,
        hold_ttl_seconds: int,
    ) -> None:
        self._steps = steps
        self._wallet_svc = wallet_svc
        self._processor = processor
        self._events = events
        self._keys = keys
        self._hold_ttl = hold_ttl_seconds

    async def drive(self, payout_id: uuid.UUID) -> Driven:
        return await self._steps.drive("payout", payout_id, self._advance)

    async def _advance(self, payout_id: uuid.UUID) -> Driven:
        error: PaymeshError | None = None
        sent = False
        while True:
            o = await self._steps.load("payout", payout_id)
            state = PayoutState(o.state)
            if state in FINAL_PAYOUT_STATES:
                return Driven(views.payout(o), error)
            if o.processor_outcome == "SUCCEEDED":
                await self._capture(o)
            elif o.processor_outcome == "DECLINED":
                await self._release(o, o.processor_decline_code or "payout_declined", settled=True)
            elif state is PayoutState.PROCESSING:
                if sent:
                    return Driven(views.payout(o), error)  # the processor's webhook settles it
                if not await self._poll(o):
                    return Driven(views.payout(o), error)  # still pending: polled again later
            elif o.hold_id is None:
                await self._hold(o)
            else:
                error = await self._send(o)
                sent = True

    async def _commit(
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
        settled: str = "",
    ) -> None:
        """One transaction: step result, state change + transition, event, idempotency response.

        `settled` (DONE or FAILED): the processor's reported outcome also closes a payout step
        whose own answer never came (it stays STARTED while the outcome is unknown)."""
        async with self._steps.engine.begin() as conn:
            if settled:
                await store.close_started_step(conn, o.payout_id, "payout", settled, o.processor_ref or "")
            row, _ = await self._steps.write_result(
                conn, "payout", o, o.payout_id, step=step, status=status, result_ref=result_ref, to_state=to_state,
                reason=reason, values=values or {},
                check_transition=_check_transition,
            )  # fmt: skip
            if row.state != o.state:
                message = views.payout(row)
                await self._events.payout_changed(conn, message, created=False)
                if PayoutState(row.state) in RESTING_PAYOUT_STATES:
                    await self._keys.complete(conn, o.payout_id, recorded_response(message, error))
        self._steps.after_commit(step, status)

    async def _hold(self, o: AnyRow) -> None:
        async def hold(ref: str) -> str:
            created = await self._wallet_svc.create_hold(
                ref, o.wallet_id, Money(o.currency, o.amount), str(o.payout_id), self._hold_ttl
            )
            return str(created.hold_id)

        try:
            hold_id = await self._steps.run("payout", o.payout_id, "hold", hold)
        except WalletRefused as refused:
            await self._commit(
                o, step="hold", status="FAILED", to_state=PayoutState.FAILED, reason=refused.failure_code,
                values={"failure_code": refused.failure_code},
            )  # fmt: skip
            return
        except WalletUnavailable:
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
        await self._commit(o, step="hold", result_ref=hold_id, values={"hold_id": hold_id})

    async def _send(self, o: AnyRow) -> PaymeshError | None:
        money = Money(o.currency, o.amount)

        async def payout(ref: str) -> ProcessorResult:
            return await self._processor.payout(
                idempotency_key=ref, bank_account_token=o.bank_account_token, amount=money
            )

        async def find(ref: str) -> ProcessorResult | None:
            return await self._processor.find(Operation.PAYOUT, idempotency_key=ref)

        try:
            result = await self._steps.processor_step("payout", o.payout_id, "payout", payout, find, fail_fast=True)
        except ProcessorUnavailable:
            # Nothing of this payout can have reached the processor: give the money back.
            failure = processor_unavailable(self._processor.name, o.payout_id)
            await self._release(o, "processor_unavailable", step="payout", error=failure)
            return failure
        except ProcessorRejected:
            await self._release(o, "processor_rejected", step="payout")
            return None
        if result.outcome is Outcome.DECLINED:
            await self._release(o, result.decline_code or "payout_declined", step="payout")
            return None
        values: dict[str, Any] = {"processor_ref": result.processor_ref or None}
        if result.outcome is Outcome.SUCCEEDED:
            values["processor_outcome"] = "SUCCEEDED"
            await self._commit(o, step="payout", result_ref=result.processor_ref, values=values)
        else:
            values |= self._steps.recheck_later()
            await self._commit(
                o, step="payout", result_ref=result.processor_ref, to_state=PayoutState.PROCESSING,
                reason="sent_to_processor", values=values,
            )  # fmt: skip
        return None

    async def _poll(self, o: AnyRow) -> bool:
        """Asks the processor about a payout whose webhook has not come; True once an outcome is stored."""

        async def find(ref: str) -> ProcessorResult | None:
            return await self._processor.find(Operation.PAYOUT, idempotency_key=ref)

        return await self._steps.poll("payout", o.payout_id, "payout", find)

    async def _capture(self, o: AnyRow) -> None:
        async def capture(ref: str) -> str:
            reply = await self._wallet_svc.capture_hold(
                ref, o.hold_id, Money(o.currency, o.amount), SETTLEMENT, f"payout {o.payout_id}"
            )
            return str(reply.transaction.transaction_id)

        try:
            transaction_id = await self._steps.run("payout", o.payout_id, "capture", capture)
        except (WalletRefused, WalletUnavailable):
            # The money left through the processor: the capture must happen; retry until it does.
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
        await self._commit(
            o, step="capture", result_ref=transaction_id, to_state=PayoutState.SUCCEEDED, reason="paid", settled="DONE"
        )

    async def _release(
        self,
        o: AnyRow,
        code: str,
        *,
        step: str | None = None,
        error: PaymeshError | None = None,
        settled: bool = False,
    ) -> None:
        hold_id = o.hold_id

        async def release(ref: str) -> None:
            await self._wallet_svc.release_hold(ref, hold_id)

        try:
            await self._steps.run("payout", o.payout_id, "release", release)
        except (WalletRefused, WalletUnavailable):
            raise Interrupted(dependency_unavailable("wallet_svc")) from None
        if step is not None:
            async with self._steps.engine.begin() as conn:
                await store.finish_step(conn, o.payout_id, step, "FAILED", "", code)
        await self._commit(
            o, step="release", result_ref=hold_id, to_state=PayoutState.FAILED, reason=code,
            values={"failure_code": code}, error=error, settled="FAILED" if settled else "",
        )  # fmt: skip
