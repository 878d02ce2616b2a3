"""The webhook signature scheme paymesh speaks in both directions.

    Paymesh-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

(Stripe's scheme under paymesh's header name.) The timestamp is inside the
MAC, so a receiver that refuses timestamps outside a tolerance also refuses
replays of a captured delivery. Several ``v1`` entries may be present (secret
rotation); one match is enough. Pure: the caller passes the clock's reading.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "Paymesh-Signature"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of "<timestamp>.<body>"."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},{SIGNATURE_VERSION}={signature(secret, timestamp, body)}"


def verify_signature(
    header: str, body: bytes, secret: str, now: float, tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS
) -> bool:
    """True if a v1 signature in `header` matches `body` and its timestamp is within the tolerance."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    timestamps = fields.get("t", [])
    if len(timestamps) != 1 or not timestamps[0].isdigit():
        return False
    timestamp = int(timestamps[0])
    if abs(now - timestamp) > tolerance_seconds:
        return False
    expected = signature(secret, timestamp, body).encode()
    # Bytes, so a non-ASCII candidate is a mismatch rather than a TypeError;
    # compare_digest so the time taken does not reveal how much matched.
    candidates = (candidate.encode("utf-8", "replace") for candidate in fields.get(SIGNATURE_VERSION, []))
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)
