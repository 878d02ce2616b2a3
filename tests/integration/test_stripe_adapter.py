"""The Stripe adapter against stripe-mock, Stripe's own mock of its API.

stripe-mock (installed by devstack/bootstrap.sh into .tools/bin) validates
every request against Stripe's OpenAPI spec and answers canned objects; it
keeps no state and never declines. So these tests check what it can tell:
the request shapes the adapter sends are accepted, the idempotency key is on
the wire (and the same on every retry), and how answers map to results and
errors. A small recording proxy sits between the adapter and stripe-mock; for
answers stripe-mock cannot give (a card decline, 429, 500) the proxy returns
Stripe-shaped errors (bodies as documented at docs.stripe.com/api/errors).
Webhook verification is tested with signatures computed here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from devstack.components import REPO_ROOT
from payment_svc.processor import (
    Operation,
    Outcome,
    ProcessorClient,
    ProcessorRejected,
    ProcessorUnavailable,
    WebhookSignatureInvalid,
)
from payment_svc.processors import CircuitOpen, build_processor
from payment_svc.settings import PaymentSettings
from paymesh_runtime.money import Money

pytestmark = pytest.mark.integration

STRIPE_MOCK = REPO_ROOT / ".tools" / "bin" / "stripe-mock"
WEBHOOK_SECRET = "whsec_test_secret_for_stripe_adapter"
API_KEY = "sk_test_123"


# --- stripe-mock as a process -----------------------------------------------------------------
@pytest.fixture(scope="module")
def stripe_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    assert STRIPE_MOCK.exists(), f"{STRIPE_MOCK} is missing: run devstack/bootstrap.sh"
    log_path = tmp_path_factory.mktemp("stripe_mock") / "stripe-mock.log"
    with log_path.open("wb") as log:
        # Empty ports: the system picks free loopback ports; the log says which.
        process = subprocess.Popen(
            [str(STRIPE_MOCK), "-http-addr", "127.0.0.1:", "-https-addr", "127.0.0.1:"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://{_listening_address(log_path, process)}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _listening_address(log_path: Path, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, f"stripe-mock exited: {log_path.read_text()}"
        found = re.search(r"Listening for HTTP at address: (127\.0\.0\.1:\d+)", log_path.read_text())
        if found:
            return found.group(1)
        time.sleep(0.1)
    raise AssertionError(f"stripe-mock did not start: {log_path.read_text()}")


# --- a recording proxy ------------------------------------------------------------------------
@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, list[str]]
    status: int


class Proxy:
    """Forwards to stripe-mock and records each request; `inject` answers the next ones itself."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.seen: list[Seen] = []
        self.injected: list[tuple[int, dict[str, Any]]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._relay()

            def do_POST(self) -> None:
                self._relay()

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy.lock:
                    injected = proxy.injected.pop(0) if proxy.injected else None
                headers: dict[str, str] = {}
                if injected is not None:
                    status, reply = injected[0], json.dumps(injected[1]).encode()
                else:
                    status, reply, headers = proxy.forward(self.command, self.path, dict(self.headers), body)
                with proxy.lock:
                    form = urllib.parse.parse_qs(body.decode())
                    proxy.seen.append(Seen(self.command, self.path, dict(self.headers.items()), form, status))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        keep = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length", "connection")}
        request = urllib.request.Request(self.upstream + path, data=body or None, headers=keep, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - loopback
                return reply.status, reply.read(), _echoed(reply.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read(), _echoed(error.headers)

    def requests_to(self, path: str) -> list[Seen]:
        with self.lock:
            return [seen for seen in self.seen if seen.path == path]


def _echoed(headers: Any) -> dict[str, str]:
    return {name: headers[name] for name in ("Idempotency-Key", "Request-Id") if headers.get(name)}


@pytest.fixture(scope="module")
def proxy(stripe_mock: str) -> Iterator[Proxy]:
    p = Proxy(stripe_mock)
    yield p
    p.server.shutdown()
    p.server.server_close()


def stripe_settings(api_base: str, **overrides: Any) -> PaymentSettings:
    values: dict[str, Any] = {
        "processor": "stripe",
        "stripe_api_key": API_KEY,
        "stripe_api_base": api_base,
        "stripe_webhook_secret": WEBHOOK_SECRET,
        "processor_timeout_seconds": 5.0,
        "processor_max_attempts": 3,
        "processor_retry_base_seconds": 0.01,
        "processor_retry_max_seconds": 0.05,
        "processor_breaker_failure_threshold": 50,
        "processor_breaker_minimum_calls": 20,
        "processor_breaker_failure_ratio": 1.0,
    }
    values.update(overrides)
    return PaymentSettings(**values)


@pytest.fixture
async def stripe_processor(proxy: Proxy) -> AsyncIterator[ProcessorClient]:
    with proxy.lock:
        proxy.seen.clear()
        proxy.injected.clear()
    client = build_processor(stripe_settings(proxy.url))
    yield client
    await client.aclose()


def key(name: str) -> str:
    return f"{name}-{time.monotonic_ns()}"


# --- request shapes stripe-mock accepts --------------------------------------------------------
async def test_authorize_creates_and_confirms_a_manual_capture_payment_intent(
    stripe_processor: ProcessorClient, proxy: Proxy
) -> None:
    idempotency_key = key("authorize")
    result = await stripe_processor.authorize(
        idempotency_key=idempotency_key, card_token="tok_visa", amount=Money("USD", 1000)
    )
    (seen,) = proxy.requests_to("/v1/payment_intents")
    assert seen.status == 200  # stripe-mock validated the parameters against Stripe's spec
    assert seen.headers["Idempotency-Key"] == idempotency_key
    assert seen.headers["Authorization"] == f"Bearer {API_KEY}"
    assert seen.form == {
        "amount": ["1000"],
        "currency": ["usd"],
        "capture_method": ["manual"],
        "confirm": ["true"],
        "payment_method": ["pm_card_visa"],
        "payment_method_types[0]": ["card"],
        # Finds the PaymentIntent again when the answer to this request is lost.
        "metadata[paymesh_reference]": [idempotency_key],
    }
    assert result.processor_ref.startswith("pi_")
    # stripe-mock's canned PaymentIntent is in requires_payment_method: after a
    # confirm, that is Stripe saying the card was not accepted.
    assert (result.outcome, result.decline_code) == (Outcome.DECLINED, "requires_payment_method")


async def test_capture_sends_amount_to_capture_and_reads_the_payment_intent_it_gets_back(
    stripe_processor: ProcessorClient, proxy: Proxy
) -> None:
    idempotency_key = key("capture")
    # The canned answer is not a captured intent, so the adapter must refuse to call it a success.
    with pytest.raises(ProcessorRejected, match="requires_payment_method"):
        await stripe_processor.capture(
            idempotency_key=idempotency_key, authorization_ref="pi_123", amount=Money("USD", 600)
        )
    (seen,) = proxy.requests_to("/v1/payment_intents/pi_123/capture")
    assert (seen.status, seen.form, seen.headers["Idempotency-Key"]) == (
        200,
        {"amount_to_capture": ["600"]},
        idempotency_key,
    )


async def test_void_cancels_the_payment_intent_and_reads_the_state_it_gets_back(
    stripe_processor: ProcessorClient, proxy: Proxy
) -> None:
    idempotency_key = key("void")
    # stripe-mock's canned answer is not a canceled intent: the adapter must not report success.
    with pytest.raises(ProcessorRejected, match="requires_payment_method"):
        await stripe_processor.void(idempotency_key=idempotency_key, authorization_ref="pi_123")
    (seen,) = proxy.requests_to("/v1/payment_intents/pi_123/cancel")
    assert (seen.status, seen.headers["Idempotency-Key"]) == (200, idempotency_key)


async def test_refund_of_a_payment_intent_succeeds(stripe_processor: ProcessorClient, proxy: Proxy) -> None:
    idempotency_key = key("refund")
    result = await stripe_processor.refund(
        idempotency_key=idempotency_key, authorization_ref="pi_123", amount=Money("USD", 300)
    )
    assert result.outcome is Outcome.SUCCEEDED
    assert result.processor_ref.startswith("re_")
    (seen,) = proxy.requests_to("/v1/refunds")
    assert (seen.status, seen.form, seen.headers["Idempotency-Key"]) == (
        200,
        {"payment_intent": ["pi_123"], "amount": ["300"], "metadata[paymesh_reference]": [idempotency_key]},
        idempotency_key,
    )


async def test_a_payout_is_pending_while_in_transit(stripe_processor: ProcessorClient, proxy: Proxy) -> None:
    idempotency_key = key("payout")
    result = await stripe_processor.payout(
        idempotency_key=idempotency_key, bank_account_token="ba_123", amount=Money("EUR", 2500)
    )
    assert result.outcome is Outcome.PENDING  # stripe-mock's payout is in_transit
    assert result.processor_ref.startswith("po_")
    (seen,) = proxy.requests_to("/v1/payouts")
    assert seen.form == {
        "amount": ["2500"],
        "currency": ["eur"],
        "destination": ["ba_123"],
        "metadata[paymesh_reference]": [idempotency_key],
    }
    assert seen.headers["Idempotency-Key"] == idempotency_key


# --- find: what did an earlier call do? --------------------------------------------------------
def stripe_list(*objects: dict[str, Any], search: bool = False) -> dict[str, Any]:
    return {"object": "search_result" if search else "list", "data": list(objects), "has_more": False, "url": "/v1/x"}


def requests_starting(proxy: Proxy, prefix: str) -> list[Seen]:
    with proxy.lock:
        return [seen for seen in proxy.seen if seen.path.startswith(prefix)]


async def test_find_authorize_searches_payment_intents_by_the_reference_in_their_metadata(
    stripe_processor: ProcessorClient, proxy: Proxy
) -> None:
    reference = f"{uuid.uuid4()}:authorize"
    # stripe-mock's canned search result carries no such metadata: nothing found.
    assert await stripe_processor.find(Operation.AUTHORIZE, idempotency_key=reference) is None
    (seen,) = requests_starting(proxy, "/v1/payment_intents/search")
    assert seen.status == 200  # stripe-mock accepted the query
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(seen.path).query)
    assert query["query"] == [f"metadata['paymesh_reference']:'{reference}'"]
    ours = {"id": "pi_found", "object": "payment_intent", "status": "requires_capture"}
    ours["metadata"] = {"paymesh_reference": reference}  # type: ignore[assignment]
    proxy.injected.append((200, stripe_list(ours, search=True)))
    found = await stripe_processor.find(Operation.AUTHORIZE, idempotency_key=reference)
    assert found is not None
    assert (found.outcome, found.processor_ref) == (Outcome.SUCCEEDED, "pi_found")


async def test_find_capture_and_void_read_the_payment_intents_status(
    stripe_processor: ProcessorClient, proxy: Proxy
) -> None:
    # stripe-mock's canned PaymentIntent (requires_payment_method) was neither captured nor canceled.
    assert await stripe_processor.find(Operation.CAPTURE, idempotency_key="", authorization_ref="pi_123") is None
    assert [seen.status for seen in requests_starting(proxy, "/v1/payment_intents/pi_123")] == [200]
    for status, operation, outcome in [
        ("succeeded", Operation.CAPTURE, Outcome.SUCCEEDED),
        ("canceled", Operation.CAPTURE, Outcome.DECLINED),
        ("canceled", Operation.VOID, Outcome.SUCCEEDED),
        ("requires_capture", Operation.VOID, None),
    ]:
        proxy.injected.append((200, {"id": "pi_123", "object": "payment_intent", "status": status}))
        found = await stripe_processor.find(operation, idempotency_key="", authorization_ref="pi_123")
        assert (found.outcome if found else None) is outcome, (status, operation)


async def test_find_refund_and_payout_look_for_the_reference_among_the_listed_objects(
    stripe_processor: ProcessorClient, proxy: Proxy
) -> None:
    reference = f"{uuid.uuid4()}:refund"
    assert await stripe_processor.find(Operation.REFUND, idempotency_key=reference, authorization_ref="pi_123") is None
    (listed,) = requests_starting(proxy, "/v1/refunds")
    assert listed.status == 200
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(listed.path).query)["payment_intent"] == ["pi_123"]
    other = {"id": "re_other", "object": "refund", "status": "succeeded", "metadata": {"paymesh_reference": "x"}}
    ours = {"id": "re_ours", "object": "refund", "status": "pending", "metadata": {"paymesh_reference": reference}}
    proxy.injected.append((200, stripe_list(other, ours)))
    found = await stripe_processor.find(Operation.REFUND, idempotency_key=reference, authorization_ref="pi_123")
    assert found is not None
    assert (found.outcome, found.processor_ref) == (Outcome.PENDING, "re_ours")

    payout_reference = f"{uuid.uuid4()}:payout"
    assert await stripe_processor.find(Operation.PAYOUT, idempotency_key=payout_reference) is None
    assert [seen.status for seen in requests_starting(proxy, "/v1/payouts")] == [200]
    paid = {"id": "po_ours", "object": "payout", "status": "paid", "metadata": {"paymesh_reference": payout_reference}}
    proxy.injected.append((200, stripe_list(paid)))
    found = await stripe_processor.find(Operation.PAYOUT, idempotency_key=payout_reference)
    assert found is not None
    assert (found.outcome, found.processor_ref) == (Outcome.SUCCEEDED, "po_ours")


async def test_a_webhook_carries_the_reference_its_object_was_created_with(stripe_processor: ProcessorClient) -> None:
    obj = {"id": "po_7", "object": "payout", "status": "paid", "metadata": {"paymesh_reference": "p-1:payout"}}
    payload = stripe_event("payout.paid", obj)
    assert stripe_processor.parse_webhook(payload, stripe_signature(payload)).reference == "p-1:payout"


# --- errors -----------------------------------------------------------------------------------
def stripe_error(type_: str, message: str, **fields: Any) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message, **fields}}


