"""DeliveryWorker.run under a graceful stop: the round in progress finishes before the worker stops.

A round sends messages and then records their outcomes; a stop between the two would leave
sent messages unrecorded, and the next replica would send them again (found by the chaos
harness: emails and webhooks sent twice across a SIGTERM of notify_svc).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

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


class FlakyStore:
    """A store whose database goes away once, right after a round's sends."""

    def __init__(self) -> None:
        self.due = [["d1", "d2"], ["d3"]]
        self.claims = 0
        self.record_failures = 1
        self.recorded: list[list[str]] = []

    async def claim_due(self, limit: int, lease_seconds: float) -> list[str]:
        self.claims += 1
        return self.due.pop(0) if self.due else []

    async def record_outcomes(
        self, outcomes: list[SimpleNamespace], disable_after: float, notice: object
    ) -> tuple[set[str], list[object]]:
        if self.record_failures:
            self.record_failures -= 1
            raise ConnectionError("terminating connection due to administrator command")
        names = [outcome.delivery.notification_id for outcome in outcomes]
        self.recorded.append(names)
        return set(names), []

    async def erase_expired_secrets(self) -> None:
        return None

    async def publish_dead_letters(self, publish: object, limit: int) -> int:
        return 0


class SendingWorker(DeliveryWorker):
    """The real run_once over a FlakyStore; a send is its delivery's name."""

    def __init__(self, store: FlakyStore) -> None:  # no super(): run_once needs the store and the policy
        schedule = Schedule(max_attempts=1, backoff_base_seconds=1, backoff_max_seconds=1)
        self._store = store  # type: ignore[assignment]
        self._policy = RetryPolicy(schedule, schedule, 1.0, 25.0, 10, 0.001)
        self._next_dead_letter_check = 0.0
        self._next_secret_sweep = 0.0
        self._unrecorded = []
        self.sent: list[str] = []

    async def _observed(self, delivery: str) -> SimpleNamespace:  # type: ignore[override]
        self.sent.append(delivery)
        return SimpleNamespace(state="DELIVERED", delivery=SimpleNamespace(notification_id=delivery))


async def test_outcomes_that_could_not_be_recorded_are_recorded_before_anything_new_is_claimed() -> None:
    store = FlakyStore()
    worker = SendingWorker(store)
    with pytest.raises(ConnectionError):
        await worker.run_once()  # sent d1 and d2, then the database went away
    assert store.recorded == []
    await worker.run_once()  # the database is back
    assert store.recorded == [["d1", "d2"], ["d3"]]
    assert worker.sent == ["d1", "d2", "d3"]  # nothing sent twice


async def test_while_the_database_stays_away_nothing_new_is_claimed_or_sent() -> None:
    store = FlakyStore()
    store.record_failures = 3
    worker = SendingWorker(store)
    for _ in range(3):
        with pytest.raises(ConnectionError):
            await worker.run_once()
    assert store.claims == 1
    assert worker.sent == ["d1", "d2"]
