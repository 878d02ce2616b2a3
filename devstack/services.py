"""The four paymesh services: their environment and how to run them.

Each runs as ``python -m <name>_svc`` after ``python -m <name>_svc migrate``
(same environment for both) and is healthy when the standard gRPC health
service answers SERVING for the server as a whole (service "").

payment_svc and wallet_svc may run as several replicas (devstack.topology):
each its own process, ports (devstack.ports), log and pid file, all on the
service's one database; only the first migrates it. Callers reach a scaled
wallet_svc through an ``ipv4:`` target listing every replica, which gRPC's
round_robin policy (paymesh_runtime.channels) spreads calls over.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.components import Component, Context, fingerprint
from devstack.credentials import Secrets
from devstack.envoy_config import JWT_AUDIENCE, jwt_issuer, key_publish_lead_seconds
from devstack.ports import HOST, SERVICES, Ports
from devstack.procs import StackError, run_command
from devstack.providers import SMS_SENDER, twilio_credentials, vapid_private_key
from devstack.topology import instance_name
from devstack.tracing import service_otel_env

# Services that only consume events: in the local stack they run as background work (see background()).
BACKGROUND_SERVICES = frozenset({"notify"})


def background(command: list[str]) -> list[str]:
    """`command` under the SCHED_IDLE policy: it runs only on CPU time that nothing else wants.

    On a shared machine the event consumers (and the mail sink they feed) yield the CPU to the money
    path, as their own pods would in production: under load their backlog grows and drains afterwards
    (the bench reports how long). `nice 10` was not enough: a niced process still takes a share of a
    busy core and delays the wake-ups of the money path's processes (docs/performance.md, "Background
    work that yields"). Lowering one's own priority needs no privilege.
    """
    return ["chrt", "--idle", "0", *command]


# Each service gets its own Redis logical database so keys never collide.
REDIS_DB = {"auth": 0, "wallet": 1, "payment": 2, "notify": 3}
# AUTH_JWT_AUDIENCE is envoy_config.JWT_AUDIENCE, the audience the profile's
# Envoy requires: one constant for both sides.


def database_url(service: str, ports: Ports, secrets: Secrets, driver: str = "asyncpg") -> str:
    """The service's own database; driver '' gives a plain postgresql:// DSN."""
    scheme = f"postgresql+{driver}" if driver else "postgresql"
    return f"{scheme}://paymesh:{secrets.postgres_password}@{HOST}:{ports.postgres}/paymesh_{service}"


def redis_url(db: int, ports: Ports, secrets: Secrets) -> str:
    return f"redis://:{secrets.redis_password}@{HOST}:{ports.redis}/{db}"


def grpc_target(service: str, ports: Ports, replicas: int = 1) -> str:
    """How a caller addresses a service: host:port, or ``ipv4:`` and every replica's host:port.

    gRPC's ipv4 resolver takes a comma-separated address list (grpc
    doc/naming.md); with the round_robin policy the channel keeps a
    connection to each replica and spreads calls over them.
    """
    addresses = [f"{HOST}:{ports.grpc(service, k)}" for k in range(1, replicas + 1)]
    return addresses[0] if replicas == 1 else "ipv4:" + ",".join(addresses)


