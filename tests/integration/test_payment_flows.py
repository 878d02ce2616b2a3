"""payment_svc against real PostgreSQL, wallet_svc and the processor simulator: flows, races, idempotency."""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections.abc import AsyncIterator, Iterator

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
P = payment_pb2.Payment


@pytest.fixture(scope="module")
def payment_svc(infra: Stack) -> Iterator[PaymentProcess]:
    start_dependencies(infra)
    process = PaymentProcess(infra)
    process.migrate()
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
async def mesh(payment_svc: PaymentProcess) -> AsyncIterator[Mesh]:
    clients = Mesh(payment_svc.stack)
    yield clients
    await clients.close()


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_a_wallet_payment_moves_the_money_and_records_every_transition(mesh: Mesh) -> None:
    alice, bob = name("alice"), name("bob")
    a, b = await mesh.wallet(alice, 1000), await mesh.wallet(bob)
    payment = await mesh.pay(alice, name("key"), source_wallet=a, destination=b, amount=300)
    assert payment.state == P.SUCCEEDED
    assert payment.payee_id == bob
    assert payment.amount_captured.amount == 300
    assert [(t.from_state, t.to_state) for t in payment.transitions] == [
        ("", "PENDING"),
        ("PENDING", "PROCESSING"),
        ("PROCESSING", "SUCCEEDED"),
    ]
    assert await mesh.balance(a, alice) == (700, 0)
    assert await mesh.balance(b, bob) == (300, 0)
    assert (await mesh.get(payment.payment_id, bob)).state == P.SUCCEEDED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.get(payment.payment_id, name("mallory"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    await ledger_invariants(mesh.stack, [payment.payment_id])


async def test_insufficient_funds_fails_the_payment_with_its_reason_and_holds_nothing(mesh: Mesh) -> None:
    alice, bob = name("alice"), name("bob")
    a, b = await mesh.wallet(alice, 100), await mesh.wallet(bob)
    payment = await mesh.pay(alice, name("key"), source_wallet=a, destination=b, amount=101)
    assert payment.state == P.FAILED
    assert payment.failure_code == "insufficient_funds"
    assert payment.transitions[-1].reason == "insufficient_funds"
    assert await mesh.balance(a, alice) == (100, 0)


async def test_paying_from_someone_elses_wallet_is_not_found(mesh: Mesh) -> None:
    alice, bob = name("alice"), name("bob")
    a, b = await mesh.wallet(alice, 100), await mesh.wallet(bob)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.pay(bob, name("key"), source_wallet=a, destination=b, amount=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert await mesh.balance(a, alice) == (100, 0)


async def test_create_payment_without_an_idempotency_key_is_refused(mesh: Mesh) -> None:
    request = payment_pb2.CreatePaymentRequest(
        source=payment_pb2.PaymentSource(card_token="tok_visa"), destination_wallet_id=str(uuid.uuid4()), amount=usd(1)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.payments.CreatePayment(request, metadata=user(name("alice")))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(caught.value) == "IDEMPOTENCY_KEY_REQUIRED"


async def test_manual_capture_of_part_releases_the_rest_and_a_second_capture_is_refused(mesh: Mesh) -> None:
    alice, bob = name("alice"), name("bob")
    a, b = await mesh.wallet(alice, 1000), await mesh.wallet(bob)
    payment = await mesh.pay(alice, name("key"), source_wallet=a, destination=b, amount=400, manual=True)
    assert payment.state == P.REQUIRES_CAPTURE
    assert payment.HasField("capture_before")
    assert await mesh.balance(a, alice) == (1000, 400)
    with pytest.raises(grpc.aio.AioRpcError) as too_much:
        await mesh.payments.CapturePayment(
            payment_pb2.CapturePaymentRequest(payment_id=payment.payment_id, amount=usd(401)), metadata=user(bob)
        )
    assert error_reason(too_much.value) == "CAPTURE_EXCEEDS_AUTHORIZED"

    async def capture() -> str:
        try:
            await mesh.payments.CapturePayment(
                payment_pb2.CapturePaymentRequest(payment_id=payment.payment_id, amount=usd(250)), metadata=user(bob)
            )
        except grpc.aio.AioRpcError as error:
            return error_reason(error)
        return "OK"

    outcomes = await asyncio.gather(*(capture() for _ in range(5)))
    assert outcomes.count("OK") == 1
    assert set(outcomes) - {"OK"} <= {"INVALID_STATE_TRANSITION", "PAYMENT_IN_PROGRESS"}
    assert await mesh.balance(a, alice) == (750, 0)
    assert await mesh.balance(b, bob) == (250, 0)
    await ledger_invariants(mesh.stack, [payment.payment_id])


async def test_canceling_an_authorized_payment_releases_the_hold(mesh: Mesh) -> None:
    alice, bob = name("alice"), name("bob")
    a, b = await mesh.wallet(alice, 500), await mesh.wallet(bob)
    payment = await mesh.pay(alice, name("key"), source_wallet=a, destination=b, amount=200, manual=True)
    canceled = await mesh.payments.CancelPayment(
        payment_pb2.CancelPaymentRequest(payment_id=payment.payment_id, reason="changed my mind"), metadata=user(alice)
    )
    assert canceled.state == P.CANCELED
    assert canceled.transitions[-1].reason == "changed my mind"
    assert await mesh.balance(a, alice) == (500, 0)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.payments.CapturePayment(
            payment_pb2.CapturePaymentRequest(payment_id=payment.payment_id), metadata=user(bob)
        )
    assert error_reason(caught.value) == "INVALID_STATE_TRANSITION"
    await ledger_invariants(mesh.stack, [payment.payment_id])


async def test_a_card_deposit_credits_the_wallet_from_settlement_and_a_decline_fails_with_its_code(mesh: Mesh) -> None:
    alice = name("alice")
    a = await mesh.wallet(alice)
    deposit = await mesh.pay(alice, name("key"), card="tok_visa", destination=a, amount=700)
    assert deposit.state == P.SUCCEEDED
    declined = await mesh.pay(alice, name("key"), card="tok_chargeDeclined", destination=a, amount=700)
    assert declined.state == P.FAILED
    assert declined.failure_code == "generic_decline"
    assert await mesh.balance(a, alice) == (700, 0)
    await ledger_invariants(mesh.stack, [deposit.payment_id, declined.payment_id])


async def test_a_manual_card_authorization_can_be_voided(mesh: Mesh) -> None:
    alice = name("alice")
    a = await mesh.wallet(alice)
    payment = await mesh.pay(alice, name("key"), card="tok_visa", destination=a, amount=900, manual=True)
    assert payment.state == P.REQUIRES_CAPTURE
    canceled = await mesh.payments.CancelPayment(
        payment_pb2.CancelPaymentRequest(payment_id=payment.payment_id), metadata=user(alice)
    )
    assert canceled.state == P.CANCELED
    assert await mesh.balance(a, alice) == (0, 0)


async def test_two_racing_refunds_cannot_exceed_the_captured_amount(mesh: Mesh) -> None:
    alice, shop = name("alice"), name("shop")
    a, s = await mesh.wallet(alice, 100), await mesh.wallet(shop)
    payment = await mesh.pay(alice, name("key"), source_wallet=a, destination=s, amount=100)

    async def refund(amount: int) -> str:
        try:
            reply = await mesh.payments.CreateRefund(
                payment_pb2.CreateRefundRequest(payment_id=payment.payment_id, amount=usd(amount)),
                metadata=user(shop, "MERCHANT", key=name("refund")),
            )
        except grpc.aio.AioRpcError as error:
            return error_reason(error)
        return payment_pb2.Refund.State.Name(reply.state)

    assert sorted(await asyncio.gather(refund(60), refund(60))) == ["REFUND_EXCEEDS_CAPTURED", "SUCCEEDED"]
    assert await refund(40) == "SUCCEEDED"
    assert await refund(1) == "REFUND_EXCEEDS_CAPTURED"
    assert await mesh.balance(a, alice) == (100, 0)
    assert await mesh.balance(s, shop) == (0, 0)
    refreshed = await mesh.get(payment.payment_id, alice)
    assert refreshed.amount_refunded.amount == 100
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # the payer may not refund
        await mesh.payments.CreateRefund(
            payment_pb2.CreateRefundRequest(payment_id=payment.payment_id), metadata=user(alice, key=name("k"))
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await ledger_invariants(mesh.stack, [payment.payment_id])


async def test_a_thousand_jittered_retries_of_one_key_make_exactly_one_payment(mesh: Mesh) -> None:
    alice, bob = name("alice"), name("bob")
    a, b = await mesh.wallet(alice, 10_000), await mesh.wallet(bob)
    key = name("key")
    request = payment_pb2.CreatePaymentRequest(
        source=payment_pb2.PaymentSource(wallet_id=a), destination_wallet_id=b, amount=usd(10)
    )

    async def attempt() -> tuple[str, str]:
        await asyncio.sleep(random.uniform(0, 2))
        call = mesh.payments.CreatePayment(request, metadata=user(alice, key=key))
        try:
            reply = await call
        except grpc.aio.AioRpcError as error:
            return error_reason(error), ""
        replayed = dict(await call.trailing_metadata() or ()).get("idempotent-replayed", "")
        return reply.payment_id, replayed

    results = await asyncio.gather(*(attempt() for _ in range(1000)))
    ids = {payment_id for payment_id, _ in results if payment_id != "IDEMPOTENCY_KEY_IN_USE"}
    assert len(ids) == 1, ids
    assert sum(1 for _, replayed in results if replayed == "true") >= 1
    assert await mesh.balance(a, alice) == (9_990, 0)
    assert await mesh.balance(b, bob) == (10, 0)
    other_body = payment_pb2.CreatePaymentRequest(
        source=payment_pb2.PaymentSource(wallet_id=a), destination_wallet_id=b, amount=usd(11)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.payments.CreatePayment(other_body, metadata=user(alice, key=key))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(caught.value) == "IDEMPOTENCY_KEY_REUSED"


async def test_a_recorded_failure_replays_as_the_same_failure(mesh: Mesh) -> None:
    alice, bob = name("alice"), name("bob")
    a, b = await mesh.wallet(alice, 50), await mesh.wallet(bob)
    key = name("key")
    first = await mesh.pay(alice, key, source_wallet=a, destination=b, amount=80)
    assert first.state == P.FAILED
    await mesh.fund(a, 100)  # the funds arrive later: the retry must still replay the failure
    second = await mesh.pay(alice, key, source_wallet=a, destination=b, amount=80)
    assert second == first


async def test_a_processor_timeout_fails_the_card_payment_without_money_moving(mesh: Mesh) -> None:
    alice = name("alice")
    a = await mesh.wallet(alice)
    payment = await mesh.pay(alice, name("key"), card="tok_timeout", destination=a, amount=500)
    assert payment.state == P.FAILED
    assert payment.failure_code == "processor_timeout"
    assert await mesh.balance(a, alice) == (0, 0)


async def test_payouts_hold_then_settle_through_the_processor(mesh: Mesh) -> None:
    bob = name("bob")
    b = await mesh.wallet(bob, 1000)
    declined = await mesh.payments.CreatePayout(
        payment_pb2.CreatePayoutRequest(wallet_id=b, amount=usd(100), bank_account_token="btok_invalidAccount"),
        metadata=user(bob, key=name("po")),
    )
    assert declined.state == payment_pb2.Payout.FAILED
    assert declined.failure_code == "invalid_account_number"
    assert await mesh.balance(b, bob) == (1000, 0)
    accepted = await mesh.payments.CreatePayout(
        payment_pb2.CreatePayoutRequest(wallet_id=b, amount=usd(300), bank_account_token="btok_success"),
        metadata=user(bob, key=name("po")),
    )
    assert accepted.state in (payment_pb2.Payout.PROCESSING, payment_pb2.Payout.SUCCEEDED)
    assert await mesh.balance(b, bob) in ((1000, 300), (700, 0))


async def test_processor_down_fails_fast_with_processor_unavailable_and_releases_payout_holds(
    mesh: Mesh, infra: Stack
) -> None:
    bob = name("bob")
    b = await mesh.wallet(bob, 1000)
    infra.stop_component("processor")
    try:
        reasons = []
        for _ in range(8):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await mesh.pay(bob, name("key"), card="tok_visa", destination=b, amount=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            reasons.append(error_reason(caught.value))
        assert set(reasons) == {"PROCESSOR_UNAVAILABLE"}
        with pytest.raises(grpc.aio.AioRpcError) as payout:
            await mesh.payments.CreatePayout(
                payment_pb2.CreatePayoutRequest(wallet_id=b, amount=usd(100), bank_account_token="btok_success"),
                metadata=user(bob, key=name("po")),
            )
        assert error_reason(payout.value) == "PROCESSOR_UNAVAILABLE"
        assert await mesh.balance(b, bob) == (1000, 0)
        listed = await mesh.payments.ListPayments(payment_pb2.ListPaymentsRequest(page_size=3), metadata=user(bob))
        assert [p.failure_code for p in listed.payments] == ["processor_unavailable"] * 3
        # The breaker opened: the later calls failed fast without reaching for the processor.
        async with httpx.AsyncClient(timeout=5) as http:
            metrics = (await http.get(f"http://127.0.0.1:{infra.ports.metrics('payment')}/metrics")).text
        opened = re.search(r'circuit_transitions_total\{processor="simulator",state="open"\} (\S+)', metrics)
        assert opened is not None, metrics
        assert float(opened.group(1)) >= 1
    finally:
        infra.start_component("processor")
        await _until_the_breaker_closes(mesh, bob, b)


async def _until_the_breaker_closes(mesh: Mesh, who: str, wallet: str) -> None:
    """Card payments go through again (the breaker's probe succeeded), so later tests see a closed breaker."""
    for _ in range(60):
        try:
            if (await mesh.pay(who, name("probe"), card="tok_visa", destination=wallet, amount=1)).state == P.SUCCEEDED:
                return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.5)
    raise AssertionError("the processor's circuit breaker did not close")


async def test_a_cancel_while_the_same_replica_still_authorizes_is_refused_as_in_progress(mesh: Mesh) -> None:
    # The processor answers within its timeout, but slowly: the payment is PENDING for a while.
    alice = name("alice")
    a = await mesh.wallet(alice)
    with processor_faults(mesh.stack, latency_ms=700):
        creating = asyncio.ensure_future(mesh.pay(alice, name("key"), card="tok_visa", destination=a, amount=300))
        pending = await _first_payment_of(mesh, alice)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await mesh.payments.CancelPayment(
                payment_pb2.CancelPaymentRequest(payment_id=pending.payment_id), metadata=user(alice)
            )
        created = await creating
    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert error_reason(caught.value) == "PAYMENT_IN_PROGRESS"
    assert created.state == P.SUCCEEDED  # the saga was not disturbed
    assert await mesh.balance(a, alice) == (300, 0)


async def _first_payment_of(mesh: Mesh, who: str) -> payment_pb2.Payment:
    for _ in range(100):
        listed = await mesh.payments.ListPayments(payment_pb2.ListPaymentsRequest(), metadata=user(who))
        if listed.payments:
            return listed.payments[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no payment of {who} appeared")


async def test_refunds_replay_refuse_another_body_and_refuse_a_key_still_in_use(mesh: Mesh) -> None:
    alice, shop = name("alice"), name("shop")
    s = await mesh.wallet(shop)
    sale = await mesh.pay(alice, name("key"), card="tok_visa", destination=s, amount=900)
    assert sale.state == P.SUCCEEDED
    key = name("refund")

    def refund(amount: int, refund_key: str) -> grpc.aio.UnaryUnaryCall:
        return mesh.payments.CreateRefund(
            payment_pb2.CreateRefundRequest(payment_id=sale.payment_id, amount=usd(amount)),
            metadata=user(shop, "MERCHANT", key=refund_key),
        )

    with processor_faults(mesh.stack, latency_ms=700):
        first, second = refund(200, key), refund(200, key)
        results = await asyncio.gather(first, second, return_exceptions=True)
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(refused) == 1, results  # one ran, the other found the key in use
    assert (refused[0].code(), error_reason(refused[0])) == (grpc.StatusCode.ABORTED, "IDEMPOTENCY_KEY_IN_USE")
    done = next(r for r in results if isinstance(r, payment_pb2.Refund))

    replay = refund(200, key)
    assert (await replay).refund_id == done.refund_id
    assert dict(await replay.trailing_metadata() or ())["idempotent-replayed"] == "true"
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await refund(300, key)
    assert (reused.value.code(), error_reason(reused.value)) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    assert await mesh.balance(s, shop) == (700, 0)  # one refund of 200, however many calls


async def test_payouts_replay_refuse_another_body_and_refuse_a_key_still_in_use(mesh: Mesh) -> None:
    bob = name("bob")
    b = await mesh.wallet(bob, 1000)
    key = name("payout")

    def payout(amount: int) -> grpc.aio.UnaryUnaryCall:
        request = payment_pb2.CreatePayoutRequest(wallet_id=b, amount=usd(amount), bank_account_token="btok_success")
        return mesh.payments.CreatePayout(request, metadata=user(bob, key=key))

    with processor_faults(mesh.stack, latency_ms=700):
        results = await asyncio.gather(payout(300), payout(300), return_exceptions=True)
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(refused) == 1, results
    assert (refused[0].code(), error_reason(refused[0])) == (grpc.StatusCode.ABORTED, "IDEMPOTENCY_KEY_IN_USE")
    done = next(r for r in results if isinstance(r, payment_pb2.Payout))

    replay = payout(300)
    assert (await replay).payout_id == done.payout_id
    assert dict(await replay.trailing_metadata() or ())["idempotent-replayed"] == "true"
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await payout(301)
    assert (reused.value.code(), error_reason(reused.value)) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    posted, held = await mesh.balance(b, bob)
    assert (posted, held) in ((1000, 300), (700, 0))  # one payout of 300, held or paid


async def test_the_database_records_every_state_change_with_its_reason_even_one_made_by_hand(mesh: Mesh) -> None:
    alice, bob = name("alice"), name("bob")
    a, b = await mesh.wallet(alice, 100), await mesh.wallet(bob)
    payment = await mesh.pay(alice, name("key"), source_wallet=a, destination=b, amount=40, manual=True)
    conn = await asyncpg.connect(mesh.stack.database_url("payment", driver=""))
    try:  # a change that bypasses payment_svc still leaves its transition (trigger of migration 0005)
        await conn.execute(
            "UPDATE payments SET state = 'CANCELED', state_reason = 'by hand' WHERE payment_id = $1",
            uuid.UUID(payment.payment_id),
        )
    finally:
        await conn.close()
    found = await mesh.get(payment.payment_id, alice)
    assert [(t.from_state, t.to_state, t.reason) for t in found.transitions] == [
        ("", "PENDING", "created"),
        ("PENDING", "REQUIRES_CAPTURE", "funds_held"),
        ("REQUIRES_CAPTURE", "CANCELED", "by hand"),
    ]
    assert found.transitions[-1].time.ToDatetime() >= found.transitions[-2].time.ToDatetime()
