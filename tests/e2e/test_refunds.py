"""Card refunds the processor settles later: the refund rests PENDING until the
simulator's signed webhook, through Envoy, reports success or failure; a failed
card refund gives the merchant the money back and frees the refundable amount."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from devstack.stack import Stack
from tests.e2e.test_authorization import Edge, Person
from tests.helpers import poll_until

pytestmark = pytest.mark.e2e


def _usd(amount: int) -> dict[str, str]:
    return {"currency": "USD", "amount": str(amount)}


def _posted(edge: Edge, who: Person) -> int:
    return int(edge.call("GET", f"/v1/wallets/{who.wallet_id}", who).json()["posted_balance"]["amount"])


def _card_sale(edge: Edge, buyer: Person, shop: Person, card: str, amount: int) -> str:
    sale = edge.pay(
        buyer, {"source": {"card_token": card}, "destination_wallet_id": shop.wallet_id, "amount": _usd(amount)}
    )
    assert sale["state"] == "SUCCEEDED", sale
    return str(sale["payment_id"])


def _refund(edge: Edge, shop: Person, payment_id: str, amount: int) -> dict[str, Any]:
    reply = edge.call(
        "POST",
        f"/v1/payments/{payment_id}/refunds",
        shop,
        {"amount": _usd(amount)},
        **{"idempotency-key": uuid.uuid4().hex},
    )
    assert reply.status_code == 200, reply.text
    refund: dict[str, Any] = reply.json()
    return refund


def _settled(edge: Edge, shop: Person, payment_id: str, refund_id: str) -> dict[str, Any] | None:
    refunds = edge.call("GET", f"/v1/payments/{payment_id}/refunds", shop).json()["refunds"]
    found: dict[str, Any] = next(r for r in refunds if r["refund_id"] == refund_id)
    return found if found["state"] != "PENDING" else None


def _refunded(edge: Edge, buyer: Person, payment_id: str) -> int:
    payment = edge.call("GET", f"/v1/payments/{payment_id}", buyer).json()
    return int(payment.get("amount_refunded", {}).get("amount", 0))


def test_a_pending_card_refund_succeeds_when_the_processors_webhook_says_so(stack: Stack) -> None:
    edge = Edge(stack)
    buyer, shop = edge.person(), edge.person("MERCHANT")
    payment_id = _card_sale(edge, buyer, shop, "tok_refundPending", 3000)

    refund = _refund(edge, shop, payment_id, 1200)
    assert refund["state"] == "PENDING"  # the processor accepted it; the card network settles it later
    assert _posted(edge, shop) == 1800  # the merchant's share left at once, into settlement

    final = poll_until(lambda: _settled(edge, shop, payment_id, refund["refund_id"]), timeout=60)
    assert final["state"] == "SUCCEEDED"
    assert _refunded(edge, buyer, payment_id) == 1200
    assert _posted(edge, shop) == 1800


def test_a_card_refund_that_fails_later_gives_the_merchant_the_money_back(stack: Stack) -> None:
    edge = Edge(stack)
    buyer, shop = edge.person(), edge.person("MERCHANT")
    payment_id = _card_sale(edge, buyer, shop, "tok_refundFail", 3000)

    refund = _refund(edge, shop, payment_id, 3000)
    assert refund["state"] == "PENDING"
    assert _posted(edge, shop) == 0

    final = poll_until(lambda: _settled(edge, shop, payment_id, refund["refund_id"]), timeout=60)
    assert final["state"] == "FAILED"
    assert final["failure_code"] == "expired_or_canceled_card"
    assert _posted(edge, shop) == 3000  # the debit was reversed
    assert _refunded(edge, buyer, payment_id) == 0
    # The failed refund's reservation was given back: the whole amount is refundable again.
    again = _refund(edge, shop, payment_id, 3000)
    assert again["state"] == "PENDING"
