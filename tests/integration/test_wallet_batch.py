"""PostTransactions over real gRPC against the real PostgreSQL: order, refusals, replays, events, access."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from devstack.stack import Stack
from paymesh.common.v1 import money_pb2
from paymesh.events.v1 import events_pb2
from paymesh.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from paymesh_runtime.identity import SERVICE_TOKEN_HEADER
from paymesh_runtime.outbox import CONTENT_TYPE
from tests.integration.wallet_support import (
    SETTLEMENT,
    Wallets,
    as_user,
    new_user,
    reason_of,
    running_wallet,
    transfer,
    usd,
    wallet_ref,
)
from wallet_svc.batch import MAX_TRANSACTIONS
from wallet_svc.store import constraint_of

pytestmark = pytest.mark.integration

OK = "OK"
REPLAYED = "REPLAYED"


@pytest.fixture(scope="module")
async def wallets(infra: Stack) -> AsyncIterator[Wallets]:
    async with running_wallet(infra) as running:
        yield running


def status_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(f"no ErrorInfo in {status}")


def outcome(result: wallet_pb2.PostTransactionResult) -> str:
    """OK (posted now), REPLAYED, or the refusal's ErrorInfo reason."""
    if result.HasField("error"):
        assert not result.replayed
        return str(status_info(result.error).reason)
    assert result.HasField("transaction")
    return REPLAYED if result.replayed else OK


async def post_batch(
    wallets: Wallets, items: Sequence[wallet_pb2.PostTransactionRequest]
) -> list[wallet_pb2.PostTransactionResult]:
    response = await wallets.internal.PostTransactions(wallet_pb2.PostTransactionsRequest(transactions=items))
    assert len(response.results) == len(items)
    return list(response.results)


def debit(wallet_id: str, amount: int, reference: str | None = None) -> wallet_pb2.PostTransactionRequest:
    return transfer(reference or f"debit-{uuid.uuid4()}", wallet_ref(wallet_id), SETTLEMENT, amount)


def credit(wallet_id: str, amount: int, reference: str | None = None) -> wallet_pb2.PostTransactionRequest:
    return transfer(reference or f"credit-{uuid.uuid4()}", SETTLEMENT, wallet_ref(wallet_id), amount)


async def funded_wallet(wallets: Wallets, amount: int) -> str:
    wallet_id = await wallets.open_wallet(new_user())
    if amount:
        await wallets.fund(wallet_id, amount)
    return wallet_id


async def lowest_balance(wallets: Wallets, wallet_id: str) -> int:
    lowest = await wallets.scalar(
        "SELECT min(balance_after - a.held) FROM postings p JOIN accounts a ON a.id = p.account_id"
        " WHERE p.account_id = :id",
        id=uuid.UUID(wallet_id),
    )
    assert isinstance(lowest, int)
    return lowest


# --- order and refusals ---------------------------------------------------------------------------


async def test_50_debits_of_30_against_1000_in_one_batch_post_exactly_the_first_33(wallets: Wallets) -> None:
    wallet_id = await funded_wallet(wallets, 1000)
    results = await post_batch(wallets, [debit(wallet_id, 30) for _ in range(50)])
    assert [outcome(r) for r in results] == [OK] * 33 + ["INSUFFICIENT_FUNDS"] * 17
    for refused in results[33:]:
        assert refused.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert dict(status_info(refused.error).metadata) == {"wallet_id": wallet_id}
    assert await wallets.balances(wallet_id) == (10, 0)
    assert await lowest_balance(wallets, wallet_id) == 10
    assert await balance_history(wallets, wallet_id) == list(range(1000, 9, -30))


async def balance_history(wallets: Wallets, wallet_id: str) -> list[int]:
    async with wallets.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT balance_after FROM postings WHERE account_id = :id ORDER BY seq"), {"id": uuid.UUID(wallet_id)}
        )
        return [row.balance_after for row in rows]


