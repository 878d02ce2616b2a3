"""What reaches the outside world: the merchants' webhook endpoint (served by the harness) and the mail sink.

WebhookReceiver listens on 127.0.0.1 (a free port) for every merchant's
endpoint `/hooks/<run tag>/<merchant>`, answers 2xx (and, drawn from the seed, a few
500s, so notify_svc's retries are exercised), and keeps each delivery; the
Standard Webhooks signatures are verified at the end against the secrets the endpoints were
created with (a delivery may arrive before the create call returned its secret).
MailSinkWatcher tails the mail sink's log and notes when each Message-ID
arrived.
"""

from __future__ import annotations

import email.utils
import hmac
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from standardwebhooks.webhooks import Webhook

from devstack.chaos.books import Receipt
from devstack.ports import HOST

EVENT_ID_HEADER = "Paymesh-Event-Id"
# Standard Webhooks (notify_svc/signing.py): the three headers a merchant verifies.
MESSAGE_ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
TOLERANCE_S = 300  # how far the signed timestamp may be from the receiver's clock
MAX_BODY = 1 << 20
POLL_S = 0.5


@dataclass(frozen=True)
class Delivery:
    path: str
    event_id: str
    message_id: str
    timestamp: str
    signature: str  # space-separated `v1,<base64>` values, one per secret
    body: bytes
    at: float  # seconds since the workload started
    signed_at: float  # the receiver's wall clock, for the signature's tolerance
    status: int  # what the receiver answered


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: WebhookReceiver


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
        body = self.rfile.read(length) if length else b""
        status = self.server.receiver.received(
            self.path,
            self.headers.get(EVENT_ID_HEADER, ""),
            (self.headers.get(MESSAGE_ID_HEADER, ""), self.headers.get(TIMESTAMP_HEADER, "")),
            self.headers.get(SIGNATURE_HEADER, ""),
            body,
        )
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the deliveries are kept, not logged."""


class WebhookReceiver:
    def __init__(self, clock: Callable[[], float], seed: int, failure_share: float) -> None:
        self._clock = clock
        self._rng = random.Random(f"webhooks-{seed}")  # noqa: S311 - which deliveries fail: reproducible dice
        self._failure_share = failure_share
        self._lock = threading.Lock()
        self.deliveries: list[Delivery] = []
        self._server = _Server((HOST, 0), _Handler)
        self._server.receiver = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}{path}"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self, path: str, event_id: str, signed: tuple[str, str], signature: str, body: bytes) -> int:
        """`signed`: the delivery's (webhook-id, webhook-timestamp)."""
        with self._lock:
            status = 500 if self._rng.random() < self._failure_share else 200
            message_id, timestamp = signed
            self.deliveries.append(
                Delivery(path, event_id, message_id, timestamp, signature, body, self._clock(), time.time(), status)
            )
        return status

    def receipts(self, secrets: dict[str, str]) -> list[Receipt]:
        """Every delivery as a Receipt; `secrets`: endpoint path -> its signing secret."""
        with self._lock:
            deliveries = list(self.deliveries)
        return [
            Receipt(
                channel="WEBHOOK",
                delivery_id=f"{d.path} {d.event_id}",
                event_id=d.event_id,
                at=d.at,
                accepted=200 <= d.status < 300,
                signature_ok=d.path in secrets and _verifies(d, secrets[d.path]),
            )
            for d in deliveries
        ]


def _verifies(delivery: Delivery, secret: str) -> bool:
    """Standard Webhooks verification as a merchant does it, judged at the time the delivery arrived (the
    check runs after the workload): the timestamp within tolerance, one signature is the HMAC of
    `<id>.<timestamp>.<body>` under the secret, and the id is the event's (the receiver's dedupe key)."""
    if delivery.message_id != delivery.event_id or not delivery.timestamp.isdigit():
        return False
    timestamp = int(delivery.timestamp)
    if abs(delivery.signed_at - timestamp) > TOLERANCE_S:
        return False
    expected = Webhook(secret).sign(
        delivery.message_id, datetime.fromtimestamp(timestamp, UTC), delivery.body.decode("utf-8", "replace")
    )
    return any(hmac.compare_digest(expected, given) for given in delivery.signature.split())


_MESSAGE_ID = re.compile(r"^Message-ID:\s*(<[^>]+>)\s*$", re.MULTILINE | re.IGNORECASE)
_DATE = re.compile(r"^Date:\s*(.+?)\s*$", re.MULTILINE | re.IGNORECASE)
_EVENT_ID = re.compile(r"^X-Paymesh-Event-Id:\s*(\S+)\s*$", re.MULTILINE | re.IGNORECASE)
_END = "------------ END MESSAGE ------------"


class MailSinkWatcher:
    """Notes each message the mail sink's log shows (aiosmtpd prints every message it accepts), at the time
    its Date header says it was sent (each send builds the message anew), else when it showed up."""

    def __init__(self, log_path: Path, clock: Callable[[], float]) -> None:
        self._path = log_path
        self._clock = clock
        self._wall_minus_clock = time.time() - clock()
        self._offset = 0  # the run dir is new: everything in the log is this run's
        self._pending = ""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.receipts: list[Receipt] = []
        self._thread = threading.Thread(target=self._watch, name="mailsink-watcher", daemon=True)

    def start(self) -> MailSinkWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self.poll()

    def _watch(self) -> None:
        while not self._stopping.wait(POLL_S):
            self.poll()

    def poll(self) -> None:
        with self._lock:
            try:
                with self._path.open("rb") as handle:
                    handle.seek(self._offset)
                    chunk = handle.read()
                    self._offset = handle.tell()
            except FileNotFoundError:
                return
            text = self._pending + chunk.decode("utf-8", errors="replace")
            *messages, self._pending = text.split(_END)
            now = self._clock()
            for message in messages:
                found = _MESSAGE_ID.search(message)
                if found:
                    event = _EVENT_ID.search(message)
                    at = self._sent_at(message, now)
                    self.receipts.append(Receipt("EMAIL", found.group(1), event.group(1) if event else "", at))

    def _sent_at(self, message: str, seen: float) -> float:
        found = _DATE.search(message)
        try:
            sent = email.utils.parsedate_to_datetime(found.group(1)).timestamp() if found else None
        except (TypeError, ValueError):
            sent = None
        return seen if sent is None else min(seen, sent - self._wall_minus_clock)
