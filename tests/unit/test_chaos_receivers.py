"""The chaos harness verifies each webhook delivery as a merchant would (Standard Webhooks)."""

from __future__ import annotations

import time

from devstack.chaos.receivers import Delivery, _verifies
from notify_svc.signing import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signed_headers

SECRET = "whsec_" + "c2VjcmV0LWtleS1vZi10aGUtZW5kcG9pbnQ="
EVENT_ID = "6c1f9c1e-7f4e-4b8e-9a55-2f5f3c0e9d11"
BODY = '{"type":"payment.succeeded","data":{"amount":"1250"}}'


def delivery(
    headers: dict[str, str], body: str = BODY, arrived: float | None = None, event_id: str = EVENT_ID
) -> Delivery:
    return Delivery(
        path="/hooks/t/m0",
        event_id=event_id,
        message_id=headers[ID_HEADER],
        timestamp=headers[TIMESTAMP_HEADER],
        signature=headers[SIGNATURE_HEADER],
        body=body.encode(),
        at=1.0,
        signed_at=time.time() if arrived is None else arrived,
        status=200,
    )


def test_a_delivery_signed_by_notify_svc_verifies() -> None:
    headers = signed_headers([SECRET], EVENT_ID, int(time.time()), BODY)
    assert _verifies(delivery(headers), SECRET)


def test_a_rotated_secret_verifies_with_either_signature() -> None:
    previous = "whsec_" + "b2xkLXNlY3JldC1vZi10aGUtZW5kcG9pbnQ="
    headers = signed_headers([SECRET, previous], EVENT_ID, int(time.time()), BODY)
    assert _verifies(delivery(headers), SECRET)
    assert _verifies(delivery(headers), previous)


def test_a_changed_body_another_secret_another_id_or_an_old_timestamp_does_not_verify() -> None:
    now = int(time.time())
    headers = signed_headers([SECRET], EVENT_ID, now, BODY)
    assert not _verifies(delivery(headers, body=BODY.replace("1250", "9250")), SECRET)
    assert not _verifies(delivery(headers), "whsec_" + "b3RoZXItc2VjcmV0LWtleS0tLS0tLS0tLS0=")
    assert not _verifies(delivery(headers, event_id="another-event"), SECRET)
    assert not _verifies(delivery(headers, arrived=now + 3600), SECRET)
