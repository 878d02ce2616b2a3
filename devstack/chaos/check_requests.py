"""Check 1: what the clients were told holds, and nothing is left half done.

1a  every request answered 2xx names a resource that exists and is now final
    (a MANUAL payment nobody captured may rest in REQUIRES_CAPTURE); an answer
    that already gave a final state gave the one the resource has now;
1b  every payment, refund and payout payment_svc holds is final (or an
    uncaptured MANUAL payment), whatever its client was told;
1c  idempotency: each resource was created by exactly one Idempotency-Key, the
    2xx answers under one key all name that resource, and no key is left
    IN_PROGRESS once its resource rests;
1d  every error answer is a documented one: no 500 INTERNAL_ERROR (docs/api.md:
    "an unexpected error"; a dependency that does not answer is 503
    DEPENDENCY_UNAVAILABLE, which a client may retry with its key).
"""

from __future__ import annotations

from collections import defaultdict

from devstack.chaos.books import Payment, PaymentBooks
from devstack.chaos.model import RequestRecord, Snapshot
from devstack.chaos.verdict import FINAL_STATES, CheckResult

# The create calls and the payment_svc method each records its key under.
CREATE_OPS = {"deposit": "payment", "purchase": "payment", "pay": "payment", "refund": "refund", "payout": "payout"}


def _state_of(books: PaymentBooks, resource: str, resource_id: str) -> tuple[str, Payment | None] | None:
    if resource == "payment":
        payment = books.payments.get(resource_id)
        return None if payment is None else (payment.state, payment)
    if resource == "refund":
        refund = books.refunds.get(resource_id)
        return None if refund is None else (refund.state, None)
    if resource == "payout":
        payout = books.payouts.get(resource_id)
        return None if payout is None else (payout.state, None)
    return None


def _may_rest(payment: Payment | None, captured: set[str]) -> bool:
    """A MANUAL payment in REQUIRES_CAPTURE is fine as long as no capture of it was answered 2xx."""
    return (
        payment is not None
        and payment.state == "REQUIRES_CAPTURE"
        and payment.capture_method == "MANUAL"
        and payment.payment_id not in captured
    )


def _captured(requests: list[RequestRecord]) -> set[str]:
    return {r.payment_id for r in requests if r.op == "capture" and r.ok}


def check_answers(snapshot: Snapshot) -> CheckResult:
    """1a: every 2xx answer names a resource now final, in the state the answer gave if it gave a final one."""
    result = CheckResult("1a", "2xx answers name resources now final")
    captured = _captured(snapshot.requests)
    for r in snapshot.requests:
        if not r.ok or not r.resource_id:
            continue
        if r.resource == "wallet":
            result.checked += 1
            if r.resource_id not in snapshot.ledger.accounts:
                result.fail(
                    f"request #{r.seq} {r.op} answered {r.status} with wallet {r.resource_id}, unknown to wallet_svc"
                )
            continue
        if r.resource == "user":
            result.checked += 1
            if r.resource_id not in snapshot.users:
                result.fail(
                    f"request #{r.seq} register answered {r.status} with user {r.resource_id}, unknown to auth_svc"
                )
            continue
        if r.resource not in FINAL_STATES:
            continue
        result.checked += 1
        found = _state_of(snapshot.payments, r.resource, r.resource_id)
        if found is None:
            result.fail(f"request #{r.seq} {r.op} (key {r.key}) answered {r.status} with {r.resource} {r.resource_id}, "
                        "which payment_svc does not have")  # fmt: skip
            continue
        state, payment = found
        if state in FINAL_STATES[r.resource]:
            result.count(f"{r.resource} {state}")
        elif _may_rest(payment, captured):
            result.count("payment REQUIRES_CAPTURE (never captured)")
        else:
            result.fail(f"request #{r.seq} {r.op} (key {r.key}) answered {r.status} {r.state} for {r.resource} "
                        f"{r.resource_id}, which is still {state}")  # fmt: skip
        if r.state in FINAL_STATES[r.resource] and r.state != state:
            result.fail(f"request #{r.seq} {r.op} (key {r.key}) answered {r.resource} {r.resource_id} {r.state}, "
                        f"but it is now {state}")  # fmt: skip
    return result


