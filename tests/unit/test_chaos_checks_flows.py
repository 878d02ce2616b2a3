"""Checks 3, 4 and 5 of the chaos harness: processor books, Kafka events, notifications."""

from __future__ import annotations

import dataclasses

from devstack.chaos.books import Receipt, SimAuthorization, SimPayout, SimRefund
from devstack.chaos.check_events import expected_event_type
from devstack.chaos.check_notify import crash_between
from devstack.chaos.check_processor import net_charges, payouts_paid
from devstack.chaos.model import FaultRecord
from tests.unit.test_chaos_books import HOOK, failing, world
from tests.unit.test_chaos_checks_ledger import _only

# --- 3: the processor's books -----------------------------------------------------------------


def test_two_authorizations_under_one_key_are_a_violation() -> None:
    w = world()
    auth = w.snapshot.processor.authorizations[0]
    w.snapshot.processor.authorizations.append(dataclasses.replace(auth, sim_id="auth-twice", status="voided"))
    _only(failing(w.snapshot), "3", f"2 authorizations under one key {auth.key}")


def test_a_card_captured_again_at_the_processor_is_a_violation() -> None:
    w = world()
    auth = w.snapshot.processor.authorizations[0]
    w.snapshot.processor.authorizations[0] = dataclasses.replace(auth, amount_captured=auth.amount_captured + 10)
    found = failing(w.snapshot)
    _only(found, "3", f"authorization {auth.sim_id} is captured, captured {auth.amount_captured + 10}")
    assert any("net card charges at the processor" in v for v in found["3"])
    assert any("settlement account USD posted" in v for v in found["3"])


def test_a_captured_card_of_a_failed_payment_must_be_refunded() -> None:
    w = world()
    pid = w.snapshot.requests[0].resource_id
    payments = w.snapshot.payments.payments
    payments[pid] = dataclasses.replace(payments[pid], state="FAILED", amount_captured=0)
    found = failing(w.snapshot)
    assert any("the card keeps money for a payment that did not happen" in v for v in found["3"])
    w.snapshot.processor.refunds.append(SimRefund("re-c", "succeeded", "auth", 10_000, "USD", f"{pid}:compensate"))
    auth = w.snapshot.processor.authorizations[0]
    w.snapshot.processor.authorizations[0] = dataclasses.replace(auth, amount_refunded=10_000)
    assert not any("keeps money" in v for v in failing(w.snapshot).get("3", []))


def test_a_payout_paid_at_the_processor_but_failed_in_paymesh_is_a_violation() -> None:
    w = world()
    payouts = w.snapshot.payments.payouts
    oid = next(iter(payouts))
    payouts[oid] = dataclasses.replace(payouts[oid], state="FAILED")
    found = failing(w.snapshot)
    assert any(f"payout {oid} is FAILED" in v for v in found["3"])
    assert any("payouts paid at the processor" in v for v in found["3"])


def test_a_payout_paid_twice_under_one_key_or_unknown_to_paymesh_is_a_violation() -> None:
    w = world()
    paid = w.snapshot.processor.payouts[0]
    w.snapshot.processor.payouts.append(dataclasses.replace(paid, sim_id="po-again"))
    assert any("2 payouts under one key" in v for v in failing(w.snapshot)["3"])
    w = world()
    w.snapshot.processor.payouts.append(SimPayout("po-x", "paid", 5, "USD", "stranger:payout"))
    assert any("no such paymesh payout" in v for v in failing(w.snapshot)["3"])


def test_a_card_refund_paymesh_calls_succeeded_needs_the_processors_refund() -> None:
    w = world()
    pid = w.deposit(2_000)
    rid = w.refund(pid, 500)
    # (a refund of a card payment moves payee -> settlement; world.refund posted a wallet refund: redo it)
    tx = next(t for t in w.snapshot.ledger.transactions.values() if t.payment_id == rid)
    w.snapshot.ledger.postings = [p for p in w.snapshot.ledger.postings if p.transaction_id != tx.transaction_id]
    found = failing(w.snapshot)
    assert any(f"card refund {rid} SUCCEEDED (500) but the processor shows no refund" in v for v in found["3"])


def test_net_charges_and_payouts_paid_add_up_by_currency() -> None:
    books = world().snapshot.processor
    books.authorizations.append(SimAuthorization("a2", "captured", 900, "EUR", 800, 300, "k2"))
    books.authorizations.append(SimAuthorization("a3", "authorized", 50, "EUR", 0, 0, "k3"))
    books.payouts.append(SimPayout("p2", "failed", 70, "USD", "k4"))
    assert net_charges(books) == {"USD": 10_000, "EUR": 500}
    assert payouts_paid(books) == {"USD": 1_000}


# --- 4: events ------------------------------------------------------------------------------------


def test_a_missing_event_is_a_violation() -> None:
    w = world()
    lost = next(e for e in w.snapshot.events if e.event_type == "payment.processing")
    w.snapshot.events.remove(lost)
    found = failing(w.snapshot)
    assert set(found) >= {"4a"}
    assert any(f"payment {lost.resource_id}: transitions" in v for v in found["4a"])
    assert any(f"aggregate {lost.aggregate_id}: sequences" in v for v in found["4a"])


def test_identical_copies_are_deduplicated_but_differing_copies_are_a_violation() -> None:
    w = world()
    first = next(e for e in w.snapshot.events if e.topic == "paymesh.payments.v1")
    w.snapshot.events.append(dataclasses.replace(first, offset=9_999))
    assert failing(w.snapshot) == {}
    w.snapshot.events.append(dataclasses.replace(first, offset=10_000, state="FAILED"))
    assert any("published twice with different content" in v for v in failing(w.snapshot)["4a"])


