"""Two payment_svc replicas on one database: a payment is worked by one replica at a time, never twice.

Both replicas take manual wallet payments. With wallet_svc stopped, every
capture is interrupted and the payments wait in PROCESSING with a retry delay.
When wallet_svc is back, the recovery workers of both replicas race for the
same due payments (FOR UPDATE SKIP LOCKED claims, then leases). Each payment
must succeed exactly once: one transition per state, one event per
transition, the payee credited once per payment, the ledger balanced; and the
saga step log shows that both replicas did part of the recovery.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import grpc
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from devstack.stack import Stack
from payment_svc import store
from paymesh.payment.v1 import payment_pb2, payment_pb2_grpc
from tests.integration.payment_support import (
    Mesh,
    PaymentProcess,
    ledger_invariants,
    start_dependencies,
    usd,
    user,
)

pytestmark = pytest.mark.integration
P = payment_pb2.Payment
PAYMENTS = 24
AMOUNT = 100
# Small recovery batches, so that neither replica takes every due payment in one round.
REPLICA_ENV = {"PAYMENT_RECOVERY_BATCH_SIZE": "3"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def replicas(infra: Stack) -> Iterator[list[PaymentProcess]]:
    start_dependencies(infra)
    first = PaymentProcess(infra, REPLICA_ENV)
    first.migrate()
    second = PaymentProcess(infra, REPLICA_ENV, port=_free_port())
    processes = [first, second]
    try:
        for process in processes:
            process.start()
        yield processes
    finally:
        for process in processes:
            process.stop()


@pytest.fixture(scope="module")
async def stubs(replicas: list[PaymentProcess]) -> AsyncIterator[list[payment_pb2_grpc.PaymentServiceStub]]:
    channels = [grpc.aio.insecure_channel(process.address) for process in replicas]
    yield [payment_pb2_grpc.PaymentServiceStub(channel) for channel in channels]  # type: ignore[no-untyped-call]
    for channel in channels:
        await channel.close(None)


@pytest.fixture(scope="module")
async def mesh(replicas: list[PaymentProcess]) -> AsyncIterator[Mesh]:
    clients = Mesh(replicas[0].stack)
    yield clients
    await clients.close()


async def _payment_log(stack: Stack, payment_ids: list[str]) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    """(outbox events, capture steps) of the payments, from payment_svc's database."""
    conn = await asyncpg.connect(stack.database_url("payment", driver=""))
    try:
        events = await conn.fetch(
            "SELECT aggregate_id, event_type, count(*) AS n FROM outbox"
            " WHERE aggregate_id = ANY($1::text[]) GROUP BY aggregate_id, event_type",
            payment_ids,
        )
        steps = await conn.fetch(
            "SELECT resource_id, status, worker FROM saga_steps"
            " WHERE step = 'capture' AND resource_id = ANY($1::uuid[])",
            payment_ids,
        )
        return events, steps
    finally:
        await conn.close()


async def _backlog(stack: Stack) -> store.Backlog:
    engine = create_async_engine(stack.database_url("payment"))
    try:
        async with engine.connect() as conn:
            return await store.backlog(conn, "payment", retrying_after=1)
    finally:
        await engine.dispose()


async def test_two_replicas_recovering_the_same_payments_finish_each_exactly_once(
    infra: Stack,
    replicas: list[PaymentProcess],
    stubs: list[payment_pb2_grpc.PaymentServiceStub],
    mesh: Mesh,
) -> None:
    payer, payee = f"payer-{uuid.uuid4().hex[:8]}", f"payee-{uuid.uuid4().hex[:8]}"
    source, destination = await mesh.wallet(payer, 10_000), await mesh.wallet(payee)
    authorized = []
    for i in range(PAYMENTS):
        request = payment_pb2.CreatePaymentRequest(
            source=payment_pb2.PaymentSource(wallet_id=source),
            destination_wallet_id=destination,
            amount=usd(AMOUNT),
            capture_method=payment_pb2.MANUAL,
        )
        payment = await stubs[i % 2].CreatePayment(request, metadata=user(payer, key=uuid.uuid4().hex))
        assert payment.state == P.REQUIRES_CAPTURE
        authorized.append(payment.payment_id)

    infra.stop_component("wallet")
    try:
        for i, payment_id in enumerate(authorized):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stubs[(i + 1) % 2].CapturePayment(
                    payment_pb2.CapturePaymentRequest(payment_id=payment_id), metadata=user(payer)
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # the capture goes on in the background
        # What the operators' gauges report while wallet_svc is away: all of them unfinished and retrying.
        backlog = await _backlog(infra)
        assert backlog.unfinished >= PAYMENTS
        assert backlog.retrying >= PAYMENTS
    finally:
        infra.start_component("wallet")

    finals = [await mesh.wait_final(payment_id, payer) for payment_id in authorized]
    assert {payment.state for payment in finals} == {P.SUCCEEDED}
    assert await mesh.balance(destination, payee) == (PAYMENTS * AMOUNT, 0)
    assert await mesh.balance(source, payer) == (10_000 - PAYMENTS * AMOUNT, 0)
    for payment in finals:
        assert [(t.from_state, t.to_state) for t in payment.transitions] == [
            ("", "PENDING"),
            ("PENDING", "REQUIRES_CAPTURE"),
            ("REQUIRES_CAPTURE", "PROCESSING"),
            ("PROCESSING", "SUCCEEDED"),
        ]

    events, steps = await _payment_log(infra, authorized)
    assert {row["n"] for row in events} == {1}, "an event was written twice"
    assert len(events) == 4 * PAYMENTS
    assert {row["event_type"] for row in events} == {
        "payment.created",
        "payment.requires_capture",
        "payment.processing",
        "payment.succeeded",
    }
    assert len(steps) == PAYMENTS
    assert {row["status"] for row in steps} == {"DONE"}
    # A step's worker is its lease owner, `<replica name>#<incarnation>`.
    names = {process.env["PAYMENT_REPLICA_ID"] for process in replicas}
    finishers = {row["worker"].split("#")[0] for row in steps}
    assert finishers == names, f"recovered by {finishers}, replicas {names}"
    await ledger_invariants(infra, authorized)
