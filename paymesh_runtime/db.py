"""The service's database: one async SQLAlchemy engine (asyncpg) per process, and for the money
path a plain asyncpg pool (prepared statements, no ORM or Core layer in between)."""

from __future__ import annotations

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from paymesh_runtime.health import Probe
from paymesh_runtime.settings import ServiceSettings
from paymesh_runtime.telemetry_db import TracedConnection, instrument_engine

# Money paths fail fast instead of queueing forever behind a lock.
SERVER_SETTINGS = {"lock_timeout": "5s", "statement_timeout": "30s"}
# payment_svc's batch statement and closing function take whole batches as arrays (unnest), so no plan of
# theirs depends on a parameter's value, only on how many rows an array holds. Left to choose, PostgreSQL
# plans them again at every call: an estimate from the real array length (a few rows) always looks cheaper
# than the generic plan's (unnest's default, 100), so the cached plan is never used. Planning inside the
# batch functions was ~15 % of the CPU of the money path's backends in both services' databases together at
# one payment in flight (perf; docs/performance.md, "Plans made once").
# A generic plan is still made again whenever its tables' statistics change (ANALYZE invalidates it).
# wallet_svc's pool keeps PostgreSQL's choice: with generic plans its single postings (card deposits)
# cost more, 7-10 % fewer deposits per second in alternating runs.
HOT_PATH_SETTINGS = {**SERVER_SETTINGS, "plan_cache_mode": "force_generic_plan"}


def create_engine(settings: ServiceSettings) -> AsyncEngine:
    """The engine; its statements get spans inside sampled traces (paymesh_runtime.telemetry_db)."""
    engine = create_async_engine(
        settings.database_url.get_secret_value(),
        pool_size=settings.database_pool_size,
        max_overflow=0,
        # No pre-ping: asyncpg's costs three round trips (BEGIN, a query, ROLLBACK) on every checkout,
        # more than many of the transactions it guards. A connection found dead instead fails its
        # statement once, and SQLAlchemy then discards every pooled connection opened before, so
        # after a database restart the health probe (every few seconds) takes that one failure.
        pool_pre_ping=False,
        # A failed statement's error (logged, or echoed anywhere) never carries its parameters:
        # password hashes, tokens, emails, sealed secrets.
        hide_parameters=True,
        connect_args={"server_settings": SERVER_SETTINGS, "connection_class": TracedConnection},
    )
    return instrument_engine(engine)


def asyncpg_dsn(settings: ServiceSettings) -> str:
    """The database URL as asyncpg takes it (without SQLAlchemy's driver suffix)."""
    return settings.database_url.get_secret_value().replace("postgresql+asyncpg://", "postgresql://", 1)


async def create_pool(settings: ServiceSettings, size: int, *, generic_plans: bool = False) -> asyncpg.Pool:
    """An asyncpg pool on the service's database for its hot path: each connection prepares a
    statement once and reuses it (asyncpg's statement cache), and with `generic_plans` plans it
    once too (HOT_PATH_SETTINGS). No connection opens before the first use (min_size=0), so a
    service starts, and reports itself not ready, while its database is down, like the engine does."""
    pool = await asyncpg.create_pool(
        asyncpg_dsn(settings),
        min_size=0,
        max_size=size,
        server_settings=HOT_PATH_SETTINGS if generic_plans else SERVER_SETTINGS,
        connection_class=TracedConnection,
        reset=_keep_session,
    )
    assert pool is not None
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool beyond what asyncpg always does (end an open
    transaction, drop listeners): nothing. The hot path keeps no session state (no SET, LISTEN or
    session advisory lock; payment_svc's replica lock has its own connection), so asyncpg's default
    reset query (RESET ALL, UNLISTEN *, pg_advisory_unlock_all(), ...) would cost a round trip per
    batch and change nothing."""


def database_probe(engine: AsyncEngine) -> Probe:
    """A health probe that runs a real query."""

    async def probe() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return probe
