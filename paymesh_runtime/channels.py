"""Channels for calls inside the mesh: traced, identified, balanced per call.

Every internal call propagates the W3C trace context (one trace from the edge
to the ledger) and the edge's `x-request-id` of the call being served (the
callee's log lines carry it too), and carries the calling service's identity
token, all added by one client interceptor. `dns:///` targets with round_robin spread calls over
every replica behind a headless Kubernetes Service instead of pinning one
HTTP/2 connection.
"""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from paymesh_runtime import telemetry
from paymesh_runtime.identity import SERVICE_TOKEN_HEADER, ServiceTokenClientInterceptor, ServiceTokens
from paymesh_runtime.telemetry_logs import REQUEST_ID, REQUEST_ID_HEADER

_OPTIONS = [
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.enable_retries", 0),  # retries are the caller's decision (idempotency references)
    # A peer back from a restart is reached within ~2 s, not after gRPC's default backoff (up to 120 s),
    # during which every call would fail fast with UNAVAILABLE.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


class MeshClientInterceptor(ServiceTokenClientInterceptor):
    """The service token, the trace context and the request id on every outgoing unary call, and its client span.

    A call made inside a trace that is not sampled gets no span of its own: the
    current (unsampled) context is what the callee needs, and with a
    parent-based sampler its children would not be recorded either. A call
    with no trace around it, or inside a sampled one, gets a CLIENT span, named
    like OpenTelemetry's gRPC instrumentation names it.
    """

    def __init__(self, tokens: ServiceTokens, service: str, tracer: trace.Tracer | None = None) -> None:
        super().__init__(tokens, service)
        self._tracer = tracer or telemetry.tracer()

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()), (SERVICE_TOKEN_HEADER, self._token()))
        request_id = REQUEST_ID.get()
        if request_id:
            metadata.add(REQUEST_ID_HEADER, request_id)
        current = trace.get_current_span().get_span_context()
        if current.is_valid and not current.trace_flags.sampled:
            propagate.inject(metadata)
            return await continuation(client_call_details._replace(metadata=metadata), request)
        method = client_call_details.method
        name = method.decode() if isinstance(method, bytes) else method
        span = self._tracer.start_span(name, kind=SpanKind.CLIENT)
        propagate.inject(metadata, context=trace.set_span_in_context(span))
        try:
            call = await continuation(client_call_details._replace(metadata=metadata), request)
        except grpc.aio.AioRpcError as error:
            telemetry.end_span(span, error.code(), server=False)
            raise
        except BaseException:
            telemetry.end_span(span, grpc.StatusCode.UNKNOWN, server=False)
            raise
        # The span ends when the call does: awaiting the code here is what the
        # intercepted call awaits anyway before its caller sees the response.
        telemetry.end_span(span, await call.code() if span.is_recording() else grpc.StatusCode.OK, server=False)
        return call


def internal_channel(target: str, *, caller: str, tokens: ServiceTokens) -> grpc.aio.Channel:
    """An insecure (in-mesh) channel to `target` on behalf of service `caller`."""
    return grpc.aio.insecure_channel(target, interceptors=[MeshClientInterceptor(tokens, caller)], options=_OPTIONS)  # type: ignore[list-item]
