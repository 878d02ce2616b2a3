"""PostgreSQL restarting, Redis down: every method answers UNAVAILABLE with reason DEPENDENCY_UNAVAILABLE
(503 at the edge), never INTERNAL, so a client that follows the contract retries; the retry with the same
Idempotency-Key then succeeds once.

Each call is made twice: through Envoy (HTTP/JSON), and straight to the service over gRPC, so that the
answer is the service's own and not Envoy's "no healthy upstream" (also a 503 DEPENDENCY_UNAVAILABLE).
Run sparingly: it stops and starts the test stack's PostgreSQL and Redis.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from devstack.stack import Stack
from paymesh.auth.v1 import auth_pb2, auth_pb2_grpc
from paymesh.common.v1 import money_pb2
from paymesh.payment.v1 import payment_pb2, payment_pb2_grpc
from paymesh.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from paymesh_runtime.identity import AUTHORIZATION_HEADER
from tests.e2e.test_authorization import PASSWORD, Edge, Person
from tests.helpers import poll_until

pytestmark = pytest.mark.e2e
GrpcCall = Callable[[], Any]


def _usd(amount: int) -> dict[str, str]:
    return {"currency": "USD", "amount": str(amount)}


def _edge_reason(reply: httpx.Response) -> tuple[int, str]:
    body = reply.json()
    info = next(d for d in body.get("details", []) if d["@type"].endswith("google.rpc.ErrorInfo"))
    return reply.status_code, str(info["reason"])


def _grpc_reason(call: GrpcCall) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    error: grpc.Call = raised.value  # type: ignore[assignment]
    status = rpc_status.from_call(error)
    assert status is not None, error
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info), status
    return error.code(), info.reason


class Direct:
    """gRPC stubs straight to each service, with the person's bearer token as any client sends it."""

    def __init__(self, stack: Stack) -> None:
        self._channels = {
            name: grpc.insecure_channel(f"127.0.0.1:{stack.ports.grpc(name)}") for name in ("auth", "wallet", "payment")
        }
        self.auth = auth_pb2_grpc.AuthServiceStub(self._channels["auth"])  # type: ignore[no-untyped-call]
        self.wallet = wallet_pb2_grpc.WalletServiceStub(self._channels["wallet"])  # type: ignore[no-untyped-call]
        self.payment = payment_pb2_grpc.PaymentServiceStub(self._channels["payment"])  # type: ignore[no-untyped-call]

    @staticmethod
    def headers(who: Person, key: str | None = None) -> tuple[tuple[str, str], ...]:
        return ((AUTHORIZATION_HEADER, f"Bearer {who.token}"), ("idempotency-key", key or uuid.uuid4().hex))

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    return Edge(stack)


@pytest.fixture(scope="module")
def direct(stack: Stack) -> Iterator[Direct]:
    stubs = Direct(stack)
    yield stubs
    stubs.close()


def _email(edge: Edge, who: Person) -> str:
    return str(edge.call("GET", "/v1/users/me", who).json()["email"])


