"""The fault schedule of one run, drawn from ``random.Random(seed)``: pure, so a seed always gives the same one.

Two lanes run side by side, each one fault at a time:

- the *process* lane crashes or pauses a component and brings it back: kill -9
  and SIGTERM of each service (then a restart), kill -9 of PostgreSQL's
  postmaster (then a restart), SIGSTOP then SIGCONT of Kafka and of Redis;
- the *processor* lane turns the simulator's fault knobs (POST /_sim/config)
  for a while, then back to the baseline: latency above payment_svc's processor
  timeout, 5xx bursts, lost responses (the call takes effect, the answer is
  dropped), hangs (far past every client deadline; the effect lands after the
  caller gave up) and dropped settlement webhooks.

Faults start inside the workload's window, spaced so that one lane's faults
do not overlap, and each holds a bounded time; faults.py carries them out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SERVICES = ("auth", "wallet", "payment", "notify")

# (kind, target) of every process fault; a run draws its faults from these.
PROCESS_CATALOGUE: tuple[tuple[str, str], ...] = (
    *(("kill9", name) for name in SERVICES),
    *(("sigterm", name) for name in SERVICES),
    ("kill9", "postgres"),
    ("sigstop", "kafka"),
    ("sigstop", "redis"),
)
PROCESSOR_CATALOGUE: tuple[str, ...] = ("latency", "errors", "lost_responses", "hang", "webhook_drops")

# The simulator's knobs between processor faults. hang_seconds is how long the
# tok_timeout card hangs (the workload uses it now and then): past payment_svc's
# processor timeout, so such an authorization times out.
BASELINE_HANG_SECONDS = 5.0


def baseline_settings() -> dict[str, float]:
    """The simulator's fault knobs with no fault active."""
    return {
        "latency_ms": 0,
        "latency_jitter_ms": 0,
        "failure_rate": 0.0,
        "lost_response_rate": 0.0,
        "fail_next": 0,
        "lose_next": 0,
        "webhook_drop_rate": 0.0,
        "drop_next_webhooks": 0,
        "hang_seconds": BASELINE_HANG_SECONDS,
    }


@dataclass(frozen=True)
class Fault:
    """One fault: what, on which component, when (seconds after the workload started) and for how long."""

    lane: str  # process | processor
    kind: str  # kill9 | sigterm | sigstop | latency | errors | lost_responses | hang | webhook_drops
    target: str  # a component name (auth, postgres, kafka...) or "processor"
    at: float
    hold: float  # seconds down, stopped or active before it is restored
    settings: tuple[tuple[str, float], ...] = ()  # the simulator's knobs (processor lane)

    @property
    def label(self) -> str:
        knobs = " ".join(f"{name}={value:g}" for name, value in self.settings)
        return f"{self.kind} {self.target}" + (f" ({knobs})" if knobs else "")


@dataclass(frozen=True)
class ScheduleSpec:
    seed: int
    duration: float  # seconds of workload
    process_faults: int
    processor_faults: int
    processor_timeout: float  # payment_svc's PAYMENT_PROCESSOR_TIMEOUT_SECONDS


def default_fault_counts(duration: float) -> tuple[int, int]:
    """Process and processor faults for a workload of `duration` seconds: one every ~12 s and ~20 s."""
    return max(2, round(duration / 12)), max(1, round(duration / 20))


def build_schedule(spec: ScheduleSpec) -> tuple[Fault, ...]:
    """The run's faults, by start time. The same spec always gives the same schedule."""
    if spec.duration <= 0:
        raise ValueError("the workload must last more than 0 s")
    rng = random.Random(spec.seed)  # noqa: S311 - a reproducible schedule, not a secret
    process = _process_lane(rng, spec)
    processor = _processor_lane(rng, spec)
    return tuple(sorted(process + processor, key=lambda fault: (fault.at, fault.lane)))


def _kinds(rng: random.Random, catalogue: tuple[str, ...] | tuple[tuple[str, str], ...], count: int) -> list[int]:
    """Indices into `catalogue`: distinct while the catalogue lasts, then drawn again."""
    picked: list[int] = []
    while len(picked) < count:
        picked += rng.sample(range(len(catalogue)), min(len(catalogue), count - len(picked)))
    return picked


def _slots(rng: random.Random, start: float, end: float, count: int, max_hold: float) -> list[tuple[float, float]]:
    """`count` (at, hold) pairs in [start, end): one per equal slot, each ending inside its slot."""
    slot = (end - start) / count
    hold_cap = max(1.0, min(max_hold, 0.5 * slot))
    found = []
    for index in range(count):
        hold = round(rng.uniform(min(1.5, hold_cap), hold_cap), 2)
        at = start + index * slot + rng.uniform(0, max(0.0, 0.4 * slot))
        found.append((round(at, 2), hold))
    return found


def _process_lane(rng: random.Random, spec: ScheduleSpec) -> list[Fault]:
    if spec.process_faults <= 0:
        return []
    chosen = _kinds(rng, PROCESS_CATALOGUE, spec.process_faults)
    slots = _slots(rng, 0.1 * spec.duration, 0.8 * spec.duration, spec.process_faults, max_hold=8.0)
    faults = []
    for index, (at, hold) in zip(chosen, slots, strict=True):
        kind, target = PROCESS_CATALOGUE[index]
        faults.append(Fault("process", kind, target, at, hold))
    return faults


def _processor_lane(rng: random.Random, spec: ScheduleSpec) -> list[Fault]:
    if spec.processor_faults <= 0:
        return []
    chosen = _kinds(rng, PROCESSOR_CATALOGUE, spec.processor_faults)
    slots = _slots(rng, 0.05 * spec.duration, 0.8 * spec.duration, spec.processor_faults, max_hold=12.0)
    timeout_ms = round(spec.processor_timeout * 1000)
    faults = []
    for index, (at, hold) in zip(chosen, slots, strict=True):
        kind = PROCESSOR_CATALOGUE[index]
        faults.append(Fault("processor", kind, "processor", at, hold, _knobs(rng, kind, timeout_ms)))
    return faults


def _knobs(rng: random.Random, kind: str, timeout_ms: int) -> tuple[tuple[str, float], ...]:
    if kind == "latency":  # every call answers, but only after payment_svc stopped waiting
        return (("latency_ms", timeout_ms + rng.randint(200, 1500)), ("latency_jitter_ms", rng.randint(0, 500)))
    if kind == "errors":  # 503 before anything happens
        return (("failure_rate", round(rng.uniform(0.3, 0.9), 2)),)
    if kind == "lost_responses":  # the call takes effect, the connection drops before the answer
        return (("lost_response_rate", round(rng.uniform(0.2, 0.7), 2)),)
    if kind == "hang":  # calls sit far past every deadline, then take effect
        hang_ms = timeout_ms * rng.randint(4, 8)
        return (("latency_ms", hang_ms), ("hang_seconds", hang_ms / 1000))
    if kind == "webhook_drops":  # settlements happen, their webhooks never arrive: only polling finds them
        return (("webhook_drop_rate", round(rng.uniform(0.5, 1.0), 2)),)
    raise ValueError(f"unknown processor fault {kind!r}")
