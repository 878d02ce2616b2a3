"""The garbage collector's set-up and pause histogram (paymesh_runtime.heap)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from paymesh_runtime import heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_after_start_the_survivors_are_frozen_and_young_collections_are_rarer(restored_gc: None) -> None:
    survivor: list[object] = [object()]
    heap.settle_after_start()
    assert gc.get_freeze_count() > 0
    assert all(o is not survivor for o in gc.get_objects())  # frozen: no collection walks it any more
    assert gc.get_threshold() == (heap.GEN0_THRESHOLD, *heap.OLDER_THRESHOLDS)
    # A cycle made later is still collected.
    cycle: list[object] = []
    cycle.append(cycle)
    marker = id(cycle)
    del cycle
    gc.collect()
    assert all(id(o) != marker for o in gc.get_objects())


def test_each_collection_is_one_observation_of_its_generation() -> None:
    pauses = heap.GcPauses().install()
    try:
        gc.collect(0)
        gc.collect(0)
        gc.collect(2)
    finally:
        pauses.uninstall()
    registry = CollectorRegistry()
    registry.register(pauses)
    text = generate_latest(registry).decode()
    assert 'paymesh_gc_pause_seconds_count{generation="0"} 2.0' in text
    assert 'paymesh_gc_pause_seconds_count{generation="2"} 1.0' in text
    assert 'paymesh_gc_pause_seconds_bucket{generation="2",le="+Inf"} 1.0' in text
    assert registry.get_sample_value("paymesh_gc_pause_seconds_sum", {"generation": "2"}) > 0  # type: ignore[operator]
