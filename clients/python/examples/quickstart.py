"""A first payment with the SDK: python examples/quickstart.py [EDGE] (default 127.0.0.1:8080).

Registers a customer and a merchant, tops up the customer's wallet by card
(the processor simulator's tok_visa), pays the merchant, refunds part of it,
shows a refused refund's reason, then lists the customer's payments. tests/e2e/test_client_sdk.py type-checks
this file under mypy --strict.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from paymesh_client import FailedPrecondition, PaymeshClient, auth_pb2, money

PASSWORD = "correct horse battery"


async def sign_up(edge: str, name: str, account_type: auth_pb2.User.AccountType.ValueType) -> str:
    """A new account's access token."""
    email = f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.com"
    async with PaymeshClient(edge) as anonymous:
        await anonymous.register(email, PASSWORD, name, account_type)
        return (await anonymous.login(email, PASSWORD)).access_token


async def main(edge: str) -> None:
    customer_token = await sign_up(edge, "Ada", auth_pb2.User.CUSTOMER)
    merchant_token = await sign_up(edge, "Shop", auth_pb2.User.MERCHANT)
    async with PaymeshClient(edge, token=customer_token) as ada, PaymeshClient(edge, token=merchant_token) as shop:
        wallet = await ada.create_wallet("USD")
        till = await shop.create_wallet("USD")
        deposit = await ada.deposit(wallet.wallet_id, money("USD", 10_000), card_token="tok_visa")
        payment = await ada.pay(wallet.wallet_id, till.wallet_id, money("USD", 2_500), description="order 1")
        refund = await shop.refund(payment.payment_id, money("USD", 500), reason="one item returned")
        print(f"deposit {deposit.payment_id}: {deposit.state}; payment {payment.payment_id}; refund {refund.refund_id}")
        try:
            await shop.refund(payment.payment_id, money("USD", 9_999))  # more than is left to refund
        except FailedPrecondition as error:
            print(f"refused as expected: {error.reason}, refundable {error.metadata.get('refundable')}")
        async for listed in ada.list_payments(page_size=1):
            print(listed.payment_id, listed.amount.amount, listed.amount.currency)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080"))
