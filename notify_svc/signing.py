"""Signing webhook deliveries as Standard Webhooks (https://www.standardwebhooks.com), with its own library.

    webhook-id:        the event id (the same on every retry and redelivery: the receiver's dedupe key)
    webhook-timestamp: unix seconds of this attempt
    webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">  (one per secret, space-separated)

The key is the base64-decoded part of the endpoint's `whsec_` secret. While a
rotated secret overlaps, the delivery carries one signature per secret and a
receiver holding either one verifies it. The timestamp is inside the MAC, so a
receiver that refuses old timestamps also refuses a replay.

Endpoints whose secret predates the Standard Webhooks form (see
webhooks.is_standard_secret) get their `webhook-signature` keyed with the
secret's bytes as they are, and also the former `Paymesh-Signature` header
(paymesh_runtime.webhook_signatures), until their secret is rotated.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from notify_svc.webhooks import is_standard_secret
from paymesh_runtime.webhook_signatures import SIGNATURE_HEADER as LEGACY_SIGNATURE_HEADER
from paymesh_runtime.webhook_signatures import signature_header as legacy_signature_header

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


def signed_headers(secrets: Sequence[str], message_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt, signed with every secret in `secrets` (newest first)."""
    if not secrets:
        raise ValueError("a delivery needs at least one signing secret")
    moment = datetime.fromtimestamp(timestamp, UTC)
    signatures = [_webhook(secret).sign(message_id, moment, body) for secret in secrets]
    headers = {ID_HEADER: message_id, TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: " ".join(signatures)}
    legacy = [secret for secret in secrets if not is_standard_secret(secret)]
    if legacy:
        headers[LEGACY_SIGNATURE_HEADER] = legacy_signature_header(legacy[0], timestamp, body.encode())
    return headers


def _webhook(secret: str) -> Webhook:
    # The library decodes a `whsec_` string itself; a former secret is not base64 and is keyed as is.
    return Webhook(secret if is_standard_secret(secret) else secret.encode())
