"""The sensitive values a test session sends and receives, and the check that none reached a log.

`SecretRecorder.install()` wraps httpx's `Client.send` and `AsyncClient.send`
for the session: every Authorization header, every JSON field of a request or
answer and every query parameter whose name says it holds a credential
(passwords, tokens, card and bank tokens, secrets) is remembered, and so is
the path of every request. At the end of the session (tests/conftest.py)
`leaks(log_dir, more, sent_paths)` lists each such value, each of the stack's
own secrets (`more`), and anything shaped like a JWT or a bearer header, found
in any log file of the test stack.

One place is exempt, and only for some values: the request's path in Envoy's
access log (its `path` field, and `grpc_method`, which is the same path when
the request never reached the transcoder: no route, no token). The edge logs
each request's path (without its query string) on purpose, and no route of
the API carries a credential in its path (tests/unit/test_secret_values.py
checks every HTTP binding), so a path holds only what the client chose to
put there. A test may put there a value that is also a credential elsewhere:
the edge fuzz test sends the simulator's public card token `tok_visa` both
as a card token in bodies and as a random wallet id in paths, and random
values as page tokens and as path segments. A value in a logged path is
therefore a leak only if no test sent it in a path itself; anywhere else in
the line (and in every other log) it always is, and JWTs and bearer headers
are leaks everywhere, paths included. Redacting paths instead would blind
the access log (a path is what an operator searches it by) to fix a false
alarm of the test, not of the edge.

Fuzzed values are not credentials: a request sent with the extension
`FUZZED` (the edge fuzz test's) has its Authorization header and path
remembered, not the values of its body or query. Hypothesis draws text from
the string constants of the code it runs, so a fuzzed "password" can be
`transfer` or `untranscoded`, words the services and Envoy log on their own.
The credentials the fuzz test really uses (its users' bearer tokens, the
simulator's card token) are remembered from the other requests that carry
them.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

# JSON fields whose values must never be logged (names as the API spells them).
# Names that end in password, token or secret (card_token, access_token, signing_secret, cardToken);
# not names that merely contain one, nor `authorization`: the Authorization header is read as a header
# (saw_request), and in JSON the processor's `authorization` / `authorization_id` name a resource that
# payment_svc logs in the processor's URLs.
SENSITIVE_FIELDS = re.compile(r"(password|token|secret)s?$", re.IGNORECASE)
# Shorter values (e.g. "a", "1") would be found by chance in any log.
MIN_LENGTH = 8
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
BEARER = re.compile(r"bearer\s+[A-Za-z0-9._~+/=-]{16,}", re.IGNORECASE)
# The fake SMTP server's mailbox: what was mailed to users, not a log the services write.
NOT_LOGS = frozenset({"mailsink.log"})
# Logs whose JSON lines hold the request's path, as the client sent it, in these fields.
ACCESS_LOGS = frozenset({"envoy.log"})
PATH_FIELDS = ("path", "grpc_method")


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


# A request extension (httpx `extensions=`) marking a request whose body and query are fuzz, not credentials.
FUZZED = "paymesh.fuzzed"


class SecretRecorder:
    def __init__(self) -> None:
        self.values: set[str] = set()
        # Every request's path, as sent (percent-encoded) and decoded: what the edge's access log may hold.
        self.paths: set[str] = set()
        self._restore: list[tuple[type[Any], Any]] = []

    def saw_request(self, request: httpx.Request) -> None:
        authorization = request.headers.get("authorization", "")
        if authorization:
            self.values |= {authorization, authorization.split(" ", 1)[-1]}
        if not request.extensions.get(FUZZED):
            self.values.update(_sensitive(_json(request.content)))
            self.values.update(_sensitive([{name: value} for name, value in request.url.params.multi_items()]))
        raw = request.url.raw_path.split(b"?", 1)[0].decode("ascii", errors="replace")
        self.paths |= {raw, urllib.parse.unquote(raw, errors="replace")}

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


def _without_sent_values_in_paths(text: str, values: Iterable[str], sent_paths: Iterable[str]) -> str:
    """An access log with each `values` member removed from the path fields of its JSON lines, where the
    tests themselves sent that value in a path (see the module docstring); nothing else changed."""
    in_paths = [v for v in values if any(v in sent for sent in sent_paths)]
    if not in_paths:
        return text
    lines = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            for field in PATH_FIELDS:
                if isinstance(entry.get(field), str):
                    for value in in_paths:
                        entry[field] = entry[field].replace(value, "")
            line = json.dumps(entry, ensure_ascii=False)
        lines.append(line)
    return "\n".join(lines)


def leaks(log_dir: Path, values: Iterable[str], sent_paths: Iterable[str] = ()) -> list[str]:
    """What of `values` (and any JWT or bearer header) a log under `log_dir` holds, as "file: what".

    `sent_paths`: the paths of the requests the tests made; a value the tests sent in a path may be in the
    path fields of the edge's access log (see the module docstring)."""
    wanted = sorted({v for v in values if len(v) >= MIN_LENGTH})
    sent = list(sent_paths)
    found = []
    for path in sorted(log_dir.glob("*.log")):
        if path.name in NOT_LOGS:
            continue
        raw = path.read_text(errors="replace")
        text = _without_sent_values_in_paths(raw, wanted, sent) if path.name in ACCESS_LOGS else raw
        found += [f"{path.name}: a value the tests used as a credential ({v[:4]}...)" for v in wanted if v in text]
        found += [f"{path.name}: a JWT ({m.group()[:12]}...)" for m in JWT.finditer(raw)][:3]
        found += [f"{path.name}: a bearer header ({m.group()[:10]}...)" for m in BEARER.finditer(raw)][:3]
    return found
