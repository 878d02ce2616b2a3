"""A small, consistent world for the chaos checks' tests, built the way paymesh records one: each payment,
refund and payout with its ledger postings, holds, transitions, events, processor objects and
notifications. A consistent world passes every check; the other test_chaos_checks_* files break one
thing at a time and expect exactly the matching check to fail."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from devstack.chaos.books import (
    Account,
    EventRecord,
    Hold,
    IdempotencyKey,
    Ledger,
    LedgerTransaction,
    Notification,
    NotifyBooks,
    Payment,
    PaymentBooks,
    Payout,
    Posting,
    ProcessorBooks,
    Receipt,
    Refund,
    SimAuthorization,
    SimPayout,
    Transition,
)
from devstack.chaos.checks import run_checks
from devstack.chaos.model import Attempt, RequestRecord, Snapshot
from paymesh_runtime.kafka import TOPIC_PAYMENTS, TOPIC_WALLETS

SETTLEMENT_USD = "acct-settlement-usd"
ALICE, SHOP = "user-alice", "user-shop"
ALICE_USD, SHOP_USD = "wallet-alice", "wallet-shop"
ENDPOINT, HOOK = "endpoint-shop", "/hooks/shop"


class World:
    """Builds a Snapshot; every add_* keeps it consistent."""

    def __init__(self) -> None:
        self.snapshot = Snapshot(
            payments=PaymentBooks(), ledger=Ledger(), processor=ProcessorBooks(), events=[],
            notify=NotifyBooks(endpoints={ENDPOINT: HOOK}), users={ALICE, SHOP}, requests=[], faults=[],
        )  # fmt: skip
        self._sequences: dict[str, int] = defaultdict(int)
        self._offset = 0
        self._ids = 0
        self.account(SETTLEMENT_USD, owner="", system="EXTERNAL_SETTLEMENT")
        self.account(ALICE_USD, owner=ALICE)
        self.account(SHOP_USD, owner=SHOP)

    def next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-{self._ids}"

    # --- the ledger ----------------------------------------------------------------------
    def account(self, account_id: str, owner: str, system: str = "", currency: str = "USD") -> None:
        self.snapshot.ledger.accounts[account_id] = Account(account_id, owner, system, currency, 0, 0, "ACTIVE")

    def post(self, resource_id: str, legs: dict[str, int], currency: str = "USD") -> str:
        """A ledger transaction of `resource_id` with a posting per leg; balances and events follow."""
        ledger = self.snapshot.ledger
        tx = self.next_id("tx")
        ledger.transactions[tx] = LedgerTransaction(tx, f"{resource_id}:{tx}", resource_id)
        for account_id, amount in legs.items():
            account = ledger.accounts[account_id]
            posted = account.posted + amount
            ledger.accounts[account_id] = dataclasses.replace(account, posted=posted)
            posting = Posting(
                len(ledger.postings) + 1, self.next_id("posting"), tx, account_id, currency, amount, posted
            )
            ledger.postings.append(posting)
            if not account.system_account:
                self.event(TOPIC_WALLETS, "wallet.posted", account_id, posting_id=posting.posting_id)
        return tx

    def hold(self, owner_id: str, wallet_id: str, amount: int, state: str, captured: int = 0) -> str:
        hold_id = self.next_id("hold")
        self.snapshot.ledger.holds[hold_id] = Hold(hold_id, wallet_id, "USD", amount, captured, state,
                                                   f"{owner_id}:hold", owner_id)  # fmt: skip
        if state == "OPEN":
            account = self.snapshot.ledger.accounts[wallet_id]
            self.snapshot.ledger.accounts[wallet_id] = dataclasses.replace(account, held=account.held + amount)
        return hold_id

    # --- events and transitions -------------------------------------------------------------
    def event(self, topic: str, event_type: str, aggregate: str, resource_id: str = "", state: str = "",
              posting_id: str = "") -> EventRecord:  # fmt: skip
        self._sequences[aggregate] += 1
        self._offset += 1
        event = EventRecord(topic, 0, self._offset, self.next_id("event"), event_type, aggregate,
                            self._sequences[aggregate], resource_id, state, posting_id)  # fmt: skip
        self.snapshot.events.append(event)
        self.snapshot.notify.processed_event_ids.add(event.event_id)
        self.snapshot.notify.topic_event_ids.add(event.event_id)
        return event

    def path(self, kind: str, resource_id: str, states: list[str], aggregate: str = "") -> None:
        """The resource's transitions through `states`, each published as its event."""
        previous = ""
        for state in states:
            transition_id = len(self.snapshot.payments.transitions) + 1
            self.snapshot.payments.transitions.append(Transition(transition_id, kind, resource_id, previous, state))
            event_type = f"{kind}.created" if not previous else f"{kind}.{state.lower()}"
            self.event(TOPIC_PAYMENTS, event_type, aggregate or resource_id, resource_id, state)
            previous = state

    def key(self, caller: str, resource_id: str, method: str) -> str:
        key = self.next_id("key")
        self.snapshot.payments.keys.append(IdempotencyKey(caller, key, method, resource_id, "DONE"))
        return key

    def answered(self, op: str, caller: str, key: str, resource: str, resource_id: str, state: str,
                 payment_id: str = "", capture_method: str = "") -> RequestRecord:  # fmt: skip
        record = RequestRecord(
            seq=len(self.snapshot.requests), op=op, actor=caller, method="POST", path=f"/v1/{resource}s", key=key,
            started=0.0, attempts=[Attempt(200, "", 1.0)], status=200, resource=resource, resource_id=resource_id,
            state=state, payment_id=payment_id, capture_method=capture_method,
        )  # fmt: skip
        self.snapshot.requests.append(record)
        return record

    # --- resources ---------------------------------------------------------------------------
    def deposit(self, amount: int) -> str:
        """A card deposit into Alice's wallet: authorized, captured, credited from settlement."""
        pid = self.next_id("pay")
        auth = self.next_id("auth")
        self._payment(pid, "", "tok_visa", ALICE_USD, amount, amount, "AUTOMATIC", "SUCCEEDED", authorization=auth)
        self.snapshot.processor.authorizations.append(
            SimAuthorization(auth, "captured", amount, "USD", amount, 0, f"{pid}:authorize")
        )
        self.post(pid, {SETTLEMENT_USD: -amount, ALICE_USD: amount})
        self.path("payment", pid, ["PENDING", "PROCESSING", "SUCCEEDED"])
        self.answered("deposit", ALICE, self.key(ALICE, pid, "CreatePayment"), "payment", pid, "SUCCEEDED")
        self.email(pid)
        return pid

    def purchase(self, amount: int) -> str:
        """Alice pays the shop from her wallet (AUTOMATIC: one transfer)."""
        pid = self.next_id("pay")
        self._payment(pid, ALICE_USD, "", SHOP_USD, amount, amount, "AUTOMATIC", "SUCCEEDED")
        self.post(pid, {ALICE_USD: -amount, SHOP_USD: amount})
        self.path("payment", pid, ["PENDING", "PROCESSING", "SUCCEEDED"])
        self.answered("pay", ALICE, self.key(ALICE, pid, "CreatePayment"), "payment", pid, "SUCCEEDED")
        return pid

    def manual(self, amount: int) -> str:
        """A MANUAL wallet payment nobody captured: its hold stays open."""
        pid = self.next_id("pay")
        hold_id = self.hold(pid, ALICE_USD, amount, "OPEN")
        self._payment(pid, ALICE_USD, "", SHOP_USD, amount, 0, "MANUAL", "REQUIRES_CAPTURE", hold_id=hold_id)
        self.path("payment", pid, ["PENDING", "REQUIRES_CAPTURE"])
        self.answered("pay_manual", ALICE, self.key(ALICE, pid, "CreatePayment"), "payment", pid, "REQUIRES_CAPTURE",
                      capture_method="MANUAL")  # fmt: skip
        return pid

    def refund(self, payment_id: str, amount: int) -> str:
        """The shop refunds part of a wallet payment."""
        rid = self.next_id("refund")
        payments = self.snapshot.payments.payments
        paid = payments[payment_id]
        payments[payment_id] = dataclasses.replace(paid, amount_refunded=paid.amount_refunded + amount,
                                                   refund_reserved=paid.refund_reserved + amount)  # fmt: skip
        self.snapshot.payments.refunds[rid] = Refund(rid, payment_id, "USD", amount, "SUCCEEDED", "")
        self.post(rid, {SHOP_USD: -amount, ALICE_USD: amount})
        self.path("refund", rid, ["PENDING", "SUCCEEDED"], aggregate=payment_id)
        self.answered("refund", SHOP, self.key(SHOP, rid, "CreateRefund"), "refund", rid, "SUCCEEDED",
                      payment_id=payment_id)  # fmt: skip
        return rid

    def payout(self, amount: int) -> str:
        """The shop pays out: hold, paid at the processor, hold captured into settlement."""
        oid = self.next_id("payout")
        hold_id = self.hold(oid, SHOP_USD, amount, "CAPTURED", captured=amount)
        self.snapshot.payments.payouts[oid] = Payout(oid, SHOP_USD, SHOP, "USD", amount, "SUCCEEDED", hold_id, "po-1")
        self.snapshot.processor.payouts.append(SimPayout(self.next_id("po"), "paid", amount, "USD", f"{oid}:payout"))
        self.post(oid, {SHOP_USD: -amount, SETTLEMENT_USD: amount})
        self.path("payout", oid, ["PENDING", "PROCESSING", "SUCCEEDED"])
        self.answered("payout", SHOP, self.key(SHOP, oid, "CreatePayout"), "payout", oid, "PROCESSING")
        return oid

    def email(self, resource_id: str) -> Notification:
        """A delivered email about the resource's last event, received once by the mail sink."""
        event = [e for e in self.snapshot.events if e.resource_id == resource_id][-1]
        notification = Notification(self.next_id("n"), ALICE, "EMAIL", "", event.event_id, "DELIVERED")
        self.snapshot.notify.notifications.append(notification)
        self.snapshot.notify.receipts.append(
            Receipt("EMAIL", f"<{notification.notification_id}@paymesh>", event.event_id, 10.0)
        )
        return notification

    def webhook(self, event: EventRecord) -> Notification:
        notification = Notification(self.next_id("n"), SHOP, "WEBHOOK", ENDPOINT, event.event_id, "DELIVERED")
        self.snapshot.notify.notifications.append(notification)
        self.snapshot.notify.receipts.append(Receipt("WEBHOOK", f"{HOOK} {event.event_id}", event.event_id, 11.0))
        return notification

    def _payment(self, pid: str, source: str, card: str, destination: str, amount: int, captured: int,
                 method: str, state: str, hold_id: str = "", authorization: str = "") -> None:  # fmt: skip
        payee = SHOP if destination == SHOP_USD else ALICE
        self.snapshot.payments.payments[pid] = Payment(
            pid, ALICE, payee, source, card, destination, "USD", amount, captured, 0, 0, method, state, hold_id,
            authorization, "",
        )  # fmt: skip


