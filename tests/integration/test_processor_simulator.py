"""The simulator adapter against the real processor simulator process.

The simulator runs as its own process on a free loopback port; the adapter
is built by the production factory (build_processor) with retries and the
circuit breaker. Webhooks go to a small HTTP receiver served here.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from devstack.processor_sim.launcher import SimulatorProcess
from payment_svc.processor import (
    Operation,
    Outcome,
    ProcessorClient,
    ProcessorRejected,
    ProcessorTimeout,
    ProcessorUnavailable,
    WebhookSignatureInvalid,
)
from payment_svc.processors import CircuitOpen, build_processor
from payment_svc.settings import PaymentSettings
from paymesh_runtime.money import Money
from tests.helpers import poll_until

pytestmark = pytest.mark.integration

SECRET = "whsec_test_" + uuid.uuid4().hex
HANG_SECONDS = 20.0
USD = "USD"


def key() -> str:
    return f"test-{uuid.uuid4()}"


# --- a webhook receiver -------------------------------------------------------------------
class Receiver:
    """Records every POST; answers 500 to the first `fail_first` of them."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.deliveries.append((dict(self.headers.items()), body))
                    failing = receiver.fail_first > 0
                    receiver.fail_first -= 1 if failing else 0
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/processor-webhooks/simulator"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def for_event_of(self, object_id: str) -> list[tuple[dict[str, str], bytes]]:
        with self._lock:
            return [(h, b) for h, b in self.deliveries if json.loads(b)["data"]["object"]["id"] == object_id]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture(scope="module")
