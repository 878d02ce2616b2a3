"""What the edge's admin interface (127.0.0.1 only) says about its local rate limits.

The local profile's Envoy runs the production buckets (devstack.envoy_config:
payment routes 200 requests/s, burst 400). The bench keeps them out of the
measurement by staying under them, and proves it: it reads how many requests
the limit refused during each step (a step with refusals is flagged in the
report) and caps the open-loop rate below the payment bucket.
"""

from __future__ import annotations

import httpx

from devstack.envoy_config import RateLimit, settings_for
from devstack.ports import HOST, Ports

_COUNTER = "http_local_rate_limit.rate_limited"


def payment_bucket(profile: str, ports: Ports) -> RateLimit:
    return settings_for(profile, ports).limits.payment


def rate_limited(ports: Ports) -> int:
    """Requests the edge's local rate limits have refused since Envoy started, all routes."""
    response = httpx.get(f"http://{HOST}:{ports.envoy_admin}/stats", params={"filter": _COUNTER}, timeout=5)
    response.raise_for_status()
    total = 0
    for line in response.text.splitlines():
        name, _, value = line.partition(": ")
        if name.endswith(_COUNTER) and value.strip().isdigit():
            total += int(value)
    return total
