"""Logs, traces and metrics, configured once per process.

- Logs: JSON lines carrying the current trace and span id and the edge's
  request id (paymesh_runtime.telemetry_logs).
- Traces: OpenTelemetry, exported over OTLP (gRPC or HTTP) where the standard
  OTEL_* variables say (paymesh_runtime.telemetry_export), with W3C
  traceparent propagation. Sampling follows the standard
  `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` variables (read by the
  SDK itself); without them, `parentbased_traceidratio` at ratio 1.0 while
  exporting and nothing recorded while not (docs/operations.md, "Telemetry").
  An unsampled call still gets a valid trace context, so logs carry trace ids
  and the traceparent travels on through calls and the outbox.
- Metrics: Prometheus counters and a latency histogram per RPC, served on the
  metrics port.

The per-call parts (`MethodTelemetry`, `start_server_span`, `end_span`) are
what paymesh_runtime.interceptors and paymesh_runtime.channels run on every
RPC: everything that depends only on the method is built once per method, and
span attributes are set only on spans that are recorded.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from contextvars import Token
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.environment_variables import OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBasedTraceIdRatio, Sampler
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import Counter, Histogram, start_http_server

from paymesh_runtime.settings import ServiceSettings
from paymesh_runtime.telemetry_export import service_resource, span_exporter, trace_export
from paymesh_runtime.telemetry_logs import (
    REQUEST_ID,
    REQUEST_ID_HEADER,
    SERVER_ERRORS,
    JsonFormatter,
    SafeFormatter,
    clean_request_id,
)
from paymesh_runtime.telemetry_logs import configure_logging as configure_logging
from paymesh_runtime.telemetry_spans import TRACE_CONTEXT_KEYS

__all__ = ["JsonFormatter", "SafeFormatter", "configure_logging"]

RPC_TOTAL = Counter("paymesh_rpc_total", "RPCs handled, by method and gRPC code.", ["service", "method", "code"])
RPC_SECONDS = Histogram(
    "paymesh_rpc_duration_seconds",
    "RPC handling time.",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
# The ratio of new traces recorded while exporting, when OTEL_TRACES_SAMPLER is not set.
DEFAULT_SAMPLE_RATIO = 1.0
TRACER_NAME = "paymesh_runtime"


def sampler_from_environment(settings: ServiceSettings, environ: Mapping[str, str] = os.environ) -> Sampler | None:
    """The sampler paymesh sets, or None to let the SDK read OTEL_TRACES_SAMPLER(_ARG) itself."""
    if environ.get(OTEL_TRACES_SAMPLER, "").strip():
        return None
    if trace_export(settings, environ) is None:
        # Nothing would receive the spans: recording them is pure cost.
        return ALWAYS_OFF
    raw = environ.get(OTEL_TRACES_SAMPLER_ARG, "").strip()
    try:
        ratio = float(raw) if raw else DEFAULT_SAMPLE_RATIO
    except ValueError:
        raise ValueError(f"{OTEL_TRACES_SAMPLER_ARG} must be a ratio between 0 and 1, not {raw!r}") from None
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"{OTEL_TRACES_SAMPLER_ARG} must be a ratio between 0 and 1, not {raw!r}")
    return ParentBasedTraceIdRatio(ratio)


def configure_tracing(service: str, settings: ServiceSettings) -> TracerProvider:
    """The process's tracer provider, exporting where the OTEL_* variables say (paymesh_runtime.telemetry_export)."""
    export = trace_export(settings)
    provider = TracerProvider(resource=service_resource(service), sampler=sampler_from_environment(settings))
    if export is not None:
        provider.add_span_processor(BatchSpanProcessor(span_exporter(export)))
    trace.set_tracer_provider(provider)
    return provider


def start_metrics_server(settings: ServiceSettings) -> None:
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.grpc_host)


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


class MethodTelemetry:
    """What one RPC method's calls share: span name and attributes, metric children.

    Built once per method: prometheus_client's `labels()` looks the child up
    under a lock on every call, and an attribute dict per call is garbage.
    """

    __slots__ = ("_counts", "_method", "_service", "attributes", "name", "quiet", "seconds")

    def __init__(self, full_method: str) -> None:
        self.name = full_method  # "/pkg.Service/Method", as OpenTelemetry's gRPC instrumentation names spans
        self._service, _, self._method = full_method.lstrip("/").rpartition("/")
        self.attributes = {"rpc.system": "grpc", "rpc.service": self._service, "rpc.method": self._method}
        self.seconds = RPC_SECONDS.labels(self._service, self._method)
        self._counts: dict[grpc.StatusCode, Any] = {}
        # Health checks (Envoy's every few seconds, the kubelet's probes) get no log line while they succeed.
        self.quiet = self._service == "grpc.health.v1.Health"

    def observe(self, code: grpc.StatusCode, seconds: float) -> None:
        count = self._counts.get(code)
        if count is None:
            count = self._counts[code] = RPC_TOTAL.labels(self._service, self._method, code.name)
        count.inc()
        self.seconds.observe(seconds)


