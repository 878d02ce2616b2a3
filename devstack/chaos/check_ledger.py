"""Check 2: the ledger's invariants, read from wallet_svc's database.

2a  all postings of each currency sum to zero;
2b  no customer or merchant wallet is below zero (posted, held, available);
2c  open holds are exactly those of the payments and payouts still open: a
    REQUIRES_CAPTURE wallet payment and an unfinished payout hold their
    amount, nothing final holds anything, each wallet's `held` is the sum of
    its open holds, and a captured hold belongs to a SUCCEEDED payment or payout
    and captured what it says;
2d  every wallet reconciles over its whole history: `posted` is the sum of
    its postings, and each posting's balance_after is the previous one plus
    its amount (in `seq` order);
2e  money per resource: the postings of each payment, refund and payout move
    exactly what its final state says (a SUCCEEDED payment its captured
    amount from source to destination, a SUCCEEDED refund back, a SUCCEEDED
    payout into settlement, anything else nothing), and no posting belongs to
    no resource.
"""

from __future__ import annotations

from collections import defaultdict

from devstack.chaos.books import Ledger, PaymentBooks, Posting
from devstack.chaos.model import Snapshot
from devstack.chaos.verdict import SETTLEMENT, CheckResult, nonzero, sum_by

OPEN_PAYOUT_STATES = frozenset({"PENDING", "PROCESSING"})


def check_zero_sum(snapshot: Snapshot) -> CheckResult:
    result = CheckResult("2a", "postings sum to zero per currency")
    ledger = snapshot.ledger
    result.checked = len(ledger.postings)
    totals = sum_by((p.currency, p.amount) for p in ledger.postings)
    for currency, total in sorted(totals.items()):
        result.count(f"{currency} postings", sum(1 for p in ledger.postings if p.currency == currency))
        if total != 0:
            result.fail(f"the postings in {currency} sum to {total}, not 0")
    return result


def check_no_negative(snapshot: Snapshot) -> CheckResult:
    result = CheckResult("2b", "no customer or merchant wallet below zero")
    for account in snapshot.ledger.accounts.values():
        if account.system_account:
            continue
        result.checked += 1
        if account.posted < 0 or account.held < 0 or account.posted - account.held < 0:
            result.fail(f"wallet {account.account_id} of {account.owner_id} ({account.currency}): "
                        f"posted {account.posted}, held {account.held}")  # fmt: skip
    return result


def check_holds(snapshot: Snapshot) -> CheckResult:
    result = CheckResult("2c", "open holds match open payments and payouts")
    ledger, books = snapshot.ledger, snapshot.payments
    holds = ledger.holds
    result.checked = len(holds)
    for hold in holds.values():
        result.count(f"holds {hold.state}")
        payment, payout = books.payments.get(hold.payment_id), books.payouts.get(hold.payment_id)
        owner_state = payment.state if payment else payout.state if payout else None
        if hold.state == "OPEN":
            if owner_state is None:
                result.fail(f"open hold {hold.hold_id} ({hold.amount} {hold.currency}) for {hold.payment_id!r}, "
                            "which is no payment or payout")  # fmt: skip
            elif payment is not None and (payment.state != "REQUIRES_CAPTURE" or payment.hold_id != hold.hold_id):
                result.fail(f"open hold {hold.hold_id} ({hold.amount} {hold.currency}) for payment "
                            f"{payment.payment_id}, which is {payment.state}")  # fmt: skip
            elif payout is not None and payout.state not in OPEN_PAYOUT_STATES:
                result.fail(f"open hold {hold.hold_id} ({hold.amount} {hold.currency}) for payout "
                            f"{payout.payout_id}, which is {payout.state}")  # fmt: skip
        elif hold.state == "CAPTURED":
            captured = payment.amount_captured if payment else payout.amount if payout else None
            if owner_state != "SUCCEEDED" or captured != hold.captured_amount:
                result.fail(f"hold {hold.hold_id} captured {hold.captured_amount} {hold.currency} for "
                            f"{hold.payment_id}, which is {owner_state} with {captured} captured")  # fmt: skip
    for payment in books.payments.values():
        if payment.state == "REQUIRES_CAPTURE" and payment.source_wallet_id:
            _expect_open(result, ledger, f"payment {payment.payment_id}", payment.hold_id, payment.amount,
                         payment.source_wallet_id)  # fmt: skip
    for payout in books.payouts.values():
        if payout.state in OPEN_PAYOUT_STATES and payout.hold_id:
            _expect_open(result, ledger, f"payout {payout.payout_id}", payout.hold_id, payout.amount, payout.wallet_id)
    held = sum_by((h.wallet_id, h.amount) for h in holds.values() if h.state == "OPEN")
    for account in ledger.accounts.values():
        if account.held != held.get(account.account_id, 0):
            result.fail(f"wallet {account.account_id} says held {account.held}; its open holds add up to "
                        f"{held.get(account.account_id, 0)}")  # fmt: skip
    return result


