"""Check 3: the processor simulator's books (GET /v1/authorizations, /v1/refunds, /v1/payouts) match paymesh's.

- nothing was authorized, refunded or paid out twice under one idempotency key;
- each card payment's authorization (key `<payment id>:authorize`) is in the
  state its payment says: captured for the captured amount if SUCCEEDED,
  still authorized if it waits for capture, and not captured otherwise
  unless the captured card was refunded in full (the `compensate` step);
  refunded at the processor exactly what paymesh refunded;
- each processor refund and payout belongs to a paymesh refund, compensation
  or payout (by key) in the matching state and amount, and every SUCCEEDED
  card refund and payout has one; nothing is still pending;
- per currency: net card charges (captured - refunded) equal what paymesh's
  SUCCEEDED card payments kept, payouts paid equal paymesh's SUCCEEDED
  payouts, and the ledger's settlement account holds minus (charges - payouts).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TypeVar

from devstack.chaos.books import Payment, PaymentBooks, ProcessorBooks, SimAuthorization, SimPayout, SimRefund
from devstack.chaos.model import Snapshot
from devstack.chaos.verdict import CheckResult, nonzero, sum_by

Keyed = TypeVar("Keyed", SimAuthorization, SimRefund, SimPayout)


def _by_key(result: CheckResult, what: str, objects: Iterable[Keyed]) -> dict[str, list[Keyed]]:
    found: dict[str, list[Keyed]] = defaultdict(list)
    for obj in objects:
        found[obj.key].append(obj)
    for key, same in found.items():
        if key and len(same) > 1:
            result.fail(f"{len(same)} {what} under one key {key}: {[o.sim_id for o in same]}")
        if not key:
            result.fail(f"{len(same)} {what} without an idempotency key: {[o.sim_id for o in same]}")
    return found


def check_processor(snapshot: Snapshot) -> CheckResult:
    result = CheckResult("3", "processor books match paymesh's")
    sim, books = snapshot.processor, snapshot.payments
    auths = _by_key(result, "authorizations", sim.authorizations)
    refunds = _by_key(result, "refunds", sim.refunds)
    payouts = _by_key(result, "payouts", sim.payouts)
    result.checked = len(sim.authorizations) + len(sim.refunds) + len(sim.payouts)
    card_payments = {p.payment_id: p for p in books.payments.values() if p.card_token}
    compensated = _compensations(result, books, refunds)
    for payment in card_payments.values():
        found = auths.get(f"{payment.payment_id}:authorize", [])
        auth = found[0] if found else None
        _check_authorization(result, payment, auth, compensated.get(payment.payment_id, 0))
    for key, same in auths.items():
        payment_id = key.removesuffix(":authorize")
        captured = [a for a in same if a.status == "captured"]
        if captured and payment_id not in card_payments:
            result.fail(f"authorization {captured[0].sim_id} under key {key} was captured, for no paymesh card payment")
    _check_refunds(result, books, refunds)
    _check_payouts(result, books, payouts)
    _check_totals(result, snapshot, card_payments.values())
    return result


def _compensations(result: CheckResult, books: PaymentBooks, refunds: dict[str, list[SimRefund]]) -> dict[str, int]:
    """payment id -> what its `compensate` step refunded to the card (the credit was refused after the capture)."""
    found: dict[str, int] = {}
    for key, same in refunds.items():
        if not key.endswith(":compensate"):
            continue
        payment_id = key.removesuffix(":compensate")
        payment = books.payments.get(payment_id)
        refund = same[0]
        status, amount = refund.status, refund.amount
        if payment is None or payment.state != "FAILED" or status != "succeeded":
            shown = payment.state if payment else "unknown"
            result.fail(f"compensating refund {refund.sim_id} ({status}) for payment {payment_id}, which is {shown}")
        found[payment_id] = amount if status == "succeeded" else 0
    return found


def _check_authorization(result: CheckResult, p: Payment, auth: SimAuthorization | None, compensated: int) -> None:
    what = f"card payment {p.payment_id} ({p.state}, {p.amount_captured} captured, {p.amount_refunded} refunded)"
    if auth is None:
        if p.state in ("SUCCEEDED", "REQUIRES_CAPTURE") or p.authorization_ref:
            result.fail(f"{what}: the processor has no authorization under its key")
        return
    result.count(f"authorizations {auth.status}")
    seen = (
        f"authorization {auth.sim_id} is {auth.status}, captured {auth.amount_captured}, "
        f"refunded {auth.amount_refunded}"
    )
    if p.authorization_ref and p.authorization_ref != auth.sim_id:
        result.fail(f"{what}: paymesh names authorization {p.authorization_ref}, its key names {auth.sim_id}")
    if p.state == "SUCCEEDED":
        if auth.status != "captured" or auth.amount_captured != p.amount_captured:
            result.fail(f"{what}: {seen}")
        elif auth.amount_refunded != p.amount_refunded:
            result.fail(f"{what}: {seen} (refunds differ)")
    elif p.state == "REQUIRES_CAPTURE":
        if auth.status != "authorized":
            result.fail(f"{what}: {seen}")
    elif auth.status == "captured" and (compensated != auth.amount_captured or auth.amount_refunded != compensated):
        result.fail(
            f"{what}: {seen}, compensated {compensated}: the card keeps money for a payment that did not happen"
        )


def _check_refunds(result: CheckResult, books: PaymentBooks, refunds: dict[str, list[SimRefund]]) -> None:
    for key, same in refunds.items():
        if key.endswith(":compensate"):
            continue
        refund_id = key.removesuffix(":refund")
        sim = same[0]
        status, amount = sim.status, sim.amount
        result.count(f"refunds {status}")
        ours = books.refunds.get(refund_id)
        expected = {"succeeded": "SUCCEEDED", "failed": "FAILED"}.get(status)
        if ours is None:
            result.fail(f"processor refund {sim.sim_id} ({status}, {amount}) under key {key}: no such paymesh refund")
        elif expected is None or ours.state != expected or ours.amount != amount:
            result.fail(f"processor refund {sim.sim_id} is {status} for {amount}; refund {refund_id} is "
                        f"{ours.state} for {ours.amount}")  # fmt: skip
    for refund in books.refunds.values():
        payment = books.payments.get(refund.payment_id)
        if refund.state == "SUCCEEDED" and payment is not None and payment.card_token:
            found = refunds.get(f"{refund.refund_id}:refund", [])
            if not found or found[0].status != "succeeded":
                result.fail(f"card refund {refund.refund_id} SUCCEEDED ({refund.amount}) but the processor shows "
                            f"{[o.status for o in found] or 'no refund'}")  # fmt: skip


def _check_payouts(result: CheckResult, books: PaymentBooks, payouts: dict[str, list[SimPayout]]) -> None:
    for key, same in payouts.items():
        payout_id = key.removesuffix(":payout")
        sim = same[0]
        status, amount = sim.status, sim.amount
        result.count(f"payouts {status}")
        ours = books.payouts.get(payout_id)
        expected = {"paid": "SUCCEEDED", "failed": "FAILED"}.get(status)
        if ours is None:
            result.fail(f"processor payout {sim.sim_id} ({status}, {amount}) under key {key}: no such paymesh payout")
        elif expected is None or ours.state != expected or ours.amount != amount:
            result.fail(f"processor payout {sim.sim_id} is {status} for {amount}; payout {payout_id} is "
                        f"{ours.state} for {ours.amount}")  # fmt: skip
    for payout in books.payouts.values():
        if payout.state == "SUCCEEDED":
            found = payouts.get(f"{payout.payout_id}:payout", [])
            if not found or found[0].status != "paid":
                result.fail(f"payout {payout.payout_id} SUCCEEDED ({payout.amount}) but the processor shows "
                            f"{[o.status for o in found] or 'no payout'}")  # fmt: skip


def net_charges(sim: ProcessorBooks) -> dict[str, int]:
    """Per currency: what the cards were charged and not refunded, by the processor's books."""
    return sum_by(
        (a.currency, a.amount_captured - a.amount_refunded) for a in sim.authorizations if a.status == "captured"
    )


