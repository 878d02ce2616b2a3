"""Channels for calls inside the mesh: traced, identified, balanced per call.

Every internal call propagates the W3C trace context (one trace from the edge
to the ledger) and carries the calling service's identity token. `dns:///`
targets with round_robin spread calls over every replica behind a headless
Kubernetes Service instead of pinning one HTTP/2 connection.
"""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from paymesh_runtime.identity import ServiceTokenClientInterceptor, ServiceTokens

_OPTIONS = [
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.enable_retries", 0),  # retries are the caller's decision (idempotency references)
]


def internal_channel(target: str, *, caller: str, tokens: ServiceTokens) -> grpc.aio.Channel:
    """An insecure (in-mesh) channel to `target` on behalf of service `caller`."""
    interceptors: list[Any] = [
        *aio_client_interceptors(),  # type: ignore[no-untyped-call]
        ServiceTokenClientInterceptor(tokens, caller),
    ]
    return grpc.aio.insecure_channel(target, interceptors=interceptors, options=_OPTIONS)
