"""Merchant webhooks through the whole stack: a card payment through Envoy reaches each subscribed endpoint once,
signed as Standard Webhooks; endpoints and their deliveries are managed over HTTP/JSON by their merchant only."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from devstack.stack import Stack
from tests.e2e.test_authorization import Edge, Person
from tests.helpers import poll_until
from tests.webhook_receiver import Received, Receiver, receiver_process
from tests.webhook_verifier import paymesh_webhooks

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    return Edge(stack)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with receiver_process() as running:
        yield running


def _usd(amount: int) -> dict[str, str]:
    return {"currency": "USD", "amount": str(amount)}


def _ok(reply: httpx.Response) -> dict[str, Any]:
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def _reason(reply: httpx.Response) -> tuple[int, str]:
    return reply.status_code, str(reply.json()["details"][0]["reason"])


def _endpoint(edge: Edge, shop: Person, url: str, *types: str) -> dict[str, Any]:
    return _ok(edge.call("POST", "/v1/webhook-endpoints", shop, {"url": url, "event_types": list(types)}))


def _card_payment(edge: Edge, buyer: Person, shop: Person, amount: int) -> str:
    body = {"source": {"card_token": "tok_visa"}, "destination_wallet_id": shop.wallet_id, "amount": _usd(amount)}
    payment = edge.pay(buyer, body)
    assert payment["state"] == "SUCCEEDED", payment
    return str(payment["payment_id"])


def _succeeded(receiver: Receiver, url: str, payment_id: str) -> list[Received]:
    return [
        r
        for r in receiver.requests(url)
        if r.headers.get("paymesh-event-type") == "payment.succeeded" and payment_id.encode() in r.body
    ]


def test_a_payment_reaches_each_subscribed_endpoint_once_and_verifies(
    edge: Edge, receiver: Receiver, stack: Stack
) -> None:
    buyer, shop = edge.person(), edge.person("MERCHANT")
    exact, everything, other = receiver.url("ok"), receiver.url("ok"), receiver.url("ok")
    first = _endpoint(edge, shop, exact, "payment.succeeded")
    second = _endpoint(edge, shop, everything, "*")
    _endpoint(edge, shop, other, "refund.succeeded")
    payment_id = _card_payment(edge, buyer, shop, 1200)

    poll_until(lambda: _succeeded(receiver, exact, payment_id) and _succeeded(receiver, everything, payment_id), 60)
    time.sleep(2.0)  # a duplicate would come within the worker's next rounds
    (to_first,) = _succeeded(receiver, exact, payment_id)
    (to_second,) = _succeeded(receiver, everything, payment_id)
    assert receiver.requests(other) == []
    assert to_first.headers["webhook-id"] == to_second.headers["webhook-id"]  # the event id: one dedupe key

    for request, endpoint in ((to_first, first), (to_second, second)):
        event = Webhook(endpoint["secret"]).verify(request.body, request.headers)
        assert event["payment_changed"]["payment"]["payment_id"] == payment_id
        assert paymesh_webhooks.verify(request.body, request.headers, endpoint["secret"]) == event
    _refused_when_tampered_signed_elsewhere_or_replayed(to_first, first["secret"])

    deliveries = _ok(edge.call("GET", f"/v1/webhook-endpoints/{first['endpoint_id']}/deliveries", shop))
    (listed,) = [d for d in deliveries["webhook_deliveries"] if d["event_id"] == to_first.headers["webhook-id"]]
    assert listed["state"] == "DELIVERED"
    assert [a["status_code"] for a in listed["attempts"]] == [200]
    assert listed["attempts"][0]["response_body"] == '{"received": true}'


def _refused_when_tampered_signed_elsewhere_or_replayed(request: Received, secret: str) -> None:
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    old = int(time.time()) - 360
    replay = {
        **request.headers,
        "webhook-timestamp": str(old),
        "webhook-signature": Webhook(secret).sign(
            request.headers["webhook-id"], datetime.fromtimestamp(old, UTC), request.body.decode()
        ),
    }
    for body, key, headers, error in [
        (request.body.replace(b"USD", b"EUR"), secret, request.headers, paymesh_webhooks.InvalidSignature),
        (request.body, other, request.headers, paymesh_webhooks.InvalidSignature),
        (request.body, secret, replay, paymesh_webhooks.TimestampOutOfTolerance),
    ]:
        with pytest.raises(WebhookVerificationError):
            Webhook(key).verify(body, headers)
        with pytest.raises(error):
            paymesh_webhooks.verify(body, headers, key)


def test_a_delivery_is_resent_on_request_and_a_test_event_arrives(edge: Edge, receiver: Receiver) -> None:
    buyer, shop = edge.person(), edge.person("MERCHANT")
    url = receiver.url("ok")
    endpoint = _endpoint(edge, shop, url, "payment.succeeded")
    base = f"/v1/webhook-endpoints/{endpoint['endpoint_id']}"
    payment_id = _card_payment(edge, buyer, shop, 700)
    (first,) = poll_until(lambda: _succeeded(receiver, url, payment_id), 60)

    def delivered() -> list[dict[str, Any]]:
        found = _ok(edge.call("GET", f"{base}/deliveries", shop))["webhook_deliveries"]
        return [d for d in found if d["state"] == "DELIVERED"]

    (delivery,) = poll_until(delivered, 30)
    again = _ok(edge.call("POST", f"{base}/deliveries/{delivery['delivery_id']}:redeliver", shop, {}))
    assert again["state"] == "PENDING"

    def twice() -> list[Received]:
        found = _succeeded(receiver, url, payment_id)
        return found if len(found) == 2 else []

    _, second = poll_until(twice, 60)
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    assert second.body == first.body

    sent = _ok(edge.call("POST", f"{base}:sendTestEvent", shop, {}))
    assert sent["event_type"] == "webhook.test"
    (test,) = poll_until(lambda: receiver.for_event(url, sent["event_id"]), 60)
    assert paymesh_webhooks.verify(test.body, test.headers, endpoint["secret"])["type"] == "webhook.test"


def test_a_rotated_secret_overlaps_with_the_old_one_then_signs_alone(edge: Edge, receiver: Receiver) -> None:
    shop = edge.person("MERCHANT")
    url = receiver.url("ok")
    endpoint = _endpoint(edge, shop, url, "payment.succeeded")
    base = f"/v1/webhook-endpoints/{endpoint['endpoint_id']}"
    rotated = _ok(edge.call("POST", f"{base}:rotateSecret", shop, {"overlap": "4s"}))
    old, new = endpoint["secret"], rotated["secret"]
    assert _ok(edge.call("GET", base, shop)).get("secret", "") == ""  # shown once only

    during = _ok(edge.call("POST", f"{base}:sendTestEvent", shop, {}))
    (signed_twice,) = poll_until(lambda: receiver.for_event(url, during["event_id"]), 60)
    assert len(signed_twice.headers["webhook-signature"].split()) == 2
    for secret in (old, new):
        Webhook(secret).verify(signed_twice.body, signed_twice.headers)
        paymesh_webhooks.verify(signed_twice.body, signed_twice.headers, secret)

    ends = datetime.fromisoformat(rotated["previous_secret_expire_time"].replace("Z", "+00:00")).timestamp()
    time.sleep(max(0.0, ends - time.time()) + 0.5)
    after = _ok(edge.call("POST", f"{base}:sendTestEvent", shop, {}))
    (signed_once,) = poll_until(lambda: receiver.for_event(url, after["event_id"]), 60)
    assert len(signed_once.headers["webhook-signature"].split()) == 1
    paymesh_webhooks.verify(signed_once.body, signed_once.headers, new)
    with pytest.raises(paymesh_webhooks.InvalidSignature):
        paymesh_webhooks.verify(signed_once.body, signed_once.headers, old)


def test_an_endpoint_is_updated_disabled_and_enabled_over_http(edge: Edge, receiver: Receiver) -> None:
    shop = edge.person("MERCHANT")
    endpoint = _endpoint(edge, shop, receiver.url("ok"), "payment.succeeded")
    base = f"/v1/webhook-endpoints/{endpoint['endpoint_id']}"
    updated = _ok(edge.call("PATCH", base, shop, {"description": "orders", "event_types": ["refund.succeeded"]}))
    assert (updated["description"], updated["event_types"], updated["url"]) == (
        "orders",
        ["refund.succeeded"],
        endpoint["url"],
    )
    masked = _ok(edge.call("PATCH", f"{base}?update_mask=description", shop, {"description": "", "url": "x"}))
    assert (masked["description"], masked["url"]) == ("", endpoint["url"])
    assert _ok(edge.call("POST", f"{base}:disable", shop, {}))["state"] == "DISABLED"
    assert _reason(edge.call("POST", f"{base}:sendTestEvent", shop, {})) == (400, "INVALID_STATE_TRANSITION")
    assert _ok(edge.call("POST", f"{base}:enable", shop, {}))["state"] == "ENABLED"


def test_customers_cannot_manage_endpoints_and_merchants_only_their_own(edge: Edge, receiver: Receiver) -> None:
    shop, rival, customer = edge.person("MERCHANT"), edge.person("MERCHANT"), edge.person()
    endpoint = _endpoint(edge, shop, receiver.url("ok"), "payment.succeeded")
    base = f"/v1/webhook-endpoints/{endpoint['endpoint_id']}"
    sent = _ok(edge.call("POST", f"{base}:sendTestEvent", shop, {}))
    create = {"url": receiver.url("ok"), "event_types": ["*"]}
    assert _reason(edge.call("POST", "/v1/webhook-endpoints", customer, create)) == (403, "MERCHANT_REQUIRED")
    assert _reason(edge.call("GET", "/v1/webhook-endpoints", customer)) == (403, "MERCHANT_REQUIRED")
    assert _reason(edge.call("GET", f"{base}/deliveries", customer)) == (403, "MERCHANT_REQUIRED")
    for method, path, body in [
        ("GET", base, None),
        ("GET", f"{base}/deliveries", None),
        ("GET", f"{base}/deliveries/{sent['delivery_id']}", None),
        ("POST", f"{base}/deliveries/{sent['delivery_id']}:redeliver", {}),
        ("POST", f"{base}:rotateSecret", {}),
        ("POST", f"{base}:sendTestEvent", {}),
        ("POST", f"{base}:disable", {}),
        ("PATCH", base, {"description": "mine"}),
        ("DELETE", base, None),
    ]:
        assert _reason(edge.call(method, path, rival, body)) == (404, "RESOURCE_NOT_FOUND"), (method, path)
    assert endpoint["endpoint_id"] not in str(_ok(edge.call("GET", "/v1/webhook-endpoints", rival)))
    assert _ok(edge.call("GET", base, shop))["description"] == ""
