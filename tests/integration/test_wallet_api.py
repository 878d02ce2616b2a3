"""WalletService over real gRPC against the real PostgreSQL: access, idempotency, holds, lifecycle."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from devstack.stack import Stack
from paymesh.events.v1 import events_pb2
from paymesh.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from paymesh_runtime.identity import SERVICE_TOKEN_HEADER, ServiceTokens
from tests.integration.wallet_support import (
    FEES,
    SETTLEMENT,
    Wallets,
    as_user,
    error_info,
    new_user,
    reason_of,
    running_wallet,
    transfer,
    usd,
    wallet_ref,
)
from wallet_svc.store import constraint_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def wallets(infra: Stack) -> AsyncIterator[Wallets]:
    async with running_wallet(infra) as running:
        yield running


async def expect_error(call: object, code: grpc.StatusCode, reason: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    assert raised.value.code() == code, raised.value
    assert reason_of(raised.value) == reason


def hold_request(reference: str, wallet_id: str, amount: int, **extra: object) -> wallet_pb2.CreateHoldRequest:
    return wallet_pb2.CreateHoldRequest(
        reference=reference, wallet_id=wallet_id, amount=usd(amount), payment_id="pay_1", **extra
    )


# --- who may see and call what -------------------------------------------------------------


async def test_a_wallet_is_visible_to_its_owner_and_admins_only(wallets: Wallets) -> None:
    alice, bob = new_user(), new_user()
    wallet_id = await wallets.open_wallet(alice)
    public = wallets.public

    mine = await public.GetWallet(wallet_pb2.GetWalletRequest(wallet_id=wallet_id), metadata=as_user(alice))
    assert mine.owner_id == alice
    assert mine.state == wallet_pb2.Wallet.ACTIVE
    admin = await public.GetWallet(wallet_pb2.GetWalletRequest(wallet_id=wallet_id), metadata=as_user("ops", "ADMIN"))
    assert admin.wallet_id == wallet_id

    for call in (
        public.GetWallet(wallet_pb2.GetWalletRequest(wallet_id=wallet_id), metadata=as_user(bob)),
        public.ListEntries(wallet_pb2.ListEntriesRequest(wallet_id=wallet_id), metadata=as_user(bob)),
        public.CloseWallet(wallet_pb2.CloseWalletRequest(wallet_id=wallet_id), metadata=as_user(bob)),
    ):
        await expect_error(call, grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND")
    bobs = await public.ListWallets(wallet_pb2.ListWalletsRequest(), metadata=as_user(bob))
    assert list(bobs.wallets) == []
    await expect_error(
        public.ListWallets(wallet_pb2.ListWalletsRequest(owner_id=alice), metadata=as_user(bob)),
        grpc.StatusCode.PERMISSION_DENIED,
        "ADMIN_REQUIRED",
    )
    listed = await public.ListWallets(wallet_pb2.ListWalletsRequest(owner_id=alice), metadata=as_user("ops", "ADMIN"))
    assert [w.wallet_id for w in listed.wallets] == [wallet_id]
    await expect_error(
        public.GetWallet(wallet_pb2.GetWalletRequest(wallet_id=wallet_id)),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )


async def test_wallets_page_in_creation_order(wallets: Wallets) -> None:
    owner = new_user()
    opened = [await wallets.open_wallet(owner, currency) for currency in ("USD", "EUR", "JPY", "GBP", "CHF")]
    seen: list[str] = []
    token = ""
    while True:
        page = await wallets.public.ListWallets(
            wallet_pb2.ListWalletsRequest(page_size=2, page_token=token), metadata=as_user(owner)
        )
        seen += [w.wallet_id for w in page.wallets]
        token = page.next_page_token
        if not token:
            break
    assert seen == opened


async def test_one_open_wallet_per_user_and_currency(wallets: Wallets) -> None:
    owner = new_user()
    first = await wallets.open_wallet(owner)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await wallets.open_wallet(owner)
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(raised.value) == "WALLET_ALREADY_EXISTS"
    assert first in str(raised.value.trailing_metadata())
    await expect_error(
        wallets.public.CreateWallet(wallet_pb2.CreateWalletRequest(currency="XYZ"), metadata=as_user(owner)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_CURRENCY",
    )


async def test_internal_methods_refuse_callers_without_payment_svcs_identity(wallets: Wallets) -> None:
    wallet_id = await wallets.open_wallet(new_user())
    requests = {
        "CreateHold": hold_request("ref", wallet_id, 10),
        "GetHold": wallet_pb2.GetHoldRequest(hold_id=str(uuid.uuid4())),
        "CaptureHold": wallet_pb2.CaptureHoldRequest(
            reference="ref", hold_id=str(uuid.uuid4()), amount=usd(1), destination=SETTLEMENT
        ),
        "ReleaseHold": wallet_pb2.ReleaseHoldRequest(reference="ref", hold_id=str(uuid.uuid4())),
        "PostTransaction": transfer("ref", SETTLEMENT, wallet_ref(wallet_id), 10),
    }
    forged = ServiceTokens("another mesh's secret, 32+ characters long").issue("payment_svc")
    callers = [
        (as_user("ops", "ADMIN"), grpc.StatusCode.UNAUTHENTICATED),  # an end user, even an admin
        (((SERVICE_TOKEN_HEADER, forged),), grpc.StatusCode.UNAUTHENTICATED),  # wrong secret
        (((SERVICE_TOKEN_HEADER, "v1.payment_svc.1.00"),), grpc.StatusCode.UNAUTHENTICATED),  # malformed
        (((SERVICE_TOKEN_HEADER, wallets.tokens.issue("notify_svc")),), grpc.StatusCode.PERMISSION_DENIED),
    ]
    async with grpc.aio.insecure_channel(wallets.address) as channel:
        stub = wallet_pb2_grpc.WalletServiceStub(channel)
        for method, request in requests.items():
            for metadata, code in callers:
                await expect_error(getattr(stub, method)(request, metadata=metadata), code, "SERVICE_IDENTITY_REQUIRED")
    assert await wallets.balances(wallet_id) == (0, 0)
    assert await wallets.scalar("SELECT count(*) FROM ledger_references WHERE reference = 'ref'") == 0


async def test_get_wallet_without_a_user_is_an_internal_lookup_for_payment_svc_only(wallets: Wallets) -> None:
    owner = new_user()
    wallet_id = await wallets.open_wallet(owner)
    request = wallet_pb2.GetWalletRequest(wallet_id=wallet_id)
    async with grpc.aio.insecure_channel(wallets.address) as channel:
        stub = wallet_pb2_grpc.WalletServiceStub(channel)
        found = await stub.GetWallet(request, metadata=((SERVICE_TOKEN_HEADER, wallets.tokens.issue("payment_svc")),))
        assert (found.wallet_id, found.owner_id) == (wallet_id, owner)
        await expect_error(stub.GetWallet(request), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
        forged = (
            (SERVICE_TOKEN_HEADER, ServiceTokens("another mesh's secret, 32+ characters long").issue("payment_svc")),
        )
        await expect_error(
            stub.GetWallet(request, metadata=forged), grpc.StatusCode.UNAUTHENTICATED, "SERVICE_IDENTITY_REQUIRED"
        )
        notify_token = ((SERVICE_TOKEN_HEADER, wallets.tokens.issue("notify_svc")),)
        await expect_error(
            stub.GetWallet(request, metadata=notify_token),
            grpc.StatusCode.PERMISSION_DENIED,
            "SERVICE_IDENTITY_REQUIRED",
        )
        # A user's call keeps the owner-or-admin rule even with a service token beside it.
        stranger = (*as_user(new_user()), (SERVICE_TOKEN_HEADER, wallets.tokens.issue("payment_svc")))
        await expect_error(stub.GetWallet(request, metadata=stranger), grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND")


# --- idempotency ---------------------------------------------------------------------------


async def test_a_replayed_reference_returns_the_original_result_without_a_second_effect(wallets: Wallets) -> None:
    payer, payee = await wallets.open_wallet(new_user()), await wallets.open_wallet(new_user())
    ref = f"pay_{uuid.uuid4()}"
    internal = wallets.internal

    credit = transfer(f"{ref}:deposit", SETTLEMENT, wallet_ref(payer), 500)
    first, again = await internal.PostTransaction(credit), await internal.PostTransaction(credit)
    assert first == again
    hold_req = hold_request(f"{ref}:hold", payer, 300)
    hold, hold_again = await internal.CreateHold(hold_req), await internal.CreateHold(hold_req)
    assert hold.hold_id == hold_again.hold_id
    assert await wallets.balances(payer) == (500, 300)

    capture = wallet_pb2.CaptureHoldRequest(
        reference=f"{ref}:capture", hold_id=hold.hold_id, amount=usd(300), destination=wallet_ref(payee)
    )
    captured, captured_again = await internal.CaptureHold(capture), await internal.CaptureHold(capture)
    assert captured == captured_again
    assert captured.hold.state == wallet_pb2.Hold.CAPTURED
    assert await wallets.balances(payer) == (200, 0)
    assert await wallets.balances(payee) == (300, 0)

    other = await internal.CreateHold(hold_request(f"{ref}:hold2", payer, 50))
    release = wallet_pb2.ReleaseHoldRequest(reference=f"{ref}:release", hold_id=other.hold_id)
    released, released_again = await internal.ReleaseHold(release), await internal.ReleaseHold(release)
    assert released == released_again
    assert released.state == wallet_pb2.Hold.RELEASED
    assert await wallets.balances(payer) == (200, 0)
    count = await wallets.scalar("SELECT count(*) FROM ledger_transactions WHERE reference LIKE :r", r=f"{ref}%")
    assert count == 2  # the deposit and the capture, once each


async def test_a_reference_reused_with_other_arguments_is_refused_and_changes_nothing(wallets: Wallets) -> None:
    wallet_id = await wallets.open_wallet(new_user())
    ref = f"ref-{uuid.uuid4()}"
    await wallets.internal.PostTransaction(transfer(ref, SETTLEMENT, wallet_ref(wallet_id), 100))
    for call in (
        wallets.internal.PostTransaction(transfer(ref, SETTLEMENT, wallet_ref(wallet_id), 101)),
        wallets.internal.PostTransaction(transfer(ref, FEES, wallet_ref(wallet_id), 100)),
        wallets.internal.CreateHold(hold_request(ref, wallet_id, 100)),  # another method, same reference
    ):
        await expect_error(call, grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    hold = await wallets.internal.CreateHold(hold_request(f"{ref}:hold", wallet_id, 10))
    await expect_error(
        wallets.internal.CreateHold(hold_request(f"{ref}:hold", wallet_id, 10, ttl_seconds=60)),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    assert await wallets.balances(wallet_id) == (100, 10)
    assert hold.state == wallet_pb2.Hold.OPEN


async def test_concurrent_calls_with_one_reference_take_effect_once(wallets: Wallets) -> None:
    wallet_id = await wallets.open_wallet(new_user())
    credit = transfer(f"ref-{uuid.uuid4()}", SETTLEMENT, wallet_ref(wallet_id), 70)
    results = await asyncio.gather(*(wallets.internal.PostTransaction(credit) for _ in range(20)))
    assert len({r.transaction_id for r in results}) == 1
    holds = await asyncio.gather(
        *(wallets.internal.CreateHold(hold_request(f"hold-{wallet_id}", wallet_id, 70)) for _ in range(20))
    )
    assert len({h.hold_id for h in holds}) == 1
    assert await wallets.balances(wallet_id) == (70, 70)


async def test_a_failed_call_leaves_its_reference_free_for_a_retry(wallets: Wallets) -> None:
    wallet_id = await wallets.open_wallet(new_user())
    hold = hold_request(f"ref-{uuid.uuid4()}", wallet_id, 40)
    await expect_error(wallets.internal.CreateHold(hold), grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    await wallets.fund(wallet_id, 40)
    assert (await wallets.internal.CreateHold(hold)).state == wallet_pb2.Hold.OPEN
    assert await wallets.balances(wallet_id) == (40, 40)


# --- Idempotency-Key on the public wallet calls -------------------------------------------------

ADMIN = "ops-admin"


def as_admin(key: str | None = None) -> tuple[tuple[str, str], ...]:
    return as_user(ADMIN, "ADMIN", key)


def new_key() -> str:
    return f"key-{uuid.uuid4()}"


async def answer_of(call: grpc.aio.UnaryUnaryCall[object, wallet_pb2.Wallet]) -> tuple[wallet_pb2.Wallet, bool]:
    """The wallet a call answered, and whether it was marked as a replay."""
    wallet = await call
    replayed = dict(await call.trailing_metadata() or ()).get("idempotent-replayed") == "true"
    return wallet, replayed


async def test_create_wallet_retried_with_its_idempotency_key_returns_the_same_wallet(wallets: Wallets) -> None:
    owner, key = new_user(), new_key()
    create = wallet_pb2.CreateWalletRequest(currency="USD")
    first, first_replayed = await answer_of(wallets.public.CreateWallet(create, metadata=as_user(owner, key=key)))
    again, again_replayed = await answer_of(wallets.public.CreateWallet(create, metadata=as_user(owner, key=key)))
    assert (first_replayed, again_replayed) == (False, True)
    assert again == first  # nothing changed in between: the very same answer
    assert await wallet_event_types(wallets, first.wallet_id) == ["wallet.created"]
    assert await wallets.scalar("SELECT count(*) FROM accounts WHERE owner_id = :o", o=owner) == 1
    async with wallets.engine.connect() as conn:
        stored = (
            await conn.execute(
                text(
                    "SELECT operation, wallet_id, hold_id, transaction_id FROM ledger_references WHERE reference = :r"
                ),
                {"r": f"wallet-api:{owner}:{key}"},
            )
        ).one()
    assert tuple(stored) == ("CreateWallet", uuid.UUID(first.wallet_id), None, None)

    # Without the key a retry is a new request, answered as before.
    await expect_error(
        wallets.public.CreateWallet(create, metadata=as_user(owner)),
        grpc.StatusCode.ALREADY_EXISTS,
        "WALLET_ALREADY_EXISTS",
    )
    # Keys are scoped to the caller: another user's identical key is another request.
    other = await wallets.public.CreateWallet(create, metadata=as_user(new_user(), key=key))
    assert other.wallet_id != first.wallet_id
    # A replay answers the wallet as it is now: closed since, and no new wallet opened.
    await wallets.public.CloseWallet(wallet_pb2.CloseWalletRequest(wallet_id=first.wallet_id), metadata=as_user(owner))
    late, late_replayed = await answer_of(wallets.public.CreateWallet(create, metadata=as_user(owner, key=key)))
    assert (late.wallet_id, late.state, late_replayed) == (first.wallet_id, wallet_pb2.Wallet.CLOSED, True)
    assert await wallets.scalar("SELECT count(*) FROM accounts WHERE owner_id = :o", o=owner) == 1


async def test_a_delayed_freeze_replayed_after_an_unfreeze_has_no_second_effect(wallets: Wallets) -> None:
    wallet_id = await wallets.open_wallet(new_user())
    await wallets.fund(wallet_id, 100)
    freeze = wallet_pb2.FreezeWalletRequest(wallet_id=wallet_id, reason="review")
    key = new_key()
    frozen, frozen_replayed = await answer_of(wallets.public.FreezeWallet(freeze, metadata=as_admin(key)))
    assert (frozen.state, frozen_replayed) == (wallet_pb2.Wallet.FROZEN, False)
    unfrozen = await wallets.public.UnfreezeWallet(
        wallet_pb2.UnfreezeWalletRequest(wallet_id=wallet_id), metadata=as_admin(new_key())
    )
    assert unfrozen.state == wallet_pb2.Wallet.ACTIVE

    late, late_replayed = await answer_of(wallets.public.FreezeWallet(freeze, metadata=as_admin(key)))
    assert (late.state, late_replayed) == (wallet_pb2.Wallet.ACTIVE, True)  # the wallet as it is now
    await wallets.internal.PostTransaction(transfer(f"ref-{uuid.uuid4()}", wallet_ref(wallet_id), SETTLEMENT, 100))
    assert await wallets.balances(wallet_id) == (0, 0)  # still active: debits go through
    assert await wallet_event_types(wallets, wallet_id) == [
        "wallet.created",
        "wallet.posted",
        "wallet.frozen",
        "wallet.unfrozen",
        "wallet.posted",
    ]

    # CloseWallet too: a replay closes nothing twice and emits nothing.
    close = wallet_pb2.CloseWalletRequest(wallet_id=wallet_id)
    closing_key = new_key()
    closed, closed_replayed = await answer_of(wallets.public.CloseWallet(close, metadata=as_admin(closing_key)))
    again, again_replayed = await answer_of(wallets.public.CloseWallet(close, metadata=as_admin(closing_key)))
    assert (closed.state, closed_replayed, again_replayed) == (wallet_pb2.Wallet.CLOSED, False, True)
    assert again == closed
    assert (await wallet_event_types(wallets, wallet_id))[-1:] == ["wallet.closed"]
    assert (await wallet_event_types(wallets, wallet_id)).count("wallet.closed") == 1


async def test_an_idempotency_key_reused_for_another_request_is_refused_and_changes_nothing(wallets: Wallets) -> None:
    owner = new_user()
    first, second = await wallets.open_wallet(owner), await wallets.open_wallet(new_user())
    key = new_key()
    freeze = wallet_pb2.FreezeWalletRequest(wallet_id=first, reason="review")
    await wallets.public.FreezeWallet(freeze, metadata=as_admin(key))
    events_before = {w: await wallet_event_types(wallets, w) for w in (first, second)}
    for call in (
        # another wallet, another reason, another method: each a different request
        wallets.public.FreezeWallet(
            wallet_pb2.FreezeWalletRequest(wallet_id=second, reason="review"), metadata=as_admin(key)
        ),
        wallets.public.FreezeWallet(
            wallet_pb2.FreezeWalletRequest(wallet_id=first, reason="other"), metadata=as_admin(key)
        ),
        wallets.public.UnfreezeWallet(wallet_pb2.UnfreezeWalletRequest(wallet_id=first), metadata=as_admin(key)),
        wallets.public.CloseWallet(wallet_pb2.CloseWalletRequest(wallet_id=first), metadata=as_admin(key)),
        wallets.public.CreateWallet(wallet_pb2.CreateWalletRequest(currency="USD"), metadata=as_admin(key)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
        info = error_info(raised.value)
        assert (info.reason, dict(info.metadata)) == ("IDEMPOTENCY_KEY_REUSED", {"idempotency_key": key})
    states = [
        (await wallets.public.GetWallet(wallet_pb2.GetWalletRequest(wallet_id=w), metadata=as_admin())).state
        for w in (first, second)
    ]
    assert states == [wallet_pb2.Wallet.FROZEN, wallet_pb2.Wallet.ACTIVE]
    assert {w: await wallet_event_types(wallets, w) for w in (first, second)} == events_before
    assert await wallets.scalar("SELECT count(*) FROM accounts WHERE owner_id = :o", o=ADMIN) == 0

    creator, create_key = new_user(), new_key()
    await wallets.public.CreateWallet(
        wallet_pb2.CreateWalletRequest(currency="USD"), metadata=as_user(creator, key=create_key)
    )
    await expect_error(
        wallets.public.CreateWallet(
            wallet_pb2.CreateWalletRequest(currency="EUR"), metadata=as_user(creator, key=create_key)
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    currencies = await wallets.public.ListWallets(wallet_pb2.ListWalletsRequest(), metadata=as_user(creator))
    assert [w.currency for w in currencies.wallets] == ["USD"]


async def test_concurrent_calls_with_one_idempotency_key_take_effect_once(wallets: Wallets) -> None:
    owner, key = new_user(), new_key()
    create = wallet_pb2.CreateWalletRequest(currency="USD")
    created = await asyncio.gather(
        *(answer_of(wallets.public.CreateWallet(create, metadata=as_user(owner, key=key))) for _ in range(20))
    )
    assert len({wallet.wallet_id for wallet, _ in created}) == 1
    assert sorted(replayed for _, replayed in created) == [False] + [True] * 19
    wallet_id = created[0][0].wallet_id
    assert await wallets.scalar("SELECT count(*) FROM accounts WHERE owner_id = :o", o=owner) == 1

    freeze, unfreeze = (
        wallet_pb2.FreezeWalletRequest(wallet_id=wallet_id, reason="race"),
        wallet_pb2.UnfreezeWalletRequest(wallet_id=wallet_id, reason="race"),
    )
    freeze_key, unfreeze_key = new_key(), new_key()
    # Twenty retries of one freeze and of one unfreeze, all at once: each takes effect at most once.
    results = await asyncio.gather(
        *(answer_of(wallets.public.FreezeWallet(freeze, metadata=as_admin(freeze_key))) for _ in range(20)),
        *(answer_of(wallets.public.UnfreezeWallet(unfreeze, metadata=as_admin(unfreeze_key))) for _ in range(20)),
    )
    assert sum(not replayed for _, replayed in results) == 2  # one original call per key
    types = await wallet_event_types(wallets, wallet_id)
    assert types.count("wallet.created") == 1
    assert types.count("wallet.frozen") == 1
    assert types.count("wallet.unfrozen") <= 1  # a no-op if it ran before the freeze
    keys = await wallets.scalar(
        "SELECT count(*) FROM ledger_references WHERE reference LIKE :r", r=f"wallet-api:%:{freeze_key}"
    )
    assert keys == 1


async def test_a_keyed_call_that_failed_leaves_its_key_free_for_a_retry(wallets: Wallets) -> None:
    owner, key = new_user(), new_key()
    existing = await wallets.open_wallet(owner)
    create = wallet_pb2.CreateWalletRequest(currency="USD")
    await expect_error(
        wallets.public.CreateWallet(create, metadata=as_user(owner, key=key)),
        grpc.StatusCode.ALREADY_EXISTS,
        "WALLET_ALREADY_EXISTS",
    )
    await wallets.public.CloseWallet(wallet_pb2.CloseWalletRequest(wallet_id=existing), metadata=as_user(owner))
    opened, replayed = await answer_of(wallets.public.CreateWallet(create, metadata=as_user(owner, key=key)))
    assert (opened.wallet_id != existing, replayed) == (True, False)


@pytest.mark.parametrize(
    "headers",
    [
        (("idempotency-key", "k" * 256),),
        (("idempotency-key", "   "),),
        (("idempotency-key", "one"), ("idempotency-key", "two")),
    ],
)
async def test_malformed_idempotency_keys_are_refused(wallets: Wallets, headers: tuple[tuple[str, str], ...]) -> None:
    owner = new_user()
    wallet_id = await wallets.open_wallet(owner, "EUR")
    for call in (
        wallets.public.CreateWallet(
            wallet_pb2.CreateWalletRequest(currency="USD"), metadata=(*as_user(owner), *headers)
        ),
        wallets.public.FreezeWallet(
            wallet_pb2.FreezeWalletRequest(wallet_id=wallet_id), metadata=(*as_admin(), *headers)
        ),
        wallets.public.CloseWallet(
            wallet_pb2.CloseWalletRequest(wallet_id=wallet_id), metadata=(*as_user(owner), *headers)
        ),
    ):
        await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
    listed = await wallets.public.ListWallets(wallet_pb2.ListWalletsRequest(), metadata=as_user(owner))
    assert [(w.currency, w.state) for w in listed.wallets] == [("EUR", wallet_pb2.Wallet.ACTIVE)]


async def test_idempotency_key_references_never_collide_with_internal_references(wallets: Wallets) -> None:
    wallet_id = await wallets.open_wallet(new_user())
    await expect_error(
        wallets.internal.PostTransaction(
            transfer(f"wallet-api:x:{uuid.uuid4()}", SETTLEMENT, wallet_ref(wallet_id), 1)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_FAILED",
    )
    assert await wallets.balances(wallet_id) == (0, 0)
    insert = (
        "INSERT INTO ledger_references (reference, operation, fingerprint, hold_id, transaction_id, wallet_id)"
        " VALUES (:reference, :operation, 'f', NULL, NULL, :wallet_id)"
    )
    wid = uuid.UUID(wallet_id)
    for constraint, params in (
        (
            "ledger_references_api_prefix",
            {"reference": f"pay_{uuid.uuid4()}", "operation": "FreezeWallet", "wallet_id": wid},
        ),
        (
            "ledger_references_result",
            {"reference": f"wallet-api:u:{uuid.uuid4()}", "operation": "FreezeWallet", "wallet_id": None},
        ),
        (
            "ledger_references_operation",
            {"reference": f"pay_{uuid.uuid4()}", "operation": "DeleteWallet", "wallet_id": wid},
        ),
        (
            "ledger_references_length",
            {"reference": "wallet-api:" + "u" * 1100, "operation": "CloseWallet", "wallet_id": wid},
        ),
    ):
        with pytest.raises(IntegrityError) as raised:
            async with wallets.engine.begin() as conn:
                await conn.execute(text(insert), params)
        assert constraint_of(raised.value) == constraint


# --- postings, holds, freezing, closing --------------------------------------------------------


async def test_postings_must_balance_and_debits_need_funds(wallets: Wallets) -> None:
    wallet_id = await wallets.open_wallet(new_user())
    unbalanced = wallet_pb2.PostTransactionRequest(
        reference=f"ref-{uuid.uuid4()}",
        postings=[
            wallet_pb2.Posting(account=SETTLEMENT, amount=usd(-10)),
            wallet_pb2.Posting(account=wallet_ref(wallet_id), amount=usd(9)),
        ],
    )
    await expect_error(
        wallets.internal.PostTransaction(unbalanced), grpc.StatusCode.INVALID_ARGUMENT, "UNBALANCED_TRANSACTION"
    )
    await expect_error(
        wallets.internal.PostTransaction(transfer(f"ref-{uuid.uuid4()}", wallet_ref(wallet_id), SETTLEMENT, 1)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_FUNDS",
    )
    await expect_error(
        wallets.internal.PostTransaction(transfer(f"ref-{uuid.uuid4()}", SETTLEMENT, wallet_ref(str(uuid.uuid4())), 1)),
        grpc.StatusCode.NOT_FOUND,
        "RESOURCE_NOT_FOUND",
    )
    eur = await wallets.open_wallet(new_user(), "EUR")
    await expect_error(
        wallets.internal.PostTransaction(transfer(f"ref-{uuid.uuid4()}", SETTLEMENT, wallet_ref(eur), 1)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CURRENCY_MISMATCH",
    )
    assert await wallets.balances(wallet_id) == (0, 0)


async def test_a_hold_captured_for_less_than_held_releases_the_remainder(wallets: Wallets) -> None:
    payer, merchant = await wallets.open_wallet(new_user()), await wallets.open_wallet(new_user())
    await wallets.fund(payer, 1000)
    hold = await wallets.internal.CreateHold(hold_request(f"ref-{uuid.uuid4()}", payer, 600))
    assert await wallets.balances(payer) == (1000, 600)
    await expect_error(
        wallets.internal.CaptureHold(
            wallet_pb2.CaptureHoldRequest(
                reference=f"ref-{uuid.uuid4()}", hold_id=hold.hold_id, amount=usd(601), destination=wallet_ref(merchant)
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "CAPTURE_EXCEEDS_AUTHORIZED",
    )
    captured = await wallets.internal.CaptureHold(
        wallet_pb2.CaptureHoldRequest(
            reference=f"ref-{uuid.uuid4()}", hold_id=hold.hold_id, amount=usd(450), destination=wallet_ref(merchant)
        )
    )
    assert captured.hold.state == wallet_pb2.Hold.CAPTURED
    assert captured.hold.captured_amount.amount == 450
    assert sorted(p.amount.amount for p in captured.transaction.postings) == [-450, 450]
    assert await wallets.balances(payer) == (550, 0)  # 150 released, 450 posted
    assert await wallets.balances(merchant) == (450, 0)
    for again in (
        wallets.internal.CaptureHold(
            wallet_pb2.CaptureHoldRequest(
                reference=f"ref-{uuid.uuid4()}", hold_id=hold.hold_id, amount=usd(1), destination=wallet_ref(merchant)
            )
        ),
        wallets.internal.ReleaseHold(
            wallet_pb2.ReleaseHoldRequest(reference=f"ref-{uuid.uuid4()}", hold_id=hold.hold_id)
        ),
    ):
        await expect_error(again, grpc.StatusCode.FAILED_PRECONDITION, "HOLD_NOT_OPEN")
    fetched = await wallets.internal.GetHold(wallet_pb2.GetHoldRequest(hold_id=hold.hold_id))
    assert fetched == captured.hold


async def test_a_frozen_wallet_takes_credits_but_no_debit_or_hold(wallets: Wallets) -> None:
    owner = new_user()
    wallet_id = await wallets.open_wallet(owner)
    await wallets.fund(wallet_id, 100)
    hold = await wallets.internal.CreateHold(hold_request(f"ref-{uuid.uuid4()}", wallet_id, 30))
    freeze = wallet_pb2.FreezeWalletRequest(wallet_id=wallet_id, reason="chargeback review")
    await expect_error(
        wallets.public.FreezeWallet(freeze, metadata=as_user(owner)),
        grpc.StatusCode.PERMISSION_DENIED,
        "ADMIN_REQUIRED",
    )
    frozen = await wallets.public.FreezeWallet(freeze, metadata=as_user("ops", "ADMIN"))
    assert frozen.state == wallet_pb2.Wallet.FROZEN

    for call in (
        wallets.internal.PostTransaction(transfer(f"ref-{uuid.uuid4()}", wallet_ref(wallet_id), SETTLEMENT, 1)),
        wallets.internal.CreateHold(hold_request(f"ref-{uuid.uuid4()}", wallet_id, 1)),
        wallets.internal.CaptureHold(
            wallet_pb2.CaptureHoldRequest(
                reference=f"ref-{uuid.uuid4()}", hold_id=hold.hold_id, amount=usd(30), destination=SETTLEMENT
            )
        ),
        wallets.public.CloseWallet(wallet_pb2.CloseWalletRequest(wallet_id=wallet_id), metadata=as_user(owner)),
    ):
        await expect_error(call, grpc.StatusCode.FAILED_PRECONDITION, "WALLET_FROZEN")
    await wallets.fund(wallet_id, 5)  # credits still arrive
    released = await wallets.internal.ReleaseHold(
        wallet_pb2.ReleaseHoldRequest(reference=f"ref-{uuid.uuid4()}", hold_id=hold.hold_id)
    )
    assert released.state == wallet_pb2.Hold.RELEASED  # releasing gives money back: allowed
    assert await wallets.balances(wallet_id) == (105, 0)

    unfrozen = await wallets.public.UnfreezeWallet(
        wallet_pb2.UnfreezeWalletRequest(wallet_id=wallet_id), metadata=as_user("ops", "ADMIN")
    )
    assert unfrozen.state == wallet_pb2.Wallet.ACTIVE
    await wallets.internal.PostTransaction(transfer(f"ref-{uuid.uuid4()}", wallet_ref(wallet_id), SETTLEMENT, 105))
    assert await wallets.balances(wallet_id) == (0, 0)
    types = await wallet_event_types(wallets, wallet_id)
    assert types == [
        "wallet.created",
        "wallet.posted",
        "wallet.frozen",
        "wallet.posted",
        "wallet.unfrozen",
        "wallet.posted",
    ]


async def test_closing_needs_an_empty_wallet_and_a_closed_wallet_takes_nothing(wallets: Wallets) -> None:
    owner = new_user()
    wallet_id = await wallets.open_wallet(owner)
    await wallets.fund(wallet_id, 10)
    close = wallet_pb2.CloseWalletRequest(wallet_id=wallet_id)
    await expect_error(
        wallets.public.CloseWallet(close, metadata=as_user(owner)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "WALLET_NOT_EMPTY",
    )
    await wallets.internal.PostTransaction(transfer(f"ref-{uuid.uuid4()}", wallet_ref(wallet_id), FEES, 10))
    closed = await wallets.public.CloseWallet(close, metadata=as_user(owner))
    assert closed.state == wallet_pb2.Wallet.CLOSED
    for call in (
        wallets.internal.PostTransaction(transfer(f"ref-{uuid.uuid4()}", SETTLEMENT, wallet_ref(wallet_id), 1)),
        wallets.internal.CreateHold(hold_request(f"ref-{uuid.uuid4()}", wallet_id, 1)),
        wallets.public.FreezeWallet(
            wallet_pb2.FreezeWalletRequest(wallet_id=wallet_id), metadata=as_user("a", "ADMIN")
        ),
    ):
        await expect_error(call, grpc.StatusCode.FAILED_PRECONDITION, "WALLET_CLOSED")
    assert await wallets.open_wallet(owner) != wallet_id  # a new wallet in the same currency may be opened


async def test_entries_page_newest_first_with_signed_amounts_and_balance_after(wallets: Wallets) -> None:
    owner = new_user()
    wallet_id = await wallets.open_wallet(owner)
    movements = [100, -30, 50, -20, 7]
    for index, amount in enumerate(movements):
        source, destination = (SETTLEMENT, wallet_ref(wallet_id)) if amount > 0 else (wallet_ref(wallet_id), SETTLEMENT)
        await wallets.internal.PostTransaction(
            transfer(f"ref-{uuid.uuid4()}-{index}", source, destination, abs(amount))
        )
    entries: list[wallet_pb2.Entry] = []
    token = ""
    while True:
        page = await wallets.public.ListEntries(
            wallet_pb2.ListEntriesRequest(wallet_id=wallet_id, page_size=2, page_token=token), metadata=as_user(owner)
        )
        entries += page.entries
        token = page.next_page_token
        if not token:
            break
    assert [e.amount.amount for e in entries] == movements[::-1]
    assert [e.balance_after.amount for e in entries] == [107, 100, 120, 70, 100]
    assert all(e.payment_id.startswith("pay_ref-") and e.transaction_id for e in entries)
    await expect_error(
        wallets.public.ListEntries(
            wallet_pb2.ListEntriesRequest(wallet_id=str(uuid.uuid4()), page_token=page.next_page_token or "x"),
            metadata=as_user(owner),
        ),
        grpc.StatusCode.NOT_FOUND,
        "RESOURCE_NOT_FOUND",
    )
    other = await wallets.public.ListEntries(
        wallet_pb2.ListEntriesRequest(wallet_id=wallet_id, page_size=1), metadata=as_user(owner)
    )
    await expect_error(
        wallets.public.ListWallets(
            wallet_pb2.ListWalletsRequest(page_token=other.next_page_token), metadata=as_user(owner)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )


async def test_postings_and_lifecycle_changes_write_their_events_to_the_outbox(wallets: Wallets) -> None:
    owner = new_user()
    wallet_id = await wallets.open_wallet(owner)
    await wallets.fund(wallet_id, 250)
    async with wallets.engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT topic, payload FROM outbox WHERE aggregate_id = :id ORDER BY position"),
                {"id": wallet_id},
            )
        ).all()
    assert [row.topic for row in rows] == ["paymesh.wallets.v1"] * 2
    created, posted = (events_pb2.Event.FromString(row.payload) for row in rows)
    assert (created.type, created.sequence, created.wallet_changed.wallet.owner_id) == ("wallet.created", 1, owner)
    assert (posted.type, posted.sequence) == ("wallet.posted", 2)
    assert posted.wallet_posted.owner_id == owner
    assert posted.wallet_posted.entry.amount.amount == 250
    assert posted.wallet_posted.available_balance.amount == 250


async def wallet_event_types(wallets: Wallets, wallet_id: str) -> list[str]:
    async with wallets.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT event_type FROM outbox WHERE aggregate_id = :id ORDER BY position"), {"id": wallet_id}
        )
        return [row.event_type for row in rows]
