"""HTTP plumbing for the simulator: a threading HTTP/1.1 server on the standard library.

One thread per connection, so a hanging request (``tok_timeout``) never
blocks the others. SIGTERM/SIGINT stop it: hanging requests and pending
webhook retries are abandoned (the process simulates a remote system).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from urllib.parse import parse_qsl, urlsplit

from devstack.processor_sim.api import Answer, Simulator
from devstack.processor_sim.ledger import invalid

log = logging.getLogger("processor_sim")

MAX_BODY = 1 << 20


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    simulator: Simulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "paymesh-processor-sim/1"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        key = self.headers.get("Idempotency-Key", "")
        try:
            body = self._body() if method == "POST" else None
        except ValueError as exc:
            self._write(Answer(400, invalid("parameter_invalid", str(exc)).body))
            return
        answer = self.server.simulator.handle(method, url.path, query, body, key)
        if answer.drop_connection:
            log.info("%s %s took effect; dropping the response (lost-response fault)", method, url.path)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._write(answer)

    def _body(self) -> object:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        raw = self.rfile.read(length) if length else b"{}"
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"the body is not JSON: {exc.msg}") from None

    def _write(self, answer: Answer) -> None:
        payload = json.dumps(answer.body, separators=(",", ":")).encode()
        try:
            self.send_response(answer.status, HTTPStatus(answer.status).phrase)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (e.g. after tok_timeout hung past its timeout).
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        log.info("%s %s", self.address_string(), format % args)


def serve(simulator: Simulator, host: str, port: int, port_file: str = "") -> None:
    """Serves until SIGTERM or SIGINT; writes the bound port to `port_file` once listening."""
    server = _Server((host, port), _Handler)
    server.simulator = simulator
    if port_file:
        # Written whole then renamed, so a reader never sees a partial number.
        Path(port_file + ".tmp").write_text(str(server.server_address[1]))
        os.replace(port_file + ".tmp", port_file)

    def stop(signum: int, frame: FrameType | None) -> None:
        simulator.stopping.set()
        # shutdown() waits for serve_forever to return: call it from another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("processor simulator listening on http://%s:%d", host, server.server_address[1])
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