def _expect_open(result: CheckResult, ledger: Ledger, what: str, hold_id: str, amount: int, wallet_id: str) -> None:
    hold = ledger.holds.get(hold_id)
    if hold is None or hold.state != "OPEN" or hold.amount != amount or hold.wallet_id != wallet_id:
        shown = "none" if hold is None else f"{hold.state} {hold.amount} on {hold.wallet_id}"
        result.fail(f"{what} is open and should hold {amount} on {wallet_id}; its hold {hold_id or '-'}: {shown}")


def check_reconciliation(snapshot: Snapshot) -> CheckResult:
    result = CheckResult("2d", "every wallet reconciles over its history")
    by_account: dict[str, list[Posting]] = defaultdict(list)
    for posting in snapshot.ledger.postings:
        by_account[posting.account_id].append(posting)
    for account in snapshot.ledger.accounts.values():
        result.checked += 1
        running = 0
        for posting in sorted(by_account.get(account.account_id, []), key=lambda p: p.seq):
            running += posting.amount
            if posting.balance_after != running:
                result.fail(f"account {account.account_id}: posting seq {posting.seq} ({posting.amount:+}) says "
                            f"balance_after {posting.balance_after}; its history gives {running}")  # fmt: skip
                running = posting.balance_after  # report each break once, not every posting after it
        total = sum(p.amount for p in by_account.get(account.account_id, []))
        if account.posted != total:
            result.fail(f"account {account.account_id} says posted {account.posted}; its postings sum to {total}")
    orphans = set(by_account) - set(snapshot.ledger.accounts)
    for account_id in sorted(orphans):
        result.fail(f"postings to an unknown account {account_id}")
    return result


def _settlement(currency: str) -> str:
    return f"{SETTLEMENT}:{currency}"


def expected_movements(books: PaymentBooks) -> dict[str, dict[str, int]]:
    """resource id -> account -> what its final state says the ledger moved (system accounts as '<name>:<cur>')."""
    moves: dict[str, dict[str, int]] = {}
    for p in books.payments.values():
        if p.state == "SUCCEEDED":
            source = p.source_wallet_id or _settlement(p.currency)
            moves[p.payment_id] = nonzero(
                sum_by([(source, -p.amount_captured), (p.destination_wallet_id, p.amount_captured)])
            )
    for r in books.refunds.values():
        paid = books.payments.get(r.payment_id)
        if r.state == "SUCCEEDED" and paid is not None:
            back_to = paid.source_wallet_id or _settlement(r.currency)
            moves[r.refund_id] = nonzero(sum_by([(paid.destination_wallet_id, -r.amount), (back_to, r.amount)]))
    for o in books.payouts.values():
        if o.state == "SUCCEEDED":
            moves[o.payout_id] = {o.wallet_id: -o.amount, _settlement(o.currency): o.amount}
    return moves


def actual_movements(ledger: Ledger) -> dict[str, dict[str, int]]:
    """resource id (ledger_transactions.payment_id) -> account -> net amount of its postings."""
    totals: dict[str, dict[str, int]] = defaultdict(dict)
    for posting in ledger.postings:
        tx = ledger.transactions.get(posting.transaction_id)
        owner = tx.payment_id if tx is not None else f"(transaction {posting.transaction_id} missing)"
        account = ledger.accounts.get(posting.account_id)
        system = account is not None and account.system_account
        name = f"{account.system_account}:{account.currency}" if account and system else posting.account_id
        totals[owner][name] = totals[owner].get(name, 0) + posting.amount
    return {owner: nonzero(moves) for owner, moves in totals.items()}


def check_money_per_resource(snapshot: Snapshot) -> CheckResult:
    result = CheckResult("2e", "each resource moved exactly what its state says")
    books = snapshot.payments
    expected, actual = expected_movements(books), actual_movements(snapshot.ledger)
    known = {**dict.fromkeys(books.payments, "payment"), **dict.fromkeys(books.refunds, "refund"),
             **dict.fromkeys(books.payouts, "payout")}  # fmt: skip
    for resource_id, kind in known.items():
        result.checked += 1
        want, got = expected.get(resource_id, {}), actual.get(resource_id, {})
        if want != got:
            state = _state(books, kind, resource_id)
            result.fail(f"{kind} {resource_id} ({state}) should have moved {want or 'nothing'}; "
                        f"its postings moved {got or 'nothing'}")  # fmt: skip
    for owner in sorted(set(actual) - set(known)):
        if actual[owner]:
            result.fail(f"postings of {owner!r}, which is no payment, refund or payout, moved {actual[owner]}")
    moved = sum(abs(amount) for moves in actual.values() for amount in moves.values()) // 2
    result.count("moved in total (minor units)", moved)
    return result


def _state(books: PaymentBooks, kind: str, resource_id: str) -> str:
    if kind == "payment":
        return books.payments[resource_id].state
    if kind == "refund":
        return books.refunds[resource_id].state
    return books.payouts[resource_id].state
