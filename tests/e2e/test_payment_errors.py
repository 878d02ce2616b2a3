"""Payment errors through the real Envoy and services: each gRPC status comes back
as its documented HTTP code with a JSON google.rpc.Status body (ErrorInfo reason,
BadRequest field), and the failed request changes nothing.

INVALID_ARGUMENT 400, ALREADY_EXISTS 409 (IDEMPOTENCY_KEY_REUSED), ABORTED 409
(IDEMPOTENCY_KEY_IN_USE), UNAVAILABLE 503 (PROCESSOR_UNAVAILABLE); a replay
answers the recorded response with `idempotent-replayed: true`.
"""

from __future__ import annotations

import concurrent.futures
import json
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devstack.stack import Stack
from tests.e2e.test_authorization import Edge, Person

pytestmark = pytest.mark.e2e


def _usd(amount: int) -> dict[str, str]:
    return {"currency": "USD", "amount": str(amount)}


class Simulator:
    """The processor simulator's fault knobs (POST /_sim/config)."""

    def __init__(self, stack: Stack) -> None:
        self.url = f"http://127.0.0.1:{stack.ports.processor}/_sim/config"

    def configure(self, **faults: float) -> None:
        request = urllib.request.Request(self.url, data=json.dumps(faults).encode(), method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=5):  # noqa: S310 - loopback
            pass


@pytest.fixture
def simulator(stack: Stack) -> Iterator[Simulator]:
    sim = Simulator(stack)
    yield sim
    sim.configure(latency_ms=0, fail_next=0)


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    return Edge(stack)


@pytest.fixture(scope="module")
def funded(edge: Edge) -> Person:
    payer = edge.person()
    deposit = edge.pay(
        payer, {"source": {"card_token": "tok_visa"}, "destination_wallet_id": payer.wallet_id, "amount": _usd(5000)}
    )
    assert deposit["state"] == "SUCCEEDED", deposit
    return payer


def _create(edge: Edge, who: Person, body: dict[str, Any], key: str | None) -> httpx.Response:
    headers = {"idempotency-key": key} if key is not None else {}
    return edge.call("POST", "/v1/payments", who, body, **headers)


def _error(reply: httpx.Response) -> tuple[int, str, dict[str, Any]]:
    """(HTTP status, ErrorInfo reason, the JSON body) of an error answer."""
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    body: dict[str, Any] = reply.json()
    info = next(d for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo"))
    assert info["domain"] == "paymesh"
    assert body["message"]
    return reply.status_code, str(info["reason"]), body


def _posted(edge: Edge, who: Person) -> int:
    return int(edge.call("GET", f"/v1/wallets/{who.wallet_id}", who).json()["posted_balance"]["amount"])


def _payment_count(edge: Edge, who: Person) -> int:
    return len(edge.call("GET", "/v1/payments?page_size=100", who).json().get("payments", []))


def test_bad_payment_input_is_a_400_naming_the_field_and_changes_nothing(edge: Edge, funded: Person) -> None:
    shop = edge.person("MERCHANT")
    before = (_posted(edge, funded), _payment_count(edge, funded))
    good = {"source": {"wallet_id": funded.wallet_id}, "destination_wallet_id": shop.wallet_id, "amount": _usd(100)}
    cases = [
        ({**good, "amount": _usd(-5)}, uuid.uuid4().hex, "amount"),
        ({**good, "amount": {"currency": "usd", "amount": "100"}}, uuid.uuid4().hex, "amount.currency"),
        (good, None, "idempotency-key"),
    ]
    for body, key, field in cases:
        status, _, error = _error(_create(edge, funded, body, key))
        assert status == 400
        assert error["code"] == 3  # INVALID_ARGUMENT
        violations = [
            v["field"]
            for d in error["details"]
            if d["@type"].endswith("google.rpc.BadRequest")
            for v in d["field_violations"]
        ]
        assert any(v.startswith(field) for v in violations), (field, error)
    assert (_posted(edge, funded), _payment_count(edge, funded)) == before


def test_a_replay_answers_the_original_and_another_body_under_the_key_is_a_409(edge: Edge, funded: Person) -> None:
    shop = edge.person("MERCHANT")
    body = {"source": {"wallet_id": funded.wallet_id}, "destination_wallet_id": shop.wallet_id, "amount": _usd(250)}
    key = uuid.uuid4().hex
    first = _create(edge, funded, body, key)
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers

    replay = _create(edge, funded, body, key)
    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json()

    status, reason, _ = _error(_create(edge, funded, {**body, "amount": _usd(251)}, key))
    assert (status, reason) == (409, "IDEMPOTENCY_KEY_REUSED")
    assert _posted(edge, shop) == 250  # one payment, however many calls


def test_the_same_key_while_the_first_request_runs_is_a_409(edge: Edge, funded: Person, simulator: Simulator) -> None:
    simulator.configure(latency_ms=2000)  # the first request waits on the processor
    body = {"source": {"card_token": "tok_visa"}, "destination_wallet_id": funded.wallet_id, "amount": _usd(300)}
    key = uuid.uuid4().hex
    before = _posted(edge, funded)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        racing = [pool.submit(_create, edge, funded, body, key) for _ in range(2)]
        replies = sorted((f.result(timeout=60) for f in racing), key=lambda reply: reply.status_code)
    assert replies[0].status_code == 200, replies[0].text
    assert _error(replies[1])[:2] == (409, "IDEMPOTENCY_KEY_IN_USE")
    assert _posted(edge, funded) == before + 300
    assert _create(edge, funded, body, key).headers["idempotent-replayed"] == "true"


def test_an_unavailable_processor_is_a_503_and_charges_nothing(
    edge: Edge, funded: Person, simulator: Simulator
) -> None:
    simulator.configure(fail_next=3)  # every attempt of one processor call answers 503
    body = {"source": {"card_token": "tok_visa"}, "destination_wallet_id": funded.wallet_id, "amount": _usd(400)}
    key = uuid.uuid4().hex
    before = _posted(edge, funded)
    status, reason, error = _error(_create(edge, funded, body, key))
    assert (status, reason) == (503, "PROCESSOR_UNAVAILABLE")
    assert error["code"] == 14  # UNAVAILABLE
    assert _posted(edge, funded) == before
    # The recorded failure replays as the same failure, also once the processor is back.
    replay = _create(edge, funded, body, key)
    assert _error(replay)[:2] == (503, "PROCESSOR_UNAVAILABLE")
    assert replay.headers["idempotent-replayed"] == "true"
