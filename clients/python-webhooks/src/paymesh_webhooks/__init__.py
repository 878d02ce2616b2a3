"""Verify paymesh webhook deliveries: Standard Webhooks signatures, checked with the standard library only.

    from paymesh_webhooks import verify, WebhookVerificationError

    event = verify(raw_body, request_headers, "whsec_...")   # raises WebhookVerificationError

Each delivery carries three headers (https://www.standardwebhooks.com):

- ``webhook-id``: the event id; the same on every retry and redelivery, so
  store it and ignore a delivery whose id you have handled (delivery is at
  least once, and events of different resources come in no particular order);
- ``webhook-timestamp``: unix seconds of the attempt;
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256>`` of
  ``"<webhook-id>.<webhook-timestamp>.<raw body>"`` keyed with the
  base64-decoded part of your endpoint's ``whsec_`` secret; several,
  space-separated, while a rotated secret overlaps (one match is enough).

Pass the raw body bytes, exactly as received: parsing and re-serialising
JSON changes them and the signature no longer matches.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

__all__ = [
    "InvalidSignature",
    "MalformedPayload",
    "MissingOrMalformedHeaders",
    "TimestampOutOfTolerance",
    "WebhookVerificationError",
    "verify",
]
__version__ = "0.1.0"

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
DEFAULT_TOLERANCE_SECONDS = 300


class WebhookVerificationError(Exception):
    """The delivery is not proven to come from paymesh: answer 400 and do not act on it."""


class MissingOrMalformedHeaders(WebhookVerificationError):
    """webhook-id, webhook-timestamp or webhook-signature is missing or not in the expected form."""


class TimestampOutOfTolerance(WebhookVerificationError):
    """webhook-timestamp is further from now than the tolerance: a replay, or a clock far off."""


class InvalidSignature(WebhookVerificationError):
    """No signature matches: another secret, or the body or headers were changed on the way."""


class MalformedPayload(WebhookVerificationError):
    """The signature matches but the body is not a JSON object."""


def verify(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """The delivered event (the parsed JSON body) if the delivery verifies; WebhookVerificationError otherwise.

    `headers`: the request's headers, any letter case (a dict, Flask's
    ``request.headers``, Starlette's ``request.headers``). `secret`: the
    endpoint's ``whsec_...`` secret. `tolerance`: how many seconds the
    timestamp may be from now (either way). `now`: unix time to judge the
    timestamp by (default: this machine's clock).
    """
    body = payload.encode() if isinstance(payload, str) else bytes(payload)
    lowered = {str(key).lower(): str(value) for key, value in headers.items()}
    message_id = lowered.get("webhook-id", "")
    timestamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not message_id or not timestamp or not signatures:
        raise MissingOrMalformedHeaders("webhook-id, webhook-timestamp and webhook-signature are required")
    if not timestamp.isascii() or not timestamp.isdigit():
        raise MissingOrMalformedHeaders("webhook-timestamp must be unix seconds")
    offset = (time.time() if now is None else now) - int(timestamp)
    if offset > tolerance:
        raise TimestampOutOfTolerance(f"webhook-timestamp is {offset:.0f}s old; at most {tolerance}s are accepted")
    if -offset > tolerance:
        raise TimestampOutOfTolerance(f"webhook-timestamp is {-offset:.0f}s ahead of this machine's clock")
    candidates = _v1_signatures(signatures)
    signed = message_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    # compare_digest: the time taken does not tell how much of a forged signature matched.
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise InvalidSignature("no webhook-signature matches this secret and body")
    try:
        event = json.loads(body)
    except ValueError:
        raise MalformedPayload("the body is not JSON") from None
    if not isinstance(event, dict):
        raise MalformedPayload("the body is not a JSON object")
    return event


def _v1_signatures(header: str) -> list[bytes]:
    found = []
    for entry in header.split():
        version, comma, value = entry.partition(",")
        if not comma or not version or not value:
            raise MissingOrMalformedHeaders("webhook-signature entries look like v1,<base64>")
        if version != "v1":
            continue  # a scheme this verifier does not know; another entry may be v1
        try:
            found.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            raise MissingOrMalformedHeaders("a v1 signature is not base64") from None
    if not found:
        raise MissingOrMalformedHeaders("webhook-signature has no v1 signature")
    return found


def _key(secret: str) -> bytes:
    """The HMAC key: the base64 part of a ``whsec_`` secret. (Endpoints created before paymesh used
    Standard Webhooks have secrets that are not base64: their bytes are the key, until rotated.)"""
    encoded = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    if not encoded:
        raise ValueError("the secret is empty")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return secret.encode()
