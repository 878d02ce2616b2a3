"""When a failed delivery is tried again, and when paymesh gives up. Pure: the random source is passed in.

Every channel backs off exponentially with full jitter (paymesh_runtime.backoff):
the pause after attempt n of a schedule is uniform in [0, min(max, base * 2**(n-1))).
Email, SMS and push give up after a number of attempts. Webhooks follow
Stripe: they are retried for a window of time (3 days by default) counted
from the schedule's start (the delivery's creation, or its redelivery), the
last attempt at the window's end, with a number of attempts as a backstop.
"""

from __future__ import annotations

from dataclasses import dataclass

from paymesh_runtime.backoff import Random, full_jitter


@dataclass(frozen=True)
class Schedule:
    max_attempts: int
    backoff_base_seconds: float
    backoff_max_seconds: float
    window_seconds: float | None = None  # None: attempts alone end the schedule


def next_retry(schedule: Schedule, attempt: int, age_seconds: float, random: Random) -> float | None:
    """Seconds until the next attempt after failed attempt `attempt` (1-based, within the schedule), or None:
    give up. `age_seconds` is how long ago the schedule started."""
    if attempt >= schedule.max_attempts:
        return None
    delay = full_jitter(attempt, schedule.backoff_base_seconds, schedule.backoff_max_seconds, random)
    if schedule.window_seconds is None:
        return delay
    remaining = schedule.window_seconds - age_seconds
    if remaining <= 0:
        return None
    return min(delay, remaining)


@dataclass(frozen=True)
class EndpointHealth:
    """What one round of attempts says about one webhook endpoint."""

    succeeded: bool  # at least one attempt was accepted (2xx)
    gone: bool  # an attempt was answered 410 Gone


def endpoint_verdict(attempts: list[tuple[int | None, bool]]) -> EndpointHealth:
    """Folds a round's attempts at one endpoint, each (HTTP status or None, accepted)."""
    return EndpointHealth(
        succeeded=any(accepted for _, accepted in attempts),
        gone=any(status == 410 for status, _ in attempts),
    )
