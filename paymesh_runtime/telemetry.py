"""Logs, traces and metrics, configured once per process.

- Logs: JSON lines carrying the current trace and span id.
- Traces: OpenTelemetry with an OTLP/gRPC exporter when an endpoint is set
  (W3C traceparent propagation), and the gRPC server instrumentation.
- Metrics: Prometheus counters and a latency histogram per RPC, served on the
  metrics port.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import Counter, Histogram, start_http_server

from paymesh_runtime.interceptors import UnaryCall, UnaryInterceptor
from paymesh_runtime.settings import ServiceSettings

RPC_TOTAL = Counter("paymesh_rpc_total", "RPCs handled, by method and gRPC code.", ["service", "method", "code"])
RPC_SECONDS = Histogram(
    "paymesh_rpc_duration_seconds",
    "RPC handling time.",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the active trace id for correlation."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            entry["trace_id"] = f"{ctx.trace_id:032x}"
            entry["span_id"] = f"{ctx.span_id:016x}"
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


def configure_logging(service: str, settings: ServiceSettings) -> None:
    handler = logging.StreamHandler(sys.stdout)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # aiokafka and asyncio are chatty at INFO while Kafka is unreachable.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def configure_tracing(service: str, settings: ServiceSettings) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=True)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def start_metrics_server(settings: ServiceSettings) -> None:
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.grpc_host)


def tracing_interceptor() -> Any:
    return aio_server_interceptor()  # type: ignore[no-untyped-call]


class MetricsInterceptor(UnaryInterceptor):
    """Counts every unary RPC by final code and observes its duration."""

    async def around(self, call: UnaryCall, request: Any, context: Any, method: str) -> Any:
        service, _, name = method.lstrip("/").rpartition("/")
        start = time.perf_counter()
        try:
            return await call(request, context)
        finally:
            code = context.code() or grpc.StatusCode.OK
            code_name = code.name if isinstance(code, grpc.StatusCode) else str(code)
            RPC_TOTAL.labels(service, name, code_name).inc()
            RPC_SECONDS.labels(service, name).observe(time.perf_counter() - start)