def check_unfinished(snapshot: Snapshot) -> CheckResult:
    """1b: nothing payment_svc holds is left half done, answered or not."""
    result = CheckResult("1b", "every payment, refund and payout final")
    books = snapshot.payments
    captured = _captured(snapshot.requests)
    for payment in books.payments.values():
        result.checked += 1
        if payment.state in FINAL_STATES["payment"] or _may_rest(payment, captured):
            result.count(f"payment {payment.state}")
        else:
            action = f", requested action {payment.requested_action}" if payment.requested_action else ""
            result.fail(f"payment {payment.payment_id} ({payment.capture_method}, "
                        f"{'card' if payment.card_token else 'wallet'}) is {payment.state}{action}")  # fmt: skip
    for refund in books.refunds.values():
        result.checked += 1
        result.count(f"refund {refund.state}")
        if refund.state not in FINAL_STATES["refund"]:
            result.fail(f"refund {refund.refund_id} of payment {refund.payment_id} is {refund.state}")
    for payout in books.payouts.values():
        result.checked += 1
        result.count(f"payout {payout.state}")
        if payout.state not in FINAL_STATES["payout"]:
            result.fail(f"payout {payout.payout_id} is {payout.state}")
    unknown = [s for s in books.steps if s.outcome_unknown]
    if unknown:
        result.count("steps with an outcome asked about", len(unknown))
    return result


def check_idempotency(snapshot: Snapshot) -> CheckResult:
    """1c: one resource per key and one key per resource; answers match the key's resource; keys completed."""
    result = CheckResult("1c", "one resource per Idempotency-Key")
    books = snapshot.payments
    by_resource: dict[str, list[str]] = defaultdict(list)
    by_key: dict[tuple[str, str], str] = {}
    for key in books.keys:
        by_resource[key.resource_id].append(key.key)
        by_key[(key.caller_id, key.key)] = key.resource_id
        state = _resting_state(books, key.resource_id)
        if key.state != "DONE" and state is not None:
            result.fail(f"key {key.key} of {key.caller_id} is still {key.state} although its resource "
                        f"{key.resource_id} rests in {state}")  # fmt: skip
    resources = [*books.payments, *books.refunds, *books.payouts]
    for resource_id in resources:
        result.checked += 1
        keys = by_resource.get(resource_id, [])
        if len(keys) != 1:
            result.fail(f"resource {resource_id} was created under {len(keys)} idempotency keys: {keys}")
    answers: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in snapshot.requests:
        if r.op in CREATE_OPS and r.ok and r.resource_id:
            answers[(r.actor, r.key)].add(r.resource_id)
    for (actor, idempotency_key), named in answers.items():
        what = f"key {idempotency_key} of {actor} was answered with {sorted(named)}"
        if len(named) > 1:
            result.fail(f"{what}: {len(named)} different resources")
        recorded = by_key.get((actor, idempotency_key))
        if recorded is not None and recorded not in named:
            result.fail(f"{what}, but payment_svc recorded {recorded}")
        if recorded is None:
            result.fail(f"{what}, but payment_svc has no such key")
    result.count("keys", len(books.keys))
    return result


def _resting_state(books: PaymentBooks, resource_id: str) -> str | None:
    """The state of a resource that its creating call answers with (REQUIRES_CAPTURE or final), else None."""
    payment = books.payments.get(resource_id)
    if payment is not None:
        resting = payment.state in FINAL_STATES["payment"] or payment.state == "REQUIRES_CAPTURE"
        return payment.state if resting else None
    refund = books.refunds.get(resource_id)
    if refund is not None:
        return refund.state if refund.state in FINAL_STATES["refund"] else None
    payout = books.payouts.get(resource_id)
    if payout is not None:
        return payout.state if payout.state in FINAL_STATES["payout"] else None
    return None


def check_errors(snapshot: Snapshot) -> CheckResult:
    """1d: no answer (first or retried) was a 500: outages must answer 503 DEPENDENCY_UNAVAILABLE."""
    result = CheckResult("1d", "no 500 INTERNAL answers")
    internal: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in snapshot.requests:
        result.checked += len(r.attempts)
        for attempt in r.attempts:
            if attempt.status >= 500:
                result.count(f"{attempt.status} {attempt.reason}")
        if any(attempt.status == 500 for attempt in r.attempts):
            internal[r.op].append(r)
    for op, records in sorted(internal.items()):
        first = records[0]
        at = next(a.at for a in first.attempts if a.status == 500)
        result.fail(f"{len(records)} {op} requests answered 500 {first.reason or 'INTERNAL'}; e.g. #{first.seq} "
                    f"{first.method} {first.path} (key {first.key}) at {at:.1f}s")  # fmt: skip
    return result