def sim(receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    log = tmp_path_factory.mktemp("processor_sim") / "sim.log"
    args = ["--hang-seconds", str(HANG_SECONDS), "--payout-settle-seconds", "0.2", "--refund-settle-seconds", "0.2"]
    args += ["--webhook-retry-seconds", "0.1"]
    with SimulatorProcess(log, webhook_url=receiver.url, webhook_secret=SECRET, extra_args=args) as process:
        yield process


def settings_for(url: str, **overrides: Any) -> PaymentSettings:
    values: dict[str, Any] = {
        "processor": "simulator",
        "processor_url": url,
        "processor_webhook_secret": SECRET,
        "processor_timeout_seconds": 2.0,
        "processor_max_attempts": 3,
        "processor_retry_base_seconds": 0.05,
        "processor_retry_max_seconds": 0.2,
        "processor_breaker_failure_threshold": 50,
        "processor_breaker_minimum_calls": 20,
        "processor_breaker_failure_ratio": 1.0,
    }
    values.update(overrides)
    return PaymentSettings(**values)


@pytest.fixture
async def processor(sim: SimulatorProcess) -> AsyncIterator[ProcessorClient]:
    client = build_processor(settings_for(sim.url))
    yield client
    await client.aclose()


# --- cards ----------------------------------------------------------------------------------
@pytest.mark.parametrize("token", ["tok_visa", "tok_mastercard"])
async def test_a_good_card_is_authorized_captured_and_refunded_within_the_captured_amount(
    processor: ProcessorClient, sim: SimulatorProcess, token: str
) -> None:
    auth = await processor.authorize(idempotency_key=key(), card_token=token, amount=Money(USD, 1000))
    assert auth.outcome is Outcome.SUCCEEDED
    assert auth.processor_ref.startswith("auth_")

    capture = await processor.capture(
        idempotency_key=key(), authorization_ref=auth.processor_ref, amount=Money(USD, 600)
    )
    assert (capture.outcome, capture.processor_ref) == (Outcome.SUCCEEDED, auth.processor_ref)
    for amount in (200, 400):
        refund = await processor.refund(
            idempotency_key=key(), authorization_ref=auth.processor_ref, amount=Money(USD, amount)
        )
        assert refund.outcome is Outcome.SUCCEEDED
        assert refund.processor_ref.startswith("re_")
    with pytest.raises(ProcessorRejected, match="amount_too_large"):
        await processor.refund(idempotency_key=key(), authorization_ref=auth.processor_ref, amount=Money(USD, 1))

    books = sim.get(f"/v1/authorizations/{auth.processor_ref}")
    assert (books["status"], books["amount_captured"], books["amount_refunded"]) == ("captured", 600, 600)


async def test_capture_above_the_authorized_amount_is_rejected_and_changes_nothing(
    processor: ProcessorClient, sim: SimulatorProcess
) -> None:
    auth = await processor.authorize(idempotency_key=key(), card_token="tok_visa", amount=Money(USD, 500))
    with pytest.raises(ProcessorRejected, match="amount_too_large"):
        await processor.capture(idempotency_key=key(), authorization_ref=auth.processor_ref, amount=Money(USD, 501))
    assert sim.get(f"/v1/authorizations/{auth.processor_ref}")["status"] == "authorized"


async def test_a_voided_authorization_can_no_longer_be_captured(
    processor: ProcessorClient, sim: SimulatorProcess
) -> None:
    auth = await processor.authorize(idempotency_key=key(), card_token="tok_visa", amount=Money(USD, 700))
    void = await processor.void(idempotency_key=key(), authorization_ref=auth.processor_ref)
    assert void.outcome is Outcome.SUCCEEDED
    with pytest.raises(ProcessorRejected, match="unexpected_state"):
        await processor.capture(idempotency_key=key(), authorization_ref=auth.processor_ref, amount=Money(USD, 700))
    assert sim.get(f"/v1/authorizations/{auth.processor_ref}")["status"] == "voided"


@pytest.mark.parametrize(
    ("token", "decline_code"),
    [("tok_chargeDeclined", "generic_decline"), ("tok_insufficientFunds", "insufficient_funds")],
)
async def test_declining_cards_answer_declined_with_their_decline_code(
    processor: ProcessorClient, sim: SimulatorProcess, token: str, decline_code: str
) -> None:
    idempotency_key = key()
    result = await processor.authorize(idempotency_key=idempotency_key, card_token=token, amount=Money(USD, 1000))
    assert (result.outcome, result.decline_code) == (Outcome.DECLINED, decline_code)
    assert sim.get(f"/v1/authorizations/{result.processor_ref}")["status"] == "declined"
    # A decline is an answer: it was not retried.
    assert len(sim.get(f"/v1/authorizations?idempotency_key={idempotency_key}")["data"]) == 1


async def test_a_processing_error_is_retried_then_reported_unavailable_with_nothing_authorized(
    processor: ProcessorClient, sim: SimulatorProcess
) -> None:
    idempotency_key = key()
    with pytest.raises(ProcessorUnavailable, match="processing_error"):
        await processor.authorize(
            idempotency_key=idempotency_key, card_token="tok_processingError", amount=Money(USD, 1000)
        )
    assert sim.get(f"/v1/authorizations?idempotency_key={idempotency_key}")["data"] == []


async def test_a_processing_error_is_an_unavailable_answer_that_may_have_acted(sim: SimulatorProcess) -> None:
    # Nothing tells a client that a 500 came before the work: the outcome counts as unknown.
    client = build_processor(settings_for(sim.url, processor_max_attempts=1))
    try:
        with pytest.raises(ProcessorUnavailable) as caught:
            await client.payout(idempotency_key=key(), bank_account_token="btok_processingError", amount=Money(USD, 1))
        assert caught.value.may_have_acted
    finally:
        await client.aclose()


async def test_find_reports_what_an_earlier_call_did_without_repeating_it(
    processor: ProcessorClient, sim: SimulatorProcess
) -> None:
    auth_key, refund_key, payout_key = key(), key(), key()
    for operation, reference in [
        (Operation.AUTHORIZE, auth_key),
        (Operation.REFUND, refund_key),
        (Operation.PAYOUT, payout_key),
    ]:
        assert await processor.find(operation, idempotency_key=reference) is None
    auth = await processor.authorize(idempotency_key=auth_key, card_token="tok_visa", amount=Money(USD, 900))
    assert await processor.find(Operation.CAPTURE, idempotency_key="", authorization_ref=auth.processor_ref) is None
    assert await processor.find(Operation.AUTHORIZE, idempotency_key=auth_key) == auth
    await processor.capture(idempotency_key=key(), authorization_ref=auth.processor_ref, amount=Money(USD, 900))
    captured = await processor.find(Operation.CAPTURE, idempotency_key="", authorization_ref=auth.processor_ref)
    voided = await processor.find(Operation.VOID, idempotency_key="", authorization_ref=auth.processor_ref)
    assert (captured and captured.outcome, voided and voided.outcome) == (Outcome.SUCCEEDED, Outcome.DECLINED)
    refund = await processor.refund(
        idempotency_key=refund_key, authorization_ref=auth.processor_ref, amount=Money(USD, 400)
    )
    assert await processor.find(Operation.REFUND, idempotency_key=refund_key) == refund
    payout = await processor.payout(idempotency_key=payout_key, bank_account_token="btok_success", amount=Money(USD, 7))
    found = await processor.find(Operation.PAYOUT, idempotency_key=payout_key)
    assert found is not None
    assert found.processor_ref == payout.processor_ref
    paid = poll_until(lambda: sim.get(f"/v1/payouts/{payout.processor_ref}")["status"] == "paid" or None, timeout=10)
    assert paid
    settled = await processor.find(Operation.PAYOUT, idempotency_key=payout_key)
    assert settled is not None
    assert settled.outcome is Outcome.SUCCEEDED  # the payout as it is now
    # Asking moved nothing: one authorization, one refund, one payout under their keys.
    for collection, reference in [("authorizations", auth_key), ("refunds", refund_key), ("payouts", payout_key)]:
        assert len(sim.get(f"/v1/{collection}?idempotency_key={reference}")["data"]) == 1


async def test_an_unknown_token_is_rejected_without_retries(processor: ProcessorClient) -> None:
    with pytest.raises(ProcessorRejected, match="token_invalid"):
        await processor.authorize(idempotency_key=key(), card_token="tok_nonsense", amount=Money(USD, 1000))


async def test_a_hanging_processor_raises_processor_timeout_within_the_client_timeout(sim: SimulatorProcess) -> None:
    client = build_processor(settings_for(sim.url, processor_timeout_seconds=0.5, processor_max_attempts=1))
    try:
        started = time.monotonic()
        with pytest.raises(ProcessorTimeout):
            await client.authorize(idempotency_key=key(), card_token="tok_timeout", amount=Money(USD, 1000))
        # The simulator hangs for HANG_SECONDS; the client gave up after its own 0.5 s.
        assert time.monotonic() - started < HANG_SECONDS / 2
    finally:
        await client.aclose()


async def test_retries_of_a_hanging_call_keep_the_key_and_still_end_in_processor_timeout(sim: SimulatorProcess) -> None:
    client = build_processor(settings_for(sim.url, processor_timeout_seconds=0.5, processor_max_attempts=3))
    idempotency_key = key()
    try:
        started = time.monotonic()
        with pytest.raises(ProcessorTimeout):
            await client.authorize(idempotency_key=idempotency_key, card_token="tok_timeout", amount=Money(USD, 10))
        # Retries with the same key found the first attempt still running (409 in use), not a new charge.
        assert time.monotonic() - started < HANG_SECONDS / 2
    finally:
        await client.aclose()
    assert sim.get(f"/v1/authorizations?idempotency_key={idempotency_key}")["data"] == []


# --- idempotency ------------------------------------------------------------------------------
async def test_a_retry_after_a_lost_response_replays_the_charge_instead_of_charging_twice(
    processor: ProcessorClient, sim: SimulatorProcess
) -> None:
    idempotency_key = key()
    sim.configure(lose_next=1)  # the next POST takes effect, then the connection drops
    result = await processor.authorize(idempotency_key=idempotency_key, card_token="tok_visa", amount=Money(USD, 4200))
    assert result.outcome is Outcome.SUCCEEDED
    created = sim.get(f"/v1/authorizations?idempotency_key={idempotency_key}")["data"]
    assert [row["id"] for row in created] == [result.processor_ref]


async def test_a_refund_retried_after_a_lost_response_refunds_once(
    processor: ProcessorClient, sim: SimulatorProcess
) -> None:
    auth = await processor.authorize(idempotency_key=key(), card_token="tok_visa", amount=Money(USD, 1000))
    await processor.capture(idempotency_key=key(), authorization_ref=auth.processor_ref, amount=Money(USD, 1000))
    refund_key = key()
    sim.configure(lose_next=1)
    refund = await processor.refund(
        idempotency_key=refund_key, authorization_ref=auth.processor_ref, amount=Money(USD, 300)
    )
    assert refund.outcome is Outcome.SUCCEEDED
    assert len(sim.get(f"/v1/refunds?idempotency_key={refund_key}")["data"]) == 1
    assert sim.get(f"/v1/authorizations/{auth.processor_ref}")["amount_refunded"] == 300


async def test_unavailable_answers_are_retried_until_the_processor_recovers(
    processor: ProcessorClient, sim: SimulatorProcess
) -> None:
    idempotency_key = key()
    sim.configure(fail_next=2)  # two 503s before anything happens
    result = await processor.authorize(idempotency_key=idempotency_key, card_token="tok_visa", amount=Money(USD, 99))
    assert result.outcome is Outcome.SUCCEEDED
    assert len(sim.get(f"/v1/authorizations?idempotency_key={idempotency_key}")["data"]) == 1


async def test_the_same_key_with_a_different_request_is_rejected(processor: ProcessorClient) -> None:
    idempotency_key = key()
    await processor.authorize(idempotency_key=idempotency_key, card_token="tok_visa", amount=Money(USD, 100))
    with pytest.raises(ProcessorRejected, match="idempotency_key_reused"):
        await processor.authorize(idempotency_key=idempotency_key, card_token="tok_visa", amount=Money(USD, 200))


# --- payouts and webhooks ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("token", "event_type", "outcome", "decline_code"),
    [
        ("btok_success", "payout.paid", Outcome.SUCCEEDED, ""),
        ("btok_failed", "payout.failed", Outcome.DECLINED, "account_closed"),
    ],
)
async def test_a_payout_is_pending_until_a_signed_webhook_reports_its_result(
    processor: ProcessorClient,
    receiver: Receiver,
    token: str,
    event_type: str,
    outcome: Outcome,
    decline_code: str,
) -> None:
    idempotency_key = key()
    payout = await processor.payout(idempotency_key=idempotency_key, bank_account_token=token, amount=Money(USD, 2500))
    assert payout.outcome is Outcome.PENDING
    assert payout.processor_ref.startswith("po_")

    headers, body = poll_until(lambda: receiver.for_event_of(payout.processor_ref), timeout=10)[0]
    # Checked independently of the adapter: HMAC-SHA256 over "<t>.<body>".
    fields = dict(part.split("=", 1) for part in headers["Paymesh-Signature"].split(","))
    expected = hmac.new(SECRET.encode(), fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)

    event = processor.parse_webhook(body, headers)
    assert (event.type, event.processor_ref, event.outcome, event.decline_code, event.reference) == (
        event_type,
        payout.processor_ref,
        outcome,
        decline_code,
        idempotency_key,
    )
    assert event.event_id.startswith("evt_")
    # gRPC metadata through Envoy arrives lowercased; the lookup does not care.
    assert processor.parse_webhook(body, {k.lower(): v for k, v in headers.items()}) == event


