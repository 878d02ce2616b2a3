"""Authorizations not captured within the capture window are canceled by the
sweeper: the wallet hold is released and a card authorization voided."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from devstack.stack import Stack
from paymesh.payment.v1 import payment_pb2
from tests.integration.payment_support import Mesh, PaymentProcess, start_dependencies

pytestmark = pytest.mark.integration
P = payment_pb2.Payment
CAPTURE_WINDOW_SECONDS = 2


@pytest.fixture(scope="module")
async def mesh(infra: Stack) -> AsyncIterator[Mesh]:
    start_dependencies(infra)
    process = PaymentProcess(infra, env={"PAYMENT_CAPTURE_WINDOW_SECONDS": str(CAPTURE_WINDOW_SECONDS)})
    process.migrate()
    process.start()
    clients = Mesh(infra)
    yield clients
    await clients.close()
    process.stop()


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_an_uncaptured_wallet_authorization_expires_and_releases_its_hold(mesh: Mesh) -> None:
    alice, bob = name("alice"), name("bob")
    a, b = await mesh.wallet(alice, 1000), await mesh.wallet(bob)
    payment = await mesh.pay(alice, name("key"), source_wallet=a, destination=b, amount=300, manual=True)
    assert payment.state == P.REQUIRES_CAPTURE
    assert await mesh.balance(a, alice) == (1000, 300)

    final = await mesh.wait_final(payment.payment_id, alice, within=60)
    assert final.state == P.CANCELED
    assert await mesh.balance(a, alice) == (1000, 0)
    assert await mesh.balance(b, bob) == (0, 0)


async def test_an_uncaptured_card_authorization_expires_and_is_voided(mesh: Mesh) -> None:
    alice = name("alice")
    a = await mesh.wallet(alice)
    payment = await mesh.pay(alice, name("key"), card="tok_visa", destination=a, amount=700, manual=True)
    assert payment.state == P.REQUIRES_CAPTURE

    final = await mesh.wait_final(payment.payment_id, alice, within=60)
    assert final.state == P.CANCELED
    assert await mesh.balance(a, alice) == (0, 0)
    # The processor's own books: the authorization (found by the saga's idempotency key) was voided.
    url = f"http://127.0.0.1:{mesh.stack.ports.processor}/v1/authorizations"
    async with httpx.AsyncClient(timeout=5) as http:
        found = (await http.get(url, params={"idempotency_key": f"{payment.payment_id}:authorize"})).json()["data"]
    assert [auth["status"] for auth in found] == ["voided"]
