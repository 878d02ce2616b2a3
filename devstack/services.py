"""The four paymesh services: their environment and how to run them.

Each runs as ``python -m <name>_svc`` after ``python -m <name>_svc migrate``
(same environment for both) and is healthy when the standard gRPC health
service answers SERVING for the server as a whole (service "").
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.components import Component, Context
from devstack.credentials import Secrets
from devstack.envoy_config import JWT_AUDIENCE, jwt_issuer, key_publish_lead_seconds
from devstack.ports import HOST, SERVICES, Ports
from devstack.procs import StackError, run_command

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


def service_env(name: str, ports: Ports, secrets: Secrets, run_dir: Path, profile: str = "local") -> dict[str, str]:
    """The variables one service reads (prefix ``AUTH_``, ``WALLET_``...).

    Only these variables: callers merge them over os.environ. `run_dir` is
    part of the contract although no variable depends on it yet. `profile`
    picks the JWT issuer the profile's Envoy expects and, for auth, how long
    a new signing key is published before it signs (longer than that Envoy's
    JWKS cache).
    """
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; expected one of {SERVICES}")
    del run_dir
    prefix = f"{name.upper()}_"
    values = {
        "GRPC_HOST": HOST,
        "GRPC_PORT": str(ports.grpc(name)),
        "METRICS_PORT": str(ports.metrics(name)),
        "DATABASE_URL": database_url(name, ports, secrets),
        "REDIS_URL": redis_url(REDIS_DB[name], ports, secrets),
        "KAFKA_BOOTSTRAP_SERVERS": f"{HOST}:{ports.kafka}",
        "SERVICE_TOKEN_SECRET": secrets.service_token_secret,
        # Every service gets both peer addresses; unused ones are harmless.
        "WALLET_ADDR": f"{HOST}:{ports.wallet}",
        "AUTH_ADDR": f"{HOST}:{ports.auth}",
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
    """One of auth, wallet, payment, notify."""

    start_timeout = 90.0
    stop_timeout = 20.0  # services drain in-flight calls for up to 10 s

    def __init__(self, ctx: Context, service: str) -> None:
        self.name = service
        self.module = f"{service}_svc"
        super().__init__(ctx)

    def address(self) -> str:
        return f"{HOST}:{self.ctx.ports.grpc(self.name)}"

    def ports(self) -> list[int]:
        return [self.ctx.ports.grpc(self.name), self.ctx.ports.metrics(self.name)]

    def process_env(self) -> dict[str, str]:
        ctx = self.ctx
        return {**os.environ, **service_env(self.name, ctx.ports, ctx.secrets, ctx.run_dir, ctx.profile)}

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module]

    def prepare(self) -> None:
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
