"""Exponential backoff with full jitter, for every retry loop of the mesh.

Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): the
pause after failed attempt n is uniform in [0, min(cap, base * 2**(n-1))), so
many clients retrying after one outage spread out instead of hammering the
recovering dependency in step. Pure: the random source is passed in.
"""

from __future__ import annotations

from collections.abc import Callable

Random = Callable[[], float]  # uniform in [0, 1), e.g. random.random


def full_jitter(attempt: int, base_seconds: float, cap_seconds: float, random: Random) -> float:
    """The pause after failed attempt number `attempt` (1-based)."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    if base_seconds < 0 or cap_seconds < 0:
        raise ValueError("delays must not be negative")
    # min() before the power would be needed for huge attempts: cap the exponent.
    ceiling = min(cap_seconds, base_seconds * float(2 ** min(attempt - 1, 62)))
    return ceiling * random()
