"""Defence in depth, through the real Envoy: users see and act on their own
wallets, payments and notifications only (404 for anyone else, never the data;
admins list every user's notifications), merchants own their webhook
endpoints, and internal methods are not reachable."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from devstack.stack import Stack
from tests.helpers import auth_command, poll_until

pytestmark = pytest.mark.e2e
PASSWORD = "correct-horse-battery"


@dataclass(frozen=True)
class Person:
    user_id: str
    token: str
    wallet_id: str


class Edge:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.base = f"http://127.0.0.1:{stack.ports.envoy}"

    def call(
        self, method: str, path: str, who: Person | None = None, body: Any = None, **headers: str
    ) -> httpx.Response:
        if who is not None:
            headers["authorization"] = f"Bearer {who.token}"
        return httpx.request(method, self.base + path, json=body, headers=headers, timeout=15)

    def person(self, account_type: str = "CUSTOMER") -> Person:
        email = f"authz-{uuid.uuid4().hex[:10]}@example.com"
        user = self.call(
            "POST",
            "/v1/auth/register",
            None,
            {"email": email, "password": PASSWORD, "display_name": "T", "account_type": account_type},
        )
        assert user.status_code == 200, user.text
        login = self.call("POST", "/v1/auth/login", None, {"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        wallet = self.call("POST", "/v1/wallets", Person("", token, ""), {"currency": "USD"})
        assert wallet.status_code == 200, wallet.text
        return Person(user.json()["user_id"], token, wallet.json()["wallet_id"])

    def admin(self) -> Person:
        """An ADMIN account, made the only way there is: `python -m auth_svc create-admin`."""
        email = f"authz-admin-{uuid.uuid4().hex[:10]}@example.com"
        created = auth_command(self.stack, "create-admin", "--email", email, stdin=PASSWORD + "\n")
        assert created.returncode == 0, created.stderr
        login = self.call("POST", "/v1/auth/login", None, {"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        return Person("", login.json()["access_token"], "")

    def pay(self, payer: Person, body: dict[str, Any]) -> dict[str, Any]:
        reply = self.call("POST", "/v1/payments", payer, body, **{"idempotency-key": uuid.uuid4().hex})
        assert reply.status_code == 200, reply.text
        payment: dict[str, Any] = reply.json()
        return payment


def _usd(amount: int) -> dict[str, str]:
    return {"currency": "USD", "amount": str(amount)}


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    return Edge(stack)


def _reason(reply: httpx.Response) -> str:
    return str(reply.json()["details"][0]["reason"])


def test_a_wallet_is_only_its_owners(edge: Edge) -> None:
    alice, mallory = edge.person(), edge.person()
    for method, path, body in [
        ("GET", f"/v1/wallets/{alice.wallet_id}", None),
        ("GET", f"/v1/wallets/{alice.wallet_id}/entries", None),
        ("POST", f"/v1/wallets/{alice.wallet_id}:close", {}),
    ]:
        reply = edge.call(method, path, mallory, body)
        assert reply.status_code == 404, (path, reply.text)
        assert alice.wallet_id in reply.text  # names what was asked for, shows nothing of it
        assert "balance" not in reply.text
    listed = edge.call("GET", "/v1/wallets", mallory).json()["wallets"]
    assert [w["wallet_id"] for w in listed] == [mallory.wallet_id]
    reply = edge.call("GET", f"/v1/wallets?owner_id={alice.user_id}", mallory)
    assert reply.status_code == 403
    assert _reason(reply) == "ADMIN_REQUIRED"


def test_a_payment_is_only_its_payers_and_payees(edge: Edge) -> None:
    alice, shop, mallory = edge.person(), edge.person("MERCHANT"), edge.person()
    edge.pay(
        alice, {"source": {"card_token": "tok_visa"}, "destination_wallet_id": alice.wallet_id, "amount": _usd(5000)}
    )
    payment = edge.pay(
        alice,
        {
            "source": {"wallet_id": alice.wallet_id},
            "destination_wallet_id": shop.wallet_id,
            "amount": _usd(1200),
            "capture_method": "MANUAL",
        },
    )
    assert payment["state"] == "REQUIRES_CAPTURE"
    pid = payment["payment_id"]
    assert edge.call("GET", f"/v1/payments/{pid}", shop).status_code == 200  # the payee sees it
    key = {"idempotency-key": uuid.uuid4().hex}
    for method, path, body in [
        ("GET", f"/v1/payments/{pid}", None),
        ("POST", f"/v1/payments/{pid}:capture", {}),
        ("POST", f"/v1/payments/{pid}:cancel", {}),
        ("POST", f"/v1/payments/{pid}/refunds", {"reason": "mine now"}),
        ("GET", f"/v1/payments/{pid}/refunds", None),
    ]:
        reply = edge.call(method, path, mallory, body, **key)
        assert reply.status_code == 404, (path, reply.text)
    assert all(p["payment_id"] != pid for p in edge.call("GET", "/v1/payments", mallory).json().get("payments", []))
    # Paying out of someone else's wallet is refused the same way.
    stolen = edge.call(
        "POST",
        "/v1/payments",
        mallory,
        {"source": {"wallet_id": alice.wallet_id}, "destination_wallet_id": mallory.wallet_id, "amount": _usd(1)},
        **{"idempotency-key": uuid.uuid4().hex},
    )
    assert stolen.status_code == 404, stolen.text
    # Nothing moved: the payment still waits for its payer's capture.
    assert edge.call("GET", f"/v1/payments/{pid}", alice).json()["state"] == "REQUIRES_CAPTURE"
    captured = edge.call("POST", f"/v1/payments/{pid}:capture", alice, {})
    assert captured.json()["state"] == "SUCCEEDED", captured.text


def test_notifications_are_only_their_recipients(edge: Edge) -> None:
    alice, mallory = edge.person(), edge.person()
    # Alice's registration and wallet produce notifications for her alone.
    mine = poll_until(lambda: edge.call("GET", "/v1/notifications", alice).json().get("notifications"), timeout=60)
    assert {n["user_id"] for n in mine} == {alice.user_id}
    theirs = edge.call("GET", "/v1/notifications", mallory).json().get("notifications", [])
    assert {n["user_id"] for n in theirs} <= {mallory.user_id}
    assert not {n["notification_id"] for n in mine} & {n["notification_id"] for n in theirs}


def test_an_admin_lists_every_users_notifications(edge: Edge) -> None:
    alice, bob, admin = edge.person(), edge.person(), edge.admin()

    def listed_by_admin() -> set[str]:
        seen: set[str] = set()
        token = ""
        while True:  # newest first, so both recent recipients come early
            page = edge.call("GET", f"/v1/notifications?page_size=100&page_token={token}", admin).json()
            seen |= {n["user_id"] for n in page.get("notifications", [])}
            token = page.get("next_page_token", "")
            if {alice.user_id, bob.user_id} <= seen or not token:
                return seen

    poll_until(lambda: {alice.user_id, bob.user_id} <= listed_by_admin(), timeout=60)
    # Alice still sees only her own.
    mine = edge.call("GET", "/v1/notifications", alice).json().get("notifications", [])
    assert {n["user_id"] for n in mine} <= {alice.user_id}


def test_webhook_endpoints_belong_to_their_merchant(edge: Edge) -> None:
    shop, rival, customer = edge.person("MERCHANT"), edge.person("MERCHANT"), edge.person()
    body = {"url": "https://shop.example.com/hooks", "event_types": ["payment.succeeded"]}
    created = edge.call("POST", "/v1/webhook-endpoints", shop, body)
    assert created.status_code == 200, created.text
    endpoint = created.json()["endpoint_id"]
    assert edge.call("GET", f"/v1/webhook-endpoints/{endpoint}", rival).status_code == 404
    assert edge.call("DELETE", f"/v1/webhook-endpoints/{endpoint}", rival).status_code == 404
    assert edge.call("GET", f"/v1/webhook-endpoints/{endpoint}", shop).status_code == 200
    refused = edge.call("POST", "/v1/webhook-endpoints", customer, body)
    assert refused.status_code == 403
    assert _reason(refused) == "MERCHANT_REQUIRED"


def test_internal_wallet_methods_are_not_routed_and_no_header_impersonates(edge: Edge) -> None:
    alice, mallory = edge.person(), edge.person()
    # An internal method by its gRPC path, over HTTP/2, with a forged service token.
    with httpx.Client(http2=False) as client:
        reply = client.post(
            f"{edge.base}/paymesh.wallet.v1.WalletService/CreateHold",
            headers={
                "content-type": "application/grpc",
                "authorization": f"Bearer {mallory.token}",
                "x-paymesh-service-token": "v1.payment_svc.0.00",
            },
            content=b"\x00\x00\x00\x00\x00",
        )
    # Envoy answers itself: gRPC UNIMPLEMENTED, "no such route"; nothing reached wallet_svc.
    assert (reply.headers.get("grpc-status"), reply.headers.get("grpc-message")) == ("12", "no such route")
    # Claiming to be Alice with the claim headers changes nothing: Envoy replaces them.
    forged = edge.call("GET", f"/v1/wallets/{alice.wallet_id}", mallory, None, **{"x-paymesh-user-id": alice.user_id})
    assert forged.status_code == 404
