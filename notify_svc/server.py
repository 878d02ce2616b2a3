"""notify_svc bootstrap: builds the dependencies once and wires the server.

Background loops: the event consumer (Kafka → notifications) and the
delivery worker (email and webhooks). Kafka is not a readiness dependency:
while it is down the API still answers and the loops wait for it.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from notify_svc.consumer import EventConsumer, kafka_consumer_factory
from notify_svc.dead_letters import DeadLetterProducer
from notify_svc.delivery import DeliveryWorker, RetryPolicy, WebhookSender
from notify_svc.ingest import EventRecorder
from notify_svc.mailer import SmtpMailer
from notify_svc.service import NotifyService
from notify_svc.settings import NotifySettings
from notify_svc.store import NotifyStore
from paymesh.notify.v1 import notify_pb2_grpc
from paymesh_runtime import app
from paymesh_runtime.callers import end_users
from paymesh_runtime.db import create_engine, database_probe
from paymesh_runtime.outbox import kafka_producer_factory
from paymesh_runtime.pagination import PageTokens
from paymesh_runtime.sealing import SecretSealer, parse_aes256_key
from paymesh_runtime.server import Servicer

NAME = "notify_svc"


def retry_policy(settings: NotifySettings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.delivery_max_attempts,
        backoff_base_seconds=settings.delivery_backoff_base_seconds,
        backoff_max_seconds=settings.delivery_backoff_max_seconds,
        lease_seconds=settings.delivery_lease_seconds,
        batch_size=settings.delivery_batch_size,
        poll_seconds=settings.delivery_poll_seconds,
    )


async def build(settings: NotifySettings) -> app.ServiceApp:
    sealer = SecretSealer(
        parse_aes256_key(settings.secret_encryption_key.get_secret_value(), "NOTIFY_SECRET_ENCRYPTION_KEY")
    )
    engine = create_engine(settings)
    store = NotifyStore(engine)
    dead_letters = DeadLetterProducer(kafka_producer_factory(settings.kafka_bootstrap_servers), settings.dlq_topic)
    consumer = EventConsumer(
        EventRecorder(engine),
        dead_letters,
        kafka_consumer_factory(settings.kafka_bootstrap_servers, settings.consumer_group, settings.consumer_topics),
        consumer_group=settings.consumer_group,
        max_records=settings.consumer_batch_size,
        retry_max_seconds=settings.consumer_retry_max_seconds,
    )
    # No redirects (a 3xx is a failed attempt) and no proxies from the environment.
    http = httpx.AsyncClient(timeout=settings.webhook_timeout_seconds, follow_redirects=False, trust_env=False)
    mailer = SmtpMailer(settings.smtp_host, settings.smtp_port, settings.email_sender, settings.smtp_timeout_seconds)
    worker = DeliveryWorker(
        store,
        mailer,
        WebhookSender(
            http,
            sealer,
            timeout_seconds=settings.webhook_timeout_seconds,
            allow_private_hosts=settings.webhook_allow_private_hosts,
        ),
        dead_letters,
        retry_policy(settings),
    )
    service = NotifyService(
        store, sealer, PageTokens.from_settings(settings), allow_private_hosts=settings.webhook_allow_private_hosts
    )
    return app.ServiceApp(
        servicers=[
            Servicer("paymesh.notify.v1.NotifyService", service, notify_pb2_grpc.add_NotifyServiceServicer_to_server)
        ],
        probes={"postgres": database_probe(engine)},
        callers=end_users(settings, NAME),
        background=[consumer.run, worker.run],
        cleanup=[http.aclose, mailer.aclose, dead_letters.close, engine.dispose],
    )


def main() -> None:
    app.main(NAME, NotifySettings, build, Path(__file__).parent / "migrations")
