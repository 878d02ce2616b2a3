"""A processor outcome that is not known is resolved by asking the processor, never assumed to have failed.

Real payment_svc processes, wallet_svc, PostgreSQL and the processor
simulator, whose faults (latency past payment_svc's timeout, dropped
webhooks, 5xx) make the outcome of a call unknown. Each test checks the
money on both sides: paymesh's ledger and the simulator's own books.

The sequence of the red-team report: a payout whose send timed out at the
processor (which paid it out) met an open circuit breaker on its next
attempt; payment_svc took that for "nothing happened", released the hold, and
the wallet could pay the same money out a second time.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import grpc
import httpx
import pytest

from devstack.stack import Stack
from paymesh.payment.v1 import payment_pb2
from tests.integration.payment_support import (
    Mesh,
    PaymentProcess,
    error_reason,
    ledger_invariants,
    processor_faults,
    start_dependencies,
    usd,
    user,
)

pytestmark = pytest.mark.integration
P, PO, R = payment_pb2.Payment, payment_pb2.Payout, payment_pb2.Refund

# Two failed calls open the breaker for 8 s: long enough for the recovery worker (every 0.3 s) to meet it.
# A payout or refund the processor settles later is polled after 1 s without its webhook.
ENV = {
    "PAYMENT_PROCESSOR_BREAKER_FAILURE_THRESHOLD": "2",
    "PAYMENT_PROCESSOR_BREAKER_OPEN_SECONDS": "8",
    "PAYMENT_PROCESSOR_POLL_SECONDS": "1",
}
SLOWER_THAN_THE_TIMEOUT = 1500  # ms; TEST_ENV's processor timeout is 1 s


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def mesh(infra: Stack) -> AsyncIterator[Mesh]:
    start_dependencies(infra)
    infra.up(["edge"])  # the simulator's webhooks reach payment_svc through Envoy
    PaymentProcess(infra).migrate()
    clients = Mesh(infra)
    yield clients
    await clients.close()


@pytest.fixture
def payment_svc(mesh: Mesh) -> Iterator[PaymentProcess]:
    process = PaymentProcess(mesh.stack, ENV)
    process.start()
    yield process
    process.stop()


# --- helpers ----------------------------------------------------------------------------------------


async def sim_objects(stack: Stack, collection: str, key: str | None) -> list[dict[str, Any]]:
    """The simulator's own records (created with an idempotency key, unless None)."""
    params = {} if key is None else {"idempotency_key": key}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports.processor}", timeout=5) as http:
        reply = await http.get(f"/v1/{collection}", params=params)
        reply.raise_for_status()
        data: list[dict[str, Any]] = reply.json()["data"]
        return data


async def sim_authorization(stack: Stack, authorization_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports.processor}", timeout=5) as http:
        reply = await http.get(f"/v1/authorizations/{authorization_id}")
        reply.raise_for_status()
        found: dict[str, Any] = reply.json()
        return found


async def payment_db(stack: Stack) -> asyncpg.Connection:
    return await asyncpg.connect(stack.database_url("payment", driver=""))


async def only_payout_of(stack: Stack, wallet_id: str) -> uuid.UUID:
    conn = await payment_db(stack)
    try:
        rows = await conn.fetch("SELECT payout_id FROM payouts WHERE wallet_id = $1", wallet_id)
    finally:
        await conn.close()
    assert len(rows) == 1, rows
    return uuid.UUID(str(rows[0]["payout_id"]))


async def step_of(stack: Stack, resource_id: uuid.UUID | str, step: str) -> asyncpg.Record:
    conn = await payment_db(stack)
    try:
        row = await conn.fetchrow(
            "SELECT status, outcome_unknown, attempts FROM saga_steps WHERE resource_id = $1 AND step = $2",
            uuid.UUID(str(resource_id)),
            step,
        )
    finally:
        await conn.close()
    assert row is not None, f"no step {step} for {resource_id}"
    return row


async def get_payout(mesh: Mesh, payout_id: uuid.UUID, owner: str) -> payment_pb2.Payout:
    reply: payment_pb2.Payout = await mesh.payments.GetPayout(
        payment_pb2.GetPayoutRequest(payout_id=str(payout_id)), metadata=user(owner)
    )
    return reply


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.3)


