"""The wallet service as payment_svc uses it: holds and postings by idempotent reference.

Every mutating call carries a reference derived from the payment (or refund,
payout) id and the saga step, so calling again after a timeout or a crash
returns the original result instead of moving money twice. The channel adds
payment_svc's service token (the methods are internal to the mesh).

Failures are sorted into two kinds the saga understands:
- WalletRefused: a definitive business answer (insufficient funds, frozen or
  closed wallet, hold no longer open...). Retrying will not help.
- WalletUnavailable: no definitive answer (wallet_svc down, deadline). The
  saga retries later with the same reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from paymesh.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from paymesh_runtime.money import Money
from paymesh_runtime.wire import money_message

SETTLEMENT = wallet_pb2.AccountRef(system_account=wallet_pb2.EXTERNAL_SETTLEMENT)

_REFUSALS = {
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
}


class WalletRefused(Exception):
    """wallet_svc answered with a definitive refusal."""

    def __init__(self, reason: str, message: str, status: grpc.StatusCode) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.status = status

    @property
    def failure_code(self) -> str:
        """The reason as a payment's failure_code, e.g. "insufficient_funds"."""
        return self.reason.lower()


class WalletUnavailable(Exception):
    """wallet_svc gave no definitive answer; retry with the same reference."""


def wallet_account(wallet_id: str) -> wallet_pb2.AccountRef:
    return wallet_pb2.AccountRef(wallet_id=wallet_id)


def _reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    return _status_reason(status) if status is not None else error.code().name


def _status_reason(status: status_pb2.Status) -> str:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return grpc.StatusCode(_CODES[status.code]).name if status.code in _CODES else "UNKNOWN"


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _item_error(status: status_pb2.Status) -> WalletRefused | WalletUnavailable:
    """The error of one transaction of a batch, sorted like a whole call's."""
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    if code in _REFUSALS:
        return WalletRefused(_status_reason(status), status.message, code)
    return WalletUnavailable(f"wallet_svc PostTransactions item: {code.name}")


@dataclass(frozen=True)
class Posting:
    account: wallet_pb2.AccountRef
    amount: Money


@dataclass(frozen=True)
class PostRequest:
    """One balanced ledger transaction, idempotent by its reference."""

    reference: str
    postings: Sequence[Posting]
    payment_id: str
    description: str
    # The W3C trace context of the request the transaction serves (a batch carries several requests'):
    # wallet_svc's events for it join that request's trace.
    trace_context: Mapping[str, str] = field(default_factory=dict)

    def message(self) -> wallet_pb2.PostTransactionRequest:
        return wallet_pb2.PostTransactionRequest(
            reference=self.reference,
            postings=[wallet_pb2.Posting(account=p.account, amount=money_message(p.amount)) for p in self.postings],
            payment_id=self.payment_id,
            description=self.description,
            trace_context=self.trace_context,
        )


PostResult = wallet_pb2.LedgerTransaction | WalletRefused | WalletUnavailable


class WalletClient:
    """Calls wallet_svc over an internal channel (service token attached by the channel)."""

    def __init__(self, channel: grpc.aio.Channel, timeout_seconds: float) -> None:
        self._stub = wallet_pb2_grpc.WalletServiceStub(channel)  # type: ignore[no-untyped-call]
        self._timeout = timeout_seconds

    async def _call(self, method: str, request: object, metadata: Sequence[tuple[str, str]] = ()) -> object:
        try:
            return await getattr(self._stub, method)(request, timeout=self._timeout, metadata=metadata or None)
        except grpc.aio.AioRpcError as error:
            if error.code() in _REFUSALS:
                raise WalletRefused(_reason(error), error.details() or "", error.code()) from error
            raise WalletUnavailable(f"wallet_svc {method}: {error.code().name}") from error

    async def get_wallet(self, wallet_id: str) -> wallet_pb2.Wallet:
        """Any wallet, read with payment_svc's own service identity (to learn a payee and its currency)."""
        reply = await self._call("GetWallet", wallet_pb2.GetWalletRequest(wallet_id=wallet_id))
        assert isinstance(reply, wallet_pb2.Wallet)
        return reply

    async def create_hold(
        self, reference: str, wallet_id: str, amount: Money, payment_id: str, ttl_seconds: int
    ) -> wallet_pb2.Hold:
        request = wallet_pb2.CreateHoldRequest(
            reference=reference,
            wallet_id=wallet_id,
            amount=money_message(amount),
            payment_id=payment_id,
            ttl_seconds=ttl_seconds,
        )
        reply = await self._call("CreateHold", request)
        assert isinstance(reply, wallet_pb2.Hold)
        return reply

    async def capture_hold(
        self, reference: str, hold_id: str, amount: Money, destination: wallet_pb2.AccountRef, description: str
    ) -> wallet_pb2.CaptureHoldResponse:
        request = wallet_pb2.CaptureHoldRequest(
            reference=reference,
            hold_id=hold_id,
            amount=money_message(amount),
            destination=destination,
            description=description,
        )
        reply = await self._call("CaptureHold", request)
        assert isinstance(reply, wallet_pb2.CaptureHoldResponse)
        return reply

    async def release_hold(self, reference: str, hold_id: str) -> None:
        """Releases a hold; one that is no longer open (released, expired) counts as released."""
        try:
            await self._call("ReleaseHold", wallet_pb2.ReleaseHoldRequest(reference=reference, hold_id=hold_id))
        except WalletRefused as refused:
            if refused.reason != "HOLD_NOT_OPEN":
                raise

    async def post(
        self, reference: str, postings: Sequence[Posting], payment_id: str, description: str
    ) -> wallet_pb2.LedgerTransaction:
        reply = await self._call("PostTransaction", PostRequest(reference, postings, payment_id, description).message())
        assert isinstance(reply, wallet_pb2.LedgerTransaction)
        return reply

    async def post_many(self, requests: Sequence[PostRequest]) -> list[PostResult]:
        """Posts many transactions in one call (one database transaction of wallet_svc): for each, in
        order, the posted (or replayed) transaction or its own refusal. Raises WalletRefused or
        WalletUnavailable when the call as a whole got no per-transaction answer."""
        request = wallet_pb2.PostTransactionsRequest(transactions=[r.message() for r in requests])
        reply = await self._call("PostTransactions", request)
        assert isinstance(reply, wallet_pb2.PostTransactionsResponse)
        if len(reply.results) != len(requests):
            raise WalletUnavailable(f"wallet_svc answered {len(reply.results)} results for {len(requests)}")
        return [
            result.transaction if result.HasField("transaction") else _item_error(result.error)
            for result in reply.results
        ]
