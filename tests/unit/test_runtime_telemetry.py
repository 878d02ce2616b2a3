"""Sampling and the per-call telemetry of the mesh's interceptors, over a real grpc.aio server on loopback.

Spans go to the SDK's in-memory exporter through a provider of the test's own
(the global one is left alone); metrics are read from prometheus_client's
registry.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler
from prometheus_client import REGISTRY
from sqlalchemy.exc import DBAPIError

from paymesh_runtime import failures, telemetry
from paymesh_runtime.callers import Callers
from paymesh_runtime.channels import MeshClientInterceptor
from paymesh_runtime.errors import FailedPrecondition
from paymesh_runtime.identity import SERVICE_TOKEN_HEADER, ServiceTokens
from paymesh_runtime.interceptors import MeshServerInterceptor
from paymesh_runtime.settings import ServiceSettings

Request = health_pb2.HealthCheckRequest
Reply = health_pb2.HealthCheckResponse


def _settings(otlp: str = "") -> ServiceSettings:
    return ServiceSettings(otlp_endpoint=otlp, database_url="postgresql+asyncpg://unused@127.0.0.1/unused")  # type: ignore[arg-type]


def test_the_standard_variables_are_left_to_the_sdk() -> None:
    environ = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}
    assert telemetry.sampler_from_environment(_settings("collector:4317"), environ) is None


def test_the_sdk_reads_the_standard_variables_when_given_no_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    assert "TraceIdRatioBased{0.25}" in TracerProvider(sampler=None).sampler.get_description()


def test_without_the_variables_nothing_is_recorded_unless_exported() -> None:
    assert telemetry.sampler_from_environment(_settings(""), {}) is ALWAYS_OFF
    exporting = telemetry.sampler_from_environment(_settings("collector:4317"), {})
    assert exporting is not None
    assert exporting.get_description().startswith("ParentBased{root:TraceIdRatioBased{1.0}")
    ratio = telemetry.sampler_from_environment(_settings("collector:4317"), {"OTEL_TRACES_SAMPLER_ARG": "0.01"})
    assert ratio is not None
    assert "TraceIdRatioBased{0.01}" in ratio.get_description()


@pytest.mark.parametrize("value", ["abc", "1.5", "-0.1"])
def test_a_ratio_outside_zero_to_one_is_refused_at_start(value: str) -> None:
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER_ARG"):
        telemetry.sampler_from_environment(_settings("collector:4317"), {"OTEL_TRACES_SAMPLER_ARG": value})


@dataclass
class Seen:
    contexts: list[trace.SpanContext]
    metadata: list[dict[str, str]]


@dataclass
class Mesh:
    spans: InMemorySpanExporter
    seen: Seen
    call: Callable[[str], Awaitable[Reply]]
    provider: TracerProvider


async def _mesh(sampler: Sampler) -> AsyncIterator[Mesh]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    seen = Seen([], [])

    async def ok(request: Request, context: Any) -> Reply:
        seen.contexts.append(trace.get_current_span().get_span_context())
        seen.metadata.append({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
        return Reply(status=Reply.SERVING)

    async def refused(request: Request, context: Any) -> Reply:
        raise FailedPrecondition("WALLET_FROZEN", "the wallet is frozen")

    async def broken(request: Request, context: Any) -> Reply:
        raise RuntimeError("a bug")

    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=Request.FromString, response_serializer=Reply.SerializeToString
        )
        for name, fn in (("Ok", ok), ("Refused", refused), ("Broken", broken))
    }
    server = grpc.aio.server(interceptors=[MeshServerInterceptor(Callers.nobody(), tracer=tracer)])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Probe", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = MeshClientInterceptor(ServiceTokens("k" * 48), "caller", tracer=tracer)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=[client])  # type: ignore[list-item]

    async def call(method: str) -> Reply:
        stub = channel.unary_unary(
            f"/test.Probe/{method}",
            request_serializer=Request.SerializeToString,
            response_deserializer=Reply.FromString,
        )
        return await stub(Request())  # type: ignore[no-any-return]

    try:
        yield Mesh(exporter, seen, call, provider)
    finally:
        await channel.close()
        await server.stop(None)


@pytest.fixture
async def sampled() -> AsyncIterator[Mesh]:
    async for mesh in _mesh(ALWAYS_ON):
        yield mesh


@pytest.fixture
async def unsampled() -> AsyncIterator[Mesh]:
    async for mesh in _mesh(ALWAYS_OFF):
        yield mesh


async def test_a_sampled_call_is_a_client_span_and_its_child_server_span(sampled: Mesh) -> None:
    assert (await sampled.call("Ok")).status == Reply.SERVING
    by_kind = {span.kind: span for span in sampled.spans.get_finished_spans()}
    client, server = by_kind[trace.SpanKind.CLIENT], by_kind[trace.SpanKind.SERVER]
    assert client.name == server.name == "/test.Probe/Ok"
    assert server.context.trace_id == client.context.trace_id
    assert server.parent is not None
    assert server.parent.span_id == client.context.span_id
    assert (
        dict(server.attributes or {}).items()
        >= {
            "rpc.system": "grpc",
            "rpc.service": "test.Probe",
            "rpc.method": "Ok",
            "rpc.grpc.status_code": 0,
            "network.peer.address": "127.0.0.1",
        }.items()
    )
    assert sampled.seen.contexts[0].span_id == server.context.span_id  # the handler runs inside the server span
    assert sampled.seen.metadata[0][SERVICE_TOKEN_HEADER].startswith("v1.caller.")


async def test_an_unsampled_trace_records_nothing_but_still_travels(unsampled: Mesh) -> None:
    tracer = unsampled.provider.get_tracer("test")
    with tracer.start_as_current_span("edge") as edge:
        await unsampled.call("Ok")
    assert unsampled.spans.get_finished_spans() == ()
    handler_context = unsampled.seen.contexts[0]
    assert handler_context.is_valid
    assert not handler_context.trace_flags.sampled
    assert handler_context.trace_id == edge.get_span_context().trace_id  # one trace id, for the logs
    flags = unsampled.seen.metadata[0]["traceparent"].rsplit("-", 1)[1]
    assert int(flags, 16) & 0x01 == 0  # passed on, marked not sampled


def _count(method: str, code: str) -> float:
    labels = {"service": "test.Probe", "method": method, "code": code}
    return REGISTRY.get_sample_value("paymesh_rpc_total", labels) or 0.0


async def test_errors_are_mapped_counted_and_marked_on_the_span(sampled: Mesh) -> None:
    before = (_count("Refused", "FAILED_PRECONDITION"), _count("Broken", "INTERNAL"))
    durations = REGISTRY.get_sample_value(
        "paymesh_rpc_duration_seconds_count", {"service": "test.Probe", "method": "Broken"}
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await sampled.call("Refused")
    with pytest.raises(grpc.aio.AioRpcError) as broken:
        await sampled.call("Broken")

    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = rpc_status.from_call(refused.value)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert info.reason == "WALLET_FROZEN"
    assert (broken.value.code(), broken.value.details()) == (grpc.StatusCode.INTERNAL, "internal error")

    assert (_count("Refused", "FAILED_PRECONDITION"), _count("Broken", "INTERNAL")) == (before[0] + 1, before[1] + 1)
    after = REGISTRY.get_sample_value(
        "paymesh_rpc_duration_seconds_count", {"service": "test.Probe", "method": "Broken"}
    )
    assert after == (durations or 0.0) + 1
    servers = {s.name: s for s in sampled.spans.get_finished_spans() if s.kind == trace.SpanKind.SERVER}
    # A refusal is the caller's business (span unset); an internal error is the server's, with the exception.
    assert servers["/test.Probe/Refused"].status.status_code == trace.StatusCode.UNSET
    assert servers["/test.Probe/Broken"].status.status_code == trace.StatusCode.ERROR
    assert [e.name for e in servers["/test.Probe/Broken"].events] == ["exception"]


async def test_an_unknown_method_is_unimplemented_and_nothing_is_remembered_for_it(sampled: Mesh) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sampled.call(f"Missing{uuid.uuid4().hex}")
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize(
    "carrier",
    [
        {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
        {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-00", "tracestate": ""},
        {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "tracestate": "vendor=1"},
        {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "baggage": "k=v"},
        {"traceparent": "00-" + "0" * 32 + "-" + "b" * 16 + "-01"},  # invalid: zero trace id
        {"traceparent": "00-" + "A" * 32 + "-" + "b" * 16 + "-01"},  # invalid: uppercase
        {"traceparent": "01-" + "a" * 32 + "-" + "b" * 16 + "-01-future"},  # a later version's extension
        {"traceparent": "garbage"},
        {"tracestate": "vendor=1"},
    ],
)
def test_a_received_trace_context_is_read_as_the_standard_propagator_reads_it(carrier: dict[str, str]) -> None:
    fast = trace.get_current_span(telemetry._extract(dict(carrier)))
    standard = trace.get_current_span(propagate.extract(dict(carrier)))
    assert fast.get_span_context() == standard.get_span_context()
    assert fast.get_span_context().trace_state == standard.get_span_context().trace_state


def test_a_database_error_is_logged_without_its_statement_or_parameters() -> None:
    error = DBAPIError("UPDATE t SET email = :email", {"email": "someone@example.com"}, ValueError("value too long"))
    assert "someone@example.com" in str(error)  # what SQLAlchemy's own text would have logged
    assert "someone@example.com" not in failures.describe(error)
    try:
        raise error
    except DBAPIError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = telemetry.JsonFormatter("svc").format(record)
    assert "someone@example.com" not in line
    assert "DBAPIError" in line


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone is New York's (UTC-5 in January) for the test: a formatter that used
    local time would be 5 hours off, whatever zone the machine running the tests is in."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    assert time.localtime(0).tm_hour == 19, "no tz database for America/New_York"
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.usefixtures("new_york")
def test_log_times_are_utc_whatever_the_local_time_zone() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello", None, None)
    record.created = 0.0  # 1970-01-01T00:00:00 UTC, 1969-12-31T19:00:00 in New York
    record.msecs = 0
    entry = json.loads(telemetry.JsonFormatter("svc").format(record))
    assert entry["ts"] == "1970-01-01T00:00:00.000Z"
    text = telemetry.SafeFormatter("%(asctime)sZ %(message)s").format(record)
    assert text.startswith("1970-01-01 00:00:00,000Z hello")


def test_a_service_process_in_new_york_logs_rfc3339_utc() -> None:
    """A whole process configured as a service configures itself (configure_logging), with TZ set the way
    a host in New York would set it."""
    program = (
        "import logging\n"
        "from paymesh_runtime.settings import ServiceSettings\n"
        "from paymesh_runtime.telemetry_logs import configure_logging\n"
        "configure_logging('svc', ServiceSettings(database_url='postgresql+asyncpg://u@127.0.0.1/d'))\n"
        "logging.getLogger('t').info('hello')\n"
    )
    before = datetime.now(UTC)
    run = subprocess.run(
        [sys.executable, "-c", program],
        env={**os.environ, "TZ": "America/New_York"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    after = datetime.now(UTC)
    (line,) = run.stdout.splitlines()
    stamp = json.loads(line)["ts"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp  # RFC 3339, UTC
    logged = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= logged <= after + timedelta(seconds=1)
