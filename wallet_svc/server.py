"""wallet_svc bootstrap: builds the dependencies once and wires the server."""

from __future__ import annotations

from pathlib import Path

from paymesh.wallet.v1 import wallet_pb2_grpc
from paymesh_runtime import app
from paymesh_runtime.db import create_engine, database_probe
from paymesh_runtime.outbox import OutboxRelay, kafka_producer_factory
from paymesh_runtime.redis import create_redis
from paymesh_runtime.server import Servicer
from wallet_svc import store
from wallet_svc.service import WalletService
from wallet_svc.settings import WalletSettings

NAME = "wallet_svc"


async def build(settings: WalletSettings) -> app.ServiceApp:
    engine = create_engine(settings)
    # Redis only caches reads; the ledger works without it, so it is no
    # health dependency.
    redis = create_redis(settings.redis_url)
    relay = OutboxRelay(engine, store.outbox, kafka_producer_factory(settings.kafka_bootstrap_servers))
    return app.ServiceApp(
        servicers=[
            Servicer(
                "paymesh.wallet.v1.WalletService",
                WalletService(),
                wallet_pb2_grpc.add_WalletServiceServicer_to_server,
            )
        ],
        probes={"postgres": database_probe(engine)},
        background=[relay.run],
        cleanup=[engine.dispose, redis.aclose],
    )


def main() -> None:
    app.main(NAME, WalletSettings, build, Path(__file__).parent / "migrations")