async def test_a_later_item_sees_what_the_earlier_ones_left(wallets: Wallets) -> None:
    wallet_id = await funded_wallet(wallets, 0)
    items = [
        debit(wallet_id, 10),
        credit(wallet_id, 25),
        debit(wallet_id, 10),
        debit(wallet_id, 10),
        debit(wallet_id, 10),
    ]
    results = await post_batch(wallets, items)
    assert [outcome(r) for r in results] == ["INSUFFICIENT_FUNDS", OK, OK, OK, "INSUFFICIENT_FUNDS"]
    assert await wallets.balances(wallet_id) == (5, 0)
    entries = await wallets.public.ListEntries(
        wallet_pb2.ListEntriesRequest(wallet_id=wallet_id), metadata=as_user(await owner_of(wallets, wallet_id))
    )
    assert [e.balance_after.amount for e in reversed(entries.entries)] == [25, 15, 5]


async def owner_of(wallets: Wallets, wallet_id: str) -> str:
    owner = await wallets.scalar("SELECT owner_id FROM accounts WHERE id = :id", id=uuid.UUID(wallet_id))
    assert isinstance(owner, str)
    return owner


async def test_refusals_inside_a_batch_are_the_statuses_post_transaction_answers(wallets: Wallets) -> None:
    payer, payee = await funded_wallet(wallets, 500), await funded_wallet(wallets, 0)
    frozen, closed = await funded_wallet(wallets, 100), await funded_wallet(wallets, 0)
    admin = as_user("ops", "ADMIN")
    await wallets.public.FreezeWallet(wallet_pb2.FreezeWalletRequest(wallet_id=frozen, reason="kyc"), metadata=admin)
    await wallets.public.CloseWallet(wallet_pb2.CloseWalletRequest(wallet_id=closed), metadata=admin)
    eur_credit = wallet_pb2.PostTransactionRequest(
        reference=f"eur-{uuid.uuid4()}",
        postings=[
            wallet_pb2.Posting(account=SETTLEMENT, amount=money_pb2.Money(currency="EUR", amount=-5)),
            wallet_pb2.Posting(account=wallet_ref(payee), amount=money_pb2.Money(currency="EUR", amount=5)),
        ],
    )
    unbalanced = transfer(f"unbalanced-{uuid.uuid4()}", wallet_ref(payer), SETTLEMENT, 5)
    unbalanced.postings[1].amount.amount = 4
    malformed = transfer(f"malformed-{uuid.uuid4()}", wallet_ref("not-a-uuid"), SETTLEMENT, 5)
    items = [
        transfer(f"pay-{uuid.uuid4()}", wallet_ref(payer), wallet_ref(payee), 100),
        debit(frozen, 10),  # a frozen wallet: no debit...
        credit(frozen, 10),  # ...but credits still land
        credit(closed, 10),
        eur_credit,
        transfer(f"ghost-{uuid.uuid4()}", wallet_ref(payer), wallet_ref(str(uuid.uuid4())), 10),
        unbalanced,
        malformed,
        transfer(f"pay-{uuid.uuid4()}", wallet_ref(payer), wallet_ref(payee), 100),
    ]
    results = await post_batch(wallets, items)
    assert [outcome(r) for r in results] == [
        OK,
        "WALLET_FROZEN",
        OK,
        "WALLET_CLOSED",
        "CURRENCY_MISMATCH",
        "RESOURCE_NOT_FOUND",
        "UNBALANCED_TRANSACTION",
        "VALIDATION_FAILED",
        OK,
    ]
    assert await wallets.balances(payer) == (300, 0)
    assert await wallets.balances(payee) == (200, 0)
    assert await wallets.balances(frozen) == (110, 0)
    assert await wallets.balances(closed) == (0, 0)
    # Each refusal is exactly what PostTransaction answers for that item alone (it changes nothing).
    for item, result in zip(items, results, strict=True):
        if result.HasField("error"):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await wallets.internal.PostTransaction(item)
            single = rpc_status.from_call(raised.value)  # type: ignore[arg-type]
            assert single == result.error
    refused_references = [item.reference for item, r in zip(items, results, strict=True) if r.HasField("error")]
    assert (
        await wallets.scalar(
            "SELECT count(*) FROM ledger_references WHERE reference = ANY(:refs)", refs=refused_references
        )
        == 0
    )


