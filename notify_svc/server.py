"""notify_svc bootstrap: builds the dependencies once and wires the server.

Background loops: the event consumer (Kafka → notifications) and the
delivery worker (email, SMS, push and webhooks). Kafka is not a readiness
dependency: while it is down the API still answers and the loops wait for it.
Operator commands (`python -m notify_svc redrive-dlq ...`) are in
notify_svc.commands.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from notify_svc import egress
from notify_svc.channels import Channel, EmailChannel, PushChannel, SmsChannel
from notify_svc.commands import COMMANDS
from notify_svc.consumer import EventConsumer, kafka_consumer_factory
from notify_svc.dead_letters import DeadLetterProducer
from notify_svc.delivery import DeliveryWorker, RetryPolicy
from notify_svc.endpoint_api import EndpointApi
from notify_svc.endpoint_store import EndpointStore
from notify_svc.ingest import EventRecorder
from notify_svc.mailer import SmtpMailer
from notify_svc.preference_api import PreferenceApi
from notify_svc.preference_store import PreferenceStore
from notify_svc.push import LoggingPushProvider, PushProvider, WebPushProvider
from notify_svc.retry import Schedule
from notify_svc.service import NotifyService
from notify_svc.settings import NotifySettings
from notify_svc.sms import LoggingSmsProvider, SmsProvider, TwilioSmsProvider
from notify_svc.store import EMAIL, PUSH, SMS, NotifyStore
from notify_svc.templates import Templates
from notify_svc.webhook_sender import WebhookSender
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
        personal=Schedule(
            settings.delivery_max_attempts,
            settings.delivery_backoff_base_seconds,
            settings.delivery_backoff_max_seconds,
        ),
        webhook=Schedule(
            settings.webhook_max_attempts,
            settings.webhook_backoff_base_seconds,
            settings.webhook_backoff_max_seconds,
            settings.webhook_retry_window_seconds,
        ),
        disable_after_seconds=settings.webhook_disable_after_seconds,
        lease_seconds=settings.delivery_lease_seconds,
        batch_size=settings.delivery_batch_size,
        poll_seconds=settings.delivery_poll_seconds,
    )


def sms_provider(settings: NotifySettings, http: httpx.AsyncClient) -> SmsProvider:
    if settings.sms_provider == "twilio":
        return TwilioSmsProvider(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            settings.sms_sender,
            http,
            settings.twilio_api_base_url,
        )
    return LoggingSmsProvider()


def push_provider(settings: NotifySettings, outbound: httpx.AsyncClient) -> PushProvider:
    if settings.push_provider == "webpush":
        return WebPushProvider(
            outbound, settings.push_vapid_private_key.get_secret_value(), settings.push_vapid_subject
        )
    return LoggingPushProvider()


async def build(settings: NotifySettings) -> app.ServiceApp:
    sealer = SecretSealer(
        parse_aes256_key(settings.secret_encryption_key.get_secret_value(), "NOTIFY_SECRET_ENCRYPTION_KEY")
    )
    templates = Templates.load()
    engine = create_engine(settings)
    store = NotifyStore(engine)
    pages = PageTokens.from_settings(settings)
    dead_letters = DeadLetterProducer(kafka_producer_factory(settings.kafka_bootstrap_servers), settings.dlq_topic)
    consumer = EventConsumer(
        EventRecorder(engine, templates),
        dead_letters,
        kafka_consumer_factory(settings.kafka_bootstrap_servers, settings.consumer_group, settings.consumer_topics),
        consumer_group=settings.consumer_group,
        max_records=settings.consumer_batch_size,
        retry_max_seconds=settings.consumer_retry_max_seconds,
    )
    # URLs users chose (webhook endpoints, push subscriptions): no redirects, no private destinations.
    outbound = egress.outbound_client(settings.webhook_timeout_seconds, settings.webhook_allow_private_hosts)
    # The SMS provider's API, a fixed host of the operator's choosing.
    providers = httpx.AsyncClient(timeout=settings.sms_timeout_seconds, follow_redirects=False, trust_env=False)
    mailer = SmtpMailer(settings.smtp_host, settings.smtp_port, settings.email_sender, settings.smtp_timeout_seconds)
    channels: dict[str, Channel] = {
        EMAIL: EmailChannel(mailer),
        SMS: SmsChannel(sms_provider(settings, providers)),
        PUSH: PushChannel(push_provider(settings, outbound), sealer),
    }
    worker = DeliveryWorker(
        store,
        channels,
        WebhookSender(outbound, sealer, timeout_seconds=settings.webhook_timeout_seconds),
        dead_letters,
        retry_policy(settings),
        templates,
    )
    endpoints = EndpointApi(
        EndpointStore(engine),
        sealer,
        pages,
        allow_private_hosts=settings.webhook_allow_private_hosts,
        default_overlap_seconds=settings.webhook_secret_overlap_seconds,
    )
    preferences = PreferenceApi(
        PreferenceStore(engine), sealer, templates.locales, allow_private_hosts=settings.webhook_allow_private_hosts
    )
    service = NotifyService(store, endpoints, preferences, pages)
    return app.ServiceApp(
        servicers=[
            Servicer("paymesh.notify.v1.NotifyService", service, notify_pb2_grpc.add_NotifyServiceServicer_to_server)
        ],
        probes={"postgres": database_probe(engine)},
        callers=end_users(settings, NAME),
        background=[consumer.run, worker.run],
        cleanup=[outbound.aclose, providers.aclose, mailer.aclose, dead_letters.close, engine.dispose],
    )


def main() -> None:
    app.main(NAME, NotifySettings, build, Path(__file__).parent / "migrations", commands=COMMANDS)