@functools.cache
def _propagated_fields() -> frozenset[str]:
    # The composite propagator builds this set anew on every access; the global propagator is set at start-up.
    return frozenset(propagate.get_global_textmap().fields)


@functools.cache
def _w3c_propagation() -> bool:
    """Whether the global propagator is OpenTelemetry's default: W3C trace context, then W3C baggage."""
    textmap = propagate.get_global_textmap()
    kinds = [type(p) for p in getattr(textmap, "_propagators", ())]
    return type(textmap) is CompositePropagator and kinds == [TraceContextTextMapPropagator, W3CBaggagePropagator]


# A version-00 traceparent: trace id, parent span id, flags (W3C Trace Context, lowercase hex).
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def _extract(carrier: dict[str, str]) -> otel_context.Context:
    """`propagate.extract(carrier)`, without its generic walk for the usual case: a version-00 traceparent
    and an empty or absent tracestate (Envoy sends both on every call), nothing else."""
    match = _TRACEPARENT.fullmatch(carrier.get("traceparent", ""))
    unusual = carrier.get("tracestate") or not carrier.keys() <= TRACE_CONTEXT_KEYS or not _w3c_propagation()
    if match is None or unusual:
        return propagate.extract(carrier)
    trace_id, span_id = int(match[1], 16), int(match[2], 16)
    if not trace_id or not span_id:  # invalid: the propagator ignores it
        return propagate.extract(carrier)
    parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match[3], 16)))
    return trace.set_span_in_context(NonRecordingSpan(parent), otel_context.Context())


def remote_context(metadata: Any) -> otel_context.Context | None:
    """The sender's trace context from gRPC metadata or Kafka headers; None when it sent none."""
    return _received(metadata)[0]


def _received(metadata: Any) -> tuple[otel_context.Context | None, str]:
    """The sender's trace context (None if it sent none) and the edge's request id ("" if none), in one walk."""
    fields = _propagated_fields()
    carrier: dict[str, str] = {}
    request_id: str | bytes = ""
    for key, value in metadata or ():
        if key in fields:
            carrier[key] = value.decode(errors="replace") if isinstance(value, bytes) else value
        elif key == REQUEST_ID_HEADER:
            request_id = value
    return (_extract(carrier) if carrier else None), clean_request_id(request_id) if request_id else ""


@dataclass
class ServerCall:
    """What `start_server_span` made current for one call, for `ServerCall.finish` to undo."""

    span: Span
    _context: Token[otel_context.Context]
    _request_id: Token[str] | None

    def finish(self, code: grpc.StatusCode, error: BaseException | None) -> None:
        end_span(self.span, code, error, server=True)
        otel_context.detach(self._context)
        if self._request_id is not None:
            REQUEST_ID.reset(self._request_id)


def start_server_span(tracer: trace.Tracer, method: MethodTelemetry, metadata: Any, peer: str) -> ServerCall:
    """Starts the server span of a call and makes it, and the edge's request id, current."""
    parent, request_id = _received(metadata)
    span = tracer.start_span(method.name, context=parent, kind=SpanKind.SERVER)
    if span.is_recording():
        span.set_attributes(method.attributes)
        address = _peer_address(peer)
        if address:
            span.set_attribute("network.peer.address", address)
        if request_id:
            span.set_attribute("paymesh.request_id", request_id)
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    return ServerCall(span, token, REQUEST_ID.set(request_id) if request_id else None)


def end_span(span: Span, code: grpc.StatusCode, error: BaseException | None = None, *, server: bool) -> None:
    """Records the outcome on a recorded span, and ends it."""
    if span.is_recording():
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK and (not server or code in SERVER_ERRORS):
            span.set_status(Status(StatusCode.ERROR, code.name))
        if error is not None:
            span.record_exception(error)
    span.end()


def _peer_address(peer: str) -> str:
    # "ipv4:10.2.1.1:57284", "ipv6:[::1]:57284"; unix sockets have no address worth recording.
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return ""
    return rest.split(",")[0].rsplit(":", 1)[0].strip("[]")
