"""WalletService gRPC handlers: who may call, proto → domain, domain → proto.

Public methods act for the end user Envoy verified (require_user); a wallet
is visible to its owner and to admins only, everyone else gets NOT_FOUND.
Internal methods (holds, postings) need payment_svc's service identity.
PostTransactions answers each item on its own: a refusal is that item's
google.rpc.Status, built by the one error mapper (paymesh_runtime.grpc_errors).

CreateWallet, FreezeWallet, UnfreezeWallet and CloseWallet take an optional
`Idempotency-Key` header (gRPC metadata `idempotency-key`, as payment_svc's
public methods do), scoped to the caller: a replay answers the wallet as it
is now, marked `idempotent-replayed: true`, without a second effect.
"""

from __future__ import annotations

import uuid

from google.protobuf.message import Message

from paymesh.common.v1 import money_pb2
from paymesh.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from paymesh_runtime import idempotency_key, pagination
from paymesh_runtime.errors import InvalidArgument, PaymeshError, PermissionDenied, not_found, validation_failed
from paymesh_runtime.identity import (
    Context,
    ServiceTokens,
    User,
    has_service_token,
    optional_user,
    require_admin,
    require_user,
)
from paymesh_runtime.money import Money, currency_exponent, positive_money
from paymesh_runtime.pagination import PageTokens
from paymesh_runtime.telemetry_spans import clean_trace_context
from wallet_svc import batch, convert, ledger
from wallet_svc.batch import PostOutcome
from wallet_svc.ledger import (
    Account,
    AccountKey,
    IdempotencyKey,
    Operation,
    SystemAccount,
    SystemRef,
    WalletRef,
    WalletResult,
)
from wallet_svc.operations import Ledger

# The services allowed to call the internal methods.
INTERNAL_CALLERS = frozenset({"payment_svc"})
MAX_REASON_LENGTH = 500


