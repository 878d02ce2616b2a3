"""Releases holds past their expiry: a background loop, safe in every replica.

Each round expires due holds in batches, one short transaction per batch;
SKIP LOCKED makes replicas take disjoint holds and leaves a hold that a
capture or release is working on to that call.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from wallet_svc import store

log = logging.getLogger(__name__)


class HoldSweeper:
    def __init__(self, engine: AsyncEngine, *, interval_seconds: float, batch_size: int) -> None:
        self._engine = engine
        self._interval = interval_seconds
        self._batch_size = batch_size
        self.expired = 0

    async def sweep_once(self) -> int:
        """Expires every hold due now; returns how many."""
        total = 0
        while True:
            async with self._engine.begin() as conn:
                count = await store.expire_holds(conn, self._batch_size)
            total += count
            if count < self._batch_size:
                break
        if total:
            log.info("released %d expired holds", total)
        self.expired += total
        return total

    async def run(self) -> None:
        """Sweeps until cancelled, surviving database outages."""
        while True:
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # PostgreSQL is down or restarting: try again next round.
                log.warning("hold sweeper paused: %s: %s", type(error).__name__, error)
            await asyncio.sleep(self._interval)
