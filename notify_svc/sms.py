"""SMS providers: the logging default and Twilio.

`NOTIFY_SMS_PROVIDER=log` (the default) sends nothing: each SMS is logged as
not sent, with the number masked and the text's length only (a number and a
message are personal data). `twilio` sends through Twilio's Programmable
Messaging API with Twilio's official library; the library builds the request
(URL, form fields, authentication) and the library's documented extension
point, its HTTP client, is ours: httpx with a timeout and no redirects, aimed
at `NOTIFY_TWILIO_API_BASE_URL` instead of https://api.twilio.com when that is
set (the local stack's fake provider, devstack/providers.py, which checks
what Twilio would check).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
from twilio.base.exceptions import TwilioRestException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from notify_svc.delivery_records import DeliveryFailed, Undeliverable

log = logging.getLogger(__name__)
TWILIO_API = "https://api.twilio.com"
# Twilio's answers for a request it will refuse again: a malformed or unreachable number, a blocked one.
_PERMANENT_STATUSES = frozenset({400, 404})


class SmsProvider(Protocol):
    async def send(self, to: str, body: str) -> None:
        """Returns once the provider accepted the message; DeliveryFailed / Undeliverable otherwise."""
        ...


def mask_phone(number: str) -> str:
    """A number as logs may show it: country code and last two digits."""
    return number[:3] + "*" * max(len(number) - 5, 0) + number[-2:] if len(number) > 5 else "*" * len(number)


class LoggingSmsProvider:
    """Sends nothing; says so in the log (NOTIFY_SMS_PROVIDER=log)."""

    async def send(self, to: str, body: str) -> None:
        log.info("SMS not sent (NOTIFY_SMS_PROVIDER=log): to %s, %d characters", mask_phone(to), len(body))


class TwilioSmsProvider:
    """Sends SMS with Twilio's library over httpx."""

    def __init__(self, account_sid: str, auth_token: str, sender: str, http: httpx.AsyncClient, api_base_url: str = ""):
        self._client = Client(account_sid, auth_token, http_client=_HttpxTwilioClient(http, api_base_url))
        # A Messaging Service SID sends from its own pool of numbers; anything else is a From number.
        self._sender = {"messaging_service_sid": sender} if sender.startswith("MG") else {"from_": sender}

    async def send(self, to: str, body: str) -> None:
        try:
            await self._client.messages.create_async(to=to, body=body, **self._sender)
        except TwilioRestException as error:
            described = f"Twilio answered HTTP {error.status} (error {error.code})"
            if error.status in _PERMANENT_STATUSES:
                raise Undeliverable(described) from None
            raise DeliveryFailed(described) from None
        except httpx.HTTPError as error:
            raise DeliveryFailed(f"Twilio unreachable: {type(error).__name__}") from None


class _HttpxTwilioClient(AsyncHttpClient):  # type: ignore[misc]
    """Twilio's asynchronous HTTP client interface, on httpx; optionally aimed at another API origin."""

    def __init__(self, http: httpx.AsyncClient, api_base_url: str) -> None:
        # A logger of our own at WARNING: the library's default logs every request line at INFO.
        quiet = logging.getLogger("notify_svc.sms.twilio")
        quiet.setLevel(logging.WARNING)
        super().__init__(quiet, True, None)
        self._http = http
        self._base = urlsplit(api_base_url) if api_base_url else None

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the signature of the interface implemented)
        allow_redirects: bool = False,
    ) -> Response:
        reply = await self._http.request(
            method.upper(),
            self._rebased(url),
            params=params,  # type: ignore[arg-type]
            data=data,  # type: ignore[arg-type]
            headers=headers,
            auth=auth,
            follow_redirects=False,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        return Response(reply.status_code, reply.text, reply.headers)

    def _rebased(self, url: str) -> str:
        if self._base is None:
            return url
        parts = urlsplit(url)
        return urlunsplit(
            (self._base.scheme, self._base.netloc, self._base.path.rstrip("/") + parts.path, parts.query, "")
        )

    async def close(self) -> Any:
        return None  # the httpx client belongs to the caller
