"""Deliveries signed as Standard Webhooks (notify_svc.signing), checked with the standardwebhooks library."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from notify_svc.signing import signed_headers
from notify_svc.webhooks import generate_secret, is_standard_secret
from paymesh_runtime.webhook_signatures import verify_signature

BODY = '{"id":"e1","type":"payment.succeeded"}'


def test_a_new_secret_is_standard_webhooks_whsec_base64_of_32_bytes() -> None:
    first, second = generate_secret(), generate_secret()
    assert first != second
    assert is_standard_secret(first)
    assert len(first) == len("whsec_") + 44


def test_a_signed_delivery_verifies_with_the_standard_webhooks_library() -> None:
    secret = generate_secret()
    headers = signed_headers([secret], "evt-1", int(time.time()), BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(BODY, headers) == {"id": "e1", "type": "payment.succeeded"}
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)


def test_during_a_rotation_each_secret_has_its_signature_and_each_verifies() -> None:
    new, old = generate_secret(), generate_secret()
    headers = signed_headers([new, old], "evt-1", int(time.time()), BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(new).verify(BODY, headers)
    assert Webhook(old).verify(BODY, headers)


def test_a_secret_from_before_standard_webhooks_also_gets_the_former_paymesh_signature() -> None:
    legacy = "whsec_a-b_cdefghijklmnopqrstuvwxyz0123456789ABCDEFG"  # token_urlsafe, not base64
    assert not is_standard_secret(legacy)
    now = int(time.time())
    headers = signed_headers([generate_secret(), legacy], "evt-1", now, BODY)
    assert verify_signature(headers["Paymesh-Signature"], BODY.encode(), legacy, now=now)
    assert Webhook(legacy.encode()).verify(BODY, headers)  # keyed with the secret's bytes
    assert "Paymesh-Signature" not in signed_headers([generate_secret()], "evt-1", now, BODY)


def test_signing_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="at least one"):
        signed_headers([], "evt-1", 1, BODY)
