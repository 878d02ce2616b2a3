"""devstack.bench.stats: percentiles, rates, ratios and CPU per payment."""

from __future__ import annotations

import math

import pytest

from devstack.bench.stats import CpuPerPayment, Latency, LoadResult, load_window_cpu, percentile, ratio_percent


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(100, 0, -1)]  # 1..100, unsorted
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7
    # Ten values: the p99 is the largest (rank ceil(9.9) = 10), never an interpolation.
    assert percentile([float(n) for n in range(1, 11)], 99) == 10


def test_percentile_of_nothing_is_nan_and_bad_percentages_are_refused() -> None:
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match="percentile"):
        percentile([1.0], 0)
    with pytest.raises(ValueError, match="percentile"):
        percentile([1.0], 101)


def test_latency_summary() -> None:
    latency = Latency.of([float(n) for n in range(1, 201)])
    assert (latency.p50, latency.p95, latency.p99, latency.max) == (100, 190, 198, 200)
    assert math.isnan(Latency.of([]).p50)


def test_rate_counts_successful_payments_only() -> None:
    result = LoadResult("wrk", 10.0, 300, {"429 RATE_LIMITED": 20, "socket timeout": 1}, Latency.of([1.0]))
    assert result.per_second == 30.0
    assert result.requests == 321
    assert LoadResult("wrk", 0.0, 0, {}, Latency.of([])).per_second == 0.0


def test_ratio_to_the_ceiling() -> None:
    assert ratio_percent(30.0, 3000.0) == pytest.approx(1.0)
    assert ratio_percent(1500.0, 3000.0) == pytest.approx(50.0)
    assert math.isnan(ratio_percent(30.0, 0.0))
    assert math.isnan(ratio_percent(30.0, math.nan))


def test_the_drain_counts_only_what_exceeds_the_idle_background() -> None:
    during_load = {"payment": 2.0, "notify": 1.0}
    during_drain = {"payment": 0.1, "notify": 0.9}
    idle_per_second = {"payment": 0.04, "notify": 0.01}
    used = load_window_cpu(during_load, during_drain, idle_per_second, drain_s=5.0)
    # payment: 0.1 s in 5 s is below its idle 0.2 s: nothing added; notify: 0.9 - 0.05.
    assert used == pytest.approx({"payment": 2.0, "notify": 1.85})


def test_cpu_per_payment_by_component_and_group() -> None:
    seconds = {
        "payment": 1.0,
        "wallet": 0.5,
        "envoy": 0.1,
        "kafka": 0.2,
        "postgres": 0.05,
        "postgres:paymesh_wallet": 0.15,
        "postgres:paymesh_notify": 0.1,
        "notify": 0.4,
        "mailsink": 0.1,
        "auth": 0.05,
        "redis": 0.0,
    }
    cpu = CpuPerPayment.of(seconds, payments=100)
    assert cpu.components["payment"] == pytest.approx(10.0)
    assert "redis" not in cpu.components  # nothing spent, nothing shown
    assert next(iter(cpu.components)) == "payment"  # most expensive first
    assert cpu.groups["money path"] == pytest.approx(20.0)  # payment wallet envoy kafka and PostgreSQL for them
    assert cpu.groups["notify"] == pytest.approx(6.0)  # notify_svc, the mail sink and notify's database
    assert cpu.groups["other"] == pytest.approx(0.5)
    assert CpuPerPayment.of(seconds, payments=0) == CpuPerPayment()