def test_while_postgresql_is_down_every_create_is_503_dependency_unavailable_and_the_retry_succeeds_once(
    edge: Edge, direct: Direct, stack: Stack
) -> None:
    payer, shop = edge.person(), edge.person("MERCHANT")
    deposit = {"source": {"card_token": "tok_visa"}, "destination_wallet_id": payer.wallet_id, "amount": _usd(5000)}
    assert edge.pay(payer, deposit)["state"] == "SUCCEEDED"
    sold = edge.pay(
        payer, {"source": {"wallet_id": payer.wallet_id}, "destination_wallet_id": shop.wallet_id, "amount": _usd(900)}
    )
    email = _email(edge, payer)
    pay_body = {"source": {"wallet_id": payer.wallet_id}, "destination_wallet_id": shop.wallet_id, "amount": _usd(150)}
    card_body = {"source": {"card_token": "tok_visa"}, "destination_wallet_id": payer.wallet_id, "amount": _usd(70)}
    payout_body = {"wallet_id": payer.wallet_id, "amount": _usd(40), "bank_account_token": "ba_ok"}
    retry_key = uuid.uuid4().hex
    usd = money_pb2.Money(currency="USD", amount=1)
    over_the_edge: list[tuple[str, str, Person | None, dict[str, Any], str | None]] = [
        ("POST", "/v1/payments", payer, pay_body, retry_key),
        ("POST", "/v1/payments", payer, card_body, None),
        ("POST", f"/v1/payments/{sold['payment_id']}/refunds", shop, {"amount": _usd(10)}, None),
        ("POST", "/v1/payouts", payer, payout_body, None),
        ("POST", "/v1/wallets", payer, {"currency": "EUR"}, None),
        ("GET", f"/v1/wallets/{payer.wallet_id}", payer, {}, None),
        ("POST", "/v1/auth/login", None, {"email": email, "password": PASSWORD}, None),
    ]
    straight: dict[str, GrpcCall] = {
        "CreatePayment (card)": lambda: direct.payment.CreatePayment(
            payment_pb2.CreatePaymentRequest(
                source=payment_pb2.PaymentSource(card_token="tok_visa"),
                destination_wallet_id=payer.wallet_id,
                amount=usd,
            ),
            metadata=direct.headers(payer),
            timeout=20,
        ),
        "CreateRefund": lambda: direct.payment.CreateRefund(
            payment_pb2.CreateRefundRequest(payment_id=sold["payment_id"], amount=usd),
            metadata=direct.headers(shop),
            timeout=20,
        ),
        "CreatePayout": lambda: direct.payment.CreatePayout(
            payment_pb2.CreatePayoutRequest(wallet_id=payer.wallet_id, amount=usd, bank_account_token="ba_ok"),
            metadata=direct.headers(payer),
            timeout=20,
        ),
        "CreateWallet": lambda: direct.wallet.CreateWallet(
            wallet_pb2.CreateWalletRequest(currency="GBP"), metadata=direct.headers(payer), timeout=20
        ),
        "Login": lambda: direct.auth.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD), timeout=20),
        "GetMe": lambda: direct.auth.GetMe(auth_pb2.GetMeRequest(), metadata=direct.headers(payer), timeout=20),
    }
    before = edge.call("GET", f"/v1/wallets/{payer.wallet_id}", payer).json()["posted_balance"]["amount"]
    stack.stop_component("postgres")
    try:
        for method, path, who, body, key in over_the_edge:
            headers = {"idempotency-key": key or uuid.uuid4().hex}
            reply = edge.call(method, path, who, body if method == "POST" else None, **headers)
            assert _edge_reason(reply) == (503, "DEPENDENCY_UNAVAILABLE"), (path, reply.text)
        for name, call in straight.items():
            assert _grpc_reason(call) == (grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE"), name
    finally:
        stack.start_component("postgres")
    # While PostgreSQL comes back, a client retrying with the same key sees 503s, then its one payment.
    answers: list[tuple[int, str]] = []

    def retried() -> bool:
        reply = edge.call("POST", "/v1/payments", payer, pay_body, **{"idempotency-key": retry_key})
        answers.append((200, "") if reply.status_code == 200 else _edge_reason(reply))
        return reply.status_code == 200

    poll_until(retried, timeout=90, interval=0.5)
    assert set(answers) <= {(200, ""), (503, "DEPENDENCY_UNAVAILABLE")}, answers
    after = poll_until(
        lambda: edge.call("GET", f"/v1/wallets/{payer.wallet_id}", payer).json()["posted_balance"]["amount"], timeout=30
    )
    assert int(after) == int(before) - 150  # the refused calls moved nothing, the retry moved it once


def test_while_redis_is_down_login_is_503_dependency_unavailable(edge: Edge, direct: Direct, stack: Stack) -> None:
    someone = edge.person()
    email = _email(edge, someone)
    stack.stop_component("redis")
    try:
        reply = edge.call("POST", "/v1/auth/login", None, {"email": email, "password": PASSWORD})
        assert _edge_reason(reply) == (503, "DEPENDENCY_UNAVAILABLE"), reply.text
        login = lambda: direct.auth.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD), timeout=20)  # noqa: E731
        assert _grpc_reason(login) == (grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE")
    finally:
        stack.start_component("redis")
    login = {"email": email, "password": PASSWORD}
    poll_until(lambda: edge.call("POST", "/v1/auth/login", None, login).status_code == 200, timeout=60, interval=0.5)
