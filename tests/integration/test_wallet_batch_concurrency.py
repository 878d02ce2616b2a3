"""PostTransactions racing other batches and single calls on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from devstack.stack import Stack
from paymesh.wallet.v1 import wallet_pb2
from tests.integration.test_wallet_batch import (
    OK,
    REPLAYED,
    credit,
    debit,
    funded_wallet,
    lowest_balance,
    outcome,
    post_batch,
    status_info,
)
from tests.integration.wallet_support import FEES, Wallets, reason_of, running_wallet, transfer, wallet_ref

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def wallets(infra: Stack) -> AsyncIterator[Wallets]:
    async with running_wallet(infra) as running:
        yield running


async def single_outcome(wallets: Wallets, item: wallet_pb2.PostTransactionRequest) -> str:
    try:
        await wallets.internal.PostTransaction(item)
    except grpc.aio.AioRpcError as error:
        return reason_of(error)
    return OK


async def test_50_debits_of_30_racing_in_batches_and_single_calls_post_exactly_33(wallets: Wallets) -> None:
    wallet_id = await funded_wallet(wallets, 1000)
    batches = [[debit(wallet_id, 30) for _ in range(8)] for _ in range(5)]
    singles = [debit(wallet_id, 30) for _ in range(10)]
    batch_results, single_results = await asyncio.gather(
        asyncio.gather(*(post_batch(wallets, items) for items in batches)),
        asyncio.gather(*(single_outcome(wallets, item) for item in singles)),
    )
    outcomes = [[outcome(result) for result in results] for results in batch_results]
    assert Counter([o for batch in outcomes for o in batch] + single_results) == {OK: 33, "INSUFFICIENT_FUNDS": 17}
    for batch in outcomes:
        # A batch is judged on the balance it found: once one item no longer fits, none after it does.
        fitted = batch.count(OK)
        assert batch == [OK] * fitted + ["INSUFFICIENT_FUNDS"] * (len(batch) - fitted)
    for results in batch_results:
        for refused in results:
            if refused.HasField("error"):
                assert dict(status_info(refused.error).metadata) == {"wallet_id": wallet_id}
    assert await wallets.balances(wallet_id) == (10, 0)
    assert await lowest_balance(wallets, wallet_id) == 10


async def test_batches_over_the_same_wallets_in_opposite_orders_never_deadlock(wallets: Wallets) -> None:
    ring = [await funded_wallet(wallets, 10_000) for _ in range(6)]
    forward = list(zip(ring, ring[1:] + ring[:1], strict=True))
    backward = [(payee, payer) for payer, payee in reversed(forward)]

    def batch(pairs: list[tuple[str, str]], amount: int) -> list[wallet_pb2.PostTransactionRequest]:
        moves = [transfer(f"ring-{uuid.uuid4()}", wallet_ref(a), wallet_ref(b), amount) for a, b in pairs * 3]
        # The system accounts too: every batch locks them, at either end of its id order.
        return [credit(pairs[0][0], 7), *moves, transfer(f"fee-{uuid.uuid4()}", wallet_ref(pairs[-1][1]), FEES, 3)]

    for _ in range(3):
        batches = [batch(forward if i % 2 else backward, 1 + i) for i in range(12)]
        singles = [transfer(f"one-{uuid.uuid4()}", wallet_ref(a), wallet_ref(b), 2) for a, b in forward + backward]
        results, single_results = await asyncio.gather(
            asyncio.gather(*(post_batch(wallets, items) for items in batches)),
            asyncio.gather(*(single_outcome(wallets, item) for item in singles)),
        )
        assert {outcome(result) for batch_results in results for result in batch_results} == {OK}
        assert set(single_results) == {OK}
    # 3 rounds of 12 batches, each crediting 7 from settlement and paying a fee of 3.
    assert sum([(await wallets.balances(wallet_id))[0] for wallet_id in ring]) == 6 * 10_000 + 3 * 12 * (7 - 3)
    unbalanced = await wallets.scalar(
        "SELECT count(*) FROM (SELECT currency FROM postings GROUP BY currency HAVING sum(amount) <> 0) AS c"
    )
    assert unbalanced == 0
    drifted = await wallets.scalar(
        "SELECT count(*) FROM accounts a"
        " WHERE a.posted <> (SELECT coalesce(sum(p.amount), 0) FROM postings p WHERE p.account_id = a.id)"
    )
    assert drifted == 0


async def test_a_batch_and_single_calls_racing_on_one_reference_take_effect_once(wallets: Wallets) -> None:
    payer, payee = await funded_wallet(wallets, 1000), await funded_wallet(wallets, 0)
    for _ in range(10):
        reference = f"race-{uuid.uuid4()}"
        item = transfer(reference, wallet_ref(payer), wallet_ref(payee), 10)
        single, first, second = await asyncio.gather(
            wallets.internal.PostTransaction(item),
            post_batch(wallets, [item, credit(payee, 1)]),
            post_batch(wallets, [credit(payer, 1), item]),
        )
        batch_answers = [first[0], second[1]]
        assert {a.transaction.transaction_id for a in batch_answers} == {single.transaction_id}
        assert [outcome(a) for a in batch_answers].count(OK) <= 1  # the others replayed it
        posted = await wallets.scalar("SELECT count(*) FROM ledger_transactions WHERE reference = :r", r=reference)
        assert posted == 1
    assert await wallets.balances(payer) == (1000 - 10 * 10 + 10, 0)
    assert await wallets.balances(payee) == (10 * 10 + 10, 0)


async def test_a_reference_raced_with_other_arguments_posts_one_of_them(wallets: Wallets) -> None:
    wallet_id = await funded_wallet(wallets, 1000)
    for _ in range(10):
        reference = f"race-{uuid.uuid4()}"
        single, [batched] = await asyncio.gather(
            single_outcome(wallets, debit(wallet_id, 10, reference=reference)),
            post_batch(wallets, [debit(wallet_id, 11, reference=reference)]),
        )
        assert sorted([single, outcome(batched)]) == sorted([OK, "IDEMPOTENCY_KEY_REUSED"])
        if batched.HasField("error"):
            assert batched.error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    posted, _ = await wallets.balances(wallet_id)
    assert 1000 - 11 * 10 <= posted <= 1000 - 10 * 10


async def test_a_reference_refused_in_a_batch_is_free_for_a_call_racing_it(wallets: Wallets) -> None:
    wallet_id = await funded_wallet(wallets, 100)
    for _ in range(10):
        reference = f"race-{uuid.uuid4()}"
        [batched], single = await asyncio.gather(
            post_batch(wallets, [debit(wallet_id, 1000, reference=reference)]),
            single_outcome(wallets, credit(wallet_id, 1, reference=reference)),
        )
        # The batch gave the reference back, or found the credit's: the credit posts either way.
        assert single == OK
        assert outcome(batched) in {"INSUFFICIENT_FUNDS", "IDEMPOTENCY_KEY_REUSED"}
        stored = await wallets.scalar("SELECT count(*) FROM ledger_references WHERE reference = :r", r=reference)
        assert stored == 1
    assert await wallets.balances(wallet_id) == (110, 0)


async def test_batches_sharing_references_in_opposite_orders_post_each_once(wallets: Wallets) -> None:
    payer, payee = await funded_wallet(wallets, 10_000), await funded_wallet(wallets, 0)
    items = [transfer(f"shared-{uuid.uuid4()}", wallet_ref(payer), wallet_ref(payee), 1) for _ in range(100)]
    # A call in flight holds the middle reference: both batches claim up to it and wait there at once.
    async with wallets.engine.connect() as blocker:
        pending = await blocker.begin()
        await blocker.execute(
            text(
                "INSERT INTO ledger_references (reference, operation, fingerprint, transaction_id)"
                " VALUES (:ref, 'PostTransaction', 'in flight', :tx)"
            ),
            {"ref": items[50].reference, "tx": uuid.uuid4()},
        )
        both = asyncio.gather(post_batch(wallets, items), post_batch(wallets, items[::-1]))
        await waiting_on_locks(wallets, 2)
        await pending.rollback()
        forward, backward = await both
    assert all(a.transaction == b.transaction for a, b in zip(forward, backward[::-1], strict=True))
    assert sorted(outcome(r) for r in forward + backward) == [OK] * 100 + [REPLAYED] * 100
    assert await wallets.balances(payee) == (100, 0)


async def waiting_on_locks(wallets: Wallets, count: int) -> None:
    for _ in range(200):
        waiting = await wallets.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        assert isinstance(waiting, int)
        if waiting >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} transactions wait on a lock")


def _single_post_batches() -> tuple[float, float]:
    """(batches, calls) that group commit handled for single PostTransaction calls so far."""
    labels = {"name": "wallet_post"}
    count = REGISTRY.get_sample_value("paymesh_group_commit_batch_size_count", labels) or 0.0
    total = REGISTRY.get_sample_value("paymesh_group_commit_batch_size_sum", labels) or 0.0
    return count, total


async def test_single_calls_in_flight_on_the_settlement_account_go_in_batches_each_judged_alone(
    wallets: Wallets,
) -> None:
    """Card payments, refunds and payouts all post to the one settlement account: concurrent single calls
    are gathered into batches (one lock of that account per batch), yet each answers as it would alone."""
    payees = [await funded_wallet(wallets, 0) for _ in range(40)]
    payer = await funded_wallet(wallets, 1000)
    batches_before, calls_before = _single_post_batches()
    credits = [credit(payee, 25) for payee in payees]
    debits = [debit(payer, 30) for _ in range(40)]
    answers = await asyncio.gather(*(single_outcome(wallets, item) for item in credits + debits))
    assert answers[:40] == [OK] * 40
    assert Counter(answers[40:]) == {OK: 33, "INSUFFICIENT_FUNDS": 7}
    batches, calls = _single_post_batches()
    assert calls - calls_before == 80
    assert batches - batches_before < 80  # some calls shared a batch
    for payee in payees:
        assert await wallets.balances(payee) == (25, 0)
    assert await wallets.balances(payer) == (10, 0)
    assert await lowest_balance(wallets, payer) == 10
    # Replayed alone, each call answers what it posted, and posts nothing more.
    again = await asyncio.gather(*(wallets.internal.PostTransaction(item) for item in credits[:5]))
    assert {tx.reference for tx in again} == {item.reference for item in credits[:5]}
    assert await wallets.balances(payees[0]) == (25, 0)
