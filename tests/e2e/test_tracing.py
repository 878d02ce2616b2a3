"""One trace per request, from the edge to the email, read back from the stack's real Jaeger.

The test stack samples every trace (devstack.tracing) and exports Envoy's and
the services' spans over OTLP to its Jaeger (devstack.jaeger); these tests
read them from Jaeger's query API, as an operator would.
"""

from __future__ import annotations

import functools
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from devstack.envoy_config import EDGE_SERVICE_NAME
from devstack.stack import Stack
from tests.e2e.test_authorization import Edge, Person
from tests.webhook_receiver import receiver_process

pytestmark = pytest.mark.e2e

CREATE_PAYMENT = "/paymesh.payment.v1.PaymentService/CreatePayment"
POST_TRANSACTIONS = "/paymesh.wallet.v1.WalletService/PostTransactions"
BATCH = "wallet_payments batch"
MEMBER = "wallet_payments batch member"
PAYMENTS_TOPIC = "paymesh.payments.v1"
WALLET_PUBLISH = "paymesh.wallets.v1 publish"


@dataclass(frozen=True)
class Span:
    span_id: str
    service: str
    name: str
    parent: str | None  # CHILD_OF
    links: tuple[tuple[str, str], ...]  # FOLLOWS_FROM (trace id, span id)
    tags: dict[str, Any]


@dataclass(frozen=True)
class Trace:
    trace_id: str
    spans: tuple[Span, ...]

    def named(self, service: str, name: str) -> list[Span]:
        return [s for s in self.spans if s.service == service and s.name == name]

    def by_id(self) -> dict[str, Span]:
        return {s.span_id: s for s in self.spans}

    def ancestors(self, span: Span) -> list[Span]:
        """The chain of parents up to the root, nearest first; stops at a parent not in the trace."""
        found, spans = [], self.by_id()
        while span.parent in spans:
            span = spans[span.parent]
            found.append(span)
        return found

    def roots(self) -> list[Span]:
        """Spans whose parent is not in the trace (one, for a whole trace)."""
        ids = self.by_id()
        return [s for s in self.spans if s.parent not in ids]


class Jaeger:
    def __init__(self, stack: Stack) -> None:
        self.base = f"http://127.0.0.1:{stack.ports.jaeger_ui}"

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=10) as reply:  # noqa: S310 (loopback)
            return json.load(reply)

    @staticmethod
    def _trace(data: dict[str, Any]) -> Trace:
        services = {key: p["serviceName"] for key, p in data["processes"].items()}
        spans = []
        for s in data["spans"]:
            parents = [r["spanID"] for r in s["references"] if r["refType"] == "CHILD_OF"]
            links = tuple((r["traceID"], r["spanID"]) for r in s["references"] if r["refType"] == "FOLLOWS_FROM")
            tags = {t["key"]: t["value"] for t in s["tags"]}
            parent = parents[0] if parents else None
            spans.append(Span(s["spanID"], services[s["processID"]], s["operationName"], parent, links, tags))
        return Trace(data["traceID"], tuple(spans))

    def trace(self, trace_id: str) -> Trace | None:
        try:
            found = self._get(f"/api/traces/{trace_id}")["data"]
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise
        return self._trace(found[0]) if found else None

    def by_request_id(self, request_id: str) -> Trace | None:
        """The trace of the edge request Envoy gave `request_id` (its span's guid:x-request-id tag)."""
        query = urllib.parse.urlencode(
            {"service": EDGE_SERVICE_NAME, "tags": json.dumps({"guid:x-request-id": request_id}), "lookback": "1h"}
        )
        found = self._get(f"/api/traces?{query}")["data"]
        assert len(found) <= 1, f"{len(found)} traces for one request id"
        return self.trace(found[0]["traceID"]) if found else None

    def wait_for(self, fetch: Callable[[], Trace | None], done: Callable[[Trace], bool], timeout: float = 60) -> Trace:
        """`fetch()` again and again until it finds a trace that is `done`; fails with what it last saw."""
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            last = fetch()
            if last is not None and done(last):
                return last
            time.sleep(0.5)
        seen = sorted({(s.service, s.name) for s in last.spans}) if last else None
        pytest.fail(f"no complete trace within {timeout:.0f}s; last seen: {seen}")


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    return Edge(stack)


@pytest.fixture(scope="module")
def jaeger(stack: Stack) -> Jaeger:
    return Jaeger(stack)


@pytest.fixture(scope="module")
def payer(edge: Edge) -> Person:
    who = edge.person()
    body = {"source": {"card_token": "tok_visa"}, "destination_wallet_id": who.wallet_id, "amount": _usd(50_000)}
    assert edge.pay(who, body)["state"] == "SUCCEEDED"
    return who


def _usd(amount: int) -> dict[str, str]:
    return {"currency": "USD", "amount": str(amount)}


def _pay(edge: Edge, payer: Person, payee: Person, amount: int = 100, **headers: str) -> httpx.Response:
    body = {"source": {"wallet_id": payer.wallet_id}, "destination_wallet_id": payee.wallet_id, "amount": _usd(amount)}
    reply = edge.call("POST", "/v1/payments", payer, body, **{"idempotency-key": uuid.uuid4().hex, **headers})
    assert reply.status_code == 200, reply.text
    assert reply.json()["state"] == "SUCCEEDED"
    return reply