async def test_a_server_error_is_retried_with_the_same_idempotency_key(
    stripe_processor: ProcessorClient, proxy: Proxy
) -> None:
    proxy.injected.append((500, stripe_error("api_error", "Something went wrong on Stripe's end.")))
    idempotency_key = key("retry")
    result = await stripe_processor.refund(
        idempotency_key=idempotency_key, authorization_ref="pi_123", amount=Money("USD", 100)
    )
    assert result.outcome is Outcome.SUCCEEDED
    attempts = proxy.requests_to("/v1/refunds")
    assert [seen.status for seen in attempts] == [500, 200]
    assert {seen.headers["Idempotency-Key"] for seen in attempts} == {idempotency_key}
    assert attempts[0].form == attempts[1].form


async def test_rate_limiting_is_retried_then_reported_unavailable(
    stripe_processor: ProcessorClient, proxy: Proxy
) -> None:
    for _ in range(3):
        proxy.injected.append((429, stripe_error("invalid_request_error", "Too many requests", code="rate_limit")))
    with pytest.raises(ProcessorUnavailable, match="RateLimitError"):
        await stripe_processor.payout(
            idempotency_key=key("limited"), bank_account_token="ba_123", amount=Money("USD", 1)
        )
    assert [seen.status for seen in proxy.requests_to("/v1/payouts")] == [429, 429, 429]