def service_env(
    name: str,
    ports: Ports,
    secrets: Secrets,
    run_dir: Path,
    profile: str = "local",
    *,
    replica: int = 1,
    replicas: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """The variables one service reads (prefix ``AUTH_``, ``WALLET_``...).

    Only these variables: callers merge them over os.environ. `run_dir` is
    part of the contract although no variable depends on it yet. `profile`
    picks the JWT issuer the profile's Envoy expects and, for auth, how long
    a new signing key is published before it signs (longer than that Envoy's
    JWKS cache). `replica` picks the replica's ports; `replicas` (per
    service, default 1) makes the peer addresses list every replica.
    """
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; expected one of {SERVICES}")
    del run_dir
    counts = replicas or {}
    prefix = f"{name.upper()}_"
    values = {
        "GRPC_HOST": HOST,
        "GRPC_PORT": str(ports.grpc(name, replica)),
        "METRICS_PORT": str(ports.metrics(name, replica)),
        "DATABASE_URL": database_url(name, ports, secrets),
        "REDIS_URL": redis_url(REDIS_DB[name], ports, secrets),
        "KAFKA_BOOTSTRAP_SERVERS": f"{HOST}:{ports.kafka}",
        "SERVICE_TOKEN_SECRET": secrets.service_token_secret,
        # Signs page tokens (paymesh_runtime.pagination); auth_svc lists nothing and ignores it.
        "PAGE_TOKEN_KEY": secrets.page_token_key,
        # Every service gets both peer addresses; unused ones are harmless.
        "WALLET_ADDR": grpc_target("wallet", ports, counts.get("wallet", 1)),
        "AUTH_ADDR": grpc_target("auth", ports),
        "PROCESSOR_URL": f"http://{HOST}:{ports.processor}",
        "JWT_ISSUER": jwt_issuer(profile),
        "JWT_AUDIENCE": JWT_AUDIENCE,
        "LOG_FORMAT": "json",
    }
    if name == "auth":
        values["KEY_ENCRYPTION_KEY"] = secrets.key_encryption_key
        values["KEY_PUBLISH_LEAD_SECONDS"] = str(key_publish_lead_seconds(profile))
    if name == "notify":
        values["SECRET_ENCRYPTION_KEY"] = secrets.notify_secret_encryption_key
        # Local and test receivers listen on 127.0.0.1; production keeps this false.
        values["WEBHOOK_ALLOW_PRIVATE_HOSTS"] = "true"
        values["SMTP_HOST"] = HOST
        values["SMTP_PORT"] = str(ports.smtp)
        # SMS through Twilio's library and Web Push, both to the stack's fake providers (devstack.providers).
        account_sid, auth_token = twilio_credentials(secrets)
        values["SMS_PROVIDER"] = "twilio"
        values["TWILIO_API_BASE_URL"] = f"http://{HOST}:{ports.providers}"
        values["TWILIO_ACCOUNT_SID"] = account_sid
        values["TWILIO_AUTH_TOKEN"] = auth_token
        values["SMS_SENDER"] = SMS_SENDER
        values["PUSH_PROVIDER"] = "webpush"
        values["PUSH_VAPID_PRIVATE_KEY"] = vapid_private_key(secrets)
    if name == "payment":
        values["PROCESSOR_WEBHOOK_SECRET"] = secrets.processor_webhook_secret
    return {prefix + key: value for key, value in values.items()}


def grpc_serving(address: str, timeout: float = 2.0) -> bool:
    """True if grpc.health.v1.Health/Check(service="") answers SERVING."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


class Service(Component):
    """One replica of auth, wallet, payment or notify (replica 1 unless scaled)."""

    start_timeout = 90.0
    stop_timeout = 20.0  # services drain in-flight calls for up to 10 s

    def __init__(self, ctx: Context, service: str, replica: int = 1) -> None:
        self.service = service
        self.replica = replica
        self.name = instance_name(service, replica)
        self.module = f"{service}_svc"
        super().__init__(ctx)

    def address(self) -> str:
        return f"{HOST}:{self.ctx.ports.grpc(self.service, self.replica)}"

    def ports(self) -> list[int]:
        return [self.ctx.ports.grpc(self.service, self.replica), self.ctx.ports.metrics(self.service, self.replica)]

    def own_env(self) -> dict[str, str]:
        """The service's variables for this replica in this stack (service_env), the replica's name, and the
        standard OTEL_* variables."""
        ctx = self.ctx
        env = service_env(
            self.service,
            ctx.ports,
            ctx.secrets,
            ctx.run_dir,
            ctx.profile,
            replica=self.replica,
            replicas=ctx.topology.replicas,
        )
        # payment_svc names a replica after its host by default (payment_svc.replica), and one live process per
        # name: replicas on one host need names of their own. Not in service_env, whose callers (tests running
        # their own payment_svc processes) choose their own names.
        env[f"{self.service.upper()}_REPLICA_ID"] = self.name
        # Where its spans go and how it samples: the stack's Jaeger, Envoy's decision (devstack.tracing).
        env |= service_otel_env(self.module, self.name, ctx.profile, ctx.ports)
        return env

    def process_env(self) -> dict[str, str]:
        return {**os.environ, **self.own_env()}

    def config_fingerprint(self) -> str:
        # A replica added to or removed from wallet_svc changes WALLET_ADDR: its callers restart with the new list.
        return fingerprint(json.dumps(self.own_env(), sort_keys=True))

    def command(self) -> list[str]:
        command = [sys.executable, "-m", self.module]
        if self.service in BACKGROUND_SERVICES and self.ctx.profile == "local":
            return background(command)
        return command

    def prepare(self) -> None:
        if self.replica > 1:
            return  # the first replica migrated the shared database; the stack starts it a stage earlier
        # Migrations are idempotent (upgrade to head), so they run on every start.
        try:
            run_command(
                [*self.command(), "migrate"],
                log_path=self.log_path,
                what=f"{self.name}: {self.module} migrate",
                timeout=180,
                env=self.process_env(),
                cwd=self.ctx.repo,
            )
        except StackError as exc:
            raise StackError(f"{exc}\n(full output in {self.log_path})") from exc

    def is_healthy(self) -> bool:
        return grpc_serving(self.address())
