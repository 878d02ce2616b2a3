"""Hostile input at a real gRPC server (wallet_svc in-process on the test stack's PostgreSQL, through the
production interceptor and error mapper): every bad request gets a documented INVALID_ARGUMENT naming its
field and changes nothing; forged page tokens and a database that refuses connections are no 500s."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from devstack.stack import Stack
from paymesh.wallet.v1 import wallet_pb2
from paymesh_runtime.errors import ECHO_LIMIT
from paymesh_runtime.pagination import PageTokens
from tests.integration.wallet_support import (
    SETTLEMENT,
    Wallets,
    as_user,
    error_info,
    new_user,
    running_wallet,
    settings_for,
    transfer,
    wallet_ref,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def wallets(infra: Stack) -> AsyncIterator[Wallets]:
    async with running_wallet(infra) as running:
        yield running


async def _refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


def _violations(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, error
    found: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found += [v.field for v in bad.field_violations]
    return found


def _assert_invalid(error: grpc.aio.AioRpcError, reason: str, field: str | None) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert error_info(error).reason == reason
    assert _violations(error) == ([field] if field else [])
    assert "Error" not in (error.details() or "")  # no exception class name


async def test_a_request_with_invalid_utf8_is_invalid_argument_naming_the_field(wallets: Wallets) -> None:
    owner = new_user()
    async with grpc.aio.insecure_channel(wallets.address) as channel:
        # Raw bytes, as Envoy transcodes GET /v1/wallets/%FF%FE: field 1 (wallet_id) = FF FE.
        get_wallet = channel.unary_unary("/paymesh.wallet.v1.WalletService/GetWallet")
        error = await _refused(get_wallet(b"\x0a\x02\xff\xfe", metadata=as_user(owner)))
        _assert_invalid(error, "VALIDATION_FAILED", "wallet_id")
        # Not a message at all: still a documented 400, without a field.
        garbage = await _refused(get_wallet(b"\xff\xff\xff", metadata=as_user(owner)))
        _assert_invalid(garbage, "VALIDATION_FAILED", None)


async def test_a_nul_deep_in_an_internal_batch_is_refused_and_posts_nothing(wallets: Wallets) -> None:
    wallet_id = await wallets.open_wallet(new_user())
    good = transfer(f"hostile-{uuid.uuid4()}", SETTLEMENT, wallet_ref(wallet_id), 500)
    bad = transfer(f"hostile-{uuid.uuid4()}", SETTLEMENT, wallet_ref(wallet_id), 700)
    bad.description = "refund\x00; DROP TABLE accounts"
    error = await _refused(
        wallets.internal.PostTransactions(wallet_pb2.PostTransactionsRequest(transactions=[good, bad]))
    )
    _assert_invalid(error, "VALIDATION_FAILED", "transactions[1].description")
    assert await wallets.balances(wallet_id) == (0, 0)  # not even the good one


async def test_a_huge_invalid_currency_is_echoed_cut_to_the_echo_limit(wallets: Wallets) -> None:
    owner = new_user()
    huge = "X" * 16_384
    error = await _refused(
        wallets.public.CreateWallet(wallet_pb2.CreateWalletRequest(currency=huge), metadata=as_user(owner))
    )
    _assert_invalid(error, "INVALID_CURRENCY", "currency")
    assert len(error_info(error).metadata["currency"]) == ECHO_LIMIT
    trailers = sum(len(key) + len(value) for key, value in error.trailing_metadata() or ())
    assert trailers < 4_096  # far below Envoy's header limit; it was twice the input
    listed = await wallets.public.ListWallets(wallet_pb2.ListWalletsRequest(), metadata=as_user(owner))
    assert not listed.wallets


def _unsigned_token(cursor: list[object], query: list[str]) -> str:
    """A page token as paymesh issued them before they were signed: anyone could compute one."""
    fingerprint = hashlib.sha256("\x1f".join(query).encode()).hexdigest()[:16]
    raw = json.dumps({"c": cursor, "q": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_forged_foreign_and_out_of_range_page_tokens_are_invalid_page_token(
    wallets: Wallets, infra: Stack
) -> None:
    alice, mallory = new_user(), new_user()
    currencies = ["USD", "EUR", "JPY"]
    opened = [await wallets.open_wallet(alice, currency) for currency in currencies]
    await wallets.fund(opened[0], 100)
    await wallets.fund(opened[0], 200)
    # Honest paging still works.
    seen, token = [], ""
    while True:
        page = await wallets.public.ListWallets(
            wallet_pb2.ListWalletsRequest(page_size=1, page_token=token), metadata=as_user(alice)
        )
        seen += [w.wallet_id for w in page.wallets]
        token = page.next_page_token
        if not token:
            break
    assert seen == opened
    first = await wallets.public.ListWallets(wallet_pb2.ListWalletsRequest(page_size=1), metadata=as_user(alice))
    # The signing key is the one the server derives from its settings: a holder of it could sign any
    # cursor, and even then an out-of-range one is refused before it reaches a query.
    signer = PageTokens.from_settings(settings_for(infra))
    entries = ["entries", str(uuid.UUID(opened[0]))]
    forged = {
        "ListWallets of another owner": (mallory, wallet_pb2.ListWalletsRequest(page_token=first.next_page_token)),
        "ListEntries unsigned": (
            alice,
            wallet_pb2.ListEntriesRequest(wallet_id=opened[0], page_token=_unsigned_token([2**63], entries)),
        ),
        "ListEntries past int64": (
            alice,
            wallet_pb2.ListEntriesRequest(wallet_id=opened[0], page_token=signer._encode([2**63], entries)),
        ),
        "ListWallets bad uuid": (
            alice,
            wallet_pb2.ListWalletsRequest(page_token=signer._encode([0, "x"], ["wallets", alice])),
        ),
        "ListWallets year 300000": (
            alice,
            wallet_pb2.ListWalletsRequest(page_token=signer._encode([10**19, uuid.uuid4().hex], ["wallets", alice])),
        ),
    }
    for label, (who, request) in forged.items():
        method = (
            wallets.public.ListEntries
            if isinstance(request, wallet_pb2.ListEntriesRequest)
            else wallets.public.ListWallets
        )
        error = await _refused(method(request, metadata=as_user(who)))  # type: ignore[operator]
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (label, error)
        assert error_info(error).reason == "INVALID_PAGE_TOKEN", label
        assert _violations(error) == ["page_token"], label


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_database_that_refuses_connections_is_dependency_unavailable(infra: Stack) -> None:
    dead = infra.database_url("wallet").rsplit("@", 1)[0] + f"@127.0.0.1:{_closed_port()}/paymesh_wallet"
    async with running_wallet(infra, database_url=dead) as down:
        owner = new_user()
        for call in (
            down.public.CreateWallet(wallet_pb2.CreateWalletRequest(currency="USD"), metadata=as_user(owner)),
            down.public.GetWallet(wallet_pb2.GetWalletRequest(wallet_id=str(uuid.uuid4())), metadata=as_user(owner)),
            down.public.ListWallets(wallet_pb2.ListWalletsRequest(), metadata=as_user(owner)),
            down.internal.PostTransaction(
                transfer(f"dead-{uuid.uuid4()}", SETTLEMENT, wallet_ref(str(uuid.uuid4())), 1)
            ),
        ):
            error = await _refused(call)
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error
            info = error_info(error)
            assert (info.reason, info.metadata["dependency"]) == ("DEPENDENCY_UNAVAILABLE", "postgresql")
