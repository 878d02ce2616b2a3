"""Traces leave a service over OTLP/gRPC, and one trace spans an internal call and an event.

A real OTLP receiver (the collector's TraceService, served here) gets the spans
that a separate service process exports through paymesh_runtime's wiring: the
server span of an internal call must be the child of the caller's client span,
and notify_svc's span for a consumed event the child of the span in which the
event was written to the outbox (traceparent: outbox row, relay, Kafka header).
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
import uuid

import grpc
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from sqlalchemy.ext.asyncio import create_async_engine

from devstack.stack import Stack
from paymesh_runtime.outbox import create_outbox
from tests.helpers import fresh_database
from tests.integration.notify_support import harness_database_url, migrate

SERVICE_PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from paymesh_runtime import telemetry
    from paymesh_runtime.callers import Callers
    from paymesh_runtime.channels import internal_channel
    from paymesh_runtime.identity import ServiceTokens
    from paymesh_runtime.server import create_server
    from paymesh_runtime.settings import ServiceSettings

    async def main() -> None:
        settings = ServiceSettings(
            grpc_port=0, otlp_endpoint=sys.argv[1], database_url="postgresql+asyncpg://unused@127.0.0.1/unused"
        )
        provider = telemetry.configure_tracing("telemetry_probe_svc", settings)
        running = create_server(settings, [], {}, callers=Callers.nobody())
        await running.server.start()
        await running.health.check_once()
        tokens = ServiceTokens("t" * 48)
        async with internal_channel(f"127.0.0.1:{running.port}", caller="probe", tokens=tokens) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await running.server.stop(None)
        provider.force_flush()
        provider.shutdown()

    asyncio.run(main())
    """
)


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[tuple[str, trace_pb2.Span]] = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend((attrs.get("service.name", ""), span) for span in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


async def _spans_of(script: str, *args: str) -> list[tuple[str, trace_pb2.Span]]:
    """Runs `script` in a process of its own, exporting to a receiver here; returns what it exported."""
    receiver = Receiver()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, f"127.0.0.1:{port}", *args, stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=90)
        assert process.returncode == 0, stderr.decode()[-2000:]
    finally:
        await server.stop(None)
    return receiver.spans


async def test_an_internal_call_is_one_trace_exported_over_otlp() -> None:
    spans = await _spans_of(SERVICE_PROCESS)

    by_kind = {span.kind: span for service, span in spans if span.name == "/grpc.health.v1.Health/Check"}
    client = by_kind[trace_pb2.Span.SPAN_KIND_CLIENT]
    server_span = by_kind[trace_pb2.Span.SPAN_KIND_SERVER]
    assert server_span.trace_id == client.trace_id
    assert server_span.parent_span_id == client.span_id
    assert {service for service, _ in spans} == {"telemetry_probe_svc"}


EVENT_PROCESS = textwrap.dedent(
    """
    import asyncio, sys, uuid
    from aiokafka import AIOKafkaConsumer
    from opentelemetry import trace
    from sqlalchemy import MetaData
    from sqlalchemy.ext.asyncio import create_async_engine
    from notify_svc.consumer import EventConsumer, kafka_consumer_factory
    from notify_svc.dead_letters import DeadLetterProducer
    from notify_svc.ingest import EventRecorder
    from notify_svc.templates import Templates
    from paymesh.events.v1 import events_pb2
    from paymesh_runtime import telemetry
    from paymesh_runtime.outbox import Outbox, OutboxRelay, kafka_producer_factory, outbox_tables
    from paymesh_runtime.settings import ServiceSettings

    async def main() -> None:
        otlp, outbox_url, notify_url, bootstrap, topic = sys.argv[1:6]
        provider = telemetry.configure_tracing("event_probe", ServiceSettings(otlp_endpoint=otlp))
        outbox, sequences = outbox_tables(MetaData())
        engine = create_async_engine(outbox_url)
        event = events_pb2.Event(type="test.traced", aggregate_type="test", aggregate_id=str(uuid.uuid4()))
        with trace.get_tracer("probe").start_as_current_span("change"):
            async with engine.begin() as conn:
                await Outbox(outbox, sequences, "probe").enqueue(conn, topic=topic, event=event)
        relay = OutboxRelay(engine, kafka_producer_factory(bootstrap))
        relaying = asyncio.create_task(relay.run())
        reader = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
        await reader.start()
        try:
            async with asyncio.timeout(60):
                batch = {}
                while not batch:
                    batch = await reader.getmany(timeout_ms=500)
        finally:
            await reader.stop()
            relaying.cancel()
        notify_engine = create_async_engine(notify_url)
        dead_letters = DeadLetterProducer(kafka_producer_factory(bootstrap), "unused")
        consumer = EventConsumer(
            EventRecorder(notify_engine, Templates.load()),
            dead_letters,
            kafka_consumer_factory(bootstrap, "unused", [topic]),
            consumer_group="event_probe",
        )
        resume = await consumer.handle_batch(batch)
        assert all(offset == batch[tp][-1].offset + 1 for tp, offset in resume.items()), resume
        await engine.dispose()
        await notify_engine.dispose()
        provider.force_flush()
        provider.shutdown()

    asyncio.run(main())
    """
)
OUTBOX_DATABASE = "paymesh_telemetry_test"


@pytest.mark.integration
async def test_an_event_is_processed_in_the_trace_that_wrote_it_to_the_outbox(infra: Stack) -> None:
    outbox_url = await fresh_database(infra, OUTBOX_DATABASE)
    engine = create_async_engine(outbox_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(create_outbox)
    finally:
        await engine.dispose()
    await migrate(infra)
    topic = f"paymesh.telemetry-test.{uuid.uuid4().hex[:8]}"
    kafka = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)
    await kafka.start()
    try:
        await kafka.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await kafka.close()

    spans = await _spans_of(EVENT_PROCESS, outbox_url, harness_database_url(infra), infra.kafka_bootstrap, topic)

    by_name = {span.name: span for _, span in spans}
    change, published, processed = by_name["change"], by_name[f"{topic} publish"], by_name[f"{topic} process"]
    # change -> the relay's publish (PRODUCER, a child of the span that wrote the event) -> notify's process
    assert published.kind == trace_pb2.Span.SPAN_KIND_PRODUCER
    assert processed.kind == trace_pb2.Span.SPAN_KIND_CONSUMER
    assert processed.trace_id == published.trace_id == change.trace_id
    assert published.parent_span_id == change.span_id
    assert processed.parent_span_id == published.span_id
