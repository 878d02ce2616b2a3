"""A batch of postings is decided on what it read without a lock and written only if nothing moved.

Each test makes another caller change something the batch read (through the
real wallet_svc, on the real PostgreSQL) after the batch's read and before
its write: the write must then store nothing, and the batch be decided again
under locks, with the answers PostTransaction would give after that change.
A change to a system account's balance is the one move that does not count:
no decision depends on it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from devstack.stack import Stack
from paymesh.wallet.v1 import wallet_pb2
from tests.integration.test_wallet_api import hold_request
from tests.integration.test_wallet_batch import OK, REPLAYED, credit, debit, funded_wallet, outcome, post_batch
from tests.integration.wallet_support import Wallets, as_user, running_wallet
from wallet_svc import batch_store

pytestmark = pytest.mark.integration

MOVED = "paymesh_wallet_batch_moved_total"


@pytest.fixture(scope="module")
async def wallets(infra: Stack) -> AsyncIterator[Wallets]:
    async with running_wallet(infra) as running:
        yield running


def moved() -> float:
    return REGISTRY.get_sample_value(MOVED) or 0.0


@pytest.fixture
def between_read_and_write(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], Awaitable[object]]], None]:
    """Runs the given change once, after the next batch's read and before its write."""

    def arrange(change: Callable[[], Awaitable[object]]) -> None:
        write = batch_store.write_batch_if_unmoved
        pending = [change]

        async def write_after_the_change(*args: Any, **kwargs: Any) -> Any:
            while pending:
                await pending.pop()()
            return await write(*args, **kwargs)

        monkeypatch.setattr(batch_store, "write_batch_if_unmoved", write_after_the_change)

    return arrange


async def settlement_id(wallets: Wallets) -> uuid.UUID:
    found = await wallets.scalar(
        "SELECT id FROM accounts WHERE system_account = 'EXTERNAL_SETTLEMENT' AND currency = 'USD'"
    )
    assert isinstance(found, uuid.UUID)
    return found


async def test_nothing_moved_writes_in_two_round_trips(wallets: Wallets) -> None:
    wallet_id = await funded_wallet(wallets, 100)
    before = moved()
    results = await post_batch(wallets, [debit(wallet_id, 60), debit(wallet_id, 60)])
    assert [outcome(r) for r in results] == [OK, "INSUFFICIENT_FUNDS"]
    assert moved() == before
    assert await wallets.balances(wallet_id) == (40, 0)


async def test_a_debit_after_the_read_makes_the_batch_decide_again_on_what_it_left(
    wallets: Wallets, between_read_and_write: Callable[[Callable[[], Awaitable[object]]], None]
) -> None:
    wallet_id = await funded_wallet(wallets, 100)
    between_read_and_write(lambda: wallets.internal.PostTransaction(debit(wallet_id, 30)))
    before = moved()
    results = await post_batch(wallets, [debit(wallet_id, 60), debit(wallet_id, 60)])
    # On the balance it read (100) the batch would post the first; on what the debit left (70), too; and
    # its balance after is 10, not the 40 the read implied.
    assert [outcome(r) for r in results] == [OK, "INSUFFICIENT_FUNDS"]
    assert moved() == before + 1
    assert await wallets.balances(wallet_id) == (10, 0)


async def test_a_hold_after_the_read_is_seen_by_the_batch(
    wallets: Wallets, between_read_and_write: Callable[[Callable[[], Awaitable[object]]], None]
) -> None:
    wallet_id = await funded_wallet(wallets, 100)
    between_read_and_write(lambda: wallets.internal.CreateHold(hold_request(f"hold-{uuid.uuid4()}", wallet_id, 50)))
    before = moved()
    results = await post_batch(wallets, [debit(wallet_id, 60), debit(wallet_id, 40)])
    assert [outcome(r) for r in results] == ["INSUFFICIENT_FUNDS", OK]
    assert moved() == before + 1
    assert await wallets.balances(wallet_id) == (60, 50)


async def test_a_freeze_after_the_read_refuses_the_batchs_debits(
    wallets: Wallets, between_read_and_write: Callable[[Callable[[], Awaitable[object]]], None]
) -> None:
    wallet_id = await funded_wallet(wallets, 100)
    freeze = wallet_pb2.FreezeWalletRequest(wallet_id=wallet_id, reason="review")
    between_read_and_write(lambda: wallets.public.FreezeWallet(freeze, metadata=as_user("ops", "ADMIN")))
    before = moved()
    results = await post_batch(wallets, [debit(wallet_id, 10), credit(wallet_id, 5)])
    assert [outcome(r) for r in results] == ["WALLET_FROZEN", OK]
    assert moved() == before + 1
    assert await wallets.balances(wallet_id) == (105, 0)


async def test_a_reference_posted_after_the_read_is_replayed_not_posted_twice(
    wallets: Wallets, between_read_and_write: Callable[[Callable[[], Awaitable[object]]], None]
) -> None:
    wallet_id, payee = await funded_wallet(wallets, 100), await funded_wallet(wallets, 0)
    item = debit(wallet_id, 70, reference=f"raced-{uuid.uuid4()}")
    other = credit(payee, 1)  # touches no account of the raced item's: only the reference moved
    between_read_and_write(lambda: wallets.internal.PostTransaction(item))
    before = moved()
    results = await post_batch(wallets, [item, other])
    assert [outcome(r) for r in results] == [REPLAYED, OK]
    assert moved() == before + 1
    assert await wallets.balances(wallet_id) == (30, 0)
    posted = await wallets.scalar("SELECT count(*) FROM ledger_transactions WHERE reference = :r", r=item.reference)
    assert posted == 1


async def test_a_settlement_posting_after_the_read_moves_nothing_and_balances_stay_exact(
    wallets: Wallets, between_read_and_write: Callable[[Callable[[], Awaitable[object]]], None]
) -> None:
    wallet_id, elsewhere = await funded_wallet(wallets, 100), await funded_wallet(wallets, 0)
    settlement = await settlement_id(wallets)
    between_read_and_write(lambda: wallets.internal.PostTransaction(credit(elsewhere, 25)))
    before = moved()
    items = [debit(wallet_id, 10), debit(wallet_id, 20)]
    results = await post_batch(wallets, items)
    assert [outcome(r) for r in results] == [OK, OK]
    assert moved() == before  # the settlement account's balance decides nothing

    async def settlement_posted() -> int:
        posted = await wallets.scalar("SELECT posted FROM accounts WHERE id = :id", id=settlement)
        assert isinstance(posted, int)
        return posted

    # Each settlement leg carries the balance it really left, with the credit that came between.
    legs = await wallets.scalar(
        "SELECT array_agg(p.balance_after ORDER BY p.seq) FROM postings p JOIN ledger_transactions t"
        " ON t.id = p.transaction_id WHERE p.account_id = :id AND t.reference = ANY(:refs)",
        id=settlement,
        refs=[item.reference for item in items],
    )
    final = await settlement_posted()
    assert legs == [final - 20, final]