async def hold_steady(check: Callable[[], Awaitable[None]], seconds: float) -> None:
    """`check` keeps passing for `seconds` (the recovery worker retries meanwhile)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await check()
        await asyncio.sleep(0.3)


async def breaker_is_open(stack: Stack) -> bool:
    async with httpx.AsyncClient(timeout=5) as http:
        metrics = (await http.get(f"http://127.0.0.1:{stack.ports.metrics('payment')}/metrics")).text
    found = re.search(r'paymesh_processor_circuit_state\{processor="simulator"\} (\S+)', metrics)
    assert found is not None, metrics
    return float(found.group(1)) == 1.0


async def open_the_breaker(mesh: Mesh, who: str, wallet: str) -> None:
    """Two card payments the processor answers with a 500: the breaker (threshold 2) opens."""
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await mesh.pay(who, name("boom"), card="tok_processingError", destination=wallet, amount=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def create_payout(mesh: Mesh, owner: str, wallet: str, amount: int, bank: str = "btok_success") -> Any:
    return await mesh.payments.CreatePayout(
        payment_pb2.CreatePayoutRequest(wallet_id=wallet, amount=usd(amount), bank_account_token=bank),
        metadata=user(owner, key=name("po")),
    )


async def timed_out_payout(mesh: Mesh, owner: str, wallet: str, amount: int) -> uuid.UUID:
    """A payout whose send reaches the processor but answers after payment_svc gave up: 503, outcome unknown."""
    with processor_faults(mesh.stack, latency_ms=SLOWER_THAN_THE_TIMEOUT):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create_payout(mesh, owner, wallet, amount)
        await asyncio.sleep(SLOWER_THAN_THE_TIMEOUT / 1000)  # the processor finishes what it was sent
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(caught.value) == "DEPENDENCY_UNAVAILABLE"
    return await only_payout_of(mesh.stack, wallet)


# --- payouts ----------------------------------------------------------------------------------------


async def test_a_timed_out_payout_that_meets_an_open_breaker_keeps_its_hold_until_the_processor_answers(
    mesh: Mesh, payment_svc: PaymentProcess
) -> None:
    bob = name("bob")
    b = await mesh.wallet(bob, 1000)
    # No webhook: the answer can only come from asking the processor.
    with processor_faults(mesh.stack, webhook_drop_rate=1.0):
        payout_id = await timed_out_payout(mesh, bob, b, 600)
        assert (await sim_objects(mesh.stack, "payouts", f"{payout_id}:payout"))[0]["amount"] == 600
        await open_the_breaker(mesh, bob, b)

        async def hold_kept() -> None:
            assert await breaker_is_open(mesh.stack)  # every attempt of the recovery worker meets it
            payout = await get_payout(mesh, payout_id, bob)
            assert payout.state == PO.PENDING, payout
            assert await mesh.balance(b, bob) == (1000, 600)

        await hold_steady(hold_kept, 2.5)
        step = await step_of(mesh.stack, payout_id, "payout")
        assert step["outcome_unknown"]
        assert step["status"] == "STARTED"
        assert step["attempts"] >= 2

        async def paid() -> bool:
            return (await get_payout(mesh, payout_id, bob)).state == PO.SUCCEEDED

        await eventually(paid, 30, "the payout found at the processor and paid")
    assert await mesh.balance(b, bob) == (400, 0)
    assert (await step_of(mesh.stack, payout_id, "payout"))["status"] == "DONE"
    [sent] = await sim_objects(mesh.stack, "payouts", f"{payout_id}:payout")
    assert (sent["amount"], sent["status"]) == (600, "paid")
    # The money cannot leave twice: the wallet holds 400 now.
    second = await create_payout(mesh, bob, b, 1000)
    assert (second.state, second.failure_code) == (PO.FAILED, "insufficient_funds")
    await ledger_invariants(mesh.stack, [])


async def test_a_payout_the_processor_only_answers_with_gateway_timeouts_keeps_its_hold(
    mesh: Mesh, payment_svc: PaymentProcess
) -> None:
    # btok_timeout hangs, then answers 504 (here within payment_svc's timeout): a 5xx after sending says
    # nothing about whether the payout went out, so it must never release the hold.
    bob = name("bob")
    b = await mesh.wallet(bob, 1000)
    with processor_faults(mesh.stack, hang_seconds=0.3):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create_payout(mesh, bob, b, 300, bank="btok_timeout")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        payout_id = await only_payout_of(mesh.stack, b)

        async def hold_kept() -> None:
            assert (await get_payout(mesh, payout_id, bob)).state == PO.PENDING
            assert await mesh.balance(b, bob) == (1000, 300)

        await hold_steady(hold_kept, 6.0)  # asked again and again: never an answer, never a release
    assert (await step_of(mesh.stack, payout_id, "payout"))["outcome_unknown"]
    # An operator confirms with the processor that nothing was paid out, and records it.
    listed = operator(payment_svc, "unresolved")
    assert f"payout {payout_id}  step payout  state PENDING" in listed.stdout
    resolved = operator(payment_svc, "resolve", "--kind", "payout", "--id", str(payout_id), "--outcome", "declined")
    assert resolved.returncode == 0, resolved.stderr

    async def released() -> bool:
        return (await get_payout(mesh, payout_id, bob)).failure_code == "resolved_by_operator"

    await eventually(released, 20, "the payout released from the operator's answer")
    assert await mesh.balance(b, bob) == (1000, 0)
    again = operator(payment_svc, "resolve", "--kind", "payout", "--id", str(payout_id), "--outcome", "succeeded")
    assert again.returncode == 1
    assert "already FAILED" in again.stderr
    assert str(payout_id) not in operator(payment_svc, "unresolved").stdout


def operator(process: PaymentProcess, *command: str) -> subprocess.CompletedProcess[str]:
    """`python -m payment_svc <command>` with the service's own settings."""
    return subprocess.run(
        [sys.executable, "-m", "payment_svc", *command], env=process.env, capture_output=True, text=True, timeout=60
    )