@pytest.mark.parametrize(
    ("card", "event_type", "outcome", "decline_code", "refundable_after"),
    [
        ("tok_refundPending", "refund.succeeded", Outcome.SUCCEEDED, "", 0),
        ("tok_refundFail", "refund.failed", Outcome.DECLINED, "expired_or_canceled_card", 1500),
    ],
)
async def test_a_pending_card_refund_is_settled_by_a_signed_webhook(
    processor: ProcessorClient,
    receiver: Receiver,
    card: str,
    event_type: str,
    outcome: Outcome,
    decline_code: str,
    refundable_after: int,
) -> None:
    amount = Money(USD, 1500)
    auth = await processor.authorize(idempotency_key=key(), card_token=card, amount=amount)
    await processor.capture(idempotency_key=key(), authorization_ref=auth.processor_ref, amount=amount)
    refund = await processor.refund(idempotency_key=key(), authorization_ref=auth.processor_ref, amount=amount)
    assert refund.outcome is Outcome.PENDING
    assert refund.processor_ref.startswith("re_")

    headers, body = poll_until(lambda: receiver.for_event_of(refund.processor_ref), timeout=10)[0]
    event = processor.parse_webhook(body, headers)
    assert (event.type, event.object_kind, event.processor_ref, event.outcome, event.decline_code) == (
        event_type,
        "refund",
        refund.processor_ref,
        outcome,
        decline_code,
    )
    # A failed refund gives the money back to the charge: it can be refunded again, never beyond it.
    if refundable_after:
        again = Money(USD, refundable_after)
        retried = await processor.refund(idempotency_key=key(), authorization_ref=auth.processor_ref, amount=again)
        assert retried.outcome is Outcome.PENDING
    with pytest.raises(ProcessorRejected):
        await processor.refund(idempotency_key=key(), authorization_ref=auth.processor_ref, amount=Money(USD, 1))


