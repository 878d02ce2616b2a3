"""Sends one webhook delivery: a signed POST, recorded as an Attempt (status, latency, the answer's start).

The request carries the Standard Webhooks headers (notify_svc.signing), signed
with the endpoint's secret and, during a rotation's overlap, its previous
one; `Paymesh-Event-Id` and `Paymesh-Event-Type` stay for receivers written
before. The client is notify's outbound client (notify_svc.egress): short
timeouts, redirects not followed (a 3xx is a failed attempt), no private
destinations in production. Only the first MAX_RESPONSE_BODY_LENGTH bytes of
the answer are read: an endpoint cannot make notify download a large body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from notify_svc import webhooks
from notify_svc.delivery_records import Attempt, Delivery
from notify_svc.signing import signed_headers
from notify_svc.tables import MAX_RESPONSE_BODY_LENGTH
from paymesh_runtime.sealing import SecretSealer

USER_AGENT = "paymesh-webhooks/2"


class WebhookSender:
    """POSTs one signed event to a merchant endpoint and reports how it went."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        sealer: SecretSealer,
        *,
        timeout_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._sealer = sealer
        self._timeout = timeout_seconds
        self._clock = clock

    def secrets_of(self, delivery: Delivery) -> list[str]:
        """The endpoint's signing secrets, newest first."""
        sealed = [delivery.secret_sealed, delivery.previous_secret_sealed]
        return [self._sealer.open(str(delivery.endpoint_id), s).decode() for s in sealed if s is not None]

    async def send(self, delivery: Delivery) -> Attempt:
        assert delivery.url is not None
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            # The answer's first bytes are kept for the merchant to read: uncompressed, please.
            "Accept-Encoding": "identity",
            **signed_headers(self.secrets_of(delivery), str(delivery.event_id), int(self._clock()), delivery.body),
            webhooks.EVENT_ID_HEADER: str(delivery.event_id),
            webhooks.EVENT_TYPE_HEADER: delivery.event_type,
        }
        started, began = datetime.now(UTC), time.monotonic()
        status: int | None = None
        excerpt: str | None = None
        error: str | None = None
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._client.stream("POST", delivery.url, content=delivery.body.encode(), headers=headers) as reply,
            ):
                status = reply.status_code
                excerpt = await _start_of(reply)
        except TimeoutError:
            error = f"no answer within {self._timeout:g}s"
        except httpx.HTTPError as failure:
            # Never the request itself: it carries the signature.
            error = f"{type(failure).__name__}: {failure}"
        latency_ms = round((time.monotonic() - began) * 1000)
        if status is not None and 200 <= status < 300:
            error = None  # accepted, even if reading the rest of the answer failed
        elif status is not None and error is None:
            error = f"endpoint answered HTTP {status}"
        return Attempt(started, latency_ms, status, excerpt, error)


async def _start_of(reply: httpx.Response) -> str:
    """The first MAX_RESPONSE_BODY_LENGTH bytes of the answer, as text; the rest is never read."""
    kept = bytearray()
    async for chunk in reply.aiter_raw():
        kept += chunk
        if len(kept) >= MAX_RESPONSE_BODY_LENGTH:
            break
    text = bytes(kept[:MAX_RESPONSE_BODY_LENGTH]).decode("utf-8", "replace")
    # Each byte decodes to at most one character, so the text fits the column; PostgreSQL text holds no NUL.
    return text.replace("\x00", "\ufffd")
