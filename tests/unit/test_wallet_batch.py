"""wallet_svc.batch: a batch's items judged in order, as consecutive PostTransaction calls, without I/O."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from paymesh_runtime.money import Money
from wallet_svc import batch
from wallet_svc.batch import Decision, Post, Refuse, Replay
from wallet_svc.ledger import (
    Account,
    AccountKey,
    AccountState,
    Leg,
    Operation,
    PostRequest,
    StoredReference,
    SystemAccount,
    SystemRef,
    WalletRef,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)
SETTLEMENT = SystemRef(SystemAccount.EXTERNAL_SETTLEMENT, "USD")


def usd(amount: int) -> Money:
    return Money("USD", amount)


def wallet(posted: int = 0, held: int = 0, state: AccountState = AccountState.ACTIVE) -> Account:
    return Account(uuid.uuid4(), "user-1", None, "USD", state, "", posted, held, NOW, NOW)


def system_account(posted: int = 0) -> Account:
    return Account(
        uuid.uuid4(), None, SystemAccount.EXTERNAL_SETTLEMENT, "USD", AccountState.ACTIVE, "", posted, 0, NOW, NOW
    )


class Book:
    """Locked accounts and what PostTransaction's references already stored."""

    def __init__(self, *wallets: Account) -> None:
        self.settlement = system_account()
        self.accounts = {account.id: account for account in (self.settlement, *wallets)}
        self.ids: dict[AccountKey, uuid.UUID] = {SETTLEMENT: self.settlement.id}
        for account in wallets:
            self.ids[WalletRef(account.id)] = account.id
        self.stored: dict[str, StoredReference] = {}
        self.transaction_ids: dict[str, uuid.UUID] = {}

    def decide(self, requests: Sequence[PostRequest]) -> list[Decision]:
        self.transaction_ids = {request.reference: uuid.uuid4() for request in requests}
        fingerprints = [request.fingerprint() for request in requests]
        return batch.decide(requests, fingerprints, self.stored, self.ids, self.accounts, self.transaction_ids)


def move(source: AccountKey, destination: AccountKey, amount: int, reference: str | None = None) -> PostRequest:
    legs = (Leg(source, usd(-amount)), Leg(destination, usd(amount)))
    return PostRequest(reference or f"ref-{uuid.uuid4()}", legs, "pay_1", "")


def debit(account: Account, amount: int, reference: str | None = None) -> PostRequest:
    return move(WalletRef(account.id), SETTLEMENT, amount, reference)


def credit(account: Account, amount: int, reference: str | None = None) -> PostRequest:
    return move(SETTLEMENT, WalletRef(account.id), amount, reference)


def outcomes(decisions: Sequence[Decision]) -> list[str]:
    return [
        d.error.reason if isinstance(d, Refuse) else "REPLAY" if isinstance(d, Replay) else "POST" for d in decisions
    ]


def test_50_debits_of_30_against_1000_post_exactly_the_first_33() -> None:
    payer = wallet(posted=1000)
    book = Book(payer)
    decisions = book.decide([debit(payer, 30) for _ in range(50)])
    assert outcomes(decisions) == ["POST"] * 33 + ["INSUFFICIENT_FUNDS"] * 17
    balances = [
        p.balance_after for d in decisions if isinstance(d, Post) for p in d.postings if p.account.id == payer.id
    ]
    assert balances == list(range(970, 9, -30))
    refusal = decisions[33]
    assert isinstance(refusal, Refuse)
    assert refusal.error.metadata == {"wallet_id": str(payer.id)}


def test_holds_count_against_the_available_balance() -> None:
    payer = wallet(posted=100, held=80)
    assert outcomes(Book(payer).decide([debit(payer, 20), debit(payer, 1)])) == ["POST", "INSUFFICIENT_FUNDS"]


def test_a_refused_item_changes_nothing_the_next_ones_see() -> None:
    payer, payee = wallet(posted=50), wallet()
    book = Book(payer, payee)
    decisions = book.decide(
        [
            move(WalletRef(payer.id), WalletRef(payee.id), 60),
            move(WalletRef(payer.id), WalletRef(payee.id), 50),
            move(WalletRef(payee.id), WalletRef(payer.id), 51),
        ]
    )
    assert outcomes(decisions) == ["INSUFFICIENT_FUNDS", "POST", "INSUFFICIENT_FUNDS"]


