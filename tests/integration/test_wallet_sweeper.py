"""Expired holds are released by the sweeper, once, even with several sweepers at work."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from devstack.stack import Stack
from paymesh.wallet.v1 import wallet_pb2
from tests.integration.wallet_support import Wallets, new_user, reason_of, running_wallet, usd, wallet_ref
from wallet_svc.sweeper import HoldSweeper

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def wallets(infra: Stack) -> AsyncIterator[Wallets]:
    async with running_wallet(infra) as running:
        yield running


async def short_hold(wallets: Wallets, wallet_id: str, amount: int) -> wallet_pb2.Hold:
    return await wallets.internal.CreateHold(
        wallet_pb2.CreateHoldRequest(
            reference=f"hold-{uuid.uuid4()}", wallet_id=wallet_id, amount=usd(amount), ttl_seconds=1
        )
    )


async def poll_until_state(wallets: Wallets, hold_id: str, state: int) -> wallet_pb2.Hold:
    """The hold once it reaches `state`, or as it is after ten seconds."""
    for _ in range(100):
        hold = await wallets.internal.GetHold(wallet_pb2.GetHoldRequest(hold_id=hold_id))
        if hold.state == state:
            break
        await asyncio.sleep(0.1)
    return hold


async def test_an_expired_hold_is_released_by_the_sweeper_loop(wallets: Wallets) -> None:
    payer, payee = await wallets.open_wallet(new_user()), await wallets.open_wallet(new_user())
    await wallets.fund(payer, 100)
    hold = await short_hold(wallets, payer, 80)
    assert await wallets.balances(payer) == (100, 80)
    await asyncio.sleep(1.2)
    # Past its expiry the hold cannot be captured, even before the sweeper ran.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await wallets.internal.CaptureHold(
            wallet_pb2.CaptureHoldRequest(
                reference=f"capture-{uuid.uuid4()}", hold_id=hold.hold_id, amount=usd(80), destination=wallet_ref(payee)
            )
        )
    assert reason_of(raised.value) == "HOLD_NOT_OPEN"

    sweeper = HoldSweeper(wallets.engine, interval_seconds=0.1, batch_size=10)
    task = asyncio.create_task(sweeper.run())
    try:
        swept = await poll_until_state(wallets, hold.hold_id, wallet_pb2.Hold.EXPIRED)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert swept.state == wallet_pb2.Hold.EXPIRED
    assert swept.captured_amount.amount == 0
    assert await wallets.balances(payer) == (100, 0)
    assert await wallets.balances(payee) == (0, 0)


async def test_several_sweepers_release_each_expired_hold_exactly_once(wallets: Wallets) -> None:
    payers = [await wallets.open_wallet(new_user()) for _ in range(4)]
    for payer in payers:
        await wallets.fund(payer, 1000)
    holds = await asyncio.gather(*(short_hold(wallets, payer, 10) for payer in payers for _ in range(40)))
    live = await wallets.internal.CreateHold(  # the default lifetime: not due
        wallet_pb2.CreateHoldRequest(reference=f"hold-{uuid.uuid4()}", wallet_id=payers[0], amount=usd(5))
    )
    await asyncio.sleep(1.2)
    sweepers = [HoldSweeper(wallets.engine, interval_seconds=0.1, batch_size=7) for _ in range(4)]
    counts = await asyncio.gather(*(sweeper.sweep_once() for sweeper in sweepers))
    # Another sweeper on this database (a wallet_svc of the e2e stack) may take
    # some; releasing one twice would break `held` (CHECK held >= 0) instead.
    assert sum(counts) <= len(holds)
    assert await wallets.balances(payers[0]) == (1000, 5)
    for payer in payers[1:]:
        assert await wallets.balances(payer) == (1000, 0)
    expired = await wallets.scalar(
        "SELECT count(*) FROM holds WHERE id = ANY(:ids) AND state = 'EXPIRED'",
        ids=[uuid.UUID(h.hold_id) for h in holds],
    )
    assert expired == len(holds)
    still_open = await wallets.internal.GetHold(wallet_pb2.GetHoldRequest(hold_id=live.hold_id))
    assert still_open.state == wallet_pb2.Hold.OPEN