async def test_a_card_decline_is_a_declined_result_with_its_code_and_is_not_retried(
    stripe_processor: ProcessorClient, proxy: Proxy
) -> None:
    decline = stripe_error(
        "card_error",
        "Your card has insufficient funds.",
        code="card_declined",
        decline_code="insufficient_funds",
        payment_intent={"id": "pi_declined", "object": "payment_intent", "status": "requires_payment_method"},
    )
    proxy.injected.append((402, decline))
    result = await stripe_processor.authorize(
        idempotency_key=key("declined"), card_token="tok_insufficientFunds", amount=Money("USD", 5000)
    )
    assert (result.outcome, result.decline_code, result.processor_ref) == (
        Outcome.DECLINED,
        "insufficient_funds",
        "pi_declined",
    )
    (seen,) = proxy.requests_to("/v1/payment_intents")
    assert seen.form["payment_method"] == ["pm_card_chargeDeclinedInsufficientFunds"]


async def test_an_invalid_api_key_is_rejected_by_stripe_mock_and_not_retried(stripe_mock: str, proxy: Proxy) -> None:
    proxy.seen.clear()
    client = build_processor(stripe_settings(proxy.url, stripe_api_key="not_a_key"))
    try:
        with pytest.raises(ProcessorRejected, match="AuthenticationError"):
            await client.refund(idempotency_key=key("auth"), authorization_ref="pi_123", amount=Money("USD", 1))
    finally:
        await client.aclose()
    assert [seen.status for seen in proxy.requests_to("/v1/refunds")] == [401]


