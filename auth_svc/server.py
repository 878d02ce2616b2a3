"""auth_svc bootstrap: builds the dependencies once and wires the server."""

from __future__ import annotations

from pathlib import Path

from auth_svc import store
from auth_svc.service import AuthService
from auth_svc.settings import AuthSettings
from paymesh.auth.v1 import auth_pb2_grpc
from paymesh_runtime import app
from paymesh_runtime.db import create_engine, database_probe
from paymesh_runtime.outbox import OutboxRelay, kafka_producer_factory
from paymesh_runtime.redis import create_redis, redis_probe
from paymesh_runtime.server import Servicer

NAME = "auth_svc"


async def build(settings: AuthSettings) -> app.ServiceApp:
    engine = create_engine(settings)
    redis = create_redis(settings.redis_url)
    relay = OutboxRelay(engine, store.outbox, kafka_producer_factory(settings.kafka_bootstrap_servers))
    return app.ServiceApp(
        servicers=[
            Servicer(
                "paymesh.auth.v1.AuthService",
                AuthService(),
                auth_pb2_grpc.add_AuthServiceServicer_to_server,
            )
        ],
        probes={"postgres": database_probe(engine), "redis": redis_probe(redis)},
        background=[relay.run],
        cleanup=[engine.dispose, redis.aclose],
    )


def main() -> None:
    app.main(NAME, AuthSettings, build, Path(__file__).parent / "migrations")
