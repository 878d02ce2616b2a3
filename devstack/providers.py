"""Fake SMS and push providers for the local and test stacks, like the mail sink is for email.

`python -m devstack.providers --host 127.0.0.1 --port N` serves, on 127.0.0.1:

- Twilio's Messages API as notify_svc's Twilio library calls it:
  `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` (form fields To,
  From or MessagingServiceSid, Body; HTTP Basic auth with the account SID
  and auth token) → 201 and a Message resource, or Twilio's error answers:
  401 (code 20003) for other credentials, 400 for a missing field (21604
  To, 21602 Body, 21603 From) or a To that is not E.164 or is Twilio's magic
  invalid test number +15005550001 (21211);
- a Web Push service (RFC 8030): `POST /push/{subscription}` with a VAPID
  `Authorization: vapid t=…,k=…` (whose JWT signature and `aud` it checks),
  `Content-Encoding: aes128gcm` and `TTL` → 201; a subscription whose id
  starts with `gone` answers 410 (an expired subscription);
- `GET /messages` → {"sms": [...], "push": [...]}, everything accepted so far
  (push bodies base64, still encrypted), for tests and developers;
  `GET /healthz`.

Nothing leaves the machine. The Twilio credentials and the VAPID key of a
stack are derived from its run dir's service token secret
(`twilio_credentials`, `vapid_private_key`), so notify_svc and this process
agree without a new secret.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import os
import re
import sys
import threading
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from devstack.components import Component
from devstack.credentials import Secrets
from devstack.ports import HOST

SMS_SENDER = "+15005550006"  # Twilio's magic "valid From" test number
INVALID_NUMBER = "+15005550001"  # Twilio's magic "invalid To" test number
SID_ENV = "PROVIDERS_TWILIO_ACCOUNT_SID"
TOKEN_ENV = "PROVIDERS_TWILIO_AUTH_TOKEN"  # noqa: S105 (a variable name)
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_MESSAGES = re.compile(r"^/2010-04-01/Accounts/([A-Za-z0-9]+)/Messages\.json$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def _derive(secrets: Secrets, label: str) -> bytes:
    return hmac.new(secrets.service_token_secret.encode(), f"devstack providers {label}".encode(), "sha256").digest()


def twilio_credentials(secrets: Secrets) -> tuple[str, str]:
    """The stack's Twilio account SID and auth token (the fake accepts only these)."""
    return "AC" + _derive(secrets, "sid").hex()[:32], _derive(secrets, "token").hex()[:32]


def vapid_private_key(secrets: Secrets) -> str:
    """The stack's VAPID private key: a P-256 scalar, base64url of its 32 bytes."""
    scalar = int.from_bytes(_derive(secrets, "vapid"), "big") % (_P256_ORDER - 1) + 1
    return base64.urlsafe_b64encode(scalar.to_bytes(32, "big")).decode().rstrip("=")


class FakeProviders(Component):
    name = "providers"
    start_timeout = 20.0
    stop_timeout = 10.0

    def address(self) -> str:
        return f"http://{HOST}:{self.ctx.ports.providers}"

    def ports(self) -> list[int]:
        return [self.ctx.ports.providers]

    def command(self) -> list[str]:
        return [sys.executable, "-m", "devstack.providers", "--host", HOST, "--port", str(self.ctx.ports.providers)]

    def process_env(self) -> dict[str, str]:
        account_sid, auth_token = twilio_credentials(self.ctx.secrets)
        return {**os.environ, SID_ENV: account_sid, TOKEN_ENV: auth_token}

    def is_healthy(self) -> bool:
        try:
            # The URL is always http://127.0.0.1:<providers port>.
            with urllib.request.urlopen(f"{self.address()}/healthz", timeout=2) as reply:  # noqa: S310
                return bool(reply.status == 200 and json.load(reply).get("status") == "ok")
        except (urllib.error.URLError, OSError, ValueError):
            return False


# --- the server ---------------------------------------------------------------------------


