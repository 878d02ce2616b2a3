"""Signed webhook deliveries, retried with exponential backoff until a 2xx answer.

Signature header (Stripe's scheme, under our own name):
``Paymesh-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``.
The timestamp is part of the signed bytes, so a receiver can refuse old
deliveries (replays) by checking it against a tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from devstack.processor_sim.ledger import JsonObject

SIGNATURE_HEADER = "Paymesh-Signature"

log = logging.getLogger("processor_sim.webhooks")

DeliveryNote = Callable[[str, "int | None"], None]


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The header value that signs `body` at `timestamp`."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class WebhookSender:
    """Delivers events to one URL from background threads."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        attempts: int,
        first_retry_seconds: float,
        note: DeliveryNote,
        stopping: threading.Event,
    ) -> None:
        self.url = url
        self._secret = secret.encode()
        self._attempts = attempts
        self._first_retry = first_retry_seconds
        self._note = note
        self._stopping = stopping

    def send(self, event: JsonObject) -> None:
        if not self.url:
            log.info("no webhook URL configured; event %s not delivered", event["id"])
            return
        threading.Thread(target=self._deliver, args=(event,), name=f"webhook-{event['id']}", daemon=True).start()

    def _deliver(self, event: JsonObject) -> None:
        body = json.dumps(event, separators=(",", ":")).encode()
        delay = self._first_retry
        for attempt in range(1, self._attempts + 1):
            status = self._post(body)
            self._note(event["id"], status)
            if status is not None and 200 <= status < 300:
                log.info("event %s delivered (attempt %d)", event["id"], attempt)
                return
            log.warning("event %s: delivery attempt %d answered %s", event["id"], attempt, status)
            if attempt < self._attempts and self._stopping.wait(delay):
                return
            delay *= 2
        log.error("event %s: giving up after %d attempts", event["id"], self._attempts)

    def _post(self, body: bytes) -> int | None:
        # Signed per attempt: a retry carries a fresh timestamp, like Stripe's.
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self._secret, body, int(time.time()))}
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:  # noqa: S310 - configured http(s) URL
                return int(reply.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError) as exc:
            log.warning("webhook POST to %s failed: %r", self.url, exc)
            return None
