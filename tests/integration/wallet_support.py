"""wallet_svc served in-process on port 0 against the test stack's real PostgreSQL.

`running_wallet(stack)` migrates the wallet database, serves WalletService
through paymesh_runtime.server.create_server (the production interceptors,
error mapper and caller resolution included) and gives the test a public
stub (an end user's bearer token per call, tests.identity), an internal stub
carrying payment_svc's service token, and the engine for checking the
database itself.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.stack import Stack
from paymesh.common.v1 import money_pb2
from paymesh.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from paymesh_runtime import migrations
from paymesh_runtime.channels import internal_channel
from paymesh_runtime.db import create_engine, create_pool, database_probe
from paymesh_runtime.identity import ServiceTokens
from paymesh_runtime.server import create_server
from tests import identity
from wallet_svc.server import callers, servicer
from wallet_svc.settings import WalletSettings

MIGRATIONS = Path(__file__).resolve().parents[2] / "wallet_svc" / "migrations"
Metadata = tuple[tuple[str, str], ...]


def settings_for(stack: Stack, **overrides: object) -> WalletSettings:
    values: dict[str, object] = {
        "grpc_port": 0,
        "database_url": stack.database_url("wallet"),
        **identity.service_settings(stack),
        "database_pool_size": 40,
        **overrides,
    }
    return WalletSettings(**values)  # type: ignore[arg-type]


async def migrate(stack: Stack) -> None:
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS, stack.database_url("wallet"))


def as_user(user_id: str, role: str = "CUSTOMER", key: str | None = None) -> Metadata:
    """An end user's credentials (a bearer access token), with an Idempotency-Key if `key` is given."""
    headers = identity.bearer(user_id, role)
    return headers if key is None else (*headers, ("idempotency-key", key))


def new_user() -> str:
    return f"user-{uuid.uuid4()}"


def usd(amount: int) -> money_pb2.Money:
    return money_pb2.Money(currency="USD", amount=amount)


def wallet_ref(wallet_id: str) -> wallet_pb2.AccountRef:
    return wallet_pb2.AccountRef(wallet_id=wallet_id)


SETTLEMENT = wallet_pb2.AccountRef(system_account=wallet_pb2.EXTERNAL_SETTLEMENT)
FEES = wallet_pb2.AccountRef(system_account=wallet_pb2.FEES)


def transfer(
    reference: str, source: wallet_pb2.AccountRef, destination: wallet_pb2.AccountRef, amount: int
) -> wallet_pb2.PostTransactionRequest:
    return wallet_pb2.PostTransactionRequest(
        reference=reference,
        payment_id=f"pay_{reference}",
        postings=[
            wallet_pb2.Posting(account=source, amount=usd(-amount)),
            wallet_pb2.Posting(account=destination, amount=usd(amount)),
        ],
    )


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The google.rpc.ErrorInfo of a failed call."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, error
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(f"no ErrorInfo in {error}")


def reason_of(error: grpc.aio.AioRpcError) -> str:
    """The google.rpc.ErrorInfo reason of a failed call."""
    return str(error_info(error).reason)


@dataclass
class Wallets:
    """A running wallet_svc and ways to call it."""

    engine: AsyncEngine
    public: wallet_pb2_grpc.WalletServiceStub
    internal: wallet_pb2_grpc.WalletServiceStub
    address: str
    tokens: ServiceTokens

    async def open_wallet(self, owner: str, currency: str = "USD") -> str:
        wallet = await self.public.CreateWallet(
            wallet_pb2.CreateWalletRequest(currency=currency), metadata=as_user(owner)
        )
        return str(wallet.wallet_id)

    async def fund(self, wallet_id: str, amount: int) -> None:
        await self.internal.PostTransaction(transfer(f"fund-{uuid.uuid4()}", SETTLEMENT, wallet_ref(wallet_id), amount))

    async def balances(self, wallet_id: str) -> tuple[int, int]:
        """(posted, held) straight from the database."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT posted, held FROM accounts WHERE id = :id"), {"id": uuid.UUID(wallet_id)}
                )
            ).one()
        return int(row.posted), int(row.held)

    async def scalar(self, sql: str, **params: object) -> object:
        async with self.engine.connect() as conn:
            return await conn.scalar(text(sql), params)


@asynccontextmanager
async def running_wallet(stack: Stack, **overrides: object) -> AsyncIterator[Wallets]:
    identity.publish_test_key(stack)
    await migrate(stack)
    settings = settings_for(stack, **overrides)
    engine = create_engine(settings)
    pool = await create_pool(settings, 4)
    who = callers(settings)
    running = create_server(
        settings, [servicer(settings, engine, pool)], {"postgres": database_probe(engine)}, callers=who
    )
    await running.server.start()
    address = f"127.0.0.1:{running.port}"
    tokens = ServiceTokens(settings.service_token_secret.get_secret_value())
    public_channel = grpc.aio.insecure_channel(address)
    payment_channel = internal_channel(address, caller="payment_svc", tokens=tokens)
    try:
        yield Wallets(
            engine,
            wallet_pb2_grpc.WalletServiceStub(public_channel),
            wallet_pb2_grpc.WalletServiceStub(payment_channel),
            address,
            tokens,
        )
    finally:
        await public_channel.close()
        await payment_channel.close()
        await running.server.stop(None)
        await who.close()
        await pool.close()
        await engine.dispose()
