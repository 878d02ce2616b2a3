"""The ledger under concurrent load, and the database refusing what must never be stored."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from devstack.stack import Stack
from paymesh.wallet.v1 import wallet_pb2
from tests.integration.wallet_support import (
    SETTLEMENT,
    Wallets,
    new_user,
    reason_of,
    running_wallet,
    transfer,
    usd,
    wallet_ref,
)
from wallet_svc.store import constraint_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def wallets(infra: Stack) -> AsyncIterator[Wallets]:
    async with running_wallet(infra) as running:
        yield running


async def outcome(call: object) -> str:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return reason_of(error)
    return "OK"


async def test_200_concurrent_debits_of_10_against_1000_leave_exactly_100_successes(wallets: Wallets) -> None:
    wallet_id = await wallets.open_wallet(new_user())
    await wallets.fund(wallet_id, 1000)
    results = await asyncio.gather(
        *(
            outcome(
                wallets.internal.PostTransaction(
                    transfer(f"debit-{uuid.uuid4()}", wallet_ref(wallet_id), SETTLEMENT, 10)
                )
            )
            for _ in range(200)
        )
    )
    assert Counter(results) == {"OK": 100, "INSUFFICIENT_FUNDS": 100}
    assert await wallets.balances(wallet_id) == (0, 0)
    debits = await wallets.scalar(
        "SELECT count(*) FROM postings WHERE account_id = :id AND amount < 0", id=uuid.UUID(wallet_id)
    )
    assert debits == 100


async def test_1000_concurrent_credits_of_1_add_exactly_1000(wallets: Wallets) -> None:
    wallet_id = await wallets.open_wallet(new_user())
    results = await asyncio.gather(
        *(
            outcome(
                wallets.internal.PostTransaction(
                    transfer(f"credit-{uuid.uuid4()}", SETTLEMENT, wallet_ref(wallet_id), 1)
                )
            )
            for _ in range(1000)
        )
    )
    assert Counter(results) == {"OK": 1000}
    assert await wallets.balances(wallet_id) == (1000, 0)
    last = await wallets.scalar(
        "SELECT balance_after FROM postings WHERE account_id = :id ORDER BY seq DESC LIMIT 1", id=uuid.UUID(wallet_id)
    )
    assert last == 1000


async def test_200_concurrent_holds_of_10_against_1000_reserve_exactly_1000(wallets: Wallets) -> None:
    wallet_id = await wallets.open_wallet(new_user())
    await wallets.fund(wallet_id, 1000)
    results = await asyncio.gather(
        *(
            outcome(
                wallets.internal.CreateHold(
                    wallet_pb2.CreateHoldRequest(reference=f"hold-{uuid.uuid4()}", wallet_id=wallet_id, amount=usd(10))
                )
            )
            for _ in range(200)
        )
    )
    assert Counter(results) == {"OK": 100, "INSUFFICIENT_FUNDS": 100}
    assert await wallets.balances(wallet_id) == (1000, 1000)


async def test_concurrent_captures_and_releases_of_one_hold_take_effect_once(wallets: Wallets) -> None:
    payer, payee = await wallets.open_wallet(new_user()), await wallets.open_wallet(new_user())
    await wallets.fund(payer, 100)
    hold = await wallets.internal.CreateHold(
        wallet_pb2.CreateHoldRequest(reference=f"hold-{uuid.uuid4()}", wallet_id=payer, amount=usd(100))
    )
    captures = [
        wallets.internal.CaptureHold(
            wallet_pb2.CaptureHoldRequest(
                reference=f"capture-{uuid.uuid4()}", hold_id=hold.hold_id, amount=usd(60), destination=wallet_ref(payee)
            )
        )
        for _ in range(10)
    ]
    releases = [
        wallets.internal.ReleaseHold(
            wallet_pb2.ReleaseHoldRequest(reference=f"release-{uuid.uuid4()}", hold_id=hold.hold_id)
        )
        for _ in range(10)
    ]
    results = Counter(await asyncio.gather(*(outcome(call) for call in captures + releases)))
    assert results == {"OK": 1, "HOLD_NOT_OPEN": 19}
    payer_balance, payee_balance = await wallets.balances(payer), await wallets.balances(payee)
    assert (payer_balance, payee_balance) in {((40, 0), (60, 0)), ((100, 0), (0, 0))}


# --- the database backs every invariant, whatever the service does -------------------------------


async def expect_refused(wallets: Wallets, constraint: str, *statements: str, **params: object) -> None:
    async def run() -> None:
        async with wallets.engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement), params)

    with pytest.raises(IntegrityError) as raised:
        await run()
    assert constraint_of(raised.value) == constraint


async def test_the_database_refuses_balances_that_bypass_the_ledger(wallets: Wallets) -> None:
    wallet_id = await wallets.open_wallet(new_user())
    await wallets.fund(wallet_id, 50)
    wid = uuid.UUID(wallet_id)
    await expect_refused(
        wallets, "accounts_balance_via_ledger", "UPDATE accounts SET posted = posted + 1 WHERE id = :id", id=wid
    )
    await expect_refused(wallets, "accounts_balance_via_ledger", "UPDATE accounts SET held = 1 WHERE id = :id", id=wid)
    await expect_refused(wallets, "postings_immutable", "UPDATE postings SET amount = 1 WHERE account_id = :id", id=wid)
    await expect_refused(wallets, "postings_immutable", "DELETE FROM postings WHERE account_id = :id", id=wid)
    assert await wallets.balances(wallet_id) == (50, 0)


async def test_the_database_refuses_unbalanced_or_overdrawing_postings(wallets: Wallets) -> None:
    wallet_id = await wallets.open_wallet(new_user())
    await wallets.fund(wallet_id, 50)
    tx = uuid.uuid4()
    header = "INSERT INTO ledger_transactions (id, reference) VALUES (:tx, :ref)"
    leg = "INSERT INTO postings (id, transaction_id, account_id, currency, amount) VALUES (gen_random_uuid(), :tx, {})"
    settlement = "(SELECT id FROM accounts WHERE system_account = 'EXTERNAL_SETTLEMENT' AND currency = 'USD')"
    ref = f"raw-{tx}"
    await expect_refused(
        wallets,
        "ledger_transactions_balanced",
        header,
        leg.format(":id, 'USD', 10"),
        tx=tx,
        ref=ref,
        id=uuid.UUID(wallet_id),
    )
    await expect_refused(
        wallets,
        "accounts_available_nonnegative",
        header,
        leg.format(":id, 'USD', -51"),
        leg.format(f"{settlement}, 'USD', 51"),
        tx=tx,
        ref=ref,
        id=uuid.UUID(wallet_id),
    )
    await expect_refused(
        wallets,
        "postings_account_currency",
        header,
        leg.format(":id, 'EUR', -5"),
        leg.format(f"{settlement}, 'USD', 5"),
        tx=tx,
        ref=ref,
        id=uuid.UUID(wallet_id),
    )
    assert await wallets.balances(wallet_id) == (50, 0)
