"""notify_svc bootstrap: builds the dependencies once and wires the server."""

from __future__ import annotations

from pathlib import Path

from notify_svc.service import NotifyService
from notify_svc.settings import NotifySettings
from paymesh.notify.v1 import notify_pb2_grpc
from paymesh_runtime import app
from paymesh_runtime.db import create_engine, database_probe
from paymesh_runtime.server import Servicer

NAME = "notify_svc"


async def build(settings: NotifySettings) -> app.ServiceApp:
    engine = create_engine(settings)
    return app.ServiceApp(
        servicers=[
            Servicer(
                "paymesh.notify.v1.NotifyService",
                NotifyService(),
                notify_pb2_grpc.add_NotifyServiceServicer_to_server,
            )
        ],
        probes={"postgres": database_probe(engine)},
        cleanup=[engine.dispose],
    )


def main() -> None:
    app.main(NAME, NotifySettings, build, Path(__file__).parent / "migrations")