async def test_every_item_gets_the_result_post_transaction_would_give(wallets: Wallets) -> None:
    payer, payee = await funded_wallet(wallets, 100), await funded_wallet(wallets, 0)
    item = transfer(f"pay-{uuid.uuid4()}", wallet_ref(payer), wallet_ref(payee), 40)
    item.description = "order 17"
    [result] = await post_batch(wallets, [item])
    assert outcome(result) == OK
    tx = result.transaction
    assert (tx.reference, tx.payment_id, tx.description) == (item.reference, item.payment_id, "order 17")
    assert {(p.account.wallet_id, p.amount.amount) for p in tx.postings} == {(payer, -40), (payee, 40)}
    # PostTransaction with the same reference replays the batch's transaction, and the reverse.
    assert await wallets.internal.PostTransaction(item) == tx
    single = await wallets.internal.PostTransaction(debit(payer, 10))
    [again] = await post_batch(wallets, [debit(payer, 10, reference=single.reference)])
    assert outcome(again) == REPLAYED
    assert again.transaction == single


# --- idempotency ----------------------------------------------------------------------------------


async def test_the_same_batch_sent_twice_posts_once_and_replays_every_item(wallets: Wallets) -> None:
    payer, payee = await funded_wallet(wallets, 1000), await funded_wallet(wallets, 0)
    items = [transfer(f"pay-{uuid.uuid4()}", wallet_ref(payer), wallet_ref(payee), 10 + i) for i in range(20)]
    first = await post_batch(wallets, items)
    events_before = await count_events(wallets, payer, payee)
    second = await post_batch(wallets, items)
    assert [outcome(r) for r in first] == [OK] * 20
    assert [outcome(r) for r in second] == [REPLAYED] * 20
    assert [r.transaction for r in second] == [r.transaction for r in first]
    posted = sum(10 + i for i in range(20))
    assert await wallets.balances(payer) == (1000 - posted, 0)
    assert await wallets.balances(payee) == (posted, 0)
    assert await count_events(wallets, payer, payee) == events_before == 1 + 20 + 20


async def count_events(wallets: Wallets, *wallet_ids: str) -> int:
    found = await wallets.scalar(
        "SELECT count(*) FROM outbox WHERE event_type = 'wallet.posted' AND aggregate_id = ANY(:ids)",
        ids=list(wallet_ids),
    )
    assert isinstance(found, int)
    return found


async def test_a_reference_reused_with_other_arguments_is_refused_for_that_item_only(wallets: Wallets) -> None:
    wallet_id = await funded_wallet(wallets, 100)
    hold = await wallets.internal.CreateHold(
        wallet_pb2.CreateHoldRequest(reference=f"hold-{uuid.uuid4()}", wallet_id=wallet_id, amount=usd(5))
    )
    posted = await wallets.internal.PostTransaction(debit(wallet_id, 10))
    items = [
        debit(wallet_id, 11, reference=posted.reference),  # another amount
        debit(wallet_id, 10, reference=hold.reference),  # another method's reference
        debit(wallet_id, 10),
    ]
    results = await post_batch(wallets, items)
    assert [outcome(r) for r in results] == ["IDEMPOTENCY_KEY_REUSED", "IDEMPOTENCY_KEY_REUSED", OK]
    assert results[0].error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert dict(status_info(results[0].error).metadata) == {"idempotency_key": posted.reference}
    assert await wallets.balances(wallet_id) == (80, 5)


