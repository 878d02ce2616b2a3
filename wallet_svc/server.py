"""wallet_svc bootstrap: builds the dependencies once and wires the server."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh.wallet.v1 import wallet_pb2_grpc
from paymesh_runtime import app
from paymesh_runtime.callers import Callers, end_users
from paymesh_runtime.db import create_engine, create_pool, database_probe
from paymesh_runtime.identity import ServiceTokens
from paymesh_runtime.outbox import Outbox, outbox_relay
from paymesh_runtime.pagination import PageTokens
from paymesh_runtime.server import Servicer
from wallet_svc import store
from wallet_svc.operations import HoldPolicy, Ledger
from wallet_svc.service import WalletService
from wallet_svc.settings import WalletSettings
from wallet_svc.sweeper import HoldSweeper

NAME = "wallet_svc"
FULL_NAME = "paymesh.wallet.v1.WalletService"
# Services whose x-paymesh-user-id counts here: payment_svc acts for the user it verified.
DELEGATES = frozenset({"payment_svc"})


def servicer(settings: WalletSettings, engine: AsyncEngine, pool: asyncpg.Pool) -> Servicer:
    """The WalletService on `engine` and, for batched postings, `pool` (tests serve it on port 0 with
    create_server)."""
    outbox = Outbox(store.outbox, store.outbox_sequence, NAME)
    policy = HoldPolicy(settings.hold_default_ttl_seconds, settings.hold_max_ttl_seconds)
    tokens = ServiceTokens(settings.service_token_secret.get_secret_value())
    service = WalletService(Ledger(engine, pool, outbox, policy), tokens, PageTokens.from_settings(settings))
    return Servicer(FULL_NAME, service, wallet_pb2_grpc.add_WalletServiceServicer_to_server)


def callers(settings: WalletSettings) -> Callers:
    """Whose calls these are (tests serve the servicer with it too)."""
    return end_users(settings, NAME, delegates=DELEGATES)


async def build(settings: WalletSettings) -> app.ServiceApp:
    # No Redis: balances are never cached (a stale balance must never back a
    # debit), and nothing else in the ledger needs it.
    engine = create_engine(settings)
    pool = await create_pool(settings, settings.batch_pool_size)
    relay = outbox_relay(engine, settings)
    sweeper = HoldSweeper(
        engine, interval_seconds=settings.sweeper_interval_seconds, batch_size=settings.sweeper_batch_size
    )
    return app.ServiceApp(
        servicers=[servicer(settings, engine, pool)],
        probes={"postgres": database_probe(engine)},
        callers=callers(settings),
        background=[relay.run, sweeper.run],
        cleanup=[pool.close, engine.dispose],
    )


def main() -> None:
    app.main(NAME, WalletSettings, build, Path(__file__).parent / "migrations")
