"""The edge's public health endpoint, GET /healthz, on the real mesh: Envoy
answers it itself (no token) from its active grpc.health.v1 checks of the four
services, so it turns 503 while one of them is down and 200 once it is back."""

from __future__ import annotations

import uuid

import httpx
import pytest

from devstack import envoy_config
from devstack.stack import Stack
from tests.helpers import poll_until

pytestmark = pytest.mark.e2e
PASSWORD = "correct horse battery"


def _healthz(stack: Stack, **headers: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{stack.ports.envoy}{envoy_config.HEALTH_PATH}", headers=headers, timeout=10)


def _status_becomes(stack: Stack, status: int, timeout: float) -> httpx.Response:
    def reply() -> httpx.Response | None:
        response = _healthz(stack)
        return response if response.status_code == status else None

    found: httpx.Response = poll_until(reply, timeout=timeout, interval=0.25)
    return found


def _access_token(stack: Stack) -> str:
    edge = f"http://127.0.0.1:{stack.ports.envoy}"
    email = f"health-{uuid.uuid4().hex[:10]}@example.com"
    account = {"email": email, "password": PASSWORD, "display_name": "H", "account_type": "CUSTOMER"}
    assert httpx.post(f"{edge}/v1/auth/register", json=account, timeout=10).status_code == 200
    login = httpx.post(f"{edge}/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=10)
    assert login.status_code == 200, login.text
    return str(login.json()["access_token"])


def test_healthz_is_public_and_serving_while_every_service_is(stack: Stack) -> None:
    healthy = _status_becomes(stack, 200, timeout=30)
    assert healthy.headers["content-type"] == "application/json"
    assert healthy.json() == {"status": "SERVING"}
    # Public: a missing or bad token changes nothing.
    assert _healthz(stack, authorization="Bearer not.a.jwt").status_code == 200


def test_healthz_is_503_while_a_service_is_stopped_and_200_once_it_is_back(stack: Stack) -> None:
    _status_becomes(stack, 200, timeout=30)
    token = _access_token(stack)
    notifications = f"http://127.0.0.1:{stack.ports.envoy}/v1/notifications"
    stack.stop_component("notify")
    try:
        down = _status_becomes(stack, 503, timeout=30)
        body = down.json()
        assert (body["code"], body["message"]) == (14, "NOT_SERVING")
        assert body["details"][0]["reason"] == "DEPENDENCY_UNAVAILABLE"
        # The rest of the edge keeps working; notify's routes fail fast with 503.
        assert _access_token(stack)
        reply = httpx.get(notifications, headers={"authorization": f"Bearer {token}"}, timeout=30)
        assert reply.status_code == 503, reply.text
        assert reply.json()["details"][0]["reason"] == "DEPENDENCY_UNAVAILABLE"
    finally:
        stack.start_component("notify")
    assert _status_becomes(stack, 200, timeout=60).json() == {"status": "SERVING"}
    reply = httpx.get(notifications, headers={"authorization": f"Bearer {token}"}, timeout=30)
    assert reply.status_code == 200, reply.text
