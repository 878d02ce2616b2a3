"""CPU per RPC of paymesh's server and client wiring, against a bare grpc.aio server.

    python -m tests.bench.rpc_overhead [--calls 6000] [--concurrency 16]

The sampler is the process's: set OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG
(and --otlp to export the sampled spans to a receiver in this process) to
compare. Server side: a separate process serves grpc.health.v1.Health/Check,
either bare (no interceptor) or through paymesh_runtime.server.create_server;
its CPU (utime + stime from /proc) over a bounded number of calls, divided by
the calls, is the figure. Client side: this process's CPU per call through a
plain channel and through paymesh_runtime.channels.internal_channel (against
the bare server). Only loopback; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import sys
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from paymesh_runtime import telemetry
from paymesh_runtime.callers import Callers
from paymesh_runtime.channels import internal_channel
from paymesh_runtime.identity import ServiceTokens
from paymesh_runtime.server import create_server
from paymesh_runtime.settings import ServiceSettings

TICKS = os.sysconf("SC_CLK_TCK")
WARMUP_CALLS = 500


def _settings(otlp: str) -> ServiceSettings:
    return ServiceSettings(grpc_port=0, otlp_endpoint=otlp, database_url="postgresql+asyncpg://unused@127.0.0.1/unused")


async def _serve(variant: str, otlp: str, profile: str) -> None:
    settings = _settings(otlp)
    provider = telemetry.configure_tracing("bench_svc", settings)
    if variant == "bare":
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        running = create_server(settings, [], {}, callers=Callers.nobody())
        await running.health.check_once()
        server, port = running.server, running.port
    await server.start()
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    print(port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # the parent is done
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    await server.stop(None)
    provider.shutdown()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def _drive(stub: health_pb2_grpc.HealthStub, calls: int, concurrency: int) -> None:
    remaining = calls
    request = health_pb2.HealthCheckRequest()

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await stub.Check(request)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _server_cost(variant: str, args: argparse.Namespace, otlp: str) -> float:
    command = [sys.executable, "-m", "tests.bench.rpc_overhead", "--serve", variant, "--otlp", otlp]
    if args.profile:
        command += ["--profile", f"{args.profile}.{variant}"]
    pipe = asyncio.subprocess.PIPE
    process = await asyncio.create_subprocess_exec(*command, stdin=pipe, stdout=pipe)
    assert process.stdout is not None
    assert process.stdin is not None
    try:
        port = int(await asyncio.wait_for(process.stdout.readline(), 30))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            await _drive(stub, WARMUP_CALLS, args.concurrency)
            before = _cpu_seconds(process.pid)
            await _drive(stub, args.calls, args.concurrency)
            await asyncio.sleep(0.2)  # let the last completions be accounted
            spent = _cpu_seconds(process.pid) - before
    finally:
        process.stdin.write(b"done\n")
        await process.stdin.drain()
        await asyncio.wait_for(process.wait(), 30)
    return spent / args.calls * 1e6


async def _client_cost(args: argparse.Namespace, otlp: str) -> dict[str, float]:
    provider = telemetry.configure_tracing("bench_client", _settings(otlp))
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    results: dict[str, float] = {}
    try:
        tokens = ServiceTokens("b" * 48)
        channels = {
            "plain": grpc.aio.insecure_channel(f"127.0.0.1:{port}"),
            "internal_channel": internal_channel(f"127.0.0.1:{port}", caller="bench", tokens=tokens),
        }
        for name, channel in channels.items():
            async with channel:
                stub = health_pb2_grpc.HealthStub(channel)
                await _drive(stub, WARMUP_CALLS, args.concurrency)
                before = time.process_time()
                await _drive(stub, args.calls, args.concurrency)
                results[name] = (time.process_time() - before) / args.calls * 1e6
    finally:
        await server.stop(None)
        provider.shutdown()
    return results


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    spans = 0

    async def Export(self, request: trace_service_pb2.ExportTraceServiceRequest, context: object) -> object:
        self.spans += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


async def _main(args: argparse.Namespace) -> None:
    if args.serve:
        await _serve(args.serve, args.otlp, args.profile)
        return
    receiver = _Receiver()
    collector = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, collector)  # type: ignore[no-untyped-call]
    collector_port = collector.add_insecure_port("127.0.0.1:0")
    await collector.start()
    otlp = f"127.0.0.1:{collector_port}" if args.otlp_on else ""
    sampler = os.environ.get("OTEL_TRACES_SAMPLER", "(default)"), os.environ.get("OTEL_TRACES_SAMPLER_ARG", "")
    print(f"sampler={sampler[0]} arg={sampler[1] or '-'} export={'otlp' if otlp else 'none'} calls={args.calls}")
    try:
        for variant in ("bare", "mesh"):
            print(f"server {variant:>16}: {await _server_cost(variant, args, otlp):7.0f} µs CPU per call")
        for name, cost in (await _client_cost(args, otlp)).items():
            print(f"client {name:>16}: {cost:7.0f} µs CPU per call (client process, incl. grpc itself)")
    finally:
        await collector.stop(None)
    print(f"spans exported: {receiver.spans}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--otlp-on", action="store_true", help="export sampled spans to a receiver in this process")
    parser.add_argument("--profile", default="", help="write cProfile stats of the servers to PATH.<variant>")
    parser.add_argument("--serve", default="", help=argparse.SUPPRESS)
    parser.add_argument("--otlp", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 0 < args.calls <= 100_000 or not 0 < args.concurrency <= 256:
        parser.error("calls must be 1..100000 and concurrency 1..256")
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