async def test_a_payout_resumed_after_a_restart_into_an_unreachable_processor_is_not_released(
    mesh: Mesh,
) -> None:
    bob = name("bob")
    b = await mesh.wallet(bob, 1000)
    with processor_faults(mesh.stack, webhook_drop_rate=1.0):
        first = PaymentProcess(mesh.stack, ENV)
        first.start()
        try:
            payout_id = await timed_out_payout(mesh, bob, b, 700)
        finally:
            assert first.process is not None
            first.process.kill()  # kill -9: the new process knows only what the database holds
            first.wait_exit()
        # The restarted replica cannot reach the processor at all: "nothing reached it" for this attempt only.
        cut_off = PaymentProcess(mesh.stack, ENV | {"PAYMENT_PROCESSOR_URL": "http://127.0.0.1:9"})
        cut_off.start()
        try:

            async def retried() -> bool:
                return int((await step_of(mesh.stack, payout_id, "payout"))["attempts"]) >= 3

            await eventually(retried, 30, "the restarted replica retried the payout")
            assert (await get_payout(mesh, payout_id, bob)).state == PO.PENDING
            assert await mesh.balance(b, bob) == (1000, 700)
        finally:
            cut_off.stop()
        resumed = PaymentProcess(mesh.stack, ENV)
        resumed.start()
        try:

            async def paid() -> bool:
                return (await get_payout(mesh, payout_id, bob)).state == PO.SUCCEEDED

            await eventually(paid, 30, "the payout found at the processor and paid")
        finally:
            resumed.stop()
    assert await mesh.balance(b, bob) == (300, 0)
    assert len(await sim_objects(mesh.stack, "payouts", f"{payout_id}:payout")) == 1


async def test_a_payout_without_its_webhook_is_polled_and_settled(mesh: Mesh, payment_svc: PaymentProcess) -> None:
    bob = name("bob")
    b = await mesh.wallet(bob, 1000)
    with processor_faults(mesh.stack, webhook_drop_rate=1.0):
        accepted = await create_payout(mesh, bob, b, 250)
        assert accepted.state == PO.PROCESSING

        async def paid() -> bool:
            return (await get_payout(mesh, uuid.UUID(accepted.payout_id), bob)).state == PO.SUCCEEDED

        await eventually(paid, 20, "the polled payout paid")
    assert await mesh.balance(b, bob) == (750, 0)


async def test_the_webhook_of_a_payout_whose_answer_was_lost_settles_it_by_its_reference(
    mesh: Mesh, payment_svc: PaymentProcess
) -> None:
    bob = name("bob")
    b = await mesh.wallet(bob, 1000)
    payout_id = await timed_out_payout(mesh, bob, b, 100)
    key = f"{payout_id}:payout"

    async def paid() -> bool:
        return (await get_payout(mesh, payout_id, bob)).state == PO.SUCCEEDED

    await eventually(paid, 30, "the payout paid")
    [sent] = await sim_objects(mesh.stack, "payouts", key)
    events = [e for e in await sim_objects(mesh.stack, "events", None) if e["data"]["object"]["id"] == sent["id"]]
    # Delivered at the first attempt: payment_svc knew the payout by its reference (no 404 and retry).
    assert [(e["type"], e["delivery"]["attempts"], e["delivery"]["last_status"]) for e in events] == [
        ("payout.paid", 1, 200)
    ]
    assert await mesh.balance(b, bob) == (900, 0)