class _Inbox:
    def __init__(self, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.sms: list[dict[str, Any]] = []
        self.push: list[dict[str, Any]] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    inbox: _Inbox
    server_version = "paymesh-fake-providers"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/healthz":
            self._json(200, {"status": "ok"})
        elif path == "/messages":
            with self.inbox.lock:
                self._json(200, {"sms": list(self.inbox.sms), "push": list(self.inbox.push)})
        else:
            self._json(404, {"message": "not found"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = urlsplit(self.path).path
        matched = _MESSAGES.match(path)
        if matched:
            self._twilio_message(matched.group(1), body)
        elif path.startswith("/push/"):
            self._push(path.removeprefix("/push/"), body)
        else:
            self._json(404, {"message": "not found"})

    def _twilio_message(self, account_sid: str, body: bytes) -> None:
        expected = base64.b64encode(f"{self.inbox.account_sid}:{self.inbox.auth_token}".encode()).decode()
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given, f"Basic {expected}") or account_sid != self.inbox.account_sid:
            self._twilio_error(401, 20003, "Authenticate")
            return
        form = {key: values[0] for key, values in parse_qs(body.decode()).items()}
        to, text, sender = form.get("To", ""), form.get("Body", ""), form.get("From") or form.get("MessagingServiceSid")
        if not to:
            self._twilio_error(400, 21604, "A 'To' phone number is required.")
        elif not text:
            self._twilio_error(400, 21602, "Message body is required.")
        elif not sender:
            self._twilio_error(400, 21603, "A 'From' phone number is required.")
        elif not _E164.match(to) or to == INVALID_NUMBER:
            self._twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        else:
            sid = "SM" + uuid.uuid4().hex
            now = format_datetime(datetime.now(UTC))
            message = {
                "sid": sid, "account_sid": account_sid, "to": to, "from": form.get("From"), "body": text,
                "messaging_service_sid": form.get("MessagingServiceSid"), "status": "queued", "num_segments": "1",
                "direction": "outbound-api", "api_version": "2010-04-01", "date_created": now, "date_updated": now,
                "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
            }  # fmt: skip
            with self.inbox.lock:
                self.inbox.sms.append(message)
            print(f"SMS {sid} to {to} ({len(text)} characters)", flush=True)
            self._json(201, message)

    def _push(self, subscription: str, body: bytes) -> None:
        problem = self._push_problem(body)
        if problem:
            self._json(400, {"message": problem})
            return
        if subscription.startswith("gone"):
            self._json(410, {"message": "the subscription has expired"})
            return
        record = {
            "subscription": subscription,
            "ttl": self.headers.get("TTL"),
            "urgency": self.headers.get("Urgency"),
            "authorization": self.headers.get("Authorization"),
            "body": base64.b64encode(body).decode(),
        }
        with self.inbox.lock:
            self.inbox.push.append(record)
        print(f"push to {subscription} ({len(body)} bytes)", flush=True)
        self._json(201, {"status": "accepted"})

    def _push_problem(self, body: bytes) -> str:
        if self.headers.get("Content-Encoding") != "aes128gcm" or not self.headers.get("TTL") or not body:
            return "needs an aes128gcm body and a TTL"
        return _vapid_problem(self.headers.get("Authorization", ""), f"http://{self.headers.get('Host', '')}")

    def _twilio_error(self, status: int, code: int, message: str) -> None:
        self._json(
            status,
            {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
             "status": status},
        )  # fmt: skip

    def _json(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per message is printed above


def _vapid_problem(authorization: str, origin: str) -> str:
    """Why a VAPID Authorization header is refused (RFC 8292), or "" if it verifies for `origin`."""
    from py_vapid import Vapid02  # only this server process needs it

    scheme, _, params = authorization.partition(" ")
    fields = dict(part.split("=", 1) for part in params.split(",") if "=" in part)
    if scheme.lower() != "vapid" or "t" not in fields or "k" not in fields:
        return "needs Authorization: vapid t=<jwt>,k=<public key>"
    try:
        if not Vapid02.verify(authorization):
            return "the VAPID signature does not verify"
        claims = json.loads(base64.urlsafe_b64decode(fields["t"].split(".")[1] + "=="))
    except Exception as error:
        return f"the VAPID token is malformed: {type(error).__name__}"
    if claims.get("aud") != origin:
        return f"the VAPID audience is {claims.get('aud')!r}, not {origin!r}"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.providers")
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    _Handler.inbox = _Inbox(os.environ[SID_ENV], os.environ[TOKEN_ENV])
    server = ThreadingHTTPServer((args.host, args.port), _Handler)
    print(f"fake SMS (Twilio API) and Web Push providers on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
