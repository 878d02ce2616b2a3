"""The bench's customers, set up through the edge like any client: sign-up, login, a USD wallet, a card deposit."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

CURRENCY = "USD"
CARD_TOKEN = "tok_visa"  # noqa: S105 -- the processor simulator's always-approved test card
# The edge answers 429 past its local rate limit (auth_svc's bucket is small):
# set-up waits and retries rather than fail.
_RATE_LIMITED = 429
_RETRIES = 20
# Access tokens live 15 minutes (AUTH_ACCESS_TOKEN_TTL_SECONDS): renewed before a step when older than this.
TOKEN_RENEW_AFTER_S = 600.0


class SetupFailed(RuntimeError):
    pass


@dataclass
class Customer:
    label: str
    email: str
    password: str
    account_type: str
    user_id: str = ""
    wallet_id: str = ""
    token: str = ""
    token_time: float = 0.0

    @property
    def bearer(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


def call(edge: httpx.Client, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    for _ in range(_RETRIES):
        response = edge.request(method, path, **kwargs)
        if response.status_code != _RATE_LIMITED:
            break
        time.sleep(float(response.headers.get("retry-after", "1")))
    if response.status_code >= 300:
        raise SetupFailed(f"{method} {path} → {response.status_code} {response.text[:300]}")
    body: dict[str, Any] = response.json()
    return body


def login(edge: httpx.Client, customer: Customer) -> None:
    body = call(edge, "POST", "/v1/auth/login", json={"email": customer.email, "password": customer.password})
    customer.token, customer.token_time = body["access_token"], time.monotonic()


def create(edge: httpx.Client, label: str, account_type: str = "CUSTOMER") -> Customer:
    """A new user (unique email per run) with a fresh token and one USD wallet."""
    customer = Customer(label, f"bench-{label}-{uuid.uuid4().hex[:10]}@example.com", uuid.uuid4().hex, account_type)
    user = call(
        edge,
        "POST",
        "/v1/auth/register",
        json={
            "email": customer.email,
            "password": customer.password,
            "display_name": f"bench {label}",
            "account_type": account_type,
        },
    )
    customer.user_id = user.get("user_id") or user["id"]
    login(edge, customer)
    wallet = call(edge, "POST", "/v1/wallets", json={"currency": CURRENCY}, headers=customer.bearer)
    customer.wallet_id = wallet["wallet_id"]
    return customer


def renew_tokens(edge: httpx.Client, customers: list[Customer]) -> None:
    """Logs in again whoever's token would expire within the next step."""
    for customer in customers:
        if time.monotonic() - customer.token_time > TOKEN_RENEW_AFTER_S:
            login(edge, customer)


def wallet_payment(payer: Customer, destination_wallet_id: str, amount: int) -> dict[str, Any]:
    """A CreatePaymentRequest (the JSON mapping) from the payer's wallet."""
    return {
        "source": {"wallet_id": payer.wallet_id},
        "destination_wallet_id": destination_wallet_id,
        "amount": {"currency": CURRENCY, "amount": str(amount)},
    }


def card_deposit(customer: Customer, amount: int) -> dict[str, Any]:
    """A CreatePaymentRequest charging the test card into the customer's own wallet."""
    return {
        "source": {"card_token": CARD_TOKEN},
        "destination_wallet_id": customer.wallet_id,
        "amount": {"currency": CURRENCY, "amount": str(amount)},
    }


def deposit(edge: httpx.Client, customer: Customer, amount: int, timeout_s: float = 30.0) -> None:
    """Funds a wallet by card and waits for the payment to succeed."""
    headers = {**customer.bearer, "idempotency-key": uuid.uuid4().hex}
    payment = call(edge, "POST", "/v1/payments", json=card_deposit(customer, amount), headers=headers)
    deadline = time.monotonic() + timeout_s
    while payment["state"] != "SUCCEEDED":
        if time.monotonic() > deadline or payment["state"] in ("FAILED", "CANCELED"):
            raise SetupFailed(f"deposit into {customer.label}'s wallet did not succeed: {payment['state']}")
        time.sleep(0.2)
        payment = call(edge, "GET", f"/v1/payments/{payment['payment_id']}", headers=customer.bearer)
