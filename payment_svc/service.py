"""PaymentService gRPC handlers: validate, call the saga, map to protos.

Authorization: every method but the webhook needs a signed-in user
(`require_user`). Payments are visible to their payer, their payee and
admins; everyone else gets NOT_FOUND. Refunds: the payee or an admin.
Payouts: the wallet's owner or an admin. A payment's (or payout's) source
wallet must be the caller's own: payment_svc reads it from wallet_svc with the
caller's identity forwarded (wallet_svc answers NOT_FOUND to anyone else) and
checks the owner; the destination wallet is read with payment_svc's service
identity, to learn the payee and the currency.

Errors of CreatePayment: a payment the processor or the ledger refused
(declined card, insufficient funds, frozen wallet, processor timeout) is
created and returned FAILED with its failure_code; when the processor is
unavailable (down, or its circuit breaker open) the payment is recorded
FAILED ("processor_unavailable") and the call answers UNAVAILABLE with reason
PROCESSOR_UNAVAILABLE. Both are recorded under the idempotency key and
replayed as they were.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message
from google.rpc import status_pb2
from grpc_status import rpc_status
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_svc import store, views
from payment_svc.events import PaymentEvents
from payment_svc.idempotency import OK, IdempotencyKeys, Recorded, fingerprint, validate_key
from payment_svc.lifecycle import CaptureMethod
from payment_svc.processor import Processor, WebhookSignatureInvalid
from payment_svc.records import TransferIntent
from payment_svc.requests import PaymentDraft, parse_id, payment_draft, payout_draft, short_text
from payment_svc.saga import Driven, Interrupted, PaymentRecord, Saga
from payment_svc.transfers import WalletTransfers
from payment_svc.wallet_client import WalletRefused, WalletUnavailable
from payment_svc.wallets import WalletDirectory, WalletFacts
from payment_svc.webhooks import WebhookHandler
from paymesh.payment.v1 import payment_pb2, payment_pb2_grpc
from paymesh_runtime import pagination
from paymesh_runtime.errors import (
    FailedPrecondition,
    PaymeshError,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    not_found,
)
from paymesh_runtime.idempotency_key import HEADER, REPLAYED_HEADER, mark_replayed
from paymesh_runtime.identity import Context, User, require_user
from paymesh_runtime.money import Money, positive_money
from paymesh_runtime.outbox import trace_context
from paymesh_runtime.pagination import PageTokens

M = TypeVar("M", bound=Message)


def _metadata(context: Context) -> dict[str, str]:
    return {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


def _wallet_error(error: WalletRefused | WalletUnavailable, wallet_id: str) -> PaymeshError:
    if isinstance(error, WalletUnavailable):
        return Unavailable("DEPENDENCY_UNAVAILABLE", "wallet_svc did not answer; retry with the same idempotency key")
    # Missing, malformed or not the caller's: the same answer, so nothing leaks.
    return not_found("wallet", wallet_id)


def _currency_mismatch(expected: str, actual: str) -> PaymeshError:
    return FailedPrecondition(
        "CURRENCY_MISMATCH",
        f"the amount is in {actual} but the wallet holds {expected}",
        metadata={"expected": expected, "actual": actual},
    )


def _optional_money(request: payment_pb2.CapturePaymentRequest | payment_pb2.CreateRefundRequest) -> Money | None:
    if not request.HasField("amount"):
        return None
    return positive_money(request.amount.currency, request.amount.amount)


class PaymentService(payment_pb2_grpc.PaymentServiceServicer):
    def __init__(
        self,
        engine: AsyncEngine,
        saga: Saga,
        wallets: WalletDirectory,
        keys: IdempotencyKeys,
        events: PaymentEvents,
        processor: Processor,
        transfers: WalletTransfers,
        page_tokens: PageTokens,
    ) -> None:
        self._engine = engine
        self._pages = page_tokens
        self._saga = saga
        self._transfers = transfers
        # Sagas keep running when their caller hangs up (see _drive).
        self._in_flight: set[asyncio.Task[Driven | Recorded]] = set()
        self._wallets = wallets
        self._keys = keys
        self._events = events
        self._webhooks = WebhookHandler(engine, saga, processor)

    # --- idempotency ------------------------------------------------------------------

    async def _replay(self, context: Context, recorded: Recorded, message_type: type[M]) -> M:
        """Answers with a recorded response, marked `idempotent-replayed: true`."""
        if recorded.code == OK:
            await mark_replayed(context)
            return message_type.FromString(recorded.body)
        status = rpc_status.to_status(status_pb2.Status.FromString(recorded.body))
        trailing = (*status.trailing_metadata, (REPLAYED_HEADER, "true"))
        await context.abort_with_status(status._replace(trailing_metadata=trailing))  # type: ignore[attr-defined]
        raise AssertionError("abort_with_status returns by raising")

    async def _previous(self, user: User, key: str, print_: bytes) -> Recorded | None:
        async with self._engine.connect() as conn:
            return await self._keys.lookup(conn, user.user_id, key, print_)

    # --- payments ---------------------------------------------------------------------

    async def CreatePayment(self, request: payment_pb2.CreatePaymentRequest, context: Context) -> payment_pb2.Payment:
        user = require_user(context)
        key = validate_key(_metadata(context).get(HEADER))
        draft = payment_draft(request)
        print_ = fingerprint("CreatePayment", request.SerializeToString(deterministic=True))
        # Known wallets are checked from memory; looking one up may fail on wallet_svc, which must
        # not keep a retry from getting its recorded answer: then the key is read first.
        if not self._wallets.knows(draft.source_wallet_id, draft.destination_wallet_id) and (
            recorded := await self._previous(user, key, print_)
        ):
            return await self._replay(context, recorded, payment_pb2.Payment)
        payee_id = await self._check_wallets(user, draft)
        payment_id = uuid.uuid4()
        if draft.source_wallet_id and draft.capture_method is CaptureMethod.AUTOMATIC:
            intent = draft.transfer(payment_id, user.user_id, payee_id, key, print_, trace_context())
            return await self._transfer(context, intent)
        created: list[PaymentRecord] = []

        async def create() -> Recorded | None:
            async with self._engine.begin() as conn:
                recorded = await self._keys.reserve(conn, user.user_id, key, "CreatePayment", print_, payment_id)
                if recorded is None:
                    created.append(await self._saga.open_payment(conn, draft.row(payment_id, user.user_id, payee_id)))
            return recorded

        return await self._drive(
            context, lambda pid: self._saga.drive_payment(pid, created[0]), payment_id, payment_pb2.Payment, create
        )

    async def _transfer(self, context: Context, intent: TransferIntent) -> payment_pb2.Payment:
        """An automatic wallet payment, made in the next batch (payment_svc.transfers)."""
        answer = await self._transfers.pay(intent)
        if isinstance(answer, Recorded):
            return await self._replay(context, answer, payment_pb2.Payment)
        if isinstance(answer, PaymeshError):
            raise answer
        return answer

    async def _drive(
        self,
        context: Context,
        drive: Callable[[uuid.UUID], Awaitable[Driven]],
        resource_id: uuid.UUID,
        message_type: type[M],
        prepare: Callable[[], Awaitable[Recorded | None]] | None = None,
    ) -> M:
        """Runs `prepare` (the transaction that creates or claims the resource; a Recorded answer
        replays a used key instead) then the saga, as one task the caller cannot cancel halfway.

        A client that cancels or times out must not stop the work between the commit that leases
        the resource to this replica and the drive (the resource would wait for the lease to lapse),
        nor in the middle of the saga. The work runs on; the caller's answer is lost, and a retry
        with the same Idempotency-Key gets it."""

        async def work() -> Driven | Recorded:
            recorded = await prepare() if prepare is not None else None
            return recorded if recorded is not None else await drive(resource_id)

        task = asyncio.ensure_future(work())
        self._in_flight.add(task)
        task.add_done_callback(_forget(self._in_flight))
        try:
            driven = await asyncio.shield(task)
        except Interrupted as interrupted:
            raise interrupted.error from None
        if isinstance(driven, Recorded):
            return await self._replay(context, driven, message_type)
        if driven.error is not None:
            raise driven.error
        assert isinstance(driven.message, message_type)
        return driven.message

    async def _wallet_facts(self, wallet_id: str) -> WalletFacts:
        try:
            return await self._wallets.facts(wallet_id)
        except (WalletRefused, WalletUnavailable) as error:
            raise _wallet_error(error, wallet_id) from None

    async def _check_wallets(self, user: User, draft: PaymentDraft) -> str:
        """Checks the source wallet is the caller's and both wallets hold the currency; returns the payee."""
        if draft.source_wallet_id:
            await self._own_wallet(user, draft.source_wallet_id, draft.amount)
        destination = await self._wallet_facts(draft.destination_wallet_id)
        if destination.currency != draft.amount.currency:
            raise _currency_mismatch(destination.currency, draft.amount.currency)
        return destination.owner_id

    async def _own_wallet(self, user: User, wallet_id: str, amount: Money) -> None:
        wallet = await self._wallet_facts(wallet_id)
        if wallet.owner_id != user.user_id:
            if not user.is_admin:
                raise not_found("wallet", wallet_id)  # someone else's: as if it did not exist
            # An admin may see any wallet, but spends only their own.
            raise PermissionDenied("PERMISSION_DENIED", "the source wallet must be one of the caller's wallets")
        if wallet.currency != amount.currency:
            raise _currency_mismatch(wallet.currency, amount.currency)

    async def _visible_payment(self, user: User, raw_id: str) -> store.AnyRow:
        payment_id = parse_id(raw_id, "payment_id")
        async with self._engine.connect() as conn:
            row = await store.get_row(conn, "payment", payment_id) if payment_id else None
        if row is None or not user.may_see(row.payer_id, row.payee_id):
            raise not_found("payment", raw_id)
        return row

    async def GetPayment(self, request: payment_pb2.GetPaymentRequest, context: Context) -> payment_pb2.Payment:
        user = require_user(context)
        row = await self._visible_payment(user, request.payment_id)
        async with self._engine.connect() as conn:
            found = await store.transitions_of(conn, [row.payment_id])
        return views.as_seen_by(views.payment(row, found[row.payment_id]), user)

    async def ListPayments(
        self, request: payment_pb2.ListPaymentsRequest, context: Context
    ) -> payment_pb2.ListPaymentsResponse:
        user = require_user(context)
        size = pagination.page_size(request.page_size)
        query = ["payments", "*" if user.is_admin else user.user_id]
        after = self._pages.decode_position(request.page_token, query)
        async with self._engine.connect() as conn:
            rows = await store.list_payments(conn, None if user.is_admin else user.user_id, after, size + 1)
            found = await store.transitions_of(conn, [row.payment_id for row in rows[:size]])
        reply = payment_pb2.ListPaymentsResponse(
            payments=[views.as_seen_by(views.payment(r, found[r.payment_id]), user) for r in rows[:size]]
        )
        if len(rows) > size:
            last = rows[size - 1]
            reply.next_page_token = self._pages.encode_position((last.create_time, last.payment_id), query)
        return reply

    async def CapturePayment(self, request: payment_pb2.CapturePaymentRequest, context: Context) -> payment_pb2.Payment:
        user = require_user(context)
        row = await self._visible_payment(user, request.payment_id)
        amount = _optional_money(request)

        async def begin() -> None:
            await self._saga.begin_capture(row.payment_id, amount)

        driven = await self._drive(context, self._saga.drive_payment, row.payment_id, payment_pb2.Payment, begin)
        return views.as_seen_by(driven, user)

    async def CancelPayment(self, request: payment_pb2.CancelPaymentRequest, context: Context) -> payment_pb2.Payment:
        user = require_user(context)
        row = await self._visible_payment(user, request.payment_id)
        reason = short_text(request.reason, "reason") or "canceled"

        async def request_cancel() -> None:
            await self._saga.request_cancel(row.payment_id, reason)

        driven = await self._drive(
            context, self._saga.drive_payment, row.payment_id, payment_pb2.Payment, request_cancel
        )
        return views.as_seen_by(driven, user)

    # --- refunds ----------------------------------------------------------------------

    async def CreateRefund(self, request: payment_pb2.CreateRefundRequest, context: Context) -> payment_pb2.Refund:
        user = require_user(context)
        key = validate_key(_metadata(context).get(HEADER))
        requested = (
            positive_money(request.amount.currency, request.amount.amount) if request.HasField("amount") else None
        )
        reason = short_text(request.reason, "reason")
        print_ = fingerprint("CreateRefund", request.SerializeToString(deterministic=True))
        if (recorded := await self._previous(user, key, print_)) is not None:
            return await self._replay(context, recorded, payment_pb2.Refund)
        payment = await self._visible_payment(user, request.payment_id)
        if not (user.is_admin or user.user_id == payment.payee_id):
            raise PermissionDenied("PERMISSION_DENIED", "only the payee or an admin may refund a payment")
        refund_id = uuid.uuid4()

        async def create() -> Recorded | None:
            async with self._engine.begin() as conn:
                recorded = await self._keys.reserve(conn, user.user_id, key, "CreateRefund", print_, refund_id)
                if recorded is None:
                    await self._saga.open_refund(
                        conn, payment.payment_id, refund_id, requested, reason, user.user_id, self._saga.lease_values()
                    )
            return recorded

        return await self._drive(context, self._saga.drive_refund, refund_id, payment_pb2.Refund, create)

    async def ListRefunds(
        self, request: payment_pb2.ListRefundsRequest, context: Context
    ) -> payment_pb2.ListRefundsResponse:
        payment = await self._visible_payment(require_user(context), request.payment_id)
        size = pagination.page_size(request.page_size)
        query = ["refunds", str(payment.payment_id)]
        after = self._pages.decode_position(request.page_token, query)
        async with self._engine.connect() as conn:
            rows = await store.list_refunds(conn, payment.payment_id, after, size + 1)
        reply = payment_pb2.ListRefundsResponse(refunds=[views.refund(r) for r in rows[:size]])
        if len(rows) > size:
            last = rows[size - 1]
            reply.next_page_token = self._pages.encode_position((last.create_time, last.refund_id), query)
        return reply

    # --- payouts ----------------------------------------------------------------------

    async def CreatePayout(self, request: payment_pb2.CreatePayoutRequest, context: Context) -> payment_pb2.Payout:
        user = require_user(context)
        key = validate_key(_metadata(context).get(HEADER))
        draft = payout_draft(request)
        print_ = fingerprint("CreatePayout", request.SerializeToString(deterministic=True))
        if (recorded := await self._previous(user, key, print_)) is not None:
            return await self._replay(context, recorded, payment_pb2.Payout)
        await self._own_wallet(user, draft["wallet_id"], Money(draft["currency"], draft["amount"]))
        payout_id = uuid.uuid4()

        async def create() -> Recorded | None:
            async with self._engine.begin() as conn:
                recorded = await self._keys.reserve(conn, user.user_id, key, "CreatePayout", print_, payout_id)
                if recorded is None:
                    values = {**draft, "payout_id": payout_id, "owner_id": user.user_id, "state": "PENDING"}
                    row, _ = await store.insert_resource(conn, "payout", {**values, **self._saga.lease_values()})
                    await self._events.payout_changed(conn, views.payout(row), created=True)
            return recorded

        return await self._drive(context, self._saga.drive_payout, payout_id, payment_pb2.Payout, create)

    async def GetPayout(self, request: payment_pb2.GetPayoutRequest, context: Context) -> payment_pb2.Payout:
        user = require_user(context)
        payout_id = parse_id(request.payout_id, "payout_id")
        async with self._engine.connect() as conn:
            row = await store.get_row(conn, "payout", payout_id) if payout_id else None
        if row is None or not user.may_see(row.owner_id):
            raise not_found("payout", request.payout_id)
        return views.payout(row)

    # --- processor webhooks -----------------------------------------------------------

    async def HandleProcessorWebhook(
        self, request: payment_pb2.HandleProcessorWebhookRequest, context: Context
    ) -> payment_pb2.HandleProcessorWebhookResponse:
        try:
            duplicate = await self._webhooks.handle(request.processor, request.body.data, _metadata(context))
        except WebhookSignatureInvalid as invalid:
            raise Unauthenticated(
                "WEBHOOK_SIGNATURE_INVALID", f"webhook signature does not verify: {invalid}"
            ) from None
        return payment_pb2.HandleProcessorWebhookResponse(duplicate=duplicate)


_log = logging.getLogger(__name__)


def _forget(
    in_flight: set[asyncio.Task[Driven | Recorded]],
) -> Callable[[asyncio.Task[Driven | Recorded]], None]:
    """Drops a finished saga task and retrieves its outcome (its caller, if still there, handles it too)."""

    def done(task: asyncio.Task[Driven | Recorded]) -> None:
        in_flight.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None and not isinstance(error, Interrupted):
            _log.debug("saga task ended with %r", error)

    return done
