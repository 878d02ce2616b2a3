"""The cyclic garbage collector of a long-running service: out of the way of requests, and measured.

CPython collects its youngest generation every 700 container allocations and,
every so often, the whole heap. A service holds ~150,000 long-lived objects
after start-up (modules, protobuf descriptors, SQLAlchemy's compiled
statements, the app itself) that never become garbage, yet every full
collection walks them all (the one right after start-up took 93 ms), every
few seconds under load in payment_svc, with every request in flight waiting
behind it, and ~12 % of the services' wall time went to the collector
(docs/performance.md, "The garbage collector").

`settle_after_start` therefore collects once when the service is built,
freezes what survived (gc.freeze: later collections skip it, as Instagram and
others do for long-running Python servers) and collects the young generation
every GEN0_THRESHOLD allocations instead of 700. Garbage without cycles is
still freed at once by reference counting; only cycles wait a little longer.

`GcPauses` exports how long each collection stopped the process, by
generation, as the histogram `paymesh_gc_pause_seconds`. The collector's
callback only adds to plain counters (no lock: a collection can start while
the thread that triggered it holds any lock); the histogram is built when
Prometheus scrapes.
"""

from __future__ import annotations

import bisect
import gc
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

GEN0_THRESHOLD = 10_000
# Generations 1 and 2 keep CPython's own ratios: one collection of a generation per ten of the younger.
OLDER_THRESHOLDS = (10, 10)
PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
GENERATIONS = 3


def settle_after_start() -> None:
    """Collects once, freezes every surviving object out of later collections and makes young-generation
    collections rarer. Call once, when the service is built and before it serves."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, *OLDER_THRESHOLDS)


class GcPauses(Collector):
    """The pauses of the garbage collector, as the Prometheus histogram `paymesh_gc_pause_seconds`."""

    def __init__(self) -> None:
        # Per generation: a count per bucket (the last one is +Inf), and the sum of the pauses in seconds.
        self._counts = [[0] * (len(PAUSE_BUCKETS) + 1) for _ in range(GENERATIONS)]
        self._sums = [0.0] * GENERATIONS
        self._started = 0.0

    def install(self) -> GcPauses:
        gc.callbacks.append(self._on_collection)
        return self

    def uninstall(self) -> None:
        gc.callbacks.remove(self._on_collection)

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        generation = info["generation"]
        self._counts[generation][bisect.bisect_left(PAUSE_BUCKETS, pause)] += 1
        self._sums[generation] += pause

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "paymesh_gc_pause_seconds",
            "Time the cyclic garbage collector stopped the process, by generation collected.",
            labels=["generation"],
        )
        for generation in range(GENERATIONS):
            counts, cumulative, buckets = self._counts[generation], 0, []
            for bound, count in zip((*PAUSE_BUCKETS, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append((str(bound) if bound != float("inf") else "+Inf", cumulative))
            family.add_metric([str(generation)], buckets, self._sums[generation])
        yield family


_installed: GcPauses | None = None


def export_gc_pauses() -> GcPauses:
    """Starts measuring the collector's pauses and registers the histogram, once per process."""
    global _installed
    if _installed is None:
        _installed = GcPauses().install()
        REGISTRY.register(_installed)
    return _installed