class WalletService(wallet_pb2_grpc.WalletServiceServicer):
    def __init__(self, ledger_: Ledger, tokens: ServiceTokens, page_tokens: PageTokens) -> None:
        self._ledger = ledger_
        self._tokens = tokens
        self._pages = page_tokens

    # --- public ----------------------------------------------------------------------

    async def CreateWallet(self, request: wallet_pb2.CreateWalletRequest, context: Context) -> wallet_pb2.Wallet:
        user = require_user(context)
        if not request.currency:
            raise InvalidArgument("INVALID_CURRENCY", "currency is required", field="currency")
        currency_exponent(request.currency)
        key = _idempotency_key(context, user, Operation.CREATE_WALLET, request, None)
        return await _answer(context, await self._ledger.create_wallet(user.user_id, request.currency, key))

    async def GetWallet(self, request: wallet_pb2.GetWalletRequest, context: Context) -> wallet_pb2.Wallet:
        if optional_user(context) is None and has_service_token(context):
            # An internal lookup without an end user (payment_svc learning a
            # destination wallet's owner and currency): only a mesh service may.
            self._tokens.require(context, INTERNAL_CALLERS)
            account = await self._ledger.get_wallet(_uuid("wallet_id", request.wallet_id))
            if account is None:
                raise not_found("wallet", request.wallet_id)
            return convert.wallet(account)
        return convert.wallet(await self._visible_wallet(require_user(context), request.wallet_id))

    async def ListWallets(
        self, request: wallet_pb2.ListWalletsRequest, context: Context
    ) -> wallet_pb2.ListWalletsResponse:
        user = require_user(context)
        owner_id = request.owner_id or user.user_id
        if owner_id != user.user_id and not user.is_admin:
            raise PermissionDenied("ADMIN_REQUIRED", "only administrators may list another user's wallets")
        size = pagination.page_size(request.page_size)
        query = ["wallets", owner_id]
        after = self._pages.decode_position(request.page_token, query)
        found = await self._ledger.list_wallets(owner_id, after, size + 1)
        page, more = found[:size], len(found) > size
        token = self._pages.encode_position((page[-1].created_at, page[-1].id), query) if more else ""
        return wallet_pb2.ListWalletsResponse(wallets=[convert.wallet(a) for a in page], next_page_token=token)

    async def ListEntries(
        self, request: wallet_pb2.ListEntriesRequest, context: Context
    ) -> wallet_pb2.ListEntriesResponse:
        account = await self._visible_wallet(require_user(context), request.wallet_id)
        size = pagination.page_size(request.page_size)
        query = ["entries", str(account.id)]
        before = self._pages.decode_sequence(request.page_token, query)
        found = await self._ledger.list_entries(account.id, before, size + 1)
        page, more = found[:size], len(found) > size
        token = self._pages.encode_sequence(page[-1].seq, query) if more else ""
        return wallet_pb2.ListEntriesResponse(entries=[convert.entry(p) for p in page], next_page_token=token)

    async def FreezeWallet(self, request: wallet_pb2.FreezeWalletRequest, context: Context) -> wallet_pb2.Wallet:
        admin = require_admin(context)
        reason = ledger.validate_text("reason", request.reason, MAX_REASON_LENGTH)
        wallet_id = _uuid("wallet_id", request.wallet_id)
        key = _idempotency_key(context, admin, Operation.FREEZE_WALLET, request, wallet_id)
        return await _answer(context, await self._ledger.set_frozen(wallet_id, True, reason, key))

    async def UnfreezeWallet(self, request: wallet_pb2.UnfreezeWalletRequest, context: Context) -> wallet_pb2.Wallet:
        admin = require_admin(context)
        reason = ledger.validate_text("reason", request.reason, MAX_REASON_LENGTH)
        wallet_id = _uuid("wallet_id", request.wallet_id)
        key = _idempotency_key(context, admin, Operation.UNFREEZE_WALLET, request, wallet_id)
        return await _answer(context, await self._ledger.set_frozen(wallet_id, False, reason, key))

    async def CloseWallet(self, request: wallet_pb2.CloseWalletRequest, context: Context) -> wallet_pb2.Wallet:
        user = require_user(context)
        # The owner never changes, so checking it before the transaction is safe.
        account = await self._visible_wallet(user, request.wallet_id)
        key = _idempotency_key(context, user, Operation.CLOSE_WALLET, request, account.id)
        return await _answer(context, await self._ledger.close_wallet(account.id, user.is_admin, key))

    # --- internal ----------------------------------------------------------------------

    async def CreateHold(self, request: wallet_pb2.CreateHoldRequest, context: Context) -> wallet_pb2.Hold:
        self._tokens.require(context, INTERNAL_CALLERS)
        hold = await self._ledger.create_hold(
            ledger.HoldRequest(
                reference=ledger.validate_reference(request.reference),
                wallet_id=_uuid("wallet_id", request.wallet_id),
                amount=_positive(request.amount, "amount"),
                payment_id=_payment_id(request.payment_id),
                ttl_seconds=request.ttl_seconds,
            )
        )
        return convert.hold(hold)

    async def GetHold(self, request: wallet_pb2.GetHoldRequest, context: Context) -> wallet_pb2.Hold:
        self._tokens.require(context, INTERNAL_CALLERS)
        hold_id = _uuid("hold_id", request.hold_id)
        hold = await self._ledger.get_hold(hold_id)
        if hold is None:
            raise not_found("hold", request.hold_id)
        return convert.hold(hold)

    async def CaptureHold(
        self, request: wallet_pb2.CaptureHoldRequest, context: Context
    ) -> wallet_pb2.CaptureHoldResponse:
        self._tokens.require(context, INTERNAL_CALLERS)
        amount = _positive(request.amount, "amount")
        if not request.HasField("destination"):
            raise validation_failed("destination", "is required")
        hold, tx = await self._ledger.capture_hold(
            ledger.CaptureRequest(
                reference=ledger.validate_reference(request.reference),
                hold_id=_uuid("hold_id", request.hold_id),
                amount=amount,
                destination=_account_key(request.destination, amount.currency, "destination"),
                description=ledger.validate_text("description", request.description, ledger.MAX_DESCRIPTION_LENGTH),
            )
        )
        return wallet_pb2.CaptureHoldResponse(hold=convert.hold(hold), transaction=convert.transaction(tx))

    async def ReleaseHold(self, request: wallet_pb2.ReleaseHoldRequest, context: Context) -> wallet_pb2.Hold:
        self._tokens.require(context, INTERNAL_CALLERS)
        release = ledger.ReleaseRequest(ledger.validate_reference(request.reference), _uuid("hold_id", request.hold_id))
        return convert.hold(await self._ledger.release_hold(release))

    async def PostTransaction(
        self, request: wallet_pb2.PostTransactionRequest, context: Context
    ) -> wallet_pb2.LedgerTransaction:
        self._tokens.require(context, INTERNAL_CALLERS)
        return convert.transaction(await self._ledger.post(_post_request(request)))

    async def PostTransactions(
        self, request: wallet_pb2.PostTransactionsRequest, context: Context
    ) -> wallet_pb2.PostTransactionsResponse:
        self._tokens.require(context, INTERNAL_CALLERS)
        if len(request.transactions) > batch.MAX_TRANSACTIONS:
            raise validation_failed("transactions", f"at most {batch.MAX_TRANSACTIONS} per call")
        # An item that PostTransaction would refuse before the ledger sees it is refused here alike.
        parsed: list[ledger.PostRequest | PaymeshError] = []
        for item in request.transactions:
            try:
                parsed.append(_post_request(item))
            except PaymeshError as error:
                parsed.append(error)
        outcomes = iter(await self._ledger.post_all([p for p in parsed if isinstance(p, ledger.PostRequest)]))
        results = [
            convert.post_result(next(outcomes) if isinstance(item, ledger.PostRequest) else PostOutcome(error=item))
            for item in parsed
        ]
        return wallet_pb2.PostTransactionsResponse(results=results)

    # --- helpers -----------------------------------------------------------------------

    async def _visible_wallet(self, user: User, raw_id: str) -> Account:
        account = await self._ledger.get_wallet(_uuid("wallet_id", raw_id))
        if account is None or not user.may_see(account.owner_id or ""):
            raise not_found("wallet", raw_id)
        return account