def payouts_paid(sim: ProcessorBooks) -> dict[str, int]:
    return sum_by((o.currency, o.amount) for o in sim.payouts if o.status == "paid")


def _check_totals(result: CheckResult, snapshot: Snapshot, card_payments: Iterable[Payment]) -> None:
    sim, books, ledger = snapshot.processor, snapshot.payments, snapshot.ledger
    charges = nonzero(net_charges(sim))
    kept = nonzero(
        sum_by((p.currency, p.amount_captured - p.amount_refunded) for p in card_payments if p.state == "SUCCEEDED")
    )
    if charges != kept:
        result.fail(f"net card charges at the processor {charges} differ from what paymesh's card payments kept {kept}")
    paid = nonzero(payouts_paid(sim))
    succeeded = nonzero(sum_by((o.currency, o.amount) for o in books.payouts.values() if o.state == "SUCCEEDED"))
    if paid != succeeded:
        result.fail(f"payouts paid at the processor {paid} differ from paymesh's SUCCEEDED payouts {succeeded}")
    for currency in sorted(set(charges) | set(paid) | _settlement_currencies(snapshot)):
        account = ledger.settlement(currency)
        posted = account.posted if account else 0
        expected = -(charges.get(currency, 0) - paid.get(currency, 0))
        result.count(f"net card charges {currency}", charges.get(currency, 0))
        result.count(f"payouts paid {currency}", paid.get(currency, 0))
        if posted != expected:
            result.fail(f"settlement account {currency} posted {posted}; the processor's books say {expected} "
                        f"(charges {charges.get(currency, 0)} - payouts {paid.get(currency, 0)}, negated)")  # fmt: skip


def _settlement_currencies(snapshot: Snapshot) -> set[str]:
    return {a.currency for a in snapshot.ledger.accounts.values() if a.system_account == "EXTERNAL_SETTLEMENT"}