async def test_a_bank_account_the_processor_refuses_is_declined_at_once(processor: ProcessorClient) -> None:
    result = await processor.payout(
        idempotency_key=key(), bank_account_token="btok_invalidAccount", amount=Money(USD, 100)
    )
    assert (result.outcome, result.decline_code) == (Outcome.DECLINED, "invalid_account_number")


async def test_tampered_stale_or_unsigned_webhooks_are_rejected(processor: ProcessorClient, receiver: Receiver) -> None:
    payout = await processor.payout(idempotency_key=key(), bank_account_token="btok_success", amount=Money(USD, 10))
    headers, body = poll_until(lambda: receiver.for_event_of(payout.processor_ref), timeout=10)[0]
    signature = headers["Paymesh-Signature"]

    tampered = body.replace(b'"amount":10', b'"amount":10000')
    assert tampered != body
    with pytest.raises(WebhookSignatureInvalid):
        processor.parse_webhook(tampered, headers)

    def signed(secret: str, timestamp: int) -> dict[str, str]:
        digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
        return {"Paymesh-Signature": f"t={timestamp},v1={digest}"}

    now = int(time.time())
    with pytest.raises(WebhookSignatureInvalid):
        processor.parse_webhook(body, signed("whsec_someone_else", now))
    with pytest.raises(WebhookSignatureInvalid):
        processor.parse_webhook(body, signed(SECRET, now - 3600))  # a replay of an old delivery
    with pytest.raises(WebhookSignatureInvalid):
        processor.parse_webhook(body, {})
    with pytest.raises(WebhookSignatureInvalid):
        processor.parse_webhook(body, {"Paymesh-Signature": signature.replace("v1=", "v1=0")})
    # The genuine delivery still verifies, and a fresh signature with the right secret too.
    assert processor.parse_webhook(body, headers).processor_ref == payout.processor_ref
    assert processor.parse_webhook(body, signed(SECRET, now)).processor_ref == payout.processor_ref


