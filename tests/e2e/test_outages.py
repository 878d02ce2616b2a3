"""A PostgreSQL outage: every service stops reporting SERVING while it lasts and
serves again, without a restart, once the database is back."""

from __future__ import annotations

import uuid

import httpx
import pytest

from devstack.services import grpc_serving
from devstack.stack import Stack
from tests.helpers import poll_until

pytestmark = pytest.mark.e2e
SERVICES = ("auth", "wallet", "payment", "notify")


def test_services_follow_postgres_down_and_back_up(stack: Stack) -> None:
    addresses = {name: f"127.0.0.1:{stack.ports.grpc(name)}" for name in SERVICES}
    assert all(grpc_serving(address) for address in addresses.values())
    stack.stop_component("postgres")
    try:
        for address in addresses.values():
            poll_until(lambda address=address: not grpc_serving(address), timeout=30)  # type: ignore[misc]
    finally:
        stack.start_component("postgres")
    for address in addresses.values():
        poll_until(lambda address=address: grpc_serving(address), timeout=60)  # type: ignore[misc]
    # And real database work through the edge succeeds again (the pools reconnected).
    edge = f"http://127.0.0.1:{stack.ports.envoy}"
    login = {"email": f"nobody-{uuid.uuid4().hex[:8]}@example.com", "password": "x" * 12}
    reply = httpx.post(f"{edge}/v1/auth/login", json=login, timeout=10)
    assert reply.status_code == 401, reply.text
    assert reply.json()["details"][0]["reason"] == "INVALID_CREDENTIALS"
