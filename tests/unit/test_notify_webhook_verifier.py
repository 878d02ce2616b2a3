"""The merchants' verifier (clients/python-webhooks) against the Standard Webhooks library's own signatures."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from tests.webhook_verifier import paymesh_webhooks

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
OTHER = "whsec_" + base64.b64encode(os.urandom(32)).decode()
BODY = b'{"id":"0b7e","type":"payment.succeeded","payment_changed":{}}'
NOW = 1_800_000_000


def _headers(secret: str = SECRET, timestamp: int = NOW, body: bytes = BODY, msg_id: str = "evt-1") -> dict[str, str]:
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def test_a_delivery_signed_by_the_standard_library_verifies_and_returns_the_event() -> None:
    event = paymesh_webhooks.verify(BODY, _headers(), SECRET, now=NOW + 10)
    assert event["type"] == "payment.succeeded"


def test_header_names_are_matched_in_any_case_and_the_body_may_be_text() -> None:
    headers = {name.title(): value for name, value in _headers().items()}
    assert paymesh_webhooks.verify(BODY.decode(), headers, SECRET, now=NOW)["id"] == "0b7e"


def test_one_matching_signature_among_several_is_enough_as_during_a_rotation() -> None:
    both = _headers(OTHER)["webhook-signature"] + " " + _headers(SECRET)["webhook-signature"]
    headers = {**_headers(), "webhook-signature": both}
    assert paymesh_webhooks.verify(BODY, headers, SECRET, now=NOW)
    assert paymesh_webhooks.verify(BODY, headers, OTHER, now=NOW)


@pytest.mark.parametrize(
    ("body", "secret", "headers"),
    [
        (BODY + b" ", SECRET, _headers()),  # a changed body
        (BODY, OTHER, _headers()),  # another secret
        (BODY, SECRET, {**_headers(), "webhook-id": "evt-2"}),  # another message id
        (BODY, SECRET, {**_headers(), "webhook-timestamp": str(NOW + 1)}),  # a changed timestamp
    ],
)
def test_a_changed_body_id_or_timestamp_or_another_secret_is_an_invalid_signature(
    body: bytes, secret: str, headers: dict[str, str]
) -> None:
    with pytest.raises(paymesh_webhooks.InvalidSignature):
        paymesh_webhooks.verify(body, headers, secret, now=NOW)


@pytest.mark.parametrize("age", [301, 360, -301])
def test_a_timestamp_beyond_the_tolerance_either_way_is_refused(age: int) -> None:
    headers = _headers(timestamp=NOW - age)
    with pytest.raises(paymesh_webhooks.TimestampOutOfTolerance):
        paymesh_webhooks.verify(BODY, headers, SECRET, now=NOW)
    assert paymesh_webhooks.verify(BODY, headers, SECRET, tolerance=abs(age), now=NOW)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"webhook-id": "evt-1", "webhook-timestamp": str(NOW)},
        {"webhook-id": "evt-1", "webhook-timestamp": "1.8e9", "webhook-signature": "v1,AAAA"},
        {"webhook-id": "evt-1", "webhook-timestamp": str(NOW), "webhook-signature": "AAAA"},
        {"webhook-id": "evt-1", "webhook-timestamp": str(NOW), "webhook-signature": "v1,not base64!"},
        {"webhook-id": "evt-1", "webhook-timestamp": str(NOW), "webhook-signature": "v2,AAAA"},
    ],
)
def test_missing_or_malformed_headers_are_named_as_such(headers: dict[str, str]) -> None:
    with pytest.raises(paymesh_webhooks.MissingOrMalformedHeaders):
        paymesh_webhooks.verify(BODY, headers, SECRET, now=NOW)


def test_a_signed_body_that_is_not_a_json_object_is_malformed() -> None:
    with pytest.raises(paymesh_webhooks.MalformedPayload):
        paymesh_webhooks.verify(b"[1]", _headers(body=b"[1]"), SECRET, now=NOW)


def test_every_error_is_a_webhook_verification_error() -> None:
    for error in ("InvalidSignature", "TimestampOutOfTolerance", "MissingOrMalformedHeaders", "MalformedPayload"):
        assert issubclass(getattr(paymesh_webhooks, error), paymesh_webhooks.WebhookVerificationError)