async def test_a_reference_repeated_in_a_batch_behaves_as_a_second_call_would(wallets: Wallets) -> None:
    wallet_id = await funded_wallet(wallets, 0)
    posted, refused = f"twice-{uuid.uuid4()}", f"retried-{uuid.uuid4()}"
    items = [
        credit(wallet_id, 50, reference=posted),
        credit(wallet_id, 50, reference=posted),  # the same call again: a replay of the first
        credit(wallet_id, 60, reference=posted),  # other arguments
        debit(wallet_id, 80, reference=refused),  # refused: the reference stays free...
        credit(wallet_id, 40),
        debit(wallet_id, 80, reference=refused),  # ...so the same call runs again, and now fits
        debit(wallet_id, 80, reference=refused),  # and is replayed after that
    ]
    results = await post_batch(wallets, items)
    assert [outcome(r) for r in results] == [
        OK,
        REPLAYED,
        "IDEMPOTENCY_KEY_REUSED",
        "INSUFFICIENT_FUNDS",
        OK,
        OK,
        REPLAYED,
    ]
    assert results[1].transaction == results[0].transaction
    assert results[6].transaction == results[5].transaction
    assert await wallets.balances(wallet_id) == (10, 0)
    replayed = await post_batch(wallets, items)
    assert [outcome(r) for r in replayed] == [
        REPLAYED,
        REPLAYED,
        "IDEMPOTENCY_KEY_REUSED",
        REPLAYED,
        REPLAYED,
        REPLAYED,
        REPLAYED,
    ]
    assert await wallets.balances(wallet_id) == (10, 0)


async def test_a_reference_refused_then_posted_with_other_arguments_keeps_the_posted_ones(wallets: Wallets) -> None:
    wallet_id = await funded_wallet(wallets, 0)
    reference = f"changed-{uuid.uuid4()}"
    items = [
        debit(wallet_id, 80, reference=reference),
        credit(wallet_id, 100),
        debit(wallet_id, 81, reference=reference),
    ]
    assert [outcome(r) for r in await post_batch(wallets, items)] == ["INSUFFICIENT_FUNDS", OK, OK]
    again = await post_batch(wallets, [items[2], items[0]])
    assert [outcome(r) for r in again] == [REPLAYED, "IDEMPOTENCY_KEY_REUSED"]
    assert await wallets.balances(wallet_id) == (19, 0)


async def test_only_the_transaction_that_claimed_a_reference_may_take_it_back(wallets: Wallets) -> None:
    posted = await wallets.internal.PostTransaction(credit(await funded_wallet(wallets, 0), 5))
    for statement in (
        "DELETE FROM ledger_references WHERE reference = :ref",
        "UPDATE ledger_references SET fingerprint = 'forged' WHERE reference = :ref",
    ):
        with pytest.raises(IntegrityError) as raised:
            async with wallets.engine.begin() as conn:
                await conn.execute(text(statement), {"ref": posted.reference})
        assert constraint_of(raised.value) == "ledger_references_immutable"
    own = f"own-{uuid.uuid4()}"
    async with wallets.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO ledger_references (reference, operation, fingerprint, transaction_id)"
                " VALUES (:ref, 'PostTransaction', 'f', :tx)"
            ),
            {"ref": own, "tx": uuid.uuid4()},
        )
        deleted = await conn.execute(text("DELETE FROM ledger_references WHERE reference = :ref"), {"ref": own})
        assert deleted.rowcount == 1  # type: ignore[attr-defined]
    assert await wallets.scalar("SELECT count(*) FROM ledger_references WHERE reference = :ref", ref=posted.reference)
    assert await wallets.scalar("SELECT count(*) FROM ledger_references WHERE reference = :ref", ref=own) == 0


# --- limits and access ------------------------------------------------------------------------------


async def test_more_than_the_maximum_is_refused_as_a_whole_and_posts_nothing(wallets: Wallets) -> None:
    wallet_id = await funded_wallet(wallets, 0)
    items = [credit(wallet_id, 1) for _ in range(MAX_TRANSACTIONS + 1)]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await wallets.internal.PostTransactions(wallet_pb2.PostTransactionsRequest(transactions=items))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(raised.value) == "VALIDATION_FAILED"
    assert await wallets.balances(wallet_id) == (0, 0)
    results = await post_batch(wallets, items[:MAX_TRANSACTIONS])
    assert {outcome(r) for r in results} == {OK}
    assert await wallets.balances(wallet_id) == (MAX_TRANSACTIONS, 0)
    assert await post_batch(wallets, []) == []


