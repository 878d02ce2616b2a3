"""The edge's own limits, through the real Envoy: oversized bodies and secrets in query strings."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from devstack.envoy_config import MAX_REQUEST_BODY_BYTES
from devstack.stack import Stack
from tests.e2e.test_authorization import Edge, Person

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    return Edge(stack)


def _payment(payer: Person, description: str) -> dict[str, Any]:
    return {
        "source": {"card_token": "tok_visa"},
        "destination_wallet_id": payer.wallet_id,
        "amount": {"currency": "USD", "amount": "100"},
        "description": description,
    }


@pytest.mark.parametrize("size", [2 * MAX_REQUEST_BODY_BYTES, 10 * MAX_REQUEST_BODY_BYTES])
def test_a_body_over_the_limit_is_413_with_a_json_status_and_changes_nothing(edge: Edge, size: int) -> None:
    payer = edge.person()
    reply = edge.call("POST", "/v1/payments", payer, _payment(payer, "x" * size), **{"idempotency-key": "big"})
    assert reply.status_code == 413, reply.text[:300]
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["code"] == 3
    [info] = [d for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert info["reason"] == "REQUEST_TOO_LARGE"
    assert "4194304" not in reply.text  # no internal limit of a service leaks
    listed = edge.call("GET", "/v1/payments", payer).json()
    assert listed.get("payments", []) == []


def test_a_body_under_the_limit_still_goes_through(edge: Edge) -> None:
    payer = edge.person()
    reply = edge.call("POST", "/v1/payments", payer, _payment(payer, "y" * 400), **{"idempotency-key": "small"})
    assert reply.status_code == 200, reply.text[:300]


def test_the_access_log_never_records_query_strings(edge: Edge, stack: Stack) -> None:
    secret, marker = f"tok-{uuid.uuid4().hex}", str(uuid.uuid4())
    reply = httpx.get(f"{edge.base}/v1/payments/{marker}?access_token={secret}", timeout=10)
    assert reply.status_code == 401
    log = stack.run_dir / "logs" / "envoy.log"
    deadline = time.monotonic() + 15
    while marker not in log.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.2)  # the access log is flushed asynchronously
    text = log.read_text(errors="replace")
    assert marker in text  # the request was logged...
    assert secret not in text  # ...without its query string
