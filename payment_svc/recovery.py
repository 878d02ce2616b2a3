"""Background workers: resume unfinished work, expire uncaptured authorizations, prune idempotency keys.

The recovery worker is what makes a kill -9 harmless. Every round it leases
(FOR UPDATE SKIP LOCKED + a lease column, so replicas never take the same
row) the payments, refunds and payouts that are not resting and whose lease
has lapsed or was released with a retry delay, and drives each one forward
through the saga, which replays any step left STARTED with its original
reference. The sweeper marks REQUIRES_CAPTURE payments past capture_before
for cancellation, which the same worker then carries out (release the hold or
void the authorization).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

from opentelemetry import trace
from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_svc import store
from payment_svc.idempotency import IdempotencyKeys
from payment_svc.saga import Driven, Interrupted, Saga

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

KEY_PRUNE_SECONDS = 600.0
BACKLOG_SECONDS = 15.0
# A resource interrupted this many times is worth an operator's look (see docs/operations.md).
RETRYING_AFTER_ATTEMPTS = 5

UNFINISHED = Gauge("paymesh_saga_unfinished", "Payments, refunds and payouts payment_svc still has to drive.", ["kind"])
RETRYING = Gauge(
    "paymesh_saga_retrying",
    f"Unfinished resources interrupted at least {RETRYING_AFTER_ATTEMPTS} times (a dependency keeps refusing).",
    ["kind"],
)
AWAITING_PROCESSOR = Gauge(
    "paymesh_saga_awaiting_processor_seconds",
    "Age of the oldest refund or payout waiting for the processor's webhook (0 if none).",
    ["kind"],
)
Drive = Callable[[uuid.UUID], Awaitable[Driven]]


class RecoveryWorker:
    def __init__(
        self,
        engine: AsyncEngine,
        saga: Saga,
        keys: IdempotencyKeys,
        *,
        lease: timedelta,
        interval_seconds: float,
        batch_size: int,
        concurrency: int = 8,
    ) -> None:
        self._engine = engine
        self._saga = saga
        self._keys = keys
        self._lease = lease
        self._interval = interval_seconds
        self._batch = batch_size
        self._slots = asyncio.Semaphore(concurrency)

    async def run(self) -> None:
        """Recovers until cancelled; a failing round is logged and retried next interval."""
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("recovery round failed")
            await asyncio.sleep(self._interval)

    async def run_once(self) -> int:
        """One round: expire authorizations, then drive what is due. Returns how many resources were driven."""
        async with self._engine.begin() as conn:
            expired = await store.request_expiry_cancels(conn, self._batch)
        if expired:
            log.info("canceling %d expired authorizations", len(expired))
        drives: dict[str, Drive] = {
            "payment": self._saga.drive_payment,
            "refund": self._saga.drive_refund,
            "payout": self._saga.drive_payout,
        }
        total = 0
        for kind, drive in drives.items():
            async with self._engine.begin() as conn:
                due = await store.claim_due(conn, kind, self._saga.owner, self._lease, self._batch)
            await asyncio.gather(*(self._recover(kind, drive, resource_id) for resource_id in due))
            total += len(due)
        return total

    async def _recover(
        self, kind: str, drive: Callable[[uuid.UUID], Awaitable[Driven]], resource_id: uuid.UUID
    ) -> None:
        async with self._slots:
            # A span of its own, so the events this recovery writes carry a traceparent too.
            with tracer.start_as_current_span(f"recover {kind}", attributes={f"paymesh.{kind}_id": str(resource_id)}):
                try:
                    await drive(resource_id)
                except Interrupted as interrupted:
                    log.info("%s %s still interrupted: %s", kind, resource_id, interrupted)
                except Exception:
                    log.exception("recovering %s %s failed", kind, resource_id)

    async def report_backlog(self) -> None:
        """Updates the backlog gauges every few seconds, for alerts on work that does not finish."""
        while True:
            try:
                async with self._engine.connect() as conn:
                    for kind in store.WORKED:
                        found = await store.backlog(conn, kind, RETRYING_AFTER_ATTEMPTS)
                        UNFINISHED.labels(kind).set(found.unfinished)
                        RETRYING.labels(kind).set(found.retrying)
                        AWAITING_PROCESSOR.labels(kind).set(found.awaiting_processor_seconds)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("backlog report failed")
            await asyncio.sleep(BACKLOG_SECONDS)

    async def prune_keys(self) -> None:
        """Deletes idempotency keys past their retention, every few minutes."""
        while True:
            try:
                async with self._engine.begin() as conn:
                    pruned = await self._keys.prune(conn)
                if pruned:
                    log.info("pruned %d expired idempotency keys", pruned)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("idempotency key pruning failed")
            await asyncio.sleep(KEY_PRUNE_SECONDS)
