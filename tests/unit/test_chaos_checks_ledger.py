"""Checks 1 and 2 of the chaos harness: each broken thing is caught by exactly the check meant for it."""

from __future__ import annotations

import dataclasses

from devstack.chaos.books import Posting
from devstack.chaos.check_ledger import actual_movements, expected_movements
from devstack.chaos.model import Attempt
from tests.unit.test_chaos_books import ALICE, ALICE_USD, SETTLEMENT_USD, SHOP, SHOP_USD, failing, world


def _only(found: dict[str, list[str]], key: str, *fragments: str) -> None:
    assert set(found) == {key}, found
    text = "\n".join(found[key])
    for fragment in fragments:
        assert fragment in text, text


# --- 1: answers, unfinished work, idempotency, errors ---------------------------------------


def test_a_2xx_answer_for_a_payment_that_is_not_final_is_a_violation() -> None:
    w = world()
    pid = w.purchase(100)
    payments = w.snapshot.payments.payments
    payments[pid] = dataclasses.replace(payments[pid], state="PROCESSING")
    w.snapshot.payments.transitions = [t for t in w.snapshot.payments.transitions if t.resource_id != pid]
    w.snapshot.events = [e for e in w.snapshot.events if e.resource_id != pid]
    w.path("payment", pid, ["PENDING", "PROCESSING"])
    found = failing(w.snapshot)
    assert "still PROCESSING" in "\n".join(found["1a"])
    assert f"payment {pid} (AUTOMATIC, wallet) is PROCESSING" in found["1b"]


def test_a_final_answer_contradicted_by_the_database_is_a_violation() -> None:
    w = world()
    record = w.snapshot.requests[0]
    w.snapshot.requests[0] = dataclasses.replace(record, state="FAILED")
    _only(failing(w.snapshot), "1a", f"answered payment {record.resource_id} FAILED, but it is now SUCCEEDED")


def test_an_uncaptured_manual_payment_may_rest_unless_a_capture_was_answered() -> None:
    w = world()
    pid = next(p.payment_id for p in w.snapshot.payments.payments.values() if p.state == "REQUIRES_CAPTURE")
    assert failing(w.snapshot) == {}
    w.answered("capture", SHOP, "k-capture", "payment", pid, "SUCCEEDED", payment_id=pid)
    found = failing(w.snapshot)
    assert set(found) == {"1a", "1b"}
    assert any("still REQUIRES_CAPTURE" in v for v in found["1a"])


def test_a_resource_created_under_two_keys_or_answered_as_two_resources_is_a_violation() -> None:
    w = world()
    pid = w.snapshot.requests[0].resource_id
    w.key(ALICE, pid, "CreatePayment")
    _only(failing(w.snapshot), "1c", f"resource {pid} was created under 2 idempotency keys")
    w = world()
    first = w.snapshot.requests[0]
    w.answered("deposit", ALICE, first.key, "payment", w.snapshot.requests[1].resource_id, "SUCCEEDED")
    _only(failing(w.snapshot), "1c", "2 different resources")


def test_a_key_left_in_progress_for_a_resting_resource_is_a_violation() -> None:
    w = world()
    key = w.snapshot.payments.keys[0]
    w.snapshot.payments.keys[0] = dataclasses.replace(key, state="IN_PROGRESS")
    _only(failing(w.snapshot), "1c", "is still IN_PROGRESS")


def test_an_internal_error_answer_is_a_violation_but_a_503_is_not() -> None:
    w = world()
    record = w.snapshot.requests[1]
    record.attempts.insert(0, Attempt(503, "DEPENDENCY_UNAVAILABLE", 0.5))
    assert failing(w.snapshot) == {}
    record.attempts.insert(0, Attempt(500, "INTERNAL_ERROR", 0.2))
    _only(failing(w.snapshot), "1d", "1 pay requests answered 500")


# --- 2: the ledger ------------------------------------------------------------------------------


def test_postings_that_do_not_sum_to_zero_are_a_violation() -> None:
    w = world()
    w.post("", {SETTLEMENT_USD: 5})  # a one-legged transaction nobody owns
    found = failing(w.snapshot)
    assert "the postings in USD sum to 5, not 0" in found["2a"]
    assert any("which is no payment, refund or payout" in v for v in found["2e"])


