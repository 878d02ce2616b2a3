"""The logs of the running stack join up: every service line is JSON in UTC, each RPC writes one INFO line
carrying the edge's request id and the trace, and the edge's access log names the same request and trace.

Reads the log files of the test stack (`.run/test-<base>/logs`), where each
service's migration output and its serving output land, as `make logs`
shows them. That no credential is in any of them is checked at the end of
the session (tests/conftest.py, tests/secret_values.py).
"""

from __future__ import annotations

import calendar
import json
import re
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from devstack.ports import SERVICES
from devstack.stack import Stack
from tests.e2e.test_authorization import Edge, Person

pytestmark = pytest.mark.e2e

# RFC 3339 in UTC, milliseconds: what paymesh_runtime.telemetry_logs writes.
UTC_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
# What devstack itself writes into a component's log: a line before each start and each migration.
DEVSTACK_MARKER = re.compile(r"--- devstack: .* ---")
RPC_LOGGER = "paymesh.rpc"
IDS = ("trace_id", "span_id", "request_id")


def _lines(stack: Stack, component: str) -> list[str]:
    return (stack.run_dir / "logs" / f"{component}.log").read_text(errors="replace").splitlines()


def _entries(stack: Stack, component: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _lines(stack, component) if line.startswith("{")]


def _of_request(stack: Stack, component: str, request_id: str, count: int, timeout: float = 15) -> list[dict[str, Any]]:
    """The RPC lines of `component` for `request_id`, once there are at least `count` (logs are buffered)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            e for e in _entries(stack, component) if e.get("request_id") == request_id and e.get("logger") == RPC_LOGGER
        ]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    return Edge(stack)


def test_every_line_a_service_wrote_is_json_in_utc_migrations_included(edge: Edge, stack: Stack) -> None:
    edge.person()  # at least one request served by auth and wallet
    now = time.time()
    for service in SERVICES:
        lines = [line for line in _lines(stack, service) if line.strip()]
        assert lines, service
        other = [line for line in lines if not line.startswith("{") and not DEVSTACK_MARKER.fullmatch(line)]
        assert other == [], f"{service}.log: lines that are not JSON: {other[:3]}"
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        assert all(UTC_STAMP.fullmatch(e["ts"]) for e in entries), service
        # UTC, not local time labelled Z: the newest line was written a moment ago.
        newest = calendar.timegm(time.strptime(entries[-1]["ts"][:19], "%Y-%m-%dT%H:%M:%S"))
        assert abs(newest - now) < 600, (service, entries[-1]["ts"])
        # The migration ran first and wrote its lines as JSON in the same file (python -m <svc> migrate).
        assert any(e["logger"].startswith("alembic") for e in entries), f"{service}.log: no migration lines"


def test_each_rpc_of_a_request_is_one_info_line_joined_to_the_edge_and_the_trace(edge: Edge, stack: Stack) -> None:
    payer = edge.person()
    deposit = {"source": {"card_token": "tok_visa"}, "destination_wallet_id": payer.wallet_id, "amount": {
        "currency": "USD", "amount": "1200"}}  # fmt: skip
    reply = edge.call("POST", "/v1/payments", payer, deposit, **{"idempotency-key": uuid.uuid4().hex})
    assert reply.status_code == 200, reply.text
    request_id = reply.headers["x-request-id"]

    (served,) = _of_request(stack, "payment", request_id, 1)
    assert (served["level"], served["rpc_method"], served["rpc_code"]) == (
        "INFO", "/paymesh.payment.v1.PaymentService/CreatePayment", "OK")  # fmt: skip
    assert served["duration_ms"] > 0
    # payment_svc's calls to wallet_svc carry the edge's request id on: wallet_svc's lines name it too.
    wallet_lines = _of_request(stack, "wallet", request_id, 1)
    assert wallet_lines, "wallet_svc logged no line with the edge's request id"
    calls = Counter((e["rpc_method"], e["span_id"]) for e in wallet_lines)
    assert max(calls.values()) == 1  # one line per call
    # Every line of the request names its trace; the edge's access log line names the same one.
    for entry in [served, *wallet_lines]:
        assert all(entry.get(key) for key in IDS), entry
        assert entry["trace_id"] == served["trace_id"]
    access = _access_line(stack, request_id)
    assert access["trace_id"] == served["trace_id"]
    assert access["path"] == "/v1/payments"


def test_auth_and_wallet_log_each_rpc_they_serve(edge: Edge, stack: Stack) -> None:
    email = f"logs-{uuid.uuid4().hex[:10]}@example.com"
    login = {"email": email, "password": "correct-horse-battery"}
    registered = edge.call(
        "POST", "/v1/auth/register", None, {**login, "display_name": "L", "account_type": "CUSTOMER"}
    )
    refused = edge.call("POST", "/v1/auth/login", None, {**login, "password": "not-the-password-1"})
    assert (registered.status_code, refused.status_code) == (200, 401)
    token = edge.call("POST", "/v1/auth/login", None, login).json()["access_token"]
    wallet = edge.call("POST", "/v1/wallets", Person("", token, ""), {"currency": "EUR"})
    assert wallet.status_code == 200, wallet.text

    expected = [
        ("auth", registered, "/paymesh.auth.v1.AuthService/Register", "OK"),
        ("auth", refused, "/paymesh.auth.v1.AuthService/Login", "UNAUTHENTICATED"),
        ("wallet", wallet, "/paymesh.wallet.v1.WalletService/CreateWallet", "OK"),
    ]
    for service, reply, method, code in expected:
        (line,) = _of_request(stack, service, reply.headers["x-request-id"], 1)
        assert (line["level"], line["rpc_method"], line["rpc_code"]) == ("INFO", method, code)
        assert all(line.get(key) for key in IDS), line
        assert line["trace_id"] == _access_line(stack, reply.headers["x-request-id"])["trace_id"]


def test_what_the_edge_answers_itself_is_logged_without_the_query_string(edge: Edge, stack: Stack) -> None:
    """Unknown routes and missing credentials never reach a service or the transcoder, which would drop the
    query string: the access log must not keep it either (no field, grpc_method included)."""
    secret = f"qs-{uuid.uuid4().hex}"
    replies = [
        httpx.get(f"{edge.base}/v1/no-such-thing?access_token={secret}", timeout=10),
        httpx.get(f"{edge.base}/v1/payments?access_token={secret}&page_size=1", timeout=10),
        httpx.post(f"{edge.base}/v1/wallets?password={secret}", json={}, timeout=10),
    ]
    assert [r.status_code for r in replies] == [404, 401, 401]
    for reply in replies:
        access = _access_line(stack, reply.headers["x-request-id"])
        assert secret not in json.dumps(access), access
        assert "?" not in access["path"]
    assert secret not in (stack.run_dir / "logs" / "envoy.log").read_text(errors="replace")


def _access_line(stack: Stack, request_id: str, timeout: float = 15) -> dict[str, Any]:
    """Envoy's access log line of a request (flushed asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in _entries(stack, "envoy") if e.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, f"{len(found)} access log lines for {request_id}"
            return found[0]
        time.sleep(0.3)