def test_events_out_of_order_are_a_violation() -> None:
    w = world()
    events = [e for e in w.snapshot.events if e.topic == "paymesh.payments.v1" and e.sequence <= 2]
    first, second = events[0], events[1]
    assert first.aggregate_id == second.aggregate_id
    w.snapshot.events.remove(first)
    w.snapshot.events.remove(second)
    w.snapshot.events += [
        dataclasses.replace(second, offset=first.offset),
        dataclasses.replace(first, offset=second.offset),
    ]
    _only(failing(w.snapshot), "4a", "arrived in sequence order [2, 1")


def test_an_event_without_a_transition_is_a_violation() -> None:
    w = world()
    w.event("paymesh.payments.v1", "payment.created", "ghost", "ghost", "PENDING")
    _only(failing(w.snapshot), "4a", "1 events of ghost without any transition")


def test_an_illegal_transition_is_a_violation() -> None:
    w = world()
    w.path("payment", "odd", ["PENDING", "SUCCEEDED"])
    assert any("illegal transition PENDING -> SUCCEEDED" in v for v in failing(w.snapshot)["4a"])


def test_a_posting_announced_twice_or_never_is_a_violation() -> None:
    w = world()
    posted = next(e for e in w.snapshot.events if e.event_type == "wallet.posted")
    w.snapshot.events.remove(posted)
    _only(failing(w.snapshot), "4b", f"posting {posted.posting_id}", "announced by 0 wallet.posted events")


def test_event_types_follow_the_transition() -> None:
    assert expected_event_type("payment", "", "PENDING") == "payment.created"
    assert expected_event_type("refund", "PENDING", "FAILED") == "refund.failed"


# --- 5: notifications --------------------------------------------------------------------------------


def test_an_email_received_twice_is_a_violation_unless_notify_was_killed_in_between() -> None:
    w = world()
    email = w.snapshot.notify.receipts[0]
    w.snapshot.notify.receipts.append(dataclasses.replace(email, at=30.0))
    _only(failing(w.snapshot), "5", f"EMAIL {email.delivery_id}", "was received 2 times, at 10.0s, 30.0s")
    w.snapshot.faults.append(FaultRecord("process", "kill9", "notify", "kill9 notify", 9.0, 9.5, 25.0))
    assert failing(w.snapshot) == {}
    w.snapshot.faults[0] = FaultRecord("process", "sigterm", "notify", "sigterm notify", 9.0, 9.5, 25.0)
    assert "5" in failing(w.snapshot)


def test_a_webhook_retried_after_a_refusal_is_not_a_duplicate_but_a_bad_signature_is_a_violation() -> None:
    w = world()
    hook = next(r for r in w.snapshot.notify.receipts if r.channel == "WEBHOOK")
    w.snapshot.notify.receipts.insert(0, dataclasses.replace(hook, at=5.0, accepted=False))
    assert failing(w.snapshot) == {}
    w.snapshot.notify.receipts.append(Receipt("WEBHOOK", f"{HOOK} forged", "forged", 12.0, signature_ok=False))
    _only(failing(w.snapshot), "5", "signature that does not verify")


def test_a_delivered_notification_that_never_arrived_or_one_left_pending_is_a_violation() -> None:
    w = world()
    w.snapshot.notify.receipts = [r for r in w.snapshot.notify.receipts if r.channel != "EMAIL"]
    _only(failing(w.snapshot), "5", "is DELIVERED but never arrived")
    w = world()
    notification = w.snapshot.notify.notifications[0]
    w.snapshot.notify.notifications[0] = dataclasses.replace(notification, state="PENDING")
    _only(failing(w.snapshot), "5", f"notification {notification.notification_id}", "is PENDING")


def test_two_notifications_of_one_event_for_one_user_are_a_violation() -> None:
    w = world()
    notification = w.snapshot.notify.notifications[0]
    w.snapshot.notify.notifications.append(dataclasses.replace(notification, notification_id="n-again"))
    found = failing(w.snapshot)
    assert any(f"2 EMAIL notifications of event {notification.event_id}" in v for v in found["5"])


def test_an_event_notify_never_consumed_is_a_violation() -> None:
    w = world()
    lost = w.snapshot.events[3]
    w.snapshot.notify.processed_event_ids.discard(lost.event_id)
    _only(failing(w.snapshot), "5", f"event {lost.event_id} is on Kafka but notify_svc never consumed it")


def test_a_crash_counts_between_two_receipts_with_the_sinks_slack() -> None:
    kill = [FaultRecord("process", "kill9", "notify", "kill9 notify", 10.0, 10.0, 14.0)]
    assert crash_between(8.5, 20.0, kill)  # sent before the crash, again after it
    assert crash_between(15.5, 40.0, kill)  # sent while it was coming back (the time is whole seconds)
    assert not crash_between(16.5, 40.0, kill)  # both copies after it was over
    assert not crash_between(2.0, 9.0, kill)  # both copies before it began
    database = [FaultRecord("process", "kill9", "postgres", "kill9 postgres", 10.0, 10.0, 13.0)]
    assert crash_between(10.5, 36.0, database)  # the record of a round sent as the database died
    paused = [FaultRecord("process", "sigstop", "kafka", "sigstop kafka", 10.0, 10.0, 13.0)]
    assert not crash_between(10.5, 36.0, paused)