def world() -> World:
    """Alice deposits 10,000 by card, pays the shop 4,000 (1,500 refunded), authorizes 700 more (not
    captured); the shop pays out 1,000."""
    built = World()
    built.deposit(10_000)
    paid = built.purchase(4_000)
    built.refund(paid, 1_500)
    built.manual(700)
    built.payout(1_000)
    built.webhook(built.snapshot.events[-1])
    return built


def failing(snapshot: Snapshot) -> dict[str, list[str]]:
    """The checks that fail, with their violations."""
    return {check.key: check.violations for check in run_checks(snapshot) if not check.passed}


def test_a_consistent_world_passes_every_check() -> None:
    snapshot = world().snapshot
    assert failing(snapshot) == {}
    ledger = snapshot.ledger
    assert ledger.accounts[ALICE_USD].posted == 10_000 - 4_000 + 1_500
    assert ledger.accounts[ALICE_USD].held == 700
    assert ledger.accounts[SHOP_USD].posted == 4_000 - 1_500 - 1_000
    assert ledger.accounts[SETTLEMENT_USD].posted == -10_000 + 1_000


def test_every_check_looked_at_something() -> None:
    results = run_checks(world().snapshot)
    assert [r.key for r in results] == ["1a", "1b", "1c", "1d", "2a", "2b", "2c", "2d", "2e", "3", "4a", "4b", "5"]
    assert all(r.checked > 0 for r in results)
