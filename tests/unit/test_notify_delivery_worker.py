"""DeliveryWorker.run under a graceful stop: the round in progress finishes before the worker stops.

A round sends messages and then records their outcomes; a stop between the two would leave
sent messages unrecorded, and the next replica would send them again (found by the chaos
harness: emails and webhooks sent twice across a SIGTERM of notify_svc).
"""

from __future__ import annotations

import asyncio

import pytest

from notify_svc.delivery import DeliveryWorker, RetryPolicy
from notify_svc.retry import Schedule

pytestmark = pytest.mark.asyncio


class ScriptedWorker(DeliveryWorker):
    """A worker whose rounds are scripted: each one 'sends', then 'records'."""

    def __init__(self, round_results: list[int | Exception]) -> None:  # no super(): run() needs only the policy
        schedule = Schedule(max_attempts=1, backoff_base_seconds=1, backoff_max_seconds=1)
        self._policy = RetryPolicy(
            personal=schedule,
            webhook=schedule,
            disable_after_seconds=1.0,
            lease_seconds=1.0,
            batch_size=1,
            poll_seconds=0.001,
        )
        self._results = round_results
        self.sending = asyncio.Event()
        self.recorded: list[int] = []

    async def run_once(self) -> int:
        result = self._results.pop(0) if self._results else 0
        self.sending.set()
        await asyncio.sleep(0.05)  # a send in flight
        if isinstance(result, Exception):
            raise result
        self.recorded.append(result)  # record_outcomes
        return result


async def test_a_graceful_stop_lets_the_round_record_what_it_sent() -> None:
    worker = ScriptedWorker([3])
    task = asyncio.create_task(worker.run())
    await worker.sending.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert worker.recorded == [3]


async def test_a_stop_while_idle_stops_at_once() -> None:
    worker = ScriptedWorker([])
    task = asyncio.create_task(worker.run())
    await worker.sending.wait()
    await asyncio.sleep(0.1)  # rounds with nothing to do, then a poll pause
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_failed_round_pauses_and_the_worker_goes_on() -> None:
    worker = ScriptedWorker([ConnectionError("database down"), 2])
    task = asyncio.create_task(worker.run())
    for _ in range(100):
        if worker.recorded:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert worker.recorded[:1] == [2]
