"""The red team's findings, replayed through the real Envoy and services: every bad input gets a
documented 400 naming its field and changes nothing, page tokens cannot be forged, card tokens stay
the payer's, and no parameter value reaches a service log."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from devstack.envoy_config import PUBLIC_METHODS
from devstack.stack import Stack
from paymesh.events.v1 import events_pb2
from paymesh.payment.v1 import payment_pb2
from paymesh_runtime.errors import ECHO_LIMIT
from paymesh_runtime.kafka import TOPIC_PAYMENTS
from tests.e2e.test_authorization import Edge, Person

pytestmark = pytest.mark.e2e
DESCRIPTORS = Path(__file__).resolve().parents[2] / "gen" / "paymesh.pb"
CLASS_NAME_MARKERS = ("DecodeError", "Traceback", "<class", "Exception")


def _usd(amount: int) -> dict[str, str]:
    return {"currency": "USD", "amount": str(amount)}


def _key() -> dict[str, str]:
    return {"idempotency-key": uuid.uuid4().hex}


def _error(reply: httpx.Response) -> tuple[int, str, list[str], dict[str, Any]]:
    """(HTTP status, ErrorInfo reason, BadRequest fields, ErrorInfo metadata) of a JSON google.rpc.Status."""
    assert reply.headers["content-type"].startswith("application/json"), (reply.status_code, reply.text[:300])
    body: dict[str, Any] = reply.json()
    info = next(d for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo"))
    fields = [
        v["field"]
        for d in body["details"]
        if d["@type"].endswith("google.rpc.BadRequest")
        for v in d["field_violations"]
    ]
    assert not any(marker in reply.text for marker in CLASS_NAME_MARKERS), reply.text[:300]
    return reply.status_code, str(info["reason"]), fields, dict(info.get("metadata", {}))


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    return Edge(stack)


@pytest.fixture(scope="module")
def payer(edge: Edge) -> Person:
    who = edge.person()
    body = {"source": {"card_token": "tok_visa"}, "destination_wallet_id": who.wallet_id, "amount": _usd(10_000)}
    assert edge.pay(who, body)["state"] == "SUCCEEDED"
    return who


@pytest.fixture(scope="module")
def shop(edge: Edge) -> Person:
    return edge.person("MERCHANT")


def _state(edge: Edge, payer: Person, shop: Person) -> tuple[object, ...]:
    """Everything the NUL requests could have changed, as the owners see it."""
    wallet = edge.call("GET", f"/v1/wallets/{payer.wallet_id}", payer).json()
    payments = edge.call("GET", "/v1/payments?page_size=200", payer).json().get("payments", [])
    endpoints = edge.call("GET", "/v1/webhook-endpoints", shop).json().get("webhook_endpoints", [])
    return (
        wallet["posted_balance"],
        wallet["held_balance"],
        sorted((p["payment_id"], p["state"]) for p in payments),
        endpoints,
    )


def _old_style_token(cursor: list[object], query: list[str]) -> str:
    """A page token as paymesh issued them unsigned: anyone could compute one for their own user id."""
    fingerprint = hashlib.sha256("\x1f".join(query).encode()).hexdigest()[:16]
    raw = json.dumps({"c": cursor, "q": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_a_nul_in_any_stored_text_is_a_400_naming_the_field_changes_nothing_and_reaches_no_log(
    edge: Edge, stack: Stack, payer: Person, shop: Person
) -> None:
    tag = uuid.uuid4().hex
    email, card, bank = f"nul-{tag}@example.com", f"tok_{tag}", f"ba_{tag}"
    held = edge.pay(
        payer,
        {
            "source": {"wallet_id": payer.wallet_id},
            "destination_wallet_id": shop.wallet_id,
            "amount": _usd(300),
            "capture_method": "MANUAL",
        },
    )
    sold = edge.pay(
        payer, {"source": {"wallet_id": payer.wallet_id}, "destination_wallet_id": shop.wallet_id, "amount": _usd(200)}
    )
    before = _state(edge, payer, shop)
    register = {
        "email": email,
        "password": "correct-horse-battery",
        "display_name": "Mallory",
        "account_type": "CUSTOMER",
    }
    payment = {"source": {"wallet_id": payer.wallet_id}, "destination_wallet_id": shop.wallet_id, "amount": _usd(1)}
    cases: list[tuple[str, str, Person | None, dict[str, Any], str]] = [
        ("POST", "/v1/auth/register", None, {**register, "email": f"nul-{tag}\u0000@example.com"}, "email"),
        ("POST", "/v1/auth/register", None, {**register, "display_name": "Mal\u0000lory"}, "display_name"),
        ("POST", "/v1/auth/login", None, {"email": f"{email}\u0000", "password": "correct-horse-battery"}, "email"),
        ("POST", "/v1/payments", payer, {**payment, "description": f"order {tag}\u0000"}, "description"),
        ("POST", "/v1/payments", payer, {**payment, "source": {"card_token": f"{card}\u0000"}}, "source.card_token"),
        ("POST", f"/v1/payments/{sold['payment_id']}/refunds", shop, {"reason": f"r {tag}\u0000"}, "reason"),
        ("POST", f"/v1/payments/{held['payment_id']}:cancel", payer, {"reason": f"c {tag}\u0000"}, "reason"),
        (
            "POST",
            "/v1/payouts",
            payer,
            {"wallet_id": payer.wallet_id, "amount": _usd(5), "bank_account_token": f"{bank}\u0000"},
            "bank_account_token",
        ),
        (
            "POST",
            "/v1/webhook-endpoints",
            shop,
            {"url": f"https://{tag}.example.com/\u0000hooks", "event_types": ["payment.succeeded"]},
            "url",
        ),
    ]
    for method, path, who, body, field in cases:
        status, reason, fields, _ = _error(edge.call(method, path, who, body, **_key()))
        assert (status, reason, fields) == (400, "VALIDATION_FAILED", [field]), (path, field)
    assert _state(edge, payer, shop) == before
    assert edge.call("GET", f"/v1/payments/{held['payment_id']}", payer).json()["state"] == "REQUIRES_CAPTURE"
    assert not edge.call("GET", f"/v1/payments/{sold['payment_id']}/refunds", shop).json().get("refunds")
    # The same email without the NUL was never registered.
    assert (
        edge.call("POST", "/v1/auth/login", None, {"email": email, "password": "correct-horse-battery"}).status_code
        == 401
    )
    # A forged cursor (int64 overflow) used to reach asyncpg, whose error quotes the argument.
    overflow = 98765432109876543210
    token = _old_style_token([overflow], ["entries", payer.wallet_id])
    reply = edge.call("GET", f"/v1/wallets/{payer.wallet_id}/entries?page_token={token}", payer)
    assert _error(reply)[:3] == (400, "INVALID_PAGE_TOKEN", ["page_token"])
    logs = "".join(path.read_text(errors="replace") for path in (stack.run_dir / "logs").glob("*.log"))
    for value in (f"nul-{tag}", email, card, bank, f"{tag}.example.com", f"order {tag}", str(overflow)):
        assert value not in logs, value


def _path_routes() -> Iterator[tuple[str, str, str]]:
    """(gRPC method, HTTP verb, path template) of every routed method with a path parameter."""
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTORS.read_bytes()).file
    for file in files:
        if not file.package.startswith("paymesh."):
            continue
        for service in file.service:
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                rule = method.options.Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern") or ""
                template = getattr(rule, verb)
                if "{" in template:
                    yield f"/{file.package}.{service.name}/{method.name}", verb.upper(), template


PATH_ROUTES = sorted(_path_routes())
# The red team probed 13 such routes; an empty list would make the test below vacuous.
assert ("/paymesh.payment.v1.PaymentService/GetPayment", "GET", "/v1/payments/{payment_id}") in PATH_ROUTES
assert len(PATH_ROUTES) >= 13, PATH_ROUTES


@pytest.mark.parametrize(("method", "verb", "template"), PATH_ROUTES, ids=[r[0].rsplit("/", 1)[1] for r in PATH_ROUTES])
@pytest.mark.parametrize("raw", [b"\xff\xfe", b"\xc3\x28"], ids=["ff-fe", "c3-28"])
def test_invalid_utf8_in_a_path_parameter_is_a_400_naming_it_with_no_class_name(
    edge: Edge, payer: Person, method: str, verb: str, template: str, raw: bytes
) -> None:
    name = template[template.index("{") + 1 : template.index("}")]
    path = template.replace("{" + name + "}", urllib.parse.quote(raw, safe=""))
    who = None if method in PUBLIC_METHODS else payer
    reply = edge.call(verb, path, who, None if verb in ("GET", "DELETE") else {}, **_key())
    status, reason, fields, _ = _error(reply)
    assert (status, reason, fields) == (400, "VALIDATION_FAILED", [name]), reply.text


def test_an_invalid_value_of_16_kb_is_a_400_echoing_at_most_the_echo_limit(
    edge: Edge, payer: Person, shop: Person
) -> None:
    huge = "Q" * 16_384
    cases = [
        ("POST", "/v1/wallets", payer, {"currency": huge}, "INVALID_CURRENCY"),
        (
            "POST",
            "/v1/payments",
            payer,
            {
                "source": {"wallet_id": payer.wallet_id},
                "destination_wallet_id": shop.wallet_id,
                "amount": {"currency": huge, "amount": "1"},
            },
            "INVALID_CURRENCY",
        ),
        (
            "POST",
            "/v1/webhook-endpoints",
            shop,
            {"url": "https://shop.example.com/h", "event_types": [huge]},
            "VALIDATION_FAILED",
        ),
    ]
    for method, path, who, body, expected in cases:
        reply = edge.call(method, path, who, body, **_key())
        status, reason, _, metadata = _error(reply)
        assert (status, reason) == (400, expected), reply.text[:300]
        assert "Q" * (ECHO_LIMIT + 1) not in reply.text
        assert all(len(value) <= ECHO_LIMIT for value in metadata.values())
        assert len(reply.content) < 4_096


def test_forged_tampered_and_foreign_page_tokens_are_a_400_on_every_list_method(
    edge: Edge, payer: Person, shop: Person
) -> None:
    second = edge.call("POST", "/v1/wallets", payer, {"currency": "EUR"})
    assert second.status_code == 200, second.text
    real = edge.call("GET", "/v1/wallets?page_size=1", payer).json()["next_page_token"]
    payment = edge.pay(
        payer, {"source": {"wallet_id": payer.wallet_id}, "destination_wallet_id": shop.wallet_id, "amount": _usd(1)}
    )["payment_id"]
    lists = {
        "ListPayments": ("/v1/payments", payer, ["payments", payer.user_id], ["not-a-time", "x"]),
        "ListRefunds": (f"/v1/payments/{payment}/refunds", shop, ["refunds", payment], ["2026-01-01", "x"]),
        "ListWallets": ("/v1/wallets", payer, ["wallets", payer.user_id], [True, "x"]),
        "ListEntries": (f"/v1/wallets/{payer.wallet_id}/entries", payer, ["entries", payer.wallet_id], [2**64]),
        "ListNotifications": ("/v1/notifications", payer, ["notifications", payer.user_id], [-1, "x"]),
        "ListWebhookEndpoints": ("/v1/webhook-endpoints", shop, ["webhook_endpoints", shop.user_id], [0, "x"]),
    }
    flipped = real[:-2] + ("AA" if not real.endswith("AA") else "BB")
    for name, (path, who, query, cursor) in lists.items():
        foreign = [real] if name != "ListWallets" else []  # a token of another list
        for token in [_old_style_token(cursor, query), flipped, "%FF%00", "x" * 400, *foreign]:
            reply = edge.call("GET", f"{path}?page_token={token}", who)
            assert _error(reply)[:3] == (400, "INVALID_PAGE_TOKEN", ["page_token"]), (name, token[:40], reply.text)
    # The real token pages the payer's wallets, and no one else's.
    assert edge.call("GET", f"/v1/wallets?page_size=1&page_token={real}", payer).status_code == 200
    other = edge.person()
    assert _error(edge.call("GET", f"/v1/wallets?page_size=1&page_token={real}", other))[1] == "INVALID_PAGE_TOKEN"


async def _payment_events(stack: Stack, payment_id: str, states: set[str]) -> list[events_pb2.Event]:
    """The events of one payment on Kafka, until each of `states` has been seen."""
    consumer = AIOKafkaConsumer(
        TOPIC_PAYMENTS,
        bootstrap_servers=stack.kafka_bootstrap,
        group_id=f"test-{uuid.uuid4()}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    found: list[events_pb2.Event] = []
    try:
        async with asyncio.timeout(60):
            while not states <= {payment_pb2.Payment.State.Name(e.payment_changed.payment.state) for e in found}:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    found += [
                        events_pb2.Event.FromString(r.value)
                        for r in records
                        if r.key == payment_id.encode() and r.value is not None
                    ]
    finally:
        await consumer.stop()
    return [e for e in found if e.WhichOneof("payload") == "payment_changed"]


def test_a_card_token_is_seen_by_its_payer_and_admins_only_and_never_in_events(
    edge: Edge, stack: Stack, payer: Person, shop: Person
) -> None:
    body = {
        "source": {"card_token": "tok_visa"},
        "destination_wallet_id": shop.wallet_id,
        "amount": _usd(700),
        "capture_method": "MANUAL",
    }
    created = edge.pay(payer, body)
    assert created["source"] == {"card_token": "tok_visa"}  # the payer's own answer
    pid = created["payment_id"]
    # The payee sees a card payment, not the card.
    assert edge.call("GET", f"/v1/payments/{pid}", shop).json()["source"] == {"card_token": ""}
    listed = edge.call("GET", "/v1/payments?page_size=200", shop).json()["payments"]
    assert [p["source"] for p in listed if p["payment_id"] == pid] == [{"card_token": ""}]
    captured = edge.call("POST", f"/v1/payments/{pid}:capture", shop, {})
    assert captured.json()["state"] == "SUCCEEDED", captured.text
    assert captured.json()["source"] == {"card_token": ""}
    assert "tok_visa" not in edge.call("GET", "/v1/payments?page_size=200", shop).text
    # The payer and an admin do see it.
    assert edge.call("GET", f"/v1/payments/{pid}", payer).json()["source"] == {"card_token": "tok_visa"}
    assert edge.call("GET", f"/v1/payments/{pid}", edge.admin()).json()["source"] == {"card_token": "tok_visa"}
    # Events (which merchants receive as webhooks) carry a card source without its token.
    events = asyncio.run(_payment_events(stack, pid, {"REQUIRES_CAPTURE", "SUCCEEDED"}))
    assert events
    for event in events:
        source = event.payment_changed.payment.source
        assert (source.WhichOneof("kind"), source.card_token) == ("card_token", "")


@pytest.mark.parametrize(
    "header",
    [
        ("a!b", "1"),  # a valid HTTP name, not a valid gRPC metadata key
        ("x~y", "1"),
        ("x-trace-bin", "!!! not base64"),  # binary metadata from a JSON client
        ("grpc-timeout", "soon"),  # the gRPC protocol's own header, malformed
    ],
)
def test_headers_grpc_would_refuse_are_dropped_at_the_edge_not_answered_500(
    edge: Edge, header: tuple[str, str]
) -> None:
    # Found by Schemathesis: the services' gRPC runtime answered these with INTERNAL.
    payer = edge.person()
    reply = edge.call("GET", f"/v1/wallets/{payer.wallet_id}", payer, **dict([header]))
    assert reply.status_code == 200, reply.text[:300]
    assert reply.json()["wallet_id"] == payer.wallet_id