def test_system_accounts_may_go_negative() -> None:
    payee = wallet()
    decisions = Book(payee).decide([credit(payee, 10**12) for _ in range(3)])
    assert outcomes(decisions) == ["POST"] * 3
    last = decisions[-1]
    assert isinstance(last, Post)
    assert {p.account.id: p.balance_after for p in last.postings}[payee.id] == 3 * 10**12


def test_frozen_closed_unknown_and_foreign_currency_items_are_refused_among_good_ones() -> None:
    active, frozen = wallet(posted=100), wallet(posted=100, state=AccountState.FROZEN)
    closed, euro = wallet(state=AccountState.CLOSED), wallet()
    euro = Account(euro.id, "user-2", None, "EUR", AccountState.ACTIVE, "", 0, 0, NOW, NOW)
    book = Book(active, frozen, closed, euro)
    ghost = uuid.uuid4()
    book.ids[WalletRef(ghost)] = ghost  # resolved like any wallet id, but no row was locked
    book.ids[WalletRef(book.settlement.id)] = book.settlement.id  # a wallet id naming a system account
    decisions = book.decide(
        [
            debit(active, 10),
            debit(frozen, 10),
            credit(frozen, 10),
            credit(closed, 10),
            credit(euro, 10),
            move(WalletRef(active.id), WalletRef(ghost), 10),
            move(WalletRef(active.id), WalletRef(book.settlement.id), 10),
            debit(active, 10),
        ]
    )
    assert outcomes(decisions) == [
        "POST",
        "WALLET_FROZEN",
        "POST",
        "WALLET_CLOSED",
        "CURRENCY_MISMATCH",
        "RESOURCE_NOT_FOUND",
        "RESOURCE_NOT_FOUND",
        "POST",
    ]


def test_a_stored_reference_replays_with_the_same_arguments_and_is_refused_with_others() -> None:
    payer = wallet(posted=100)
    book = Book(payer)
    earlier = debit(payer, 10, reference="pay_1:post")
    stored_id = uuid.uuid4()
    book.stored["pay_1:post"] = StoredReference(Operation.POST_TRANSACTION, earlier.fingerprint(), None, stored_id)
    book.stored["pay_1:hold"] = StoredReference(Operation.CREATE_HOLD, earlier.fingerprint(), uuid.uuid4(), None)
    decisions = book.decide(
        [
            debit(payer, 10, reference="pay_1:post"),
            debit(payer, 11, reference="pay_1:post"),
            debit(payer, 10, reference="pay_1:hold"),
        ]
    )
    assert decisions[0] == Replay(stored_id)
    assert outcomes(decisions) == ["REPLAY", "IDEMPOTENCY_KEY_REUSED", "IDEMPOTENCY_KEY_REUSED"]
    reused = decisions[1]
    assert isinstance(reused, Refuse)
    assert reused.error.metadata == {"idempotency_key": "pay_1:post"}


def test_a_reference_repeated_in_the_batch_behaves_as_a_second_call() -> None:
    payer = wallet(posted=0)
    book = Book(payer)
    decisions = book.decide(
        [
            credit(payer, 50, reference="a"),
            credit(payer, 50, reference="a"),
            credit(payer, 60, reference="a"),
            debit(payer, 80, reference="b"),
            credit(payer, 40),
            debit(payer, 80, reference="b"),
            debit(payer, 80, reference="b"),
        ]
    )
    assert outcomes(decisions) == [
        "POST",
        "REPLAY",
        "IDEMPOTENCY_KEY_REUSED",
        "INSUFFICIENT_FUNDS",
        "POST",
        "POST",
        "REPLAY",
    ]
    first, second, sixth, seventh = decisions[0], decisions[1], decisions[5], decisions[6]
    assert isinstance(first, Post)
    assert isinstance(sixth, Post)
    assert (first.transaction_id, sixth.transaction_id) == (book.transaction_ids["a"], book.transaction_ids["b"])
    assert second == Replay(first.transaction_id)
    assert seventh == Replay(sixth.transaction_id)


def test_postings_are_planned_in_account_id_order_with_their_running_balances() -> None:
    a, b, c = sorted([wallet(posted=100), wallet(posted=100), wallet(posted=100)], key=lambda w: w.id)
    request = PostRequest(
        "r", (Leg(WalletRef(c.id), usd(-30)), Leg(WalletRef(a.id), usd(10)), Leg(WalletRef(b.id), usd(20))), "", ""
    )
    [decision] = Book(a, b, c).decide([request])
    assert isinstance(decision, Post)
    assert [(p.account.id, p.amount.amount, p.balance_after) for p in decision.postings] == [
        (a.id, 10, 110),
        (b.id, 20, 120),
        (c.id, -30, 70),
    ]
    assert decision.fingerprint == request.fingerprint()