def test_a_wallet_below_zero_is_a_violation() -> None:
    w = world()
    account = w.snapshot.ledger.accounts[SHOP_USD]
    w.snapshot.ledger.accounts[SHOP_USD] = dataclasses.replace(account, held=account.posted + 1)
    found = failing(w.snapshot)
    assert any(f"wallet {SHOP_USD} of {SHOP}" in v for v in found["2b"])
    assert "2c" in found  # its held no longer matches its open holds


def test_an_open_hold_of_a_final_payment_is_a_violation() -> None:
    w = world()
    pid = w.purchase(200)
    w.hold(pid, ALICE_USD, 200, "OPEN")
    _only(failing(w.snapshot), "2c", f"for payment {pid}, which is SUCCEEDED")


def test_an_open_payment_without_its_hold_is_a_violation() -> None:
    w = world()
    holds = w.snapshot.ledger.holds
    open_hold = next(h for h in holds.values() if h.state == "OPEN")
    holds[open_hold.hold_id] = dataclasses.replace(open_hold, state="RELEASED")
    found = failing(w.snapshot)
    assert set(found) == {"2c"}
    assert any("is open and should hold 700" in v for v in found["2c"])
    assert any("says held 700; its open holds add up to 0" in v for v in found["2c"])


def test_a_captured_hold_that_does_not_match_its_payout_is_a_violation() -> None:
    w = world()
    holds = w.snapshot.ledger.holds
    captured = next(h for h in holds.values() if h.state == "CAPTURED")
    holds[captured.hold_id] = dataclasses.replace(captured, captured_amount=captured.amount - 1)
    _only(failing(w.snapshot), "2c", "with 1000 captured")


def test_a_broken_balance_chain_or_posted_total_is_a_violation() -> None:
    w = world()
    postings = w.snapshot.ledger.postings
    index = next(i for i, p in enumerate(postings) if p.account_id == ALICE_USD and i > 3)
    postings[index] = dataclasses.replace(postings[index], balance_after=postings[index].balance_after + 7)
    _only(failing(w.snapshot), "2d", f"account {ALICE_USD}: posting seq {postings[index].seq}")
    w = world()
    account = w.snapshot.ledger.accounts[ALICE_USD]
    w.snapshot.ledger.accounts[ALICE_USD] = dataclasses.replace(account, posted=account.posted + 3)
    _only(failing(w.snapshot), "2d", f"account {ALICE_USD} says posted {account.posted + 3}")


def test_a_refund_posted_twice_is_a_violation_of_money_per_resource() -> None:
    w = world()
    refund = next(iter(w.snapshot.payments.refunds.values()))
    w.post(refund.refund_id, {SHOP_USD: -refund.amount, ALICE_USD: refund.amount})
    found = failing(w.snapshot)
    assert set(found) == {"2e"}
    assert any(f"refund {refund.refund_id} (SUCCEEDED) should have moved" in v for v in found["2e"])


def test_a_failed_payment_that_moved_money_is_a_violation() -> None:
    w = world()
    pid = w.purchase(300)
    payments = w.snapshot.payments.payments
    payments[pid] = dataclasses.replace(payments[pid], state="FAILED", amount_captured=0)
    found = failing(w.snapshot)
    assert any(f"payment {pid} (FAILED) should have moved nothing" in v for v in found["2e"])


def test_expected_and_actual_movements_add_up_per_account() -> None:
    snapshot = world().snapshot
    expected, actual = expected_movements(snapshot.payments), actual_movements(snapshot.ledger)
    assert expected == actual
    per_account: dict[str, int] = {}
    for moves in actual.values():
        for account, amount in moves.items():
            per_account[account] = per_account.get(account, 0) + amount
    assert per_account[ALICE_USD] == snapshot.ledger.accounts[ALICE_USD].posted
    assert per_account["EXTERNAL_SETTLEMENT:USD"] == snapshot.ledger.accounts[SETTLEMENT_USD].posted


def test_postings_to_an_unknown_account_are_a_violation() -> None:
    w = world()
    w.snapshot.ledger.postings.append(Posting(999, "posting-x", "tx-x", "nowhere", "USD", 0, 0))
    assert any("unknown account nowhere" in v for v in failing(w.snapshot)["2d"])
