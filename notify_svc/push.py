"""Push providers: the logging default and Web Push.

`NOTIFY_PUSH_PROVIDER=log` (the default) sends nothing: each push is logged
as not sent, naming only the push service's host. `webpush` sends Web Push
(RFC 8030) to the subscription the user registered: the payload is encrypted
for the browser (RFC 8291, aes128gcm) and the request signed with the
service's VAPID key (RFC 8292), both by pywebpush / py-vapid; the request
goes out on notify's outbound client (notify_svc.egress: short timeouts, no
redirects, no private destinations in production). The payload is JSON:
{"title", "body", "tag"} (tag: the notification id, for the browser to
collapse duplicates).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httpx
from py_vapid import Vapid02
from pywebpush import WebPusher

from notify_svc.delivery_records import DeliveryFailed, Undeliverable

log = logging.getLogger(__name__)
# How long the push service keeps a message for an offline browser.
TTL_SECONDS = 24 * 3600
# The VAPID token's lifetime (RFC 8292 allows at most 24 hours).
VAPID_TOKEN_SECONDS = 12 * 3600


@dataclass(frozen=True)
class PushSubscriptionData:
    """A browser's push subscription (PushManager.subscribe): where to, and the keys to encrypt for."""

    endpoint: str
    p256dh: str
    auth: str

    def to_json(self) -> bytes:
        return json.dumps({"endpoint": self.endpoint, "p256dh": self.p256dh, "auth": self.auth}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PushSubscriptionData:
        fields = json.loads(data)
        return cls(str(fields["endpoint"]), str(fields["p256dh"]), str(fields["auth"]))


def push_context(user_id: str) -> str:
    """What a user's sealed push subscription is bound to: it opens on that user's row only."""
    return f"push:{user_id}"


class PushProvider(Protocol):
    async def send(self, subscription: PushSubscriptionData, title: str, body: str, tag: str) -> None:
        """Returns once the push service accepted the message; DeliveryFailed / Undeliverable otherwise."""
        ...


class LoggingPushProvider:
    """Sends nothing; says so in the log (NOTIFY_PUSH_PROVIDER=log)."""

    async def send(self, subscription: PushSubscriptionData, title: str, body: str, tag: str) -> None:
        host = urlsplit(subscription.endpoint).hostname or "?"
        log.info("push not sent (NOTIFY_PUSH_PROVIDER=log): to a subscription at %s, %d characters", host, len(body))


class WebPushProvider:
    """Web Push with VAPID, encrypted for the subscription's browser."""

    def __init__(self, http: httpx.AsyncClient, vapid_private_key: str, subject: str) -> None:
        self._http = http
        self._vapid = Vapid02.from_string(vapid_private_key)
        self._subject = subject

    async def send(self, subscription: PushSubscriptionData, title: str, body: str, tag: str) -> None:
        payload = json.dumps({"title": title, "body": body, "tag": tag}).encode()
        keys = {"p256dh": subscription.p256dh, "auth": subscription.auth}
        encrypted = WebPusher({"endpoint": subscription.endpoint, "keys": keys}).encode(payload, "aes128gcm")["body"]
        parts = urlsplit(subscription.endpoint)
        claims = {"aud": f"{parts.scheme}://{parts.netloc}", "sub": self._subject}
        claims["exp"] = int(time.time()) + VAPID_TOKEN_SECONDS  # type: ignore[assignment]
        headers = {
            **self._vapid.sign(claims),
            "TTL": str(TTL_SECONDS),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Urgency": "normal",
        }
        try:
            reply = await self._http.post(subscription.endpoint, content=encrypted, headers=headers)
        except httpx.HTTPError as error:
            raise DeliveryFailed(f"push service unreachable: {type(error).__name__}: {error}") from None
        if reply.status_code in (404, 410):
            raise Undeliverable(f"the push subscription expired (HTTP {reply.status_code})")
        if reply.status_code in (400, 413):
            raise Undeliverable(f"the push service refused the message (HTTP {reply.status_code})")
        if not 200 <= reply.status_code < 300:
            raise DeliveryFailed(f"push service answered HTTP {reply.status_code}")
