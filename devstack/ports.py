"""Where every process of a paymesh stack listens.

Two profiles: ``local`` (``make up``; the documented ports) and ``test``
(pytest's session stack; ports from a base so that several test stacks can
run side by side, e.g. ``PAYMESH_TEST_PORT_BASE=32000``). Everything binds
127.0.0.1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

HOST = "127.0.0.1"

SERVICES = ("auth", "wallet", "payment", "notify")


@dataclass(frozen=True)
class Ports:
    postgres: int
    redis: int
    kafka: int
    kafka_controller: int
    envoy: int
    envoy_admin: int
    auth: int
    wallet: int
    payment: int
    notify: int
    processor: int
    smtp: int
    # Prometheus metrics: each service serves /metrics on grpc port + this.
    metrics_offset: int = 1000

    def grpc(self, service: str) -> int:
        return int(getattr(self, service))

    def metrics(self, service: str) -> int:
        return self.grpc(service) + self.metrics_offset


LOCAL = Ports(
    postgres=15432,
    redis=16379,
    kafka=19092,
    kafka_controller=19093,
    envoy=8080,
    envoy_admin=9901,
    auth=50051,
    wallet=50052,
    payment=50053,
    notify=50054,
    processor=8091,
    smtp=1025,
)


def test_ports(base: int | None = None) -> Ports:
    """The test stack's ports, offset from PAYMESH_TEST_PORT_BASE (default 30000)."""
    b = base if base is not None else int(os.environ.get("PAYMESH_TEST_PORT_BASE", "30000"))
    return Ports(
        postgres=b + 432,
        redis=b + 379,
        kafka=b + 92,
        kafka_controller=b + 93,
        envoy=b + 80,
        envoy_admin=b + 901,
        auth=b + 51,
        wallet=b + 52,
        payment=b + 53,
        notify=b + 54,
        processor=b + 91,
        smtp=b + 25,
        metrics_offset=1000,
    )


# Not a pytest test, despite its name.
test_ports.__test__ = False  # type: ignore[attr-defined]
