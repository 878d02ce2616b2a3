"""payment_svc bootstrap: builds the dependencies once and wires the server."""

from __future__ import annotations

from pathlib import Path

from payment_svc import store
from payment_svc.service import PaymentService
from payment_svc.settings import PaymentSettings
from paymesh.payment.v1 import payment_pb2_grpc
from paymesh_runtime import app
from paymesh_runtime.db import create_engine, database_probe
from paymesh_runtime.outbox import OutboxRelay, kafka_producer_factory
from paymesh_runtime.server import Servicer

NAME = "payment_svc"


async def build(settings: PaymentSettings) -> app.ServiceApp:
    engine = create_engine(settings)
    relay = OutboxRelay(engine, store.outbox, kafka_producer_factory(settings.kafka_bootstrap_servers))
    return app.ServiceApp(
        servicers=[
            Servicer(
                "paymesh.payment.v1.PaymentService",
                PaymentService(),
                payment_pb2_grpc.add_PaymentServiceServicer_to_server,
            )
        ],
        probes={"postgres": database_probe(engine)},
        background=[relay.run],
        cleanup=[engine.dispose],
    )


def main() -> None:
    app.main(NAME, PaymentSettings, build, Path(__file__).parent / "migrations")
