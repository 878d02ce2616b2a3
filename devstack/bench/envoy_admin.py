"""What the edge's admin interface (127.0.0.1 only) says about its local rate limits.

The local profile's Envoy runs the production buckets (devstack.envoy_config:
payment routes 200 requests/s, burst 400). The bench keeps them out of the
measurement: by default it runs them in shadow mode (counted, never refused)
and reports how many requests they would have refused in each step; with
``--edge-limits enforce`` it reads how many they refused (a step with
refusals is flagged in the report) and caps the open-loop rate below the
payment bucket.
"""

from __future__ import annotations

import httpx

from devstack.envoy_config import RateLimit, settings_for
from devstack.ports import HOST, Ports

# Envoy's local rate limit stats: `rate_limited` counts requests without a
# token, `enforced` those refused for it (fewer in shadow mode: none).
_OVER_BUCKET = "http_local_rate_limit.rate_limited"
_REFUSED = "http_local_rate_limit.enforced"


def payment_bucket(profile: str, ports: Ports) -> RateLimit:
    return settings_for(profile, ports).limits.payment


def rate_limited(ports: Ports) -> int:
    """Requests the edge's local rate limits have refused since Envoy started, all routes."""
    return _counter(ports, _REFUSED)


def over_bucket(ports: Ports) -> int:
    """Requests that found their route's bucket empty since Envoy started (refused or, in shadow mode, let through)."""
    return _counter(ports, _OVER_BUCKET)


def _counter(ports: Ports, counter: str) -> int:
    response = httpx.get(f"http://{HOST}:{ports.envoy_admin}/stats", params={"filter": counter}, timeout=5)
    response.raise_for_status()
    total = 0
    for line in response.text.splitlines():
        name, _, value = line.partition(": ")
        if name.endswith(counter) and value.strip().isdigit():
            total += int(value)
    return total
