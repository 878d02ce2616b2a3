"""Service logs: JSON lines in UTC that join the edge's and the trace's records.

Every line a service writes while serving a call carries the call's
`trace_id` and `span_id` (the current span, sampled or not) and the edge's
`request_id` (Envoy's `x-request-id`, bound by the server interceptor and
passed on to internal calls by the client interceptor), so one request's
lines can be found from Envoy's access log, from a trace, or from each other.

`RpcLog` writes the one INFO line per RPC (method, gRPC code, duration).
Nothing here logs a request or a header: values reach a log only through a
message a module writes on purpose.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

import grpc
from opentelemetry import trace

from paymesh_runtime import failures
from paymesh_runtime.settings import ServiceSettings

# The edge's request id of the call being served ("" outside a call).
REQUEST_ID: ContextVar[str] = ContextVar("paymesh_request_id", default="")
REQUEST_ID_HEADER = "x-request-id"
# Envoy's ids are UUIDs; anything longer is not one of them and is cut (a client cannot flood the logs).
MAX_REQUEST_ID_LENGTH = 64
RPC_LOGGER = "paymesh.rpc"


def clean_request_id(value: str | bytes) -> str:
    """A request id fit for a log field: printable ASCII, at most MAX_REQUEST_ID_LENGTH characters."""
    text = value.decode("ascii", errors="replace") if isinstance(value, bytes) else value
    text = text[:MAX_REQUEST_ID_LENGTH]
    return text if text.isascii() and text.isprintable() else ""


class SafeFormatter(logging.Formatter):
    """Log times in UTC, and tracebacks without what database errors quote (statements' parameters)."""

    converter = staticmethod(time.gmtime)  # type: ignore[assignment]

    def formatException(self, ei: Any) -> str:
        error = ei[1]
        return failures.loggable_traceback(error) if error is not None else super().formatException(ei)


class JsonFormatter(SafeFormatter):
    """One JSON object per line, in UTC, with the trace, span and edge request ids for correlation.

    A record's `fields` attribute (a dict, `extra={"fields": {...}}`) adds its keys to the line.
    """

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
        request_id = REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


def configure_logging(service: str, settings: ServiceSettings) -> None:
    handler = logging.StreamHandler(sys.stdout)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(SafeFormatter("%(asctime)sZ %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # aiokafka and asyncio are chatty at INFO while Kafka is unreachable.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


# gRPC codes that are the server's fault (OpenTelemetry's gRPC conventions): a server span's error
# status, and an RPC's log line at WARNING rather than INFO.
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class RpcLog:
    """The INFO line of each RPC a server handled: method, gRPC code, duration.

    Written inside the call's context, so it carries the call's trace, span and
    request ids. Logged at INFO for every call, not sampled: a line costs
    ~20-30 µs of CPU (docs/observability.md, "Logs"); whether that is visible
    per payment is for `make bench` to say (docs/performance.md,
    "Observability"). Set the `paymesh.rpc` logger to WARNING to keep only the
    calls that failed on the server's side.
    """

    __slots__ = ("_logger",)

    def __init__(self) -> None:
        self._logger = logging.getLogger(RPC_LOGGER)

    def log(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        level = logging.WARNING if code in SERVER_ERRORS else logging.INFO  # the server's fault
        if not self._logger.isEnabledFor(level):
            return
        millis = round(seconds * 1000, 2)
        self._logger.log(
            level,
            "rpc %s %s %.2fms",
            method,
            code.name,
            millis,
            extra={"fields": {"rpc_method": method, "rpc_code": code.name, "duration_ms": millis}},
        )
