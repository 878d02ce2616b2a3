"""Automatic wallet payments made in batches (group commit), against real PostgreSQL and wallet_svc.

Concurrent CreatePayment calls share transactions and one PostTransactions
call; these tests check what must not change because of it: each payment is
judged on its own (exactly the ones that fit succeed, each refusal with its
own reason), a key used twice makes one payment, and a kill -9 of payment_svc
or of wallet_svc in the middle of a batch leaves every payment of the batch
finished exactly once after the restart, with the ledger balanced.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import grpc
import pytest

from devstack.stack import Stack
from paymesh.payment.v1 import payment_pb2
from tests.integration.payment_support import (
    Mesh,
    PaymentProcess,
    error_reason,
    ledger_invariants,
    start_dependencies,
    user,
)

pytestmark = pytest.mark.integration
P = payment_pb2.Payment


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def mesh(infra: Stack) -> AsyncIterator[Mesh]:
    start_dependencies(infra)
    PaymentProcess(infra).migrate()
    clients = Mesh(infra)
    yield clients
    await clients.close()


@pytest.fixture
def payment_svc(mesh: Mesh) -> Iterator[PaymentProcess]:
    process = PaymentProcess(mesh.stack)
    process.start()
    yield process
    process.stop()


async def pay_all(mesh: Mesh, payments: list[tuple[str, str, str, int]]) -> list[P | grpc.aio.AioRpcError]:
    """(payer, source, destination, amount) each, all at once; an answer or the error per payment."""

    async def one(payer: str, source: str, destination: str, amount: int) -> P | grpc.aio.AioRpcError:
        try:
            return await mesh.pay(payer, name("key"), source_wallet=source, destination=destination, amount=amount)
        except grpc.aio.AioRpcError as error:
            return error

    return list(await asyncio.gather(*(one(*p) for p in payments)))


async def payments_of(mesh: Mesh, payer: str) -> list[P]:
    as_payer = user(payer)
    listed = await mesh.payments.ListPayments(payment_pb2.ListPaymentsRequest(), metadata=as_payer)
    return list(listed.payments)


async def batches_of(stack: Stack, payer: str) -> int:
    """How many transactions created the payer's payments (each batch stamps its payments with one now())."""
    conn = await asyncpg.connect(stack.database_url("payment", driver=""))
    try:
        return int(await conn.fetchval("SELECT count(DISTINCT create_time) FROM payments WHERE payer_id = $1", payer))
    finally:
        await conn.close()


async def stored_histories(stack: Stack, payment_ids: list[str]) -> dict[str, list[tuple[str, str, str]]]:
    """Each payment's transitions as the database recorded them, in order; and checks that a payment's
    steps after its creation carry one instant (the batch's)."""
    conn = await asyncpg.connect(stack.database_url("payment", driver=""))
    try:
        rows = await conn.fetch(
            "SELECT resource_id, from_state, to_state, reason, time FROM transitions "
            "WHERE resource_id = ANY($1::uuid[]) ORDER BY transition_id",
            payment_ids,
        )
    finally:
        await conn.close()
    histories: dict[str, list[tuple[str, str, str]]] = {}
    closing_times: dict[str, set[object]] = {}
    for row in rows:
        histories.setdefault(str(row["resource_id"]), []).append((row["from_state"], row["to_state"], row["reason"]))
        if row["from_state"]:
            closing_times.setdefault(str(row["resource_id"]), set()).add(row["time"])
    assert all(len(times) == 1 for times in closing_times.values()), closing_times
    return histories


async def test_racing_payments_from_one_wallet_succeed_exactly_while_the_money_lasts(
    mesh: Mesh, payment_svc: PaymentProcess
) -> None:
    alice = name("alice")
    a = await mesh.wallet(alice, 1000)
    shops = [(shop, await mesh.wallet(shop)) for shop in (name("shop") for _ in range(5))]
    answers = await pay_all(mesh, [(alice, a, shops[i % 5][1], 30) for i in range(50)])
    assert all(isinstance(answer, P) for answer in answers), answers
    payments = [answer for answer in answers if isinstance(answer, P)]
    succeeded = [p for p in payments if p.state == P.SUCCEEDED]
    refused = [p for p in payments if p.state == P.FAILED]
    assert (len(succeeded), len(refused)) == (33, 17)
    assert {p.failure_code for p in refused} == {"insufficient_funds"}
    assert all(p.failure_message for p in refused)
    assert await mesh.balance(a, alice) == (10, 0)
    received = [await mesh.balance(wallet, shop) for shop, wallet in shops]
    assert sum(posted for posted, _ in received) == 990
    # Fewer transactions than payments: the concurrent calls were batched.
    assert await batches_of(mesh.stack, alice) < 50
    # One closing update per payment (migration 0011) still records every step, each with its reason.
    histories = await stored_histories(mesh.stack, [p.payment_id for p in payments])
    for p in succeeded:
        assert histories[p.payment_id] == [
            ("", "PENDING", "created"),
            ("PENDING", "PROCESSING", "transfer_posted"),
            ("PROCESSING", "SUCCEEDED", "captured"),
        ]
    for p in refused:
        assert histories[p.payment_id] == [("", "PENDING", "created"), ("PENDING", "FAILED", "insufficient_funds")]
    await ledger_invariants(mesh.stack, [p.payment_id for p in payments])


