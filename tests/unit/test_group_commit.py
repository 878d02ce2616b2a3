"""Group commit: batches form from what arrives while batches run; results and errors reach each caller."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY

from paymesh_runtime.group_commit import GroupCommit


class Recorder:
    """A batch handler that records its batches and finishes each when the test releases it."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail: BaseException | None = None

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [item * 10 for item in items]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_request_alone_starts_a_batch_at_once() -> None:
    handler = Recorder()
    handler.release.set()
    group = GroupCommit(handler, max_batch=10)
    assert await group.submit(7) == 70
    assert handler.batches == [[7]]


async def test_requests_arriving_while_a_batch_runs_go_together_into_the_next_one() -> None:
    handler = Recorder()
    group = GroupCommit(handler, max_batch=10)
    first = asyncio.ensure_future(group.submit(1))
    await settle()
    later = [asyncio.ensure_future(group.submit(i)) for i in range(2, 6)]
    await settle()
    assert handler.batches == [[1]]  # the others wait for the running batch
    handler.release.set()
    assert await first == 10
    assert await asyncio.gather(*later) == [20, 30, 40, 50]
    assert handler.batches == [[1], [2, 3, 4, 5]]


async def test_batches_are_cut_at_max_batch_and_several_may_run_at_once() -> None:
    handler = Recorder()
    group = GroupCommit(handler, max_batch=2, max_in_flight=2)
    calls = [asyncio.ensure_future(group.submit(i)) for i in range(5)]
    await settle()
    # Two slots: the first two requests each start a batch at once; the rest wait for a free slot.
    assert handler.batches == [[0], [1]]
    assert group.in_flight == 2
    handler.release.set()
    assert await asyncio.gather(*calls) == [0, 10, 20, 30, 40]
    assert handler.batches == [[0], [1], [2, 3], [4]]


async def test_a_failing_batch_fails_each_of_its_callers_and_the_next_batch_still_runs() -> None:
    handler = Recorder()
    group = GroupCommit(handler, max_batch=10)
    handler.fail = ConnectionError("database gone")
    handler.release.set()
    with pytest.raises(ConnectionError):
        await group.submit(1)
    handler.fail = None
    assert await group.submit(2) == 20


async def test_a_cancelled_caller_does_not_cancel_its_batch() -> None:
    handler = Recorder()
    group = GroupCommit(handler, max_batch=10)
    impatient = asyncio.ensure_future(group.submit(1))
    await settle()
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    handler.release.set()
    await group.drain()
    assert handler.batches == [[1]]
    assert await group.submit(2) == 20


async def test_a_handler_answering_the_wrong_number_of_results_fails_the_batch() -> None:
    async def short(items: Sequence[int]) -> list[int]:
        return list(items)[:-1]

    group: GroupCommit[int, int] = GroupCommit(short, max_batch=10)
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        await group.submit(1)


def test_nonsensical_limits_are_refused() -> None:
    async def handler(items: Sequence[int]) -> list[int]:
        return list(items)

    with pytest.raises(ValueError, match="at least 1"):
        GroupCommit(handler, max_batch=0)


def _observed(metric: str, name: str) -> tuple[float, float]:
    """(count, sum) of a group-commit histogram for one GroupCommit name."""
    labels = {"name": name}
    count = REGISTRY.get_sample_value(f"{metric}_count", labels) or 0.0
    total = REGISTRY.get_sample_value(f"{metric}_sum", labels) or 0.0
    return count, total


async def test_each_batch_is_timed_and_each_request_its_wait_for_a_batch() -> None:
    handler = Recorder()
    group = GroupCommit(handler, max_batch=10, name="timed-test")
    first = asyncio.ensure_future(group.submit(1))
    await settle()
    later = [asyncio.ensure_future(group.submit(i)) for i in (2, 3)]
    await asyncio.sleep(0.02)  # 2 and 3 wait while the first batch runs
    handler.release.set()
    await asyncio.gather(first, *later)
    batches, batch_seconds = _observed("paymesh_group_commit_batch_seconds", "timed-test")
    waits, wait_seconds = _observed("paymesh_group_commit_wait_seconds", "timed-test")
    assert batches == 2
    assert batch_seconds >= 0.02  # the first batch ran until released
    assert waits == 3
    assert wait_seconds >= 2 * 0.02  # two requests waited for the first batch to finish
