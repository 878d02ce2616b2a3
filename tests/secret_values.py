"""The sensitive values a test session sends and receives, and the check that none reached a log.

`SecretRecorder.install()` wraps httpx's `Client.send` and `AsyncClient.send`
for the session: every Authorization header, every JSON field of a request or
answer whose name says it holds a credential (passwords, tokens, card and
bank tokens, secrets) is remembered. At the end of the session
(tests/conftest.py) `leaks(log_dir, more)` lists each such value, each of the
stack's own secrets (`more`), and anything shaped like a JWT or a bearer
header, found in any log file of the test stack.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx

# JSON fields whose values must never be logged: names that end in password, token or secret
# (card_token, access_token, signing_secret; cardToken too), and the header-like `authorization`.
# Not names that merely contain one (the processor's `authorization_id` names a resource).
SENSITIVE_FIELDS = re.compile(r"(password|token|secret)s?$|^authorization$", re.IGNORECASE)
# Shorter values (e.g. "a", "1") would be found by chance in any log.
MIN_LENGTH = 8
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
BEARER = re.compile(r"bearer\s+[A-Za-z0-9._~+/=-]{16,}", re.IGNORECASE)
# The fake SMTP server's mailbox: what was mailed to users, not a log the services write.
NOT_LOGS = frozenset({"mailsink.log"})


def _sensitive(value: Any, key: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _sensitive(v, str(k))
    elif isinstance(value, list):
        for item in value:
            yield from _sensitive(item, key)
    elif isinstance(value, str) and SENSITIVE_FIELDS.search(key) and len(value) >= MIN_LENGTH:
        yield value


def _json(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None


class SecretRecorder:
    def __init__(self) -> None:
        self.values: set[str] = set()
        # What a client itself put into a URL path (an id, or a fuzzer's string that it also sent as a
        # token elsewhere) is the path's, which the edge's access log records by design.
        self.in_paths: set[str] = set()
        self._restore: list[tuple[type[Any], Any]] = []

    def credentials(self) -> set[str]:
        """The values that no log may hold."""
        return self.values - self.in_paths

    def saw_request(self, request: httpx.Request) -> None:
        self.in_paths.update(part for part in unquote(request.url.path).split("/") if part)
        authorization = request.headers.get("authorization", "")
        if authorization:
            self.values |= {authorization, authorization.split(" ", 1)[-1]}
        self.values.update(_sensitive(_json(request.content)))

    def saw_response(self, response: httpx.Response) -> None:
        if response.headers.get("content-type", "").startswith("application/json"):
            self.values.update(_sensitive(_json(response.content)))

    def install(self) -> None:
        recorder = self
        sync_send, async_send = httpx.Client.send, httpx.AsyncClient.send

        def send(client: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            recorder.saw_request(request)
            response = sync_send(client, request, **kwargs)
            if not kwargs.get("stream"):
                recorder.saw_response(response)
            return response

        async def asend(client: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            recorder.saw_request(request)
            response = await async_send(client, request, **kwargs)
            if not kwargs.get("stream"):
                recorder.saw_response(response)
            return response

        self._restore = [(httpx.Client, sync_send), (httpx.AsyncClient, async_send)]
        httpx.Client.send = send  # type: ignore[method-assign,assignment]
        httpx.AsyncClient.send = asend  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        for cls, original in self._restore:
            cls.send = original
        self._restore = []


def leaks(log_dir: Path, values: Iterable[str]) -> list[str]:
    """What of `values` (and any JWT or bearer header) a log under `log_dir` holds, as "file: what"."""
    wanted = sorted({v for v in values if len(v) >= MIN_LENGTH})
    found = []
    for path in sorted(log_dir.glob("*.log")):
        if path.name in NOT_LOGS:
            continue
        text = path.read_text(errors="replace")
        found += [f"{path.name}: a value the tests used as a credential ({v[:4]}...)" for v in wanted if v in text]
        found += [f"{path.name}: a JWT ({m.group()[:12]}...)" for m in JWT.finditer(text)][:3]
        found += [f"{path.name}: a bearer header ({m.group()[:10]}...)" for m in BEARER.finditer(text)][:3]
    return found
