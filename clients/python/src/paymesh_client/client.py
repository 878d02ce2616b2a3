"""PaymeshClient: a thin async client over paymesh's gRPC API.

It adds to the generated stubs (exposed as `auth`, `wallets`, `payments`,
`notifications`) only what every caller would otherwise write again:

- the bearer token on every call (`authorization: Bearer ...`);
- one Idempotency-Key per logical money call (payment, refund, payout),
  generated unless given, and sent again unchanged on the client's own retries,
  so that a retry can never move money twice;
- retries of UNAVAILABLE and DEADLINE_EXCEEDED with capped exponential backoff
  and jitter, only where a retry is safe: a call with an idempotency key, or a
  read (Get*, List*); on a retry with our key, ABORTED IDEMPOTENCY_KEY_IN_USE
  (the first attempt is still running on the server) is waited out too;
- typed exceptions (paymesh_client.errors) carrying ErrorInfo's reason;
- iteration over paginated lists (page_token / next_page_token).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import grpc

from paymesh_client.errors import Aborted, PaymeshError, error_from_rpc
from paymesh_client.proto.paymesh.auth.v1 import auth_pb2, auth_pb2_grpc
from paymesh_client.proto.paymesh.common.v1 import money_pb2
from paymesh_client.proto.paymesh.notify.v1 import notify_pb2_grpc
from paymesh_client.proto.paymesh.payment.v1 import payment_pb2, payment_pb2_grpc
from paymesh_client.proto.paymesh.wallet.v1 import wallet_pb2, wallet_pb2_grpc

if TYPE_CHECKING:
    from paymesh_client.proto.paymesh.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub
    from paymesh_client.proto.paymesh.notify.v1.notify_pb2_grpc import NotifyServiceAsyncStub
    from paymesh_client.proto.paymesh.payment.v1.payment_pb2_grpc import PaymentServiceAsyncStub
    from paymesh_client.proto.paymesh.wallet.v1.wallet_pb2_grpc import WalletServiceAsyncStub

__all__ = ["PaymeshClient", "RetryPolicy", "money"]

IDEMPOTENCY_KEY = "idempotency-key"
USER_AGENT = "paymesh-client-python/0.1.0"


class _PageRequest(Protocol):
    page_token: str


class _PageResponse(Protocol):
    @property
    def next_page_token(self) -> str: ...


Request = TypeVar("Request")
Response = TypeVar("Response")
PageRequest = TypeVar("PageRequest", bound=_PageRequest)
PageResponse = TypeVar("PageResponse", bound=_PageResponse)
Item = TypeVar("Item")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a safe call is retried (attempts counts the first one)."""

    attempts: int = 4
    initial_backoff: float = 0.2
    max_backoff: float = 3.0
    multiplier: float = 2.0

    def backoff(self, retry: int) -> float:
        """Seconds before retry number `retry` (1, 2...): full jitter under a capped exponential."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not a secret


def money(currency: str, amount: int) -> money_pb2.Money:
    """An amount in minor units of an ISO 4217 currency: money("USD", 2500) is 25.00 USD."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError("amount is an int of minor units (2500 for 25.00 USD), never a float")
    return money_pb2.Money(currency=currency, amount=amount)


_RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class PaymeshClient:
    """An async client of one paymesh edge (Envoy, e.g. "127.0.0.1:8080") or service.

    async with PaymeshClient("127.0.0.1:8080", token=access_token) as client:
        wallet = await client.create_wallet("USD")
    """

    def __init__(
        self,
        target: str,
        token: str | None = None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        interceptors: Sequence[grpc.aio.UnaryUnaryClientInterceptor[Any, Any]] | None = None,
    ) -> None:
        """`timeout` is per attempt, in seconds; `interceptors` see every attempt (tracing, logging)."""
        options = [("grpc.primary_user_agent", USER_AGENT)]
        # grpc-stubs leaves the channel's interceptor type open (a "partial stub").
        chained = cast("Sequence[grpc.aio.ClientInterceptor] | None", interceptors)
        self._channel = (
            grpc.aio.secure_channel(target, credentials, options=options, interceptors=chained)
            if credentials is not None
            else grpc.aio.insecure_channel(target, options=options, interceptors=chained)
        )
        self.token = token
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.auth: AuthServiceAsyncStub = auth_pb2_grpc.AuthServiceStub(self._channel)
        self.wallets: WalletServiceAsyncStub = wallet_pb2_grpc.WalletServiceStub(self._channel)
        self.payments: PaymentServiceAsyncStub = payment_pb2_grpc.PaymentServiceStub(self._channel)
        self.notifications: NotifyServiceAsyncStub = notify_pb2_grpc.NotifyServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close(None)

    async def __aenter__(self) -> PaymeshClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    # --- any unary method of the stubs ----------------------------------------------------
    async def call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[Request, Response],
        request: Request,
        *,
        idempotency_key: str | None = None,
        safe: bool = False,
    ) -> Response:
        """One logical call of `method`; retried when it has an idempotency key or is `safe` (a read).

        Raises paymesh_client.errors.PaymeshError's subclass for the status.
        """
        metadata: list[tuple[str, str]] = []
        if self.token:
            metadata.append(("authorization", f"Bearer {self.token}"))
        if idempotency_key is not None:
            metadata.append((IDEMPOTENCY_KEY, idempotency_key))
        retried = idempotency_key is not None or safe
        attempt = 1
        while True:
            try:
                return await method(request, timeout=self.timeout, metadata=tuple(metadata))
            except grpc.aio.AioRpcError as rpc_error:
                error = error_from_rpc(rpc_error)
            if not (retried and attempt < self.retry.attempts and self._worth_retrying(error, attempt)):
                raise error
            await asyncio.sleep(self.retry.backoff(attempt))
            attempt += 1

    @staticmethod
    def _worth_retrying(error: PaymeshError, attempt: int) -> bool:
        # Our own earlier attempt with this key may still be running on the server.
        in_use = isinstance(error, Aborted) and error.reason == "IDEMPOTENCY_KEY_IN_USE" and attempt > 1
        return error.code in _RETRIED or in_use

    async def pages(
        self, method: grpc.aio.UnaryUnaryMultiCallable[PageRequest, PageResponse], request: PageRequest
    ) -> AsyncIterator[PageResponse]:
        """Every page of a List method, from `request`'s page_token (usually empty) to the last."""
        while True:
            page = await self.call(method, request, safe=True)
            yield page
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    async def items(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[PageRequest, PageResponse],
        request: PageRequest,
        of_page: Callable[[PageResponse], Iterable[Item]],
    ) -> AsyncIterator[Item]:
        """Every item of a List method across its pages, e.g. items(..., lambda page: page.payments)."""
        async for page in self.pages(method, request):
            for item in of_page(page):
                yield item

    # --- accounts -------------------------------------------------------------------------
    async def register(
        self,
        email: str,
        password: str,
        display_name: str,
        account_type: auth_pb2.User.AccountType.ValueType = auth_pb2.User.CUSTOMER,
    ) -> auth_pb2.User:
        request = auth_pb2.RegisterRequest(
            email=email, password=password, display_name=display_name, account_type=account_type
        )
        return await self.call(self.auth.Register, request)

    async def login(self, email: str, password: str) -> auth_pb2.TokenPair:
        """A token pair; pass its access_token to a PaymeshClient (or set `client.token`)."""
        return await self.call(self.auth.Login, auth_pb2.LoginRequest(email=email, password=password))

    # --- wallets --------------------------------------------------------------------------
    async def create_wallet(self, currency: str) -> wallet_pb2.Wallet:
        return await self.call(self.wallets.CreateWallet, wallet_pb2.CreateWalletRequest(currency=currency))

    async def get_wallet(self, wallet_id: str) -> wallet_pb2.Wallet:
        return await self.call(self.wallets.GetWallet, wallet_pb2.GetWalletRequest(wallet_id=wallet_id), safe=True)

    def list_wallets(self, page_size: int = 0) -> AsyncIterator[wallet_pb2.Wallet]:
        request = wallet_pb2.ListWalletsRequest(page_size=page_size)
        return self.items(self.wallets.ListWallets, request, lambda page: page.wallets)

    def list_entries(self, wallet_id: str, page_size: int = 0) -> AsyncIterator[wallet_pb2.Entry]:
        request = wallet_pb2.ListEntriesRequest(wallet_id=wallet_id, page_size=page_size)
        return self.items(self.wallets.ListEntries, request, lambda page: page.entries)

    # --- money: one idempotency key per call, unless given --------------------------------
    async def deposit(
        self, wallet_id: str, amount: money_pb2.Money, card_token: str, *, idempotency_key: str | None = None
    ) -> payment_pb2.Payment:
        """A card payment into one's own wallet (a top-up)."""
        request = payment_pb2.CreatePaymentRequest(
            source=payment_pb2.PaymentSource(card_token=card_token), destination_wallet_id=wallet_id, amount=amount
        )
        return await self.call(self.payments.CreatePayment, request, idempotency_key=_key(idempotency_key))

    async def pay(
        self,
        from_wallet_id: str,
        to_wallet_id: str,
        amount: money_pb2.Money,
        *,
        description: str = "",
        idempotency_key: str | None = None,
    ) -> payment_pb2.Payment:
        """A wallet-to-wallet payment."""
        request = payment_pb2.CreatePaymentRequest(
            source=payment_pb2.PaymentSource(wallet_id=from_wallet_id),
            destination_wallet_id=to_wallet_id,
            amount=amount,
            description=description,
        )
        return await self.call(self.payments.CreatePayment, request, idempotency_key=_key(idempotency_key))

    async def refund(
        self,
        payment_id: str,
        amount: money_pb2.Money | None = None,
        *,
        reason: str = "",
        idempotency_key: str | None = None,
    ) -> payment_pb2.Refund:
        """Refunds `amount` of a SUCCEEDED payment (all of what is left when None); the payee calls it."""
        request = payment_pb2.CreateRefundRequest(payment_id=payment_id, amount=amount, reason=reason)
        return await self.call(self.payments.CreateRefund, request, idempotency_key=_key(idempotency_key))

    async def get_payment(self, payment_id: str) -> payment_pb2.Payment:
        request = payment_pb2.GetPaymentRequest(payment_id=payment_id)
        return await self.call(self.payments.GetPayment, request, safe=True)

    def list_payments(self, page_size: int = 0) -> AsyncIterator[payment_pb2.Payment]:
        request = payment_pb2.ListPaymentsRequest(page_size=page_size)
        return self.items(self.payments.ListPayments, request, lambda page: page.payments)

    def list_refunds(self, payment_id: str, page_size: int = 0) -> AsyncIterator[payment_pb2.Refund]:
        request = payment_pb2.ListRefundsRequest(payment_id=payment_id, page_size=page_size)
        return self.items(self.payments.ListRefunds, request, lambda page: page.refunds)


def _key(given: str | None) -> str:
    return given if given is not None else str(uuid.uuid4())