async def test_only_payment_svcs_service_identity_may_post_batches(wallets: Wallets) -> None:
    wallet_id = await funded_wallet(wallets, 0)
    reference = f"credit-{uuid.uuid4()}"
    request = wallet_pb2.PostTransactionsRequest(transactions=[credit(wallet_id, 10, reference=reference)])
    callers = [
        (as_user(new_user()), grpc.StatusCode.UNAUTHENTICATED),  # an end user: no service identity
        (as_user("ops", "ADMIN"), grpc.StatusCode.UNAUTHENTICATED),  # even an admin
        (((SERVICE_TOKEN_HEADER, wallets.tokens.issue("notify_svc")),), grpc.StatusCode.PERMISSION_DENIED),
    ]
    async with grpc.aio.insecure_channel(wallets.address) as channel:
        stub = wallet_pb2_grpc.WalletServiceStub(channel)
        for metadata, code in callers:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.PostTransactions(request, metadata=metadata)
            assert raised.value.code() == code
            assert reason_of(raised.value) == "SERVICE_IDENTITY_REQUIRED"
    assert await wallets.balances(wallet_id) == (0, 0)
    assert await wallets.scalar("SELECT count(*) FROM ledger_references WHERE reference = :r", r=reference) == 0


# --- events ---------------------------------------------------------------------------------------


async def test_posted_items_enqueue_the_events_post_transaction_does_in_one_sequence(wallets: Wallets) -> None:
    payer, payee = await funded_wallet(wallets, 100), await funded_wallet(wallets, 0)
    await wallets.internal.PostTransaction(transfer(f"pay-{uuid.uuid4()}", wallet_ref(payer), wallet_ref(payee), 10))
    results = await post_batch(
        wallets,
        [
            transfer(f"pay-{uuid.uuid4()}", wallet_ref(payer), wallet_ref(payee), 20),
            debit(payer, 1000),  # refused: no event
            transfer(f"pay-{uuid.uuid4()}", wallet_ref(payee), wallet_ref(payer), 5),
        ],
    )
    assert [outcome(r) for r in results] == [OK, "INSUFFICIENT_FUNDS", OK]
    await wallets.internal.PostTransaction(debit(payee, 1))
    every = await wallet_events(wallets, payee)
    assert [e.sequence for e in every] == list(range(1, len(every) + 1))  # wallet.created first
    events = [e for e in every if e.type == "wallet.posted"]
    assert [e.wallet_posted.entry.amount.amount for e in events] == [10, 20, -5, -1]
    assert [e.wallet_posted.available_balance.amount for e in events] == [10, 30, 25, 24]
    assert {e.producer for e in events} == {"wallet_svc"}
    assert events[1].wallet_posted.entry.transaction_id == results[0].transaction.transaction_id
    assert events[1].wallet_posted.owner_id == await owner_of(wallets, payee)
    payer_events = [e for e in await wallet_events(wallets, payer) if e.type == "wallet.posted"]
    assert [e.wallet_posted.available_balance.amount for e in payer_events] == [100, 90, 70, 75]


async def wallet_events(wallets: Wallets, wallet_id: str) -> list[events_pb2.Event]:
    """The wallet's events in the order the relay publishes them."""
    async with wallets.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT payload, headers FROM outbox WHERE aggregate_id = :id ORDER BY position"), {"id": wallet_id}
        )
        found = []
        for row in rows:
            event = events_pb2.Event.FromString(row.payload)
            assert row.headers["event-type"] == event.type
            assert row.headers["content-type"] == CONTENT_TYPE
            assert event.aggregate_id == wallet_id
            found.append(event)
    return found