async def test_two_requests_with_one_key_make_one_payment(mesh: Mesh) -> None:
    # One batch at a time: requests arriving while one runs go together into the next.
    process = PaymentProcess(mesh.stack, {"PAYMENT_BATCH_MAX_IN_FLIGHT": "1"})
    process.start()
    try:
        alice, bob = name("alice"), name("bob")
        a, b = await mesh.wallet(alice, 1000), await mesh.wallet(bob)
        key = name("same")
        others = [mesh.pay(alice, name("other"), source_wallet=a, destination=b, amount=1) for _ in range(4)]
        twice = [mesh.pay(alice, key, source_wallet=a, destination=b, amount=100) for _ in range(2)]
        answers = await asyncio.gather(*others, *twice, return_exceptions=True)
        same_key = answers[4:]
        made = [answer for answer in same_key if isinstance(answer, P)]
        assert made, same_key
        assert {p.payment_id for p in made} == {made[0].payment_id}  # a second success can only be a replay
        for answer in same_key:
            if isinstance(answer, grpc.aio.AioRpcError):
                assert answer.code() == grpc.StatusCode.ABORTED
                assert error_reason(answer) == "IDEMPOTENCY_KEY_IN_USE"
        assert await mesh.balance(a, alice) == (1000 - 4 - 100, 0)
    finally:
        process.stop()


@pytest.mark.parametrize("point", ["batch:opened", "batch:posted"])
async def test_a_batch_killed_midway_finishes_every_payment_once_after_restart(
    mesh: Mesh, infra: Stack, point: str
) -> None:
    payers = [(payer, await mesh.wallet(payer, 1000)) for payer in (name("payer") for _ in range(20))]
    shop = name("shop")
    s = await mesh.wallet(shop)
    crashing = PaymentProcess(infra, {"PAYMENT_CRASH_AFTER_STEP": point})
    crashing.start()
    try:
        answers = await pay_all(mesh, [(payer, wallet, s, 100) for payer, wallet in payers])
        assert all(isinstance(a, grpc.aio.AioRpcError) for a in answers)  # nobody was answered before the kill
        assert crashing.wait_exit() == -signal.SIGKILL
    finally:
        crashing.stop()
    restarted = PaymentProcess(infra)
    restarted.start()
    try:
        finished: list[P] = []
        for payer, _ in payers:
            listed = await mesh.payments.ListPayments(
                payment_pb2.ListPaymentsRequest(),
                metadata=user(payer),
            )
            assert len(listed.payments) <= 1
            finished += [await mesh.wait_final(p.payment_id, payer) for p in listed.payments]
        assert finished, "the killed batch created payments"
        assert {p.state for p in finished} == {P.SUCCEEDED}
        paid = {p.payer_id for p in finished}
        for payer, wallet in payers:
            assert await mesh.balance(wallet, payer) == ((900, 0) if payer in paid else (1000, 0))
        assert await mesh.balance(s, shop) == (100 * len(finished), 0)
        await ledger_invariants(infra, [p.payment_id for p in finished])
    finally:
        restarted.stop()


async def test_a_wallet_svc_killed_under_batches_leaves_every_payment_finished_once(
    mesh: Mesh, infra: Stack, payment_svc: PaymentProcess
) -> None:
    payers = [(payer, await mesh.wallet(payer, 1000)) for payer in (name("payer") for _ in range(30))]
    shop = name("shop")
    s = await mesh.wallet(shop)
    # payment_svc learns each wallet's owner and currency once: then nothing but the batches needs wallet_svc.
    warm = await pay_all(mesh, [(payer, wallet, s, 1) for payer, wallet in payers])
    assert {answer.state for answer in warm if isinstance(answer, P)} == {P.SUCCEEDED}

    async def kill_wallet_svc_once_a_batch_is_open() -> None:
        conn = await asyncpg.connect(infra.database_url("payment", driver=""))
        try:
            for _ in range(2000):
                pending = await conn.fetchval(
                    "SELECT count(*) FROM payments WHERE payer_id = ANY($1::text[]) AND state = 'PENDING'",
                    [payer for payer, _ in payers],
                )
                if pending:
                    break
                await asyncio.sleep(0.005)
        finally:
            await conn.close()
        infra.kill_component("wallet", signal.SIGKILL)

    killing = asyncio.ensure_future(kill_wallet_svc_once_a_batch_is_open())
    answers = await pay_all(mesh, [(payer, wallet, s, 100) for payer, wallet in payers * 3])
    await killing
    infra.start_component("wallet")
    for answer in answers:
        if isinstance(answer, grpc.aio.AioRpcError):  # no definitive answer: finished in the background
            assert answer.code() == grpc.StatusCode.UNAVAILABLE, answer
    finished: list[P] = []
    for payer, _ in payers:
        started = [p for p in await payments_of(mesh, payer) if p.amount.amount == 100]
        finished += [await mesh.wait_final(p.payment_id, payer) for p in started]
    assert finished, "payments were under way when wallet_svc died"
    assert {p.state for p in finished} == {P.SUCCEEDED}
    for payer, wallet in payers:
        mine = sum(1 for p in finished if p.payer_id == payer)
        assert await mesh.balance(wallet, payer) == (1000 - 1 - 100 * mine, 0)
    assert await mesh.balance(s, shop) == (len(payers) + 100 * len(finished), 0)
    await ledger_invariants(infra, [p.payment_id for p in finished])
