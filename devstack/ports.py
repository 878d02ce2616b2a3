"""Where every process of a paymesh stack listens.

Two profiles: ``local`` (``make up``; the documented ports) and ``test``
(pytest's session stack; ports from a base so that several test stacks can
run side by side, e.g. ``PAYMESH_TEST_PORT_BASE=32000``). Everything binds
127.0.0.1.

Replicas: payment_svc and wallet_svc may run as several processes
(``python -m devstack up --replicas payment=2,wallet=2``). Replica ``k`` (1 is
the one every stack has) listens on the profile's port for the service plus
``(k - 1) * REPLICA_PORT_STRIDE``, for gRPC and metrics alike:

=========  ===========  ===============  ==============  ==================
profile    wallet gRPC  wallet metrics   payment gRPC    payment metrics
=========  ===========  ===============  ==============  ==================
local 1    50052        51052            50053           51053
local 2    50152        51152            50153           51153
test 2     base + 152   base + 1152      base + 153      base + 1153
=========  ===========  ===============  ==============  ==================

Up to MAX_REPLICAS, every port stays clear of the profile's other ports
(base + 25 ... base + 1054; Jaeger's base + 317, 318, 685 and 686,
Prometheus's base + 990) and below base + 2000, so test stacks whose bases
are 2000 apart never share a port.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

HOST = "127.0.0.1"

SERVICES = ("auth", "wallet", "payment", "notify")
# The services that can run as several replicas: the money path, whose
# replicas are tested together (tests/e2e/test_replicas.py).
REPLICABLE = ("wallet", "payment")
MAX_REPLICAS = 9
REPLICA_PORT_STRIDE = 100


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
    # The trace backend (Jaeger: OTLP over gRPC and HTTP in, UI and query API out) and Prometheus.
    otlp_grpc: int = 0
    otlp_http: int = 0
    jaeger_ui: int = 0
    jaeger_query_grpc: int = 0
    prometheus: int = 0
    # The fake SMS (Twilio API) and Web Push provider that notify_svc sends to (devstack.providers).
    providers: int = 0

    def grpc(self, service: str, replica: int = 1) -> int:
        """The gRPC port of a service's replica (1: the first, the only one unless scaled)."""
        if replica != 1 and (service not in REPLICABLE or not 1 <= replica <= MAX_REPLICAS):
            raise ValueError(f"{service} has no replica {replica}; replicas 1..{MAX_REPLICAS} of {REPLICABLE}")
        return int(getattr(self, service)) + (replica - 1) * REPLICA_PORT_STRIDE

    def metrics(self, service: str, replica: int = 1) -> int:
        return self.grpc(service, replica) + self.metrics_offset


def parse_replicas(text: str) -> dict[str, int]:
    """``payment=2,wallet=2`` -> {"payment": 2, "wallet": 2}; ValueError names what is wrong."""
    replicas: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        service, equals, count = part.partition("=")
        service = service.strip().removesuffix("_svc")
        count = count.strip()
        if not equals or service not in REPLICABLE or not count.isdigit() or not 1 <= int(count) <= MAX_REPLICAS:
            raise ValueError(f"{part!r}: expected SERVICE=N with SERVICE one of {REPLICABLE}, N in 1..{MAX_REPLICAS}")
        replicas[service] = int(count)
    return replicas


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
    otlp_grpc=14317,
    otlp_http=14318,
    jaeger_ui=16686,
    jaeger_query_grpc=16685,
    prometheus=19090,
    providers=8092,
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
        otlp_grpc=b + 317,
        otlp_http=b + 318,
        jaeger_ui=b + 686,
        jaeger_query_grpc=b + 685,
        prometheus=b + 990,
        providers=b + 94,
    )


# Not a pytest test, despite its name.
test_ports.__test__ = False  # type: ignore[attr-defined]
