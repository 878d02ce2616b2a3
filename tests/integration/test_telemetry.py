"""Traces leave a service over OTLP/gRPC, and one trace spans an internal call.

A real OTLP receiver (the collector's TraceService, served here) gets the spans
that a separate service process exports through paymesh_runtime's wiring: the
server span of an internal call must be the child of the caller's client span.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

SERVICE_PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from paymesh_runtime import telemetry
    from paymesh_runtime.channels import internal_channel
    from paymesh_runtime.identity import ServiceTokens
    from paymesh_runtime.server import create_server
    from paymesh_runtime.settings import ServiceSettings

    async def main() -> None:
        settings = ServiceSettings(
            grpc_port=0, otlp_endpoint=sys.argv[1], database_url="postgresql+asyncpg://unused@127.0.0.1/unused"
        )
        provider = telemetry.configure_tracing("telemetry_probe_svc", settings)
        running = create_server(settings, [], {})
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


async def test_an_internal_call_is_one_trace_exported_over_otlp() -> None:
    receiver = Receiver()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SERVICE_PROCESS, f"127.0.0.1:{port}", stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, stderr.decode()[-2000:]
    finally:
        await server.stop(None)

    by_kind = {span.kind: span for service, span in receiver.spans if span.name == "/grpc.health.v1.Health/Check"}
    client = by_kind[trace_pb2.Span.SPAN_KIND_CLIENT]
    server_span = by_kind[trace_pb2.Span.SPAN_KIND_SERVER]
    assert server_span.trace_id == client.trace_id
    assert server_span.parent_span_id == client.span_id
    assert {service for service, _ in receiver.spans} == {"telemetry_probe_svc"}