def test_settling_claims_gives_back_refused_references_and_rewrites_changed_ones() -> None:
    payer = wallet(posted=0)
    book = Book(payer)
    requests = [
        credit(payer, 50, reference="kept"),
        debit(payer, 500, reference="refused"),
        debit(payer, 80, reference="retried"),  # refused: claimed with this item's fingerprint...
        credit(payer, 40),
        debit(payer, 81, reference="retried"),  # ...posted by this one, with other arguments
    ]
    decisions = book.decide(requests)
    assert outcomes(decisions) == ["POST", "INSUFFICIENT_FUNDS", "INSUFFICIENT_FUNDS", "POST", "POST"]
    claimed = {r.reference: r.fingerprint() for r in requests[:4]}  # each with its first item's fingerprint
    posts = [d for d in decisions if isinstance(d, Post)]
    release, rewrite = batch.settle_claims(posts, claimed)
    assert sorted(release) == ["refused", "retried"]
    assert [(p.request.reference, p.fingerprint) for p in rewrite] == [("retried", requests[4].fingerprint())]


def test_settling_claims_of_a_batch_without_refusals_changes_nothing() -> None:
    payer = wallet(posted=100)
    requests = [debit(payer, 10) for _ in range(5)]
    posts = [d for d in Book(payer).decide(requests) if isinstance(d, Post)]
    assert batch.settle_claims(posts, {r.reference: r.fingerprint() for r in requests}) == ([], [])


# --- properties ------------------------------------------------------------------------------------

amounts = st.integers(min_value=1, max_value=400)
items = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), amounts, st.integers(0, 5)), max_size=40)


@given(items, st.lists(st.integers(0, 300), min_size=4, max_size=4))
def test_a_batch_decides_as_the_same_calls_made_one_after_another(
    moves: list[tuple[int, int, int, int]], funds: list[int]
) -> None:
    """Against a model that applies PostTransaction's rules to each call in turn."""
    wallets = [wallet(posted=amount) for amount in funds]
    keys: list[AccountKey] = [WalletRef(w.id) for w in wallets]
    requests = [
        move(keys[source], keys[destination] if destination != source else SETTLEMENT, amount, f"ref-{reference}")
        for source, destination, amount, reference in moves
    ]
    book = Book(*wallets)
    decisions = book.decide(requests)

    balances = {w.id: w.posted for w in wallets}
    stored: dict[str, tuple[str, uuid.UUID]] = {}
    for request, decision in zip(requests, decisions, strict=True):
        earlier = stored.get(request.reference)
        if earlier is not None:
            expected = "REPLAY" if earlier[0] == request.fingerprint() else "IDEMPOTENCY_KEY_REUSED"
        else:
            source_id = request.legs[0].account
            assert isinstance(source_id, WalletRef)
            fits = balances[source_id.wallet_id] >= -request.legs[0].amount.amount
            expected = "POST" if fits else "INSUFFICIENT_FUNDS"
        assert outcomes([decision]) == [expected]
        if isinstance(decision, Replay):
            assert earlier is not None
            assert decision.transaction_id == earlier[1]
        if isinstance(decision, Post):
            stored[request.reference] = (request.fingerprint(), decision.transaction_id)
            for leg in request.legs:
                if isinstance(leg.account, WalletRef):
                    balances[leg.account.wallet_id] += leg.amount.amount
    # What the postings say: no wallet below zero, each leg's balance is the running sum, legs balance.
    running = {w.id: w.posted for w in wallets} | {book.settlement.id: 0}
    per_transaction: dict[uuid.UUID, int] = defaultdict(int)
    for decision in decisions:
        if isinstance(decision, Post):
            for planned in decision.postings:
                running[planned.account.id] += planned.amount.amount
                assert planned.balance_after == running[planned.account.id]
                assert planned.account.is_system or planned.balance_after >= 0
                per_transaction[decision.transaction_id] += planned.amount.amount
    assert set(per_transaction.values()) <= {0}
    assert {w.id: running[w.id] for w in wallets} == balances
