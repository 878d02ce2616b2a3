"""kill -9 of payment_svc in the middle of a payment; after a restart every payment finishes and the ledger holds.

PAYMENT_CRASH_AFTER_STEP makes the process SIGKILL itself at a deterministic
point of a saga step: a real kill -9 right after the step's result commits
(`hold`), after the step is recorded STARTED but before its call
(`hold:started`), or after its call answered but before its result commits
(`capture:called`: the money moved, payment_svc does not know it yet); and in
a batch of automatic wallet payments, once the batch's payments committed
(`batch:opened`) or once wallet_svc posted their transfers (`batch:posted`).
The restarted service (without the setting) must resume the payment from its
step log, repeat no effect (the wallet and the processor see the same
references), and complete the idempotency key, so the client's retry gets
the final answer. Automatic wallet payments are transfers made in batches;
manual ones still hold and capture, and are crashed at those steps.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from devstack.stack import Stack
from paymesh.payment.v1 import payment_pb2
from tests.integration.payment_support import Mesh, PaymentProcess, ledger_invariants, start_dependencies, user

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def mesh(infra: Stack) -> AsyncIterator[Mesh]:
    start_dependencies(infra)
    PaymentProcess(infra).migrate()
    clients = Mesh(infra)
    yield clients
    await clients.close()


@pytest.mark.parametrize(
    ("step", "source"),
    [
        ("batch:opened", "wallet"),
        ("batch:posted", "wallet"),
        ("authorize:called", "card"),
        ("authorize", "card"),
        ("capture:called", "card"),
        ("capture", "card"),
        ("credit:called", "card"),
        ("credit", "card"),
    ],
)
async def test_a_payment_killed_after_a_step_is_finished_after_restart(
    mesh: Mesh, infra: Stack, step: str, source: str
) -> None:
    alice, bob = f"alice-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"
    a, b = await mesh.wallet(alice, 1000), await mesh.wallet(bob)
    key = f"crash-{step.replace(':', '-')}-{uuid.uuid4().hex[:8]}"
    wallet_source = source == "wallet"

    crashing = PaymentProcess(infra, {"PAYMENT_CRASH_AFTER_STEP": step})
    crashing.start()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await mesh.pay(
                alice, key, source_wallet=a if wallet_source else "", card="" if wallet_source else "tok_visa",
                destination=b, amount=400,
            )  # fmt: skip
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert crashing.wait_exit() == -signal.SIGKILL
    finally:
        crashing.stop()

    restarted = PaymentProcess(infra)
    restarted.start()
    try:
        listed = await mesh.payments.ListPayments(payment_pb2.ListPaymentsRequest(), metadata=user(alice))
        assert len(listed.payments) == 1
        payment = await mesh.wait_final(listed.payments[0].payment_id, alice)
        assert payment.state == payment_pb2.Payment.SUCCEEDED
        assert await mesh.balance(b, bob) == (400, 0)
        assert await mesh.balance(a, alice) == ((600, 0) if source == "wallet" else (1000, 0))
        # The client's retry gets the final answer, recorded by the recovery worker.
        call = mesh.payments.CreatePayment(
            payment_pb2.CreatePaymentRequest(
                source=payment_pb2.PaymentSource(wallet_id=a)
                if source == "wallet"
                else payment_pb2.PaymentSource(card_token="tok_visa"),
                destination_wallet_id=b,
                amount=payment.amount,
                capture_method=payment_pb2.AUTOMATIC,
            ),
            metadata=user(alice, key=key),
        )
        replay = await call
        assert replay.payment_id == payment.payment_id
        assert replay.state == payment_pb2.Payment.SUCCEEDED
        assert dict(await call.trailing_metadata() or ())["idempotent-replayed"] == "true"
        await ledger_invariants(infra, [payment.payment_id])
    finally:
        restarted.stop()


@pytest.mark.parametrize("step", ["hold:started", "hold:called", "hold", "capture:called"])
async def test_a_manual_wallet_payment_killed_after_a_step_is_finished_after_restart(
    mesh: Mesh, infra: Stack, step: str
) -> None:
    alice, bob = f"alice-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"
    a, b = await mesh.wallet(alice, 1000), await mesh.wallet(bob)
    as_alice = user(alice)
    crashing = PaymentProcess(infra, {"PAYMENT_CRASH_AFTER_STEP": step})
    crashing.start()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _pay_manually_then_capture(mesh, alice, a, b, as_alice)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert crashing.wait_exit() == -signal.SIGKILL
    finally:
        crashing.stop()

    restarted = PaymentProcess(infra)
    restarted.start()
    try:
        listed = await mesh.payments.ListPayments(payment_pb2.ListPaymentsRequest(), metadata=as_alice)
        [payment] = listed.payments
        for _ in range(100):  # the recovery worker finishes the interrupted step
            payment = await mesh.get(payment.payment_id, alice)
            if payment.state not in (payment_pb2.Payment.PENDING, payment_pb2.Payment.PROCESSING):
                break
            await asyncio.sleep(0.3)
        if payment.state == payment_pb2.Payment.REQUIRES_CAPTURE:
            await mesh.payments.CapturePayment(
                payment_pb2.CapturePaymentRequest(payment_id=payment.payment_id), metadata=as_alice
            )
        payment = await mesh.wait_final(payment.payment_id, alice)
        assert payment.state == payment_pb2.Payment.SUCCEEDED
        assert await mesh.balance(a, alice) == (600, 0)
        assert await mesh.balance(b, bob) == (400, 0)
        await ledger_invariants(infra, [payment.payment_id])
    finally:
        restarted.stop()


async def _pay_manually_then_capture(mesh: Mesh, alice: str, a: str, b: str, as_alice: list[tuple[str, str]]) -> None:
    payment = await mesh.pay(alice, f"crash-{uuid.uuid4().hex[:8]}", source_wallet=a, destination=b, amount=400,
                             manual=True)  # fmt: skip
    assert payment.state == payment_pb2.Payment.REQUIRES_CAPTURE
    await mesh.payments.CapturePayment(
        payment_pb2.CapturePaymentRequest(payment_id=payment.payment_id), metadata=as_alice
    )


async def test_a_restarted_replica_resumes_its_predecessors_payments_without_waiting_for_their_leases(
    mesh: Mesh, infra: Stack
) -> None:
    # Leases far longer than the wait below: only the new incarnation taking them over can finish the payment.
    long_lease = {"PAYMENT_LEASE_SECONDS": "300"}
    alice = f"alice-{uuid.uuid4().hex[:8]}"
    a = await mesh.wallet(alice)
    key = f"resume-{uuid.uuid4().hex[:8]}"
    crashing = PaymentProcess(infra, {"PAYMENT_CRASH_AFTER_STEP": "authorize:called", **long_lease})
    crashing.start()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await mesh.pay(alice, key, card="tok_visa", destination=a, amount=700)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert crashing.wait_exit() == -signal.SIGKILL
    finally:
        crashing.stop()
    restarted = PaymentProcess(infra, long_lease)
    restarted.start()
    try:
        as_alice = user(alice)
        [pending] = (await mesh.payments.ListPayments(payment_pb2.ListPaymentsRequest(), metadata=as_alice)).payments
        payment = await mesh.wait_final(pending.payment_id, alice, within=60)
        assert payment.state == payment_pb2.Payment.SUCCEEDED
        replay = await mesh.pay(alice, key, card="tok_visa", destination=a, amount=700)
        assert replay.payment_id == payment.payment_id
        assert await mesh.balance(a, alice) == (700, 0)
    finally:
        restarted.stop()


async def test_a_transfer_resumed_by_the_saga_and_killed_between_its_commits_still_succeeds(
    mesh: Mesh, infra: Stack
) -> None:
    # The chaos harness's seed 5: the batch dies once its payment exists; the recovery worker posts the
    # transfer and dies after committing PROCESSING; the next one must record SUCCEEDED, not capture a
    # hold that never existed (which failed the payment after its money had moved).
    alice, bob = f"alice-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"
    a, b = await mesh.wallet(alice, 1000), await mesh.wallet(bob)
    for point in ("batch:opened", "transfer"):
        crashing = PaymentProcess(infra, {"PAYMENT_CRASH_AFTER_STEP": point})
        # At "transfer" the restarted process resumes the payment at once and may die before it serves.
        crashing.start(may_crash=point == "transfer")
        try:
            if point == "batch:opened":
                with pytest.raises(grpc.aio.AioRpcError):
                    await mesh.pay(alice, f"k-{uuid.uuid4().hex[:8]}", source_wallet=a, destination=b, amount=250)
            assert crashing.wait_exit(timeout=60) == -signal.SIGKILL
        finally:
            crashing.stop()
    restarted = PaymentProcess(infra)
    restarted.start()
    try:
        as_alice = user(alice)
        [pending] = (await mesh.payments.ListPayments(payment_pb2.ListPaymentsRequest(), metadata=as_alice)).payments
        payment = await mesh.wait_final(pending.payment_id, alice)
        assert payment.state == payment_pb2.Payment.SUCCEEDED, payment
        assert [(t.from_state, t.to_state) for t in payment.transitions] == [
            ("", "PENDING"),
            ("PENDING", "PROCESSING"),
            ("PROCESSING", "SUCCEEDED"),
        ]
        assert await mesh.balance(a, alice) == (750, 0)
        assert await mesh.balance(b, bob) == (250, 0)
        await ledger_invariants(infra, [payment.payment_id])
    finally:
        restarted.stop()
