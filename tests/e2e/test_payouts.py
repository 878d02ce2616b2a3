"""Payouts settle asynchronously: the processor simulator sends a signed webhook
through Envoy to payment_svc, which captures or releases the wallet's hold."""

from __future__ import annotations

import uuid

import pytest

from devstack.stack import Stack
from tests.e2e.test_authorization import Edge, Person
from tests.helpers import poll_until

pytestmark = pytest.mark.e2e


def _balances(edge: Edge, who: Person) -> tuple[int, int]:
    wallet = edge.call("GET", f"/v1/wallets/{who.wallet_id}", who).json()
    return int(wallet["posted_balance"]["amount"]), int(wallet["held_balance"]["amount"])


def _payout(edge: Edge, who: Person, amount: int, bank_token: str) -> dict[str, str]:
    body = {
        "wallet_id": who.wallet_id,
        "amount": {"currency": "USD", "amount": str(amount)},
        "bank_account_token": bank_token,
    }
    reply = edge.call("POST", "/v1/payouts", who, body, **{"idempotency-key": uuid.uuid4().hex})
    assert reply.status_code == 200, reply.text
    payout: dict[str, str] = reply.json()
    return payout


def _settled(edge: Edge, who: Person, payout_id: str) -> dict[str, str] | None:
    payout: dict[str, str] = edge.call("GET", f"/v1/payouts/{payout_id}", who).json()
    return payout if payout["state"] in ("SUCCEEDED", "FAILED") else None


def test_a_payout_is_settled_or_released_by_the_processors_signed_webhook(stack: Stack) -> None:
    edge = Edge(stack)
    shop = edge.person("MERCHANT")
    edge.pay(
        shop,
        {"source": {"card_token": "tok_visa"}, "destination_wallet_id": shop.wallet_id,
         "amount": {"currency": "USD", "amount": "5000"}},
    )  # fmt: skip
    assert _balances(edge, shop) == (5000, 0)

    paid = _payout(edge, shop, 2000, "btok_success")
    assert paid["state"] in ("PROCESSING", "SUCCEEDED")
    final = poll_until(lambda: _settled(edge, shop, paid["payout_id"]), timeout=60)
    assert final["state"] == "SUCCEEDED"
    assert _balances(edge, shop) == (3000, 0)  # captured into the settlement account

    bounced = _payout(edge, shop, 1000, "btok_failed")  # the bank refuses it later
    final = poll_until(lambda: _settled(edge, shop, bounced["payout_id"]), timeout=60)
    assert final["state"] == "FAILED"
    assert final["failure_code"] == "account_closed"
    assert _balances(edge, shop) == (3000, 0)  # the hold was released, nothing left
