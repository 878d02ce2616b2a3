"""Typed settings shared by every service, read from environment variables.

Each service subclasses ServiceSettings with its own prefix (``WALLET_``,
``PAYMENT_``...), loads it once in ``main()`` and passes it down.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Settings every service has. Defaults suit the local stack (`make up`)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    grpc_host: str = Field("127.0.0.1", description="Address the gRPC server binds.")
    grpc_port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port; 0 disables.")
    database_url: SecretStr = Field(
        SecretStr("postgresql+asyncpg://paymesh@127.0.0.1:15432/paymesh"),
        description="SQLAlchemy URL of the service's own database (asyncpg driver).",
    )
    database_pool_size: int = Field(20, ge=1, description="Connections kept open per replica.")
    kafka_bootstrap_servers: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers.")
    outbox_retention_hours: float = Field(
        24.0, gt=0, description="How long published outbox rows are kept (to inspect or replay) before deletion."
    )
    otlp_endpoint: str = Field("", description="OTLP/gRPC collector endpoint; empty disables export.")
    log_level: str = Field("INFO", description="Root log level.")
    log_format: str = Field("json", pattern="^(json|text)$", description="json or text logs.")
    rpc_log_ok_per_second: int = Field(
        100,
        ge=0,
        description="Lines per second and method for RPCs that succeeded quickly; failed, slow and sampled "
        "calls are always logged (paymesh_runtime.telemetry_logs.RpcLog).",
    )
    shutdown_grace_seconds: float = Field(10.0, ge=0, description="On SIGTERM, how long in-flight calls may finish.")
    health_probe_interval_seconds: float = Field(
        2.0, gt=0, description="How often dependency probes refresh the health status."
    )
    service_token_secret: SecretStr = Field(
        SecretStr(""),
        description="HMAC key of internal service-identity tokens, shared by the mesh.",
    )
    auth_addr: str = Field(
        "127.0.0.1:50051",
        description="auth_svc gRPC target, whose GetJwks publishes the keys that verify access tokens.",
    )
    jwt_issuer: str = Field(
        "paymesh-local",
        description="The `iss` of access tokens: auth_svc issues it, Envoy and every service require it.",
    )
    jwt_audience: str = Field(
        "paymesh", description="The `aud` of access tokens: auth_svc issues it, Envoy and every service require it."
    )
    jwks_refresh_seconds: float = Field(
        60.0,
        gt=0,
        description="How old the cached JWKS may get before it is refetched (an unknown kid refetches at once, "
        "at most once a second): a revoked key stops verifying within this time.",
    )
    page_token_key: SecretStr = Field(
        SecretStr(""),
        description="HMAC key of page tokens (at least 32 characters), the same for every replica of the service;"
        " empty: derived from service_token_secret (paymesh_runtime.pagination).",
    )