async def test_webhook_delivery_is_retried_until_the_receiver_accepts_it(
    processor: ProcessorClient, sim: SimulatorProcess, receiver: Receiver
) -> None:
    receiver.fail_first = 2
    payout = await processor.payout(idempotency_key=key(), bank_account_token="btok_success", amount=Money(USD, 5))
    deliveries = poll_until(lambda: len(receiver.for_event_of(payout.processor_ref)) >= 3 or None, timeout=10)
    assert deliveries
    bodies = [json.loads(body) for _, body in receiver.for_event_of(payout.processor_ref)]
    assert len({body["id"] for body in bodies}) == 1  # the same event each time
    event = sim.get(f"/v1/events/{bodies[0]['id']}")
    assert event["delivery"] == {"attempts": 3, "delivered": True, "last_status": 200}
    assert sim.get(f"/v1/payouts/{payout.processor_ref}")["status"] == "paid"


# --- circuit breaker ------------------------------------------------------------------------
def breaker_gauge() -> float | None:
    return REGISTRY.get_sample_value("paymesh_processor_circuit_state", {"processor": "simulator"})


async def test_the_breaker_opens_when_the_simulator_is_down_fails_fast_and_closes_after_recovery(
    tmp_path: Path,
) -> None:
    with SimulatorProcess(tmp_path / "sim.log", webhook_secret=SECRET) as down_sim:
        client = build_processor(
            settings_for(
                down_sim.url,
                processor_max_attempts=1,
                processor_breaker_failure_threshold=3,
                processor_breaker_open_seconds=1.0,
            )
        )
        try:
            assert (await client.authorize(idempotency_key=key(), card_token="tok_visa", amount=Money(USD, 1))).outcome
            assert breaker_gauge() == 0
            down_sim.stop()
            for _ in range(3):
                with pytest.raises(ProcessorUnavailable) as refused:
                    await client.authorize(idempotency_key=key(), card_token="tok_visa", amount=Money(USD, 1))
                assert not isinstance(refused.value, CircuitOpen)
            assert breaker_gauge() == 1

            with pytest.raises(CircuitOpen):
                await client.authorize(idempotency_key=key(), card_token="tok_visa", amount=Money(USD, 1))

            down_sim.start()  # same port
            await asyncio.sleep(1.0)  # the breaker's cool-down
            assert breaker_gauge() == 2
            probe = await client.authorize(idempotency_key=key(), card_token="tok_visa", amount=Money(USD, 1))
            assert probe.outcome is Outcome.SUCCEEDED
            assert breaker_gauge() == 0
        finally:
            await client.aclose()
