"""The service's database: one async SQLAlchemy engine (asyncpg) per process."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from paymesh_runtime.health import Probe
from paymesh_runtime.settings import ServiceSettings


def create_engine(settings: ServiceSettings) -> AsyncEngine:
    return create_async_engine(
        settings.database_url.get_secret_value(),
        pool_size=settings.database_pool_size,
        max_overflow=0,
        # No pre-ping: asyncpg's costs three round trips (BEGIN, a query, ROLLBACK) on every checkout,
        # more than many of the transactions it guards. A connection found dead instead fails its
        # statement once, and SQLAlchemy then discards every pooled connection opened before, so
        # after a database restart the health probe (every few seconds) takes that one failure.
        pool_pre_ping=False,
        # Money paths fail fast instead of queueing forever behind a lock.
        connect_args={"server_settings": {"lock_timeout": "5s", "statement_timeout": "30s"}},
    )


def database_probe(engine: AsyncEngine) -> Probe:
    """A health probe that runs a real query."""

    async def probe() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return probe
