"""The command line every service shares: `python -m <svc> [serve|migrate|...]`.

A service provides a `build(settings)` coroutine returning a ServiceApp (its
servicers, health probes, background tasks and cleanup steps); this module
does the rest the same way for all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from paymesh_runtime import gil, heap, migrations
from paymesh_runtime.callers import Callers
from paymesh_runtime.health import Probe
from paymesh_runtime.server import (
    Cleanup,
    Servicer,
    create_server,
    run_until_signalled,
    start_telemetry,
)
from paymesh_runtime.settings import ServiceSettings
from paymesh_runtime.telemetry_logs import configure_logging

log = logging.getLogger(__name__)

S = TypeVar("S", bound=ServiceSettings)


@dataclass
class ServiceApp:
    """What a service contributes to the shared bootstrap."""

    servicers: Sequence[Servicer]
    probes: Mapping[str, Probe]
    # Whose calls these are: access tokens verified against auth_svc's keys, and
    # the services whose identity headers count (paymesh_runtime.callers.end_users).
    callers: Callers
    # Long-running loops (outbox relay, sweepers, consumers); cancelled first
    # on shutdown, after in-flight calls have finished.
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = ()
    cleanup: Sequence[Cleanup] = ()
    interceptors: Sequence[Any] = field(default_factory=list)


async def serve(name: str, settings: S, build: Callable[[S], Awaitable[ServiceApp]]) -> None:
    app = await build(settings)
    heap.settle_after_start()  # what start-up built stays; later collections skip it
    gil.hand_over_sooner()  # grpc.aio's poller thread gets the GIL within 0.5 ms, not 5
    running = create_server(settings, app.servicers, app.probes, list(app.interceptors), callers=app.callers)
    tasks = [asyncio.create_task(job(), name=getattr(job, "__name__", "job")) for job in app.background]

    async def stop_background() -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    await run_until_signalled(running, settings, [stop_background, *app.cleanup, app.callers.close])


Command = Callable[[ServiceSettings, argparse.Namespace], None]


def main(
    name: str,
    settings_type: type[S],
    build: Callable[[S], Awaitable[ServiceApp]],
    migrations_dir: Path,
    commands: Mapping[str, tuple[Callable[[argparse.ArgumentParser], None], Command]] | None = None,
    argv: Sequence[str] | None = None,
) -> None:
    """Parses the command line, loads settings once and runs the command."""
    parser = argparse.ArgumentParser(prog=f"python -m {name}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the gRPC server (default)")
    sub.add_parser("migrate", help="apply database migrations")
    for command, (configure, _) in (commands or {}).items():
        configure(sub.add_parser(command))
    args = parser.parse_args(argv)
    settings = settings_type()
    if args.command in (None, "serve"):
        start_telemetry(name, settings)
        asyncio.run(serve(name, settings, build))
        return
    if args.command == "migrate":
        # The service's own log format (JSON lines in UTC): a migration's lines land in the same log.
        configure_logging(name, settings)
        migrations.upgrade(migrations_dir, settings.database_url.get_secret_value())
        log.info("%s: migrations applied", name)
    else:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
        (commands or {})[args.command][1](settings, args)
