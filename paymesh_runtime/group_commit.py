"""Group commit: concurrent requests gathered into batches, each batch handled by one call.

A request that arrives while fewer than `max_in_flight` batches run starts a
batch at once: alone, it waits for nothing. Requests that arrive while the
batches in flight run queue up, and the next batch takes all of them (up to
`max_batch`) as soon as one finishes. Under load a batch therefore gathers
what arrived during one batch's time, with no timer at all: the busier the
service, the bigger the batches and the fewer the transactions and round
trips per request, which is how group commit in databases and TigerBeetle's
batching of transfers turn a per-request cost into a per-batch one.

Each batch runs inside a span joined to its requests' traces
(paymesh_runtime.telemetry_spans.batch_span: the first sampled request's
child, linked to the others).

The handler gets the items in arrival order and returns one result per item
(in the same order); a handler that raises fails every item of its batch with
that error. A caller that is cancelled does not take its item out of a batch
that started: the work completes and the result is dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from opentelemetry.trace import SpanContext
from prometheus_client import Histogram

from paymesh_runtime.telemetry_spans import batch_span, current_span_context

BATCH_SIZE = Histogram(
    "paymesh_group_commit_batch_size",
    "Requests handled per batch, by group commit.",
    ["name"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)

BATCH_SECONDS = Histogram(
    "paymesh_group_commit_batch_seconds",
    "Time one batch took to handle, by group commit.",
    ["name"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
)
WAIT_SECONDS = Histogram(
    "paymesh_group_commit_wait_seconds",
    "Time a request waited for its batch to start, by group commit.",
    ["name"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
)

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    def __init__(
        self,
        handle: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
        *,
        max_batch: int,
        max_in_flight: int = 1,
        name: str = "batch",
    ) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        self._handle = handle
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        # (item, its caller's future, its caller's span, when it was submitted: time.perf_counter())
        self._waiting: list[tuple[Item, asyncio.Future[Result], SpanContext, float]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._sizes = BATCH_SIZE.labels(name)
        self._seconds = BATCH_SECONDS.labels(name)
        self._waits = WAIT_SECONDS.labels(name)
        self._span_name = f"{name} batch"

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def submit(self, item: Item) -> Result:
        """Handles `item` in the next batch and returns its result (or raises its batch's error)."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        # A caller cancelled meanwhile never reads its future: mark an error as seen, not lost.
        future.add_done_callback(_retrieve)
        # The caller's span: the batch's span joins the traces of its requests (paymesh_runtime.telemetry_spans).
        self._waiting.append((item, future, current_span_context(), time.perf_counter()))
        self._start_batches()
        return await asyncio.shield(future)

    async def drain(self) -> None:
        """Waits until every submitted item was handled (for shutdown)."""
        while self._running or self._waiting:
            self._start_batches()
            if self._running:
                await asyncio.wait(set(self._running))

    def _start_batches(self) -> None:
        while self._waiting and len(self._running) < self._max_in_flight:
            batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
            task = asyncio.create_task(self._run(batch), name="group-commit batch")
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._start_batches()

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Result], SpanContext, float]]) -> None:
        items = [item for item, _, _, _ in batch]
        started = time.perf_counter()
        self._sizes.observe(len(items))
        for _, _, _, submitted in batch:
            self._waits.observe(started - submitted)
        try:
            with batch_span(self._span_name, [parent for _, _, parent, _ in batch], len(items)):
                results = await self._handle(items)
            self._seconds.observe(time.perf_counter() - started)
            if len(results) != len(items):
                raise RuntimeError(f"the batch handler answered {len(results)} results for {len(items)} items")
        except Exception as error:  # every caller of the batch gets the error
            for _, future, _, _ in batch:
                if not future.done():
                    future.set_exception(error)
            return
        except BaseException:
            for _, future, _, _ in batch:
                if not future.done():
                    future.cancel()
            raise
        for (_, future, _, _), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


def _retrieve(future: asyncio.Future[Result]) -> None:
    if not future.cancelled():
        future.exception()