async def test_an_unreachable_stripe_is_unavailable_and_opens_the_breaker() -> None:
    # A port nobody listens on: bind one, learn it, close it.
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as server:
        dead = f"http://127.0.0.1:{server.server_address[1]}"
    client = build_processor(stripe_settings(dead, processor_max_attempts=1, processor_breaker_failure_threshold=2))
    try:
        for _ in range(2):
            with pytest.raises(ProcessorUnavailable) as refused:
                await client.void(idempotency_key=key("dead"), authorization_ref="pi_123")
            assert not isinstance(refused.value, CircuitOpen)
        with pytest.raises(CircuitOpen):
            await client.void(idempotency_key=key("dead"), authorization_ref="pi_123")
    finally:
        await client.aclose()


# --- webhooks ----------------------------------------------------------------------------------
def stripe_event(event_type: str, obj: dict[str, Any]) -> bytes:
    event = {"id": "evt_1TestEvent", "object": "event", "type": event_type, "data": {"object": obj}}
    return json.dumps(event).encode()


def stripe_signature(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> dict[str, str]:
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={t},v1={digest}"}


async def test_a_signed_payout_paid_event_verifies_and_decodes(stripe_processor: ProcessorClient) -> None:
    payload = stripe_event("payout.paid", {"id": "po_1", "object": "payout", "status": "paid", "amount": 2500})
    event = stripe_processor.parse_webhook(payload, stripe_signature(payload))
    assert (event.event_id, event.type, event.processor_ref, event.outcome) == (
        "evt_1TestEvent",
        "payout.paid",
        "po_1",
        Outcome.SUCCEEDED,
    )
    assert event.data["amount"] == "2500"


async def test_failed_payouts_and_payments_carry_their_failure_codes(stripe_processor: ProcessorClient) -> None:
    failed_payout = stripe_event(
        "payout.failed", {"id": "po_2", "object": "payout", "status": "failed", "failure_code": "account_closed"}
    )
    event = stripe_processor.parse_webhook(failed_payout, stripe_signature(failed_payout))
    assert (event.outcome, event.decline_code) == (Outcome.DECLINED, "account_closed")

    failed_payment = stripe_event(
        "payment_intent.payment_failed",
        {
            "id": "pi_9",
            "object": "payment_intent",
            "status": "requires_payment_method",
            "last_payment_error": {"code": "card_declined", "decline_code": "generic_decline"},
        },
    )
    event = stripe_processor.parse_webhook(
        failed_payment, {"stripe-signature": stripe_signature(failed_payment)["Stripe-Signature"]}
    )
    assert (event.processor_ref, event.outcome, event.decline_code) == ("pi_9", Outcome.DECLINED, "generic_decline")


async def test_tampered_stale_or_foreign_stripe_signatures_are_rejected(stripe_processor: ProcessorClient) -> None:
    payload = stripe_event("payout.paid", {"id": "po_3", "object": "payout", "status": "paid", "amount": 10})
    headers = stripe_signature(payload)
    with pytest.raises(WebhookSignatureInvalid):
        stripe_processor.parse_webhook(payload.replace(b'"amount": 10', b'"amount": 99999'), headers)
    with pytest.raises(WebhookSignatureInvalid):
        stripe_processor.parse_webhook(payload, stripe_signature(payload, secret="whsec_other"))
    with pytest.raises(WebhookSignatureInvalid):
        stripe_processor.parse_webhook(payload, stripe_signature(payload, timestamp=int(time.time()) - 3600))
    with pytest.raises(WebhookSignatureInvalid):
        stripe_processor.parse_webhook(payload, {})
    assert stripe_processor.parse_webhook(payload, headers).processor_ref == "po_3"
