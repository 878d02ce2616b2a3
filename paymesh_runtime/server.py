"""Server bootstrap: one grpc.aio server wired the same way in every service.

`create_server` builds the server (interceptors, health, reflection v1 and
v1alpha) and binds it, so tests can bind port 0; `run_until_signalled` starts
it, keeps health honest, and on SIGTERM stops accepting calls, lets in-flight
calls finish within the grace period, then runs the service's cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paymesh_runtime import heap, reflection, telemetry
from paymesh_runtime.callers import Callers
from paymesh_runtime.health import HealthReporter, Probe
from paymesh_runtime.interceptors import MeshServerInterceptor
from paymesh_runtime.settings import ServiceSettings
from paymesh_runtime.telemetry_logs import RpcLog

log = logging.getLogger(__name__)

Cleanup = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Servicer:
    """A servicer and the generated function that registers it."""

    full_name: str  # e.g. "paymesh.wallet.v1.WalletService"
    instance: Any
    add_to_server: Callable[[Any, grpc.aio.Server], None]


class _MethodAwarePool:
    """The default descriptor pool, plus lookup of the file that holds a method.

    upb's `FindFileContainingSymbol` does not resolve `pkg.Service.Method`, which
    `grpcurl describe pkg.Service.Method` asks reflection for; fall back to the
    method's service.
    """

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def FindFileContainingSymbol(self, symbol: str) -> Any:
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            return self._pool.FindMethodByName(symbol).containing_service.file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: HealthReporter


def create_server(
    settings: ServiceSettings,
    servicers: Sequence[Servicer],
    probes: Mapping[str, Probe],
    interceptors: Sequence[Any] = (),
    *,
    callers: Callers,
) -> RunningServer:
    """The server of `servicers`; `callers` says whose calls they are (paymesh_runtime.callers)."""
    server = grpc.aio.server(
        interceptors=[
            MeshServerInterceptor(
                callers, reuse_handlers=not interceptors, rpc_log=RpcLog(settings.rpc_log_ok_per_second)
            ),
            *interceptors,
        ],
        options=[("grpc.so_reuseport", 0)],
    )
    for servicer in servicers:
        servicer.add_to_server(servicer.instance, server)
    health = HealthReporter([s.full_name for s in servicers], probes)
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    names = [s.full_name for s in servicers]
    # grpc.reflection.v1 and v1alpha (paymesh_runtime.reflection).
    reflection.enable(
        server,
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name],
        pool=cast(descriptor_pool.DescriptorPool, _MethodAwarePool(descriptor_pool.Default())),
    )
    port = server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
    if port == 0:
        raise RuntimeError(f"cannot bind {settings.grpc_host}:{settings.grpc_port}")
    return RunningServer(server, port, health)


async def run_until_signalled(
    running: RunningServer, settings: ServiceSettings, cleanup: Sequence[Cleanup] = ()
) -> None:
    """Serves until SIGTERM or SIGINT, then shuts down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await running.server.start()
    await running.health.check_once()
    prober = asyncio.create_task(running.health.run(settings.health_probe_interval_seconds))
    log.info("serving on %s:%d", settings.grpc_host, running.port)
    await stop.wait()
    log.info("shutting down: draining in-flight calls for up to %.0fs", settings.shutdown_grace_seconds)
    await running.health.shutting_down()
    await running.server.stop(settings.shutdown_grace_seconds)
    prober.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await prober
    for step in cleanup:
        try:
            await step()
        except Exception:
            log.exception("cleanup step failed")
    log.info("stopped")


def start_telemetry(service: str, settings: ServiceSettings) -> None:
    telemetry.configure_logging(service, settings)
    telemetry.configure_tracing(service, settings)
    telemetry.start_metrics_server(settings)
    heap.export_gc_pauses()
