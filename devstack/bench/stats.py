"""The bench's arithmetic: percentiles, rates, ratios, CPU per payment by group. Pure functions."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# Component names are devstack.stack's; PostgreSQL backends are named
# "postgres:<database>" (devstack.cpu splits them by the database they serve).
NOTIFY_DATABASE = "postgres:paymesh_notify"
# What a payment itself costs: the edge, the two services on its path (their
# outbox relays run inside them), PostgreSQL for them, and Kafka.
MONEY_PATH = ("envoy", "payment", "wallet", "postgres", "postgres:paymesh_payment", "postgres:paymesh_wallet", "kafka")
# The event consumer and what it drives: reported apart.
NOTIFY = ("notify", "mailsink", NOTIFY_DATABASE)
GROUPS: Mapping[str, tuple[str, ...]] = {"money path": MONEY_PATH, "notify": NOTIFY}
OTHER = "other"  # auth_svc (off the path: Envoy checks JWTs itself), Redis, the processor simulator


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (the smallest value with at least pct % of the values at or below it)."""
    if not values:
        return math.nan
    if not 0 < pct <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {pct}")
    ordered = sorted(values)
    rank = math.ceil(pct / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


@dataclass(frozen=True)
class Latency:
    """Milliseconds."""

    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, values_ms: Sequence[float]) -> Latency:
        if not values_ms:
            return cls(math.nan, math.nan, math.nan, math.nan)
        return cls(
            percentile(values_ms, 50), percentile(values_ms, 95), percentile(values_ms, 99), float(max(values_ms))
        )


@dataclass(frozen=True)
class LoadResult:
    """What one load tool measured in one step.

    `succeeded` counts requests whose answer was a successful payment (or, for
    pgbench, a committed transaction); every other outcome is in `errors` by
    kind (HTTP status and reason, gRPC code, transport error).
    """

    tool: str
    seconds: float
    succeeded: int
    errors: Mapping[str, int]
    latency: Latency

    @property
    def requests(self) -> int:
        return self.succeeded + sum(self.errors.values())

    @property
    def per_second(self) -> float:
        return self.succeeded / self.seconds if self.seconds > 0 else 0.0


def ratio_percent(part: float, whole: float) -> float:
    """part as a percentage of whole; NaN when there is no whole to compare with."""
    return 100.0 * part / whole if whole > 0 else math.nan


def cpu_rate(spent: Mapping[str, float], seconds: float) -> dict[str, float]:
    """CPU seconds per second of each component."""
    return {name: used / seconds for name, used in spent.items()} if seconds > 0 else {}


def load_window_cpu(
    during_load: Mapping[str, float], during_drain: Mapping[str, float], idle_rate: Mapping[str, float], drain_s: float
) -> dict[str, float]:
    """CPU seconds attributable to a step's payments.

    Everything spent while the load ran, plus what was spent while the event
    pipeline drained beyond the idle background (pollers, sweepers) that would
    have been spent anyway in that time.
    """
    names = set(during_load) | set(during_drain)
    return {
        name: during_load.get(name, 0.0) + max(0.0, during_drain.get(name, 0.0) - idle_rate.get(name, 0.0) * drain_s)
        for name in names
    }


def group_of(component: str) -> str:
    for group, members in GROUPS.items():
        if component in members:
            return group
    return OTHER


@dataclass(frozen=True)
class CpuPerPayment:
    """Milliseconds of CPU per successful payment: by component and by group."""

    components: Mapping[str, float] = field(default_factory=dict)
    groups: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, cpu_seconds: Mapping[str, float], payments: int) -> CpuPerPayment:
        if payments <= 0:
            return cls()
        per = {name: 1000 * seconds / payments for name, seconds in cpu_seconds.items() if seconds > 0}
        groups: dict[str, float] = {}
        for name, ms in per.items():
            groups[group_of(name)] = groups.get(group_of(name), 0.0) + ms
        ordered = dict(sorted(per.items(), key=lambda item: -item[1]))
        return cls(ordered, {group: groups.get(group, 0.0) for group in (*GROUPS, OTHER)})


def best(values: Iterable[float]) -> float:
    found = [v for v in values if not math.isnan(v)]
    return max(found) if found else math.nan
