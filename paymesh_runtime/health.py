"""gRPC health that tells the truth: SERVING only while dependencies answer.

Each probe is an async callable that raises when its dependency is down. A
background task runs them every few seconds and sets the overall status ("")
and every registered service name accordingly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from grpc_health.v1 import health, health_pb2

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[object]]

PROBE_TIMEOUT_SECONDS = 2.0

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthReporter:
    """Owns the grpc health servicer and keeps it in step with the probes."""

    def __init__(self, service_names: Sequence[str], probes: Mapping[str, Probe]) -> None:
        self.servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._names = ["", *service_names]
        self._probes = dict(probes)
        self._failing: set[str] = set()
        self._stopping = False

    async def check_once(self) -> bool:
        """Runs every probe once; returns True when all answered."""
        results = await asyncio.gather(
            *(asyncio.wait_for(probe(), PROBE_TIMEOUT_SECONDS) for probe in self._probes.values()),
            return_exceptions=True,
        )
        failing = {n for n, r in zip(self._probes, results, strict=True) if isinstance(r, BaseException)}
        for name in failing - self._failing:
            log.warning("dependency %s is not answering", name)
        for name in self._failing - failing:
            log.info("dependency %s answers again", name)
        self._failing = failing
        await self._publish(SERVING if not failing and not self._stopping else NOT_SERVING)
        return not failing

    async def run(self, interval: float) -> None:
        while not self._stopping:
            await self.check_once()
            await asyncio.sleep(interval)

    async def shutting_down(self) -> None:
        """Reports NOT_SERVING so balancers stop sending new calls."""
        self._stopping = True
        await self._publish(NOT_SERVING)

    async def _publish(self, status: int) -> None:
        for name in self._names:
            await self.servicer.set(name, status)
