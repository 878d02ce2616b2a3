"""Notification preferences through the whole stack: a user who turns SMS on and email off for payment.succeeded
gets one SMS per payment, through Twilio's library and the stack's fake provider, and no email for it."""

from __future__ import annotations

import os
import time
from email import message_from_bytes
from email.message import Message
from typing import Any

import httpx
import pytest

from devstack.providers import SMS_SENDER
from devstack.stack import Stack
from tests.e2e.test_authorization import Edge, Person
from tests.helpers import poll_until

pytestmark = pytest.mark.e2e
MESSAGE_START = b"---------- MESSAGE FOLLOWS ----------\n"


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    return Edge(stack)


def _ok(reply: httpx.Response) -> dict[str, Any]:
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def _texts_to(stack: Stack, phone: str) -> list[dict[str, Any]]:
    inbox = httpx.get(f"{stack.component('providers').address()}/messages", timeout=10).json()
    return [message for message in inbox["sms"] if message["to"] == phone]


def _mails_to(stack: Stack, address: str) -> list[Message]:
    """What the stack's mail sink printed to its log for `address`."""
    log = stack.component("mailsink").log_path.read_bytes()
    messages = [message_from_bytes(chunk) for chunk in log.split(MESSAGE_START)[1:]]
    return [message for message in messages if message["To"] == address]


def _pay(edge: Edge, buyer: Person, shop: Person, amount: int) -> str:
    body = {
        "source": {"card_token": "tok_visa"},
        "destination_wallet_id": shop.wallet_id,
        "amount": {"currency": "USD", "amount": str(amount)},
    }
    payment = edge.pay(buyer, body)
    assert payment["state"] == "SUCCEEDED", payment
    return str(payment["payment_id"])


def test_sms_on_and_email_off_for_payment_succeeded_gives_one_sms_per_payment_and_no_email(
    edge: Edge, stack: Stack
) -> None:
    buyer, shop = edge.person(), edge.person("MERCHANT")
    buyer_email = _ok(edge.call("GET", "/v1/users/me", buyer))["email"]
    shop_email = _ok(edge.call("GET", "/v1/users/me", shop))["email"]
    phone = "+1415" + str(int.from_bytes(os.urandom(4), "big") % 10_000_000).zfill(7)
    chosen = {
        "phone_number": phone,
        "event_type_channels": [{"event_type": "payment.succeeded", "channels": {"sms": True, "email": False}}],
    }
    saved = _ok(edge.call("PATCH", "/v1/notification-preferences", buyer, chosen))
    assert saved["phone_number"] == phone
    assert saved["event_type_channels"][0]["channels"] == {"email": False, "sms": True, "push": False}

    _pay(edge, buyer, shop, 1100)
    _pay(edge, buyer, shop, 2300)
    poll_until(lambda: len(_texts_to(stack, phone)) >= 2, 60)
    # The payee's email for the second payment shows the worker has got that far; then nothing more may come.
    poll_until(lambda: any("23.00 USD" in (m["Subject"] or "") for m in _mails_to(stack, shop_email)), 60)
    time.sleep(2.0)
    texts = _texts_to(stack, phone)
    assert sorted(t["body"] for t in texts) == ["You paid 11.00 USD", "You paid 23.00 USD"]
    assert {t["from"] for t in texts} == {SMS_SENDER}
    assert not [m for m in _mails_to(stack, buyer_email) if "You paid" in (m["Subject"] or "")]

    listed = _ok(edge.call("GET", "/v1/notifications?page_size=200", buyer))["notifications"]
    about_payments = [n for n in listed if n["event_type"] == "payment.succeeded"]
    assert sorted((n["channel"], n["body"]) for n in about_payments) == [
        ("SMS", "You paid 11.00 USD"),
        ("SMS", "You paid 23.00 USD"),
    ]


def test_a_phone_number_is_shown_to_its_owner_only(edge: Edge) -> None:
    owner, other = edge.person(), edge.person()
    _ok(edge.call("PATCH", "/v1/notification-preferences", owner, {"phone_number": "+14155550142"}))
    assert _ok(edge.call("GET", "/v1/notification-preferences", owner))["phone_number"] == "+14155550142"
    theirs = _ok(edge.call("GET", "/v1/notification-preferences", other))
    assert theirs["user_id"] == other.user_id
    assert "phone_number" not in theirs or theirs["phone_number"] == ""
    refused = edge.call("PATCH", "/v1/notification-preferences", owner, {"phone_number": "12345"})
    assert refused.status_code == 400
    assert refused.json()["details"][0]["reason"] == "VALIDATION_FAILED"
