"""Where every process of a paymesh stack listens.

Two profiles: ``local`` (``make up``; the documented ports) and ``test``
(pytest's session stack; ports from a base so that several test stacks can
run side by side, e.g. ``PAYMESH_TEST_PORT_BASE=32000``). Everything binds
127.0.0.1.

Each of the local profile's ports can be moved by an environment variable,
``PAYMESH_PORT_<FIELD>`` (``PAYMESH_PORT_ENVOY=18080 make up``; the list is
in README.md): a developer whose 8080 is taken moves that one port, not the
whole stack. A service's metrics and replica ports follow its gRPC port.

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

import dataclasses
import difflib
import os
from collections.abc import Mapping
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


# --- the local profile's overrides ----------------------------------------------------------
PORT_VARIABLE_PREFIX = "PAYMESH_PORT_"
# Unprivileged ports only: below 1024 a developer's bind fails for want of root, not because the port is taken.
MIN_PORT, MAX_PORT = 1024, 65535
# Every port a stack listens on, by Ports field; metrics_offset is a distance, not a port.
PORT_FIELDS = tuple(f.name for f in dataclasses.fields(Ports) if f.name != "metrics_offset")


class PortsError(ValueError):
    """A port variable is malformed, unknown or clashes with another port; the message names the variable."""


def port_variable(field: str) -> str:
    """The environment variable that moves a local-profile port: envoy_admin -> PAYMESH_PORT_ENVOY_ADMIN."""
    return PORT_VARIABLE_PREFIX + field.upper()


def local_ports(environ: Mapping[str, str] | None = None) -> Ports:
    """The local profile's ports: LOCAL, with each PAYMESH_PORT_<FIELD> that is set (and not empty) instead."""
    env = os.environ if environ is None else environ
    variables = {port_variable(field): field for field in PORT_FIELDS}
    for name in sorted(env):
        if name.startswith(PORT_VARIABLE_PREFIX) and name not in variables:
            close = difflib.get_close_matches(name, variables, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise PortsError(f"{name} is not a paymesh port variable; {hint}known: {', '.join(variables)}")
    overrides: dict[str, int] = {}
    for name, field in variables.items():
        raw = env.get(name, "").strip()
        if not raw:
            continue
        if not raw.isdigit() or not MIN_PORT <= int(raw) <= MAX_PORT:
            raise PortsError(f"{name}={raw!r}: expected a TCP port number, {MIN_PORT}..{MAX_PORT}")
        overrides[field] = int(raw)
    ports = dataclasses.replace(LOCAL, **overrides)
    _check_distinct(ports)
    return ports


def _listeners(ports: Ports) -> list[tuple[int, str, str]]:
    """(port, what listens there, the Ports field whose variable moves it) with one replica of each service."""
    found = [(getattr(ports, f), f"{f} gRPC" if f in SERVICES else f, f) for f in PORT_FIELDS]
    return found + [(ports.metrics(s), f"{s} metrics", s) for s in SERVICES]


def _check_distinct(ports: Ports) -> None:
    seen: dict[int, tuple[str, str]] = {}
    for port, what, field in _listeners(ports):
        if port > MAX_PORT:
            moved = f"{port_variable(field)}={getattr(ports, field)}"
            raise PortsError(f"{moved}: {what} would be {port}, beyond {MAX_PORT}")
        if port in seen:
            other, other_field = seen[port]
            raise PortsError(
                f"{other} and {what} would both listen on {port}: "
                f"set {port_variable(other_field)} or {port_variable(field)} to another port"
            )
        seen[port] = (what, field)


def owner_of(ports: Ports, port: int) -> tuple[str, str] | None:
    """(what listens on `port`, the Ports field that moves it), replicas included; None if none of ours."""
    for listening, what, field in _listeners(ports):
        if listening == port:
            return what, field
    for service in REPLICABLE:
        for replica in range(2, MAX_REPLICAS + 1):
            if port == ports.grpc(service, replica):
                return f"{service}-{replica} gRPC", service
            if port == ports.metrics(service, replica):
                return f"{service}-{replica} metrics", service
    return None


def how_to_free(profile: str, ports: Ports, port: int) -> str:
    """What a developer sets to move `port` of a `profile` stack elsewhere."""
    if profile != "local":
        return "set PAYMESH_TEST_PORT_BASE to another base (a test stack takes the 2000 ports above it)"
    owner = owner_of(ports, port)
    if owner is None:
        return "move it with its PAYMESH_PORT_* variable (README.md, Ports)"
    what, field = owner
    variable = port_variable(field)
    # Metrics and replica ports have no variable of their own: they follow the service's gRPC port.
    follows = "" if what in (field, f"{field} gRPC") else f" ({what} follows it)"
    return f"set {variable} to a free port, e.g. {variable}={_suggest(getattr(ports, field))} make up{follows}"


def _suggest(port: int) -> int:
    # The same port 10000 higher (or lower) is easy to recognise; whether it is free is checked when it is used.
    return port + 10000 if port + 10000 <= MAX_PORT else port - 10000