# --- card captures and refunds ----------------------------------------------------------------------


async def test_a_timed_out_capture_that_meets_an_open_breaker_is_found_captured_not_voided(
    mesh: Mesh, payment_svc: PaymentProcess
) -> None:
    alice, shop = name("alice"), name("shop")
    a, s = await mesh.wallet(alice), await mesh.wallet(shop)
    authorized = await mesh.pay(alice, name("key"), card="tok_visa", destination=s, amount=500, manual=True)
    assert authorized.state == P.REQUIRES_CAPTURE
    with processor_faults(mesh.stack, latency_ms=SLOWER_THAN_THE_TIMEOUT):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await mesh.payments.CapturePayment(
                payment_pb2.CapturePaymentRequest(payment_id=authorized.payment_id), metadata=user(alice)
            )
        await asyncio.sleep(SLOWER_THAN_THE_TIMEOUT / 1000)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    await open_the_breaker(mesh, alice, a)
    assert (await step_of(mesh.stack, authorized.payment_id, "capture"))["outcome_unknown"]
    payment = await mesh.wait_final(authorized.payment_id, alice, within=30)
    assert payment.state == P.SUCCEEDED, payment
    assert await mesh.balance(s, shop) == (500, 0)
    conn = await payment_db(mesh.stack)
    try:
        authorization_ref = await conn.fetchval(
            "SELECT authorization_ref FROM payments WHERE payment_id = $1", uuid.UUID(authorized.payment_id)
        )
    finally:
        await conn.close()
    books = await sim_authorization(mesh.stack, authorization_ref)
    assert (books["status"], books["amount_captured"]) == ("captured", 500)


async def test_a_timed_out_card_refund_that_meets_an_open_breaker_is_found_refunded_once(
    mesh: Mesh, payment_svc: PaymentProcess
) -> None:
    alice, shop = name("alice"), name("shop")
    a, s = await mesh.wallet(alice), await mesh.wallet(shop)
    paid = await mesh.pay(alice, name("key"), card="tok_visa", destination=s, amount=800)
    assert paid.state == P.SUCCEEDED
    with processor_faults(mesh.stack, latency_ms=SLOWER_THAN_THE_TIMEOUT):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await mesh.payments.CreateRefund(
                payment_pb2.CreateRefundRequest(payment_id=paid.payment_id, amount=usd(300)),
                metadata=user(shop, key=name("re")),
            )
        await asyncio.sleep(SLOWER_THAN_THE_TIMEOUT / 1000)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    await open_the_breaker(mesh, alice, a)
    conn = await payment_db(mesh.stack)
    try:
        refund_id = await conn.fetchval(
            "SELECT refund_id FROM refunds WHERE payment_id = $1", uuid.UUID(paid.payment_id)
        )
    finally:
        await conn.close()
    assert (await step_of(mesh.stack, refund_id, "refund"))["outcome_unknown"]

    async def refunded() -> bool:
        listed = await mesh.payments.ListRefunds(
            payment_pb2.ListRefundsRequest(payment_id=paid.payment_id), metadata=user(shop)
        )
        assert all(r.state != R.FAILED for r in listed.refunds), listed
        return [r.state for r in listed.refunds] == [R.SUCCEEDED]

    await eventually(refunded, 30, "the refund found at the processor and finished")
    assert await mesh.balance(s, shop) == (500, 0)
    [refund] = await sim_objects(mesh.stack, "refunds", f"{refund_id}:refund")
    assert (refund["amount"], refund["status"]) == (300, "succeeded")


async def test_a_pending_card_refund_without_its_webhook_is_polled_and_settled(
    mesh: Mesh, payment_svc: PaymentProcess
) -> None:
    alice, shop = name("alice"), name("shop")
    s = await mesh.wallet(shop)
    paid = await mesh.pay(alice, name("key"), card="tok_refundPending", destination=s, amount=400)
    with processor_faults(mesh.stack, webhook_drop_rate=1.0):
        pending = await mesh.payments.CreateRefund(
            payment_pb2.CreateRefundRequest(payment_id=paid.payment_id), metadata=user(shop, key=name("re"))
        )
        assert pending.state == R.PENDING

        async def refunded() -> bool:
            listed = await mesh.payments.ListRefunds(
                payment_pb2.ListRefundsRequest(payment_id=paid.payment_id), metadata=user(shop)
            )
            return [r.state for r in listed.refunds] == [R.SUCCEEDED]

        await eventually(refunded, 20, "the polled refund succeeded")
    assert await mesh.balance(s, shop) == (0, 0)
