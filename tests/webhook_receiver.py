"""A merchant's webhook receiver as a process of its own, for the integration and end-to-end tests.

    python -m tests.webhook_receiver            # prints "listening on <port>", then serves 127.0.0.1:<port>

What it answers depends on the path, so one receiver serves many tests:

- `/ok/...`: 200;
- `/fail/<n>/...`: 500 to the first n requests of each webhook-id, then 200;
- `/status/<code>/...`: always <code> (e.g. 503, or 410 Gone);
- `/redirect/...`: 302 to /ok/ (which must not be followed).

Every POST is recorded with its path, headers and raw body; `GET /_requests`
returns them as JSON (bodies base64). `receiver_process()` starts one and
stops it; `Receiver.requests(prefix)` reads what arrived under a path.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    at: float


@dataclass
class Receiver:
    port: int

    def url(self, behaviour: str = "ok") -> str:
        """A fresh URL (its own path, so tests never see each other's requests) with the given behaviour."""
        return f"http://127.0.0.1:{self.port}/{behaviour.strip('/')}/{uuid.uuid4().hex}"

    def requests(self, url: str = "") -> list[Received]:
        prefix = url.split(f":{self.port}", 1)[1] if url else ""
        reply = httpx.get(f"http://127.0.0.1:{self.port}/_requests", timeout=10)
        reply.raise_for_status()
        return [
            Received(r["path"], r["headers"], base64.b64decode(r["body"]), r["at"])
            for r in reply.json()
            if r["path"].startswith(prefix)
        ]

    def for_event(self, url: str, event_id: str) -> list[Received]:
        return [r for r in self.requests(url) if r.headers.get("webhook-id") == event_id]


@contextlib.contextmanager
def receiver_process() -> Iterator[Receiver]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.webhook_receiver"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on "), line
        yield Receiver(int(line.split()[-1]))
    finally:
        process.terminate()
        process.wait(10)


# --- the process ------------------------------------------------------------------------


class _Log:
    """What the process received, shared by its handler threads."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.seen: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    log: _Log

    def do_GET(self) -> None:
        if self.path != "/_requests":
            self._answer(404)
            return
        with self.log.lock:
            data = json.dumps(self.log.received).encode()
        self._answer(200, data, "application/json")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        with self.log.lock:
            self.log.received.append(
                {"path": self.path, "headers": headers, "body": base64.b64encode(body).decode(), "at": time.time()}
            )
            key = (self.path, headers.get("webhook-id", ""))
            self.log.seen[key] += 1
            count = self.log.seen[key]
        parts = self.path.strip("/").split("/")
        if parts[0] == "fail" and count <= int(parts[1]):
            self._answer(500, b"failing on purpose")
        elif parts[0] == "status":
            self._answer(int(parts[1]), f"status {parts[1]} on purpose".encode())
        elif parts[0] == "redirect":
            self.send_response(302)
            self.send_header("Location", "/ok/redirected")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._answer(200, b'{"received": true}', "application/json")

    def _answer(self, status: int, body: bytes = b"", content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    _Handler.log = _Log()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
