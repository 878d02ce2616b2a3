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
from paymesh_runtime.telemetry_spans import is_sampled

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


# OK calls at least this slow are always logged, whatever the budget.
SLOW_CALL_SECONDS = 0.5
DEFAULT_OK_LINES_PER_SECOND = 100


class RpcLog:
    """The line of each RPC a server handled: method, gRPC code, duration.

    Written inside the call's context, so it carries the call's trace, span and
    request ids. Every call that did not succeed gets its line (WARNING when it
    is the server's fault, INFO otherwise), and so does every call in a
    sampled trace and every call slower than SLOW_CALL_SECONDS. Calls that
    succeeded quickly get theirs up to `ok_per_second` lines per method in each
    second; the next line written for that method says how many were skipped
    (`rpc_lines_skipped`). A line costs ~15 µs of CPU, which at a few hundred
    payments a second was 4 % of payment_svc's (docs/performance.md,
    "Observability"); Envoy's access log still has one line per request.
    `ok_per_second` 0 keeps only those lines that are always written; set the
    `paymesh.rpc` logger to WARNING to keep only the server's failures.
    """

    __slots__ = ("_budget", "_logger", "_windows")

    def __init__(self, ok_per_second: int = DEFAULT_OK_LINES_PER_SECOND) -> None:
        self._logger = logging.getLogger(RPC_LOGGER)
        self._budget = ok_per_second
        # Per method: [start of its current one-second window (monotonic), OK lines written in it, skipped].
        self._windows: dict[str, list[float]] = {}

    def log(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        level = logging.WARNING if code in SERVER_ERRORS else logging.INFO  # the server's fault
        if not self._logger.isEnabledFor(level):
            return
        quick_success = code is grpc.StatusCode.OK and seconds < SLOW_CALL_SECONDS
        if quick_success and not is_sampled() and not self._within_budget(method):
            return
        fields: dict[str, Any] = {}
        window = self._windows.get(method)
        if window is not None and window[2]:
            fields["rpc_lines_skipped"] = int(window[2])
            window[2] = 0
        millis = round(seconds * 1000, 2)
        fields.update(rpc_method=method, rpc_code=code.name, duration_ms=millis)
        self._logger.log(level, "rpc %s %s %.2fms", method, code.name, millis, extra={"fields": fields})

    def _within_budget(self, method: str) -> bool:
        """Counts one quick OK call of `method` against this second's budget; False when it is spent."""
        now = time.monotonic()
        window = self._windows.get(method)
        if window is None:
            window = self._windows[method] = [now, 0, 0]
        elif now - window[0] >= 1.0:
            window[0], window[1] = now, 0
        if window[1] >= self._budget:
            window[2] += 1
            return False
        window[1] += 1
        return True
