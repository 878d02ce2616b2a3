"""The runtime's observability parts without I/O: OTEL_* configuration, log lines and their ids, batch
spans, spans only inside sampled traces, bounded metric labels.

Spans go to the SDK's in-memory exporter through a provider of the test's own,
set as the global one for the test and put back after.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import grpc
import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from prometheus_client import REGISTRY

from paymesh_runtime import metrics, metrics_business, telemetry_logs, telemetry_spans
from paymesh_runtime.group_commit import GroupCommit
from paymesh_runtime.settings import ServiceSettings
from paymesh_runtime.telemetry_export import GRPC, HTTP_PROTOBUF, service_resource, span_exporter, trace_export
from paymesh_runtime.telemetry_http import TracedTransport
from paymesh_runtime.telemetry_logs import REQUEST_ID, JsonFormatter, RpcLog, clean_request_id


def _settings(otlp: str = "") -> ServiceSettings:
    return ServiceSettings(otlp_endpoint=otlp, database_url="postgresql+asyncpg://unused@127.0.0.1/unused")  # type: ignore[arg-type]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    before = trace._TRACER_PROVIDER
    trace._TRACER_PROVIDER = provider
    try:
        yield exporter
    finally:
        trace._TRACER_PROVIDER = before


# --- OTEL_* ------------------------------------------------------------------------------------------


def test_the_standard_endpoint_and_protocol_win_over_the_services_own_variable() -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": HTTP_PROTOBUF}
    export = trace_export(_settings("old:4317"), environ)
    assert export is not None
    assert (export.endpoint, export.protocol, export.standard) == ("http://collector:4318", HTTP_PROTOBUF, True)
    traces_only = {**environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4318/v1/traces"}
    assert trace_export(_settings(), traces_only).endpoint == "http://t:4318/v1/traces"  # type: ignore[union-attr]
    legacy = trace_export(_settings("collector:4317"), {})
    assert legacy is not None
    assert (legacy.endpoint, legacy.protocol, legacy.standard) == ("collector:4317", GRPC, False)
    assert trace_export(_settings(), {}) is None


@pytest.mark.parametrize("environ", [{"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}])
def test_export_can_be_switched_off_the_standard_ways(environ: dict[str, str]) -> None:
    assert (
        trace_export(_settings("collector:4317"), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", **environ}) is None
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "PROTOCOL"),
    ],
)
def test_what_the_sdk_would_only_warn_about_stops_the_service(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        trace_export(_settings("collector:4317"), environ)


def test_the_exporters_follow_the_protocol_and_the_legacy_endpoint_is_plaintext_unless_https(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=abc")
    http = span_exporter(
        trace_export(_settings(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "x", "OTEL_EXPORTER_OTLP_PROTOCOL": HTTP_PROTOBUF})
    )  # type: ignore[arg-type]
    assert isinstance(http, HttpExporter)
    assert http._endpoint == "http://collector:4318/v1/traces"
    assert http._client._headers["api-key"] == "abc"  # read by the exporter itself
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    legacy = span_exporter(trace_export(_settings("collector:4317"), {}))  # type: ignore[arg-type]
    assert isinstance(legacy, GrpcExporter)
    assert legacy._insecure is True
    assert span_exporter(trace_export(_settings("https://collector:4317"), {}))._insecure is False  # type: ignore[arg-type,attr-defined]


def test_the_service_name_is_the_modules_unless_the_variables_name_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
    resource = service_resource("payment_svc", {"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test"})
    assert resource.attributes["service.name"] == "payment_svc"
    assert resource.attributes["deployment.environment.name"] == "test"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "payments")
    assert service_resource("payment_svc", {"OTEL_SERVICE_NAME": "payments"}).attributes["service.name"] == "payments"


# --- logs ----------------------------------------------------------------------------------------------


def test_a_log_line_carries_the_trace_span_and_edge_request_ids(spans: InMemorySpanExporter) -> None:
    token = REQUEST_ID.set("5d3f0c9e-request")
    try:
        with trace.get_tracer("t").start_as_current_span("call") as span:
            record = logging.LogRecord("paymesh.rpc", logging.INFO, __file__, 1, "rpc %s", ("x",), None)
            record.fields = {"rpc_code": "OK"}
            entry = json.loads(JsonFormatter("wallet_svc").format(record))
    finally:
        REQUEST_ID.reset(token)
    context = span.get_span_context()
    assert entry["trace_id"] == f"{context.trace_id:032x}"
    assert entry["span_id"] == f"{context.span_id:016x}"
    assert (entry["request_id"], entry["rpc_code"], entry["msg"]) == ("5d3f0c9e-request", "OK", "rpc x")


def test_a_request_id_is_cut_and_nothing_unprintable_gets_in() -> None:
    assert clean_request_id("a" * 100) == "a" * 64
    assert clean_request_id(b"abc-123") == "abc-123"
    assert clean_request_id("evil\nline") == ""
    assert clean_request_id("évil") == ""


def test_one_info_line_per_call_warning_for_the_servers_own_failures(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="paymesh.rpc"):
        RpcLog().log("/pkg.S/Ok", grpc.StatusCode.OK, 0.0123)
        RpcLog().log("/pkg.S/Refused", grpc.StatusCode.FAILED_PRECONDITION, 0.001)
        RpcLog().log("/pkg.S/Broken", grpc.StatusCode.INTERNAL, 0.5)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "rpc /pkg.S/Ok OK 12.30ms"),
        ("INFO", "rpc /pkg.S/Refused FAILED_PRECONDITION 1.00ms"),
        ("WARNING", "rpc /pkg.S/Broken INTERNAL 500.00ms"),
    ]
    assert caplog.records[0].fields == {"rpc_method": "/pkg.S/Ok", "rpc_code": "OK", "duration_ms": 12.3}  # type: ignore[attr-defined]


def test_quick_successes_are_logged_up_to_the_budget_then_the_skipped_are_counted(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, spans: InMemorySpanExporter
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(telemetry_logs.time, "monotonic", lambda: clock[0])
    rpc_log = RpcLog(ok_per_second=2)
    with caplog.at_level(logging.INFO, logger="paymesh.rpc"):
        for _ in range(5):
            rpc_log.log("/pkg.S/Ok", grpc.StatusCode.OK, 0.001)  # 2 written, 3 skipped
        rpc_log.log("/pkg.S/Other", grpc.StatusCode.OK, 0.001)  # a budget per method
        rpc_log.log("/pkg.S/Ok", grpc.StatusCode.NOT_FOUND, 0.001)  # failures: always
        rpc_log.log("/pkg.S/Ok", grpc.StatusCode.OK, telemetry_logs.SLOW_CALL_SECONDS)  # slow: always
        with trace.get_tracer("t").start_as_current_span("sampled"):
            rpc_log.log("/pkg.S/Ok", grpc.StatusCode.OK, 0.001)  # in a sampled trace: always
        rpc_log.log("/pkg.S/Ok", grpc.StatusCode.OK, 0.001)  # skipped
        clock[0] += 1.0
        rpc_log.log("/pkg.S/Ok", grpc.StatusCode.OK, 0.001)  # a new second, a new budget
    lines = [(r.fields["rpc_method"], r.fields["rpc_code"], r.fields.get("rpc_lines_skipped")) for r in caplog.records]  # type: ignore[attr-defined]
    assert lines == [
        ("/pkg.S/Ok", "OK", None),
        ("/pkg.S/Ok", "OK", None),
        ("/pkg.S/Other", "OK", None),
        ("/pkg.S/Ok", "NOT_FOUND", 3),
        ("/pkg.S/Ok", "OK", None),
        ("/pkg.S/Ok", "OK", None),
        ("/pkg.S/Ok", "OK", 1),
    ]


# --- spans ----------------------------------------------------------------------------------------------


def test_a_batch_joins_the_first_sampled_request_and_links_the_others(spans: InMemorySpanExporter) -> None:
    async def main() -> None:
        tracer = trace.get_tracer("t")

        async def handle(items: object) -> list[str]:
            assert isinstance(items, list)
            await asyncio.sleep(0.01)
            return [trace.get_current_span().get_span_context().span_id.to_bytes(8).hex()] * len(items)

        batches: GroupCommit[int, str] = GroupCommit(handle, max_batch=10, name="probe")

        async def request(n: int) -> str:
            with tracer.start_as_current_span(f"request {n}"):
                return await batches.submit(n)

        first = asyncio.create_task(request(0))  # alone in the first batch
        await asyncio.sleep(0)
        await asyncio.gather(first, *(request(n) for n in (1, 2, 3)))  # 1-3 queue up: one batch

    asyncio.run(main())
    finished = {s.name: s for s in spans.get_finished_spans()}
    requests = {n: finished[f"request {n}"] for n in range(4)}
    (second,) = [
        s for s in spans.get_finished_spans() if s.name == "probe batch" and s.attributes["paymesh.batch.size"] == 3
    ]  # type: ignore[index]
    assert second.parent is not None
    assert second.parent.span_id == requests[1].context.span_id  # the first request of the batch
    assert second.context.trace_id == requests[1].context.trace_id
    assert {link.context.span_id for link in second.links} == {requests[2].context.span_id, requests[3].context.span_id}
    members = [s for s in spans.get_finished_spans() if s.name == "probe batch member"]
    assert {m.parent.span_id for m in members if m.parent} == {requests[2].context.span_id, requests[3].context.span_id}
    assert all([link.context.span_id for link in m.links] == [second.context.span_id] for m in members)


def test_no_span_outside_a_sampled_trace(spans: InMemorySpanExporter) -> None:
    assert telemetry_spans.child_span("SELECT") is None  # no trace at all: never a root
    sampled = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    assert telemetry_spans.span_from_carrier("x", {"traceparent": sampled[:-2] + "00"}, trace.SpanKind.CONSUMER) is None
    span = telemetry_spans.span_from_carrier("x", {"traceparent": sampled}, trace.SpanKind.CONSUMER)
    assert span is not None
    span.end()
    (finished,) = spans.get_finished_spans()
    assert finished.parent is not None
    assert (finished.context.trace_id, finished.parent.span_id) == (int("1" * 32, 16), int("2" * 16, 16))


def test_a_trace_context_sent_as_data_keeps_only_the_w3c_fields_within_bounds() -> None:
    parent = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    received = {
        "traceparent": parent,
        "tracestate": "vendor=x" * 100,  # 800 characters: over the bound
        "authorization": "Bearer secret",
        "baggage": "user=1",
    }
    assert telemetry_spans.clean_trace_context(received) == {"traceparent": parent}
    assert telemetry_spans.clean_trace_context({"traceparent": "00-\n", "tracestate": "a=b"}) == {"tracestate": "a=b"}
    assert telemetry_spans.clean_trace_context({"traceparent": "00-é"}) == {}


def test_a_handed_over_trace_is_continued_and_the_oldest_go_first(spans: InMemorySpanExporter) -> None:
    handoff = telemetry_spans.TraceHandoff(capacity=2)
    with trace.get_tracer("t").start_as_current_span("consume") as consumed:
        for key in ("a", "b", "c"):
            handoff.remember(key, consumed)
    assert handoff.carrier("a") == {}
    carrier = handoff.carrier("c")
    assert carrier["traceparent"].split("-")[2] == f"{consumed.get_span_context().span_id:016x}"


def test_http_calls_get_a_span_inside_a_sampled_trace_without_the_query(spans: InMemorySpanExporter) -> None:
    transport = TracedTransport(httpx.MockTransport(lambda request: httpx.Response(502)))

    async def main() -> None:
        async with httpx.AsyncClient(transport=transport, base_url="http://processor:8091") as client:
            await client.post("/v1/payouts?key=secret-value")  # outside any trace: no span
            with trace.get_tracer("t").start_as_current_span("saga step"):
                await client.post("/v1/payouts?key=secret-value")

    asyncio.run(main())
    (call,) = [s for s in spans.get_finished_spans() if s.name == "POST"]
    assert call.attributes is not None
    assert (call.attributes["url.path"], call.attributes["http.response.status_code"]) == ("/v1/payouts", 502)
    assert "secret-value" not in json.dumps(dict(call.attributes))
    assert call.status.status_code == trace.StatusCode.ERROR


# --- metrics ----------------------------------------------------------------------------------------------


def test_a_label_fed_from_outside_keeps_a_bounded_set_of_short_tokens() -> None:
    label = metrics.BoundedLabel(limit=2)
    assert [label(v) for v in ("card_declined", "insufficient_funds", "expired_card", "card_declined")] == [
        "card_declined",
        "insufficient_funds",
        metrics.OTHER,
        "card_declined",
    ]
    assert label("has spaces and is long " * 3) == metrics.OTHER
    assert label("") == ""


def test_a_state_change_counts_once_with_its_amount() -> None:
    labels = {"kind": "payout", "state": "FAILED", "currency": "JPY", "failure_code": "account_closed"}
    before = REGISTRY.get_sample_value("paymesh_payment_state_changes_total", labels) or 0.0
    amount = REGISTRY.get_sample_value(
        "paymesh_payment_state_amount_minor_units_total", {"kind": "payout", "state": "FAILED", "currency": "JPY"}
    )
    metrics_business.state_entered("payout", "FAILED", "JPY", 5000, "account_closed")
    assert REGISTRY.get_sample_value("paymesh_payment_state_changes_total", labels) == before + 1
    after = REGISTRY.get_sample_value(
        "paymesh_payment_state_amount_minor_units_total", {"kind": "payout", "state": "FAILED", "currency": "JPY"}
    )
    assert after == (amount or 0.0) + 5000
    bucket = {"kind": "payout", "currency": "JPY", "le": "5000.0"}
    count = REGISTRY.get_sample_value("paymesh_payment_amount_major_units_bucket", bucket) or 0.0
    metrics_business.created("payout", "JPY", 5000)  # JPY has no minor unit: 5000 yen
    assert REGISTRY.get_sample_value("paymesh_payment_amount_major_units_bucket", bucket) == count + 1