def _logged(stack: Stack, component: str, request_id: str, timeout: float = 15) -> list[dict[str, Any]]:
    """The JSON log lines of `component` that carry `request_id`, once there are some (logs are buffered)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = (stack.run_dir / "logs" / f"{component}.log").read_text(errors="replace").splitlines()
        found = [json.loads(line) for line in lines if request_id in line and line.startswith("{")]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _edge_to_wallet(trace: Trace) -> bool:
    # Envoy exports its spans every few seconds, the services theirs sooner: wait for both ends.
    return bool(trace.named(EDGE_SERVICE_NAME, "ingress")) and bool(trace.named("wallet_svc", POST_TRANSACTIONS))


def _email_delivered(trace: Trace) -> bool:
    return any(s.tags.get("paymesh.delivery.outcome") == "DELIVERED" for s in trace.named("notify_svc", "smtp send"))


def _batched(jaeger: Jaeger, request_id: str) -> Trace:
    """The trace of a wallet payment once its batch or member span is in."""

    def done(trace: Trace) -> bool:
        return bool(trace.named("payment_svc", CREATE_PAYMENT)) and bool(
            trace.named("payment_svc", BATCH) or trace.named("payment_svc", MEMBER)
        )

    return jaeger.wait_for(lambda: jaeger.by_request_id(request_id), done)


def test_a_payment_is_one_trace_from_the_edge_to_the_email(edge: Edge, jaeger: Jaeger, payer: Person) -> None:
    shop = edge.person("MERCHANT")
    request_id = _pay(edge, payer, shop).headers["x-request-id"]

    trace = jaeger.wait_for(lambda: jaeger.by_request_id(request_id), _email_delivered)

    (root,) = trace.roots()  # every other span's parent is in the trace
    assert (root.service, root.tags["guid:x-request-id"]) == (EDGE_SERVICE_NAME, request_id)
    assert root.tags["http.url"].endswith("/v1/payments")
    (create,) = trace.named("payment_svc", CREATE_PAYMENT)
    assert create.parent == root.span_id  # the service continued the edge's trace
    (post,) = trace.named("wallet_svc", POST_TRANSACTIONS)
    (batch,) = trace.named("payment_svc", BATCH)
    assert batch in trace.ancestors(post)
    assert create in trace.ancestors(batch)
    # The payment's events: published by the relay, consumed by notify_svc, and the email sent.
    delivered = [s for s in trace.named("notify_svc", "smtp send") if s.tags["paymesh.delivery.outcome"] == "DELIVERED"]
    chain = trace.ancestors(delivered[0])
    assert [(s.service, s.name) for s in chain[:2]] == [
        ("notify_svc", f"{PAYMENTS_TOPIC} process"),
        ("payment_svc", f"{PAYMENTS_TOPIC} publish"),
    ]
    assert chain[-1] == root
    assert len(trace.named("payment_svc", f"{PAYMENTS_TOPIC} publish")) == 3  # created, processing, succeeded
    statements = [s for s in trace.spans if s.tags.get("db.system.name") == "postgresql"]
    assert {s.service for s in statements} >= {"payment_svc", "wallet_svc"}
    assert all("$" in s.tags["db.query.text"] or "'" not in s.tags["db.query.text"] for s in statements)
    # Nothing the client sent as a credential is in the trace.
    assert payer.token not in json.dumps([s.tags for s in trace.spans])


def test_a_client_traceparent_is_continued_not_replaced(
    edge: Edge, jaeger: Jaeger, payer: Person, stack: Stack
) -> None:
    shop = edge.person("MERCHANT")
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    reply = _pay(edge, payer, shop, traceparent=f"00-{trace_id}-{client_span}-01")

    trace = jaeger.wait_for(lambda: jaeger.trace(trace_id), _edge_to_wallet)

    assert trace.trace_id == trace_id
    (root,) = trace.roots()
    assert (root.service, root.parent) == (EDGE_SERVICE_NAME, client_span)  # the client's span is the edge's parent
    assert trace.named("payment_svc", CREATE_PAYMENT)[0].parent == root.span_id
    # The edge's access log line of the request names the same trace.
    logged = _logged(stack, "envoy", reply.headers["x-request-id"])
    assert [entry["trace_id"] for entry in logged] == [trace_id]


def test_an_unsampled_traceparent_is_continued_and_nothing_is_recorded(
    edge: Edge, jaeger: Jaeger, payer: Person, stack: Stack
) -> None:
    shop = edge.person("MERCHANT")
    quiet, control = secrets.token_hex(16), secrets.token_hex(16)
    reply = _pay(edge, payer, shop, traceparent=f"00-{quiet}-{secrets.token_hex(8)}-00")
    _pay(edge, payer, shop, traceparent=f"00-{control}-{secrets.token_hex(8)}-01")

    # Spans of the later, sampled payment arrive; by then the unsampled one's would have too.
    jaeger.wait_for(lambda: jaeger.trace(control), _edge_to_wallet)
    assert jaeger.trace(quiet) is None
    # Still one trace id in the logs: the services' lines of that request carry it (and its request id).
    logged = _logged(stack, "payment", reply.headers["x-request-id"])
    assert {entry["trace_id"] for entry in logged} == {quiet}
    assert any(entry.get("rpc_method") == CREATE_PAYMENT for entry in logged)


def test_each_payment_of_a_batch_reaches_the_shared_wallet_call(edge: Edge, jaeger: Jaeger, payer: Person) -> None:
    """Concurrent payments share one wallet call: it lies in the trace of the batch's first request, and
    every other request's trace has a member span linked to the batch's span (which links back). The
    wallet events of each payment are in that payment's own trace, not in the batch's."""
    shops = [edge.person("MERCHANT") for _ in range(12)]
    for _ in range(5):  # until a wave of concurrent payments made a batch of more than one
        with ThreadPoolExecutor(max_workers=len(shops)) as pool:
            replies = list(pool.map(lambda shop: _pay(edge, payer, shop), shops))
        traces = [_batched(jaeger, reply.headers["x-request-id"]) for reply in replies]
        if any(t.named("payment_svc", MEMBER) for t in traces):
            break
    else:
        pytest.fail("no two concurrent payments shared a batch in 5 waves of 12")
    for trace in traces:
        (create,) = trace.named("payment_svc", CREATE_PAYMENT)
        members = trace.named("payment_svc", MEMBER)
        if not members:
            (batch,) = trace.named("payment_svc", BATCH)
            assert create in trace.ancestors(batch)
            assert trace.named("wallet_svc", POST_TRANSACTIONS)
            continue
        (member,) = members
        assert create in trace.ancestors(member)
        ((batch_trace_id, batch_span_id),) = member.links
        batch_trace = jaeger.trace(batch_trace_id)
        assert batch_trace is not None
        (batch,) = [s for s in batch_trace.spans if s.span_id == batch_span_id]
        assert batch.name == BATCH
        assert (trace.trace_id, create.span_id) in batch.links
        assert batch_trace.named("wallet_svc", POST_TRANSACTIONS)
    for reply in replies:  # the payer's and the merchant's wallet.posted events, each published in its trace
        own = jaeger.wait_for(
            functools.partial(jaeger.by_request_id, reply.headers["x-request-id"]),
            lambda trace: len(trace.named("wallet_svc", WALLET_PUBLISH)) >= 2,
        )
        (create,) = own.named("payment_svc", CREATE_PAYMENT)
        published = own.named("wallet_svc", WALLET_PUBLISH)
        assert len(published) == 2, [s.links for s in published]
        assert all(create in own.ancestors(span) for span in published)


def _webhook_delivered(trace: Trace) -> bool:
    return any(s.tags.get("paymesh.delivery.outcome") == "DELIVERED" for s in trace.named("notify_svc", "webhook POST"))


def test_a_card_payment_traces_the_processor_call_and_the_merchants_webhook(
    edge: Edge, jaeger: Jaeger, stack: Stack
) -> None:
    buyer, shop = edge.person(), edge.person("MERCHANT")
    with receiver_process() as receiver:
        endpoint = {"url": receiver.url("ok"), "event_types": ["payment.succeeded"]}
        assert edge.call("POST", "/v1/webhook-endpoints", shop, endpoint).status_code == 200
        body = {"source": {"card_token": "tok_visa"}, "destination_wallet_id": shop.wallet_id, "amount": _usd(900)}
        reply = edge.call("POST", "/v1/payments", buyer, body, **{"idempotency-key": uuid.uuid4().hex})
        assert reply.status_code == 200, reply.text

        trace = jaeger.wait_for(lambda: jaeger.by_request_id(reply.headers["x-request-id"]), _webhook_delivered)

    (root,) = trace.roots()
    (create,) = trace.named("payment_svc", CREATE_PAYMENT)
    # The processor's API, called over HTTP inside the payment's trace: a client span without the query.
    calls = [s for s in trace.named("payment_svc", "POST") if s.tags.get("server.port") == stack.ports.processor]
    assert calls, sorted({(s.service, s.name) for s in trace.spans})
    for call in calls:
        assert create in trace.ancestors(call)
        assert call.tags["url.path"].startswith("/v1/")
        assert "?" not in call.tags["url.path"]
        assert call.tags["http.response.status_code"] < 400
    # The merchant's webhook: POSTed by notify_svc in the same trace, after the event was consumed.
    (webhook,) = trace.named("notify_svc", "webhook POST")  # one endpoint, one event type, answered 200
    assert (webhook.tags["paymesh.event.type"], webhook.tags["paymesh.delivery.outcome"]) == (
        "payment.succeeded", "DELIVERED")  # fmt: skip
    chain = trace.ancestors(webhook)
    assert [(s.service, s.name) for s in chain[:2]] == [
        ("notify_svc", f"{PAYMENTS_TOPIC} process"),
        ("payment_svc", f"{PAYMENTS_TOPIC} publish"),
    ]
    assert chain[-1] == root