def _idempotency_key(
    context: Context, user: User, operation: Operation, request: Message, wallet_id: uuid.UUID | None
) -> IdempotencyKey | None:
    """The call's optional Idempotency-Key, scoped to the caller and bound to this very request."""
    key = ledger.validate_idempotency_key(idempotency_key.values_in(context))
    if key is None:
        return None
    return IdempotencyKey.of(user.user_id, key, operation, request.SerializeToString(deterministic=True), wallet_id)


async def _answer(context: Context, result: WalletResult) -> wallet_pb2.Wallet:
    if result.replayed:
        await idempotency_key.mark_replayed(context)
    return convert.wallet(result.account)


def _post_request(request: wallet_pb2.PostTransactionRequest) -> ledger.PostRequest:
    legs = []
    for index, posting in enumerate(request.postings):
        amount = _signed(posting.amount, f"postings[{index}].amount")
        legs.append(ledger.Leg(_account_key(posting.account, amount.currency, f"postings[{index}].account"), amount))
    return ledger.PostRequest(
        reference=ledger.validate_reference(request.reference),
        legs=ledger.validate_legs(legs),
        payment_id=_payment_id(request.payment_id),
        description=ledger.validate_text("description", request.description, ledger.MAX_DESCRIPTION_LENGTH),
        trace_context=clean_trace_context(request.trace_context),
    )


def _uuid(field: str, value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise validation_failed(field, "must be a UUID") from None


def _positive(value: money_pb2.Money, field: str) -> Money:
    return positive_money(value.currency, value.amount, field)


def _signed(value: money_pb2.Money, field: str) -> Money:
    if not value.currency:
        raise InvalidArgument("INVALID_CURRENCY", f"{field}.currency is required", field=f"{field}.currency")
    return Money(value.currency, value.amount)


def _payment_id(value: str) -> str:
    return ledger.validate_text("payment_id", value, ledger.MAX_PAYMENT_ID_LENGTH)


def _account_key(ref: wallet_pb2.AccountRef, currency: str, field: str) -> AccountKey:
    which = ref.WhichOneof("account")
    if which == "wallet_id":
        return WalletRef(_uuid(f"{field}.wallet_id", ref.wallet_id))
    if which == "system_account" and ref.system_account != wallet_pb2.SYSTEM_ACCOUNT_UNSPECIFIED:
        return SystemRef(SystemAccount(wallet_pb2.SystemAccount.Name(ref.system_account)), currency)
    raise validation_failed(field, "names a wallet_id or a system_account")
