"""notify_svc served in-process against the test stack's real PostgreSQL and Kafka.

`running_notify(stack, ...)` migrates the notify database and runs what
`python -m notify_svc` runs — the gRPC server with the production
interceptors, the Kafka event consumer and the delivery worker, all built by
notify_svc.server.build — on port 0. Around it: a real HTTP receiver process
for webhooks (tests.webhook_receiver), a real SMTP sink (aiosmtpd), an
aiokafka producer for test events and the real kcat to read the dead-letter
topic.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import grpc
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiosmtpd.controller import Controller
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from devstack.stack import Stack
from notify_svc.server import build
from notify_svc.settings import NotifySettings
from paymesh.auth.v1 import auth_pb2
from paymesh.common.v1 import money_pb2
from paymesh.events.v1 import events_pb2
from paymesh.notify.v1 import notify_pb2, notify_pb2_grpc
from paymesh.payment.v1 import payment_pb2
from paymesh_runtime import migrations
from paymesh_runtime.kafka import TOPIC_NOTIFICATIONS_DLQ, TOPIC_PAYMENTS
from paymesh_runtime.server import create_server
from tests import identity

MIGRATIONS = Path(__file__).resolve().parents[2] / "notify_svc" / "migrations"
Metadata = tuple[tuple[str, str], ...]
T = TypeVar("T")


# --- the service ------------------------------------------------------------------


HARNESS_DATABASE = "paymesh_notify_harness"


def harness_database_url(stack: Stack) -> str:
    """A notify database of the harness's own.

    The stack's notify_svc (started for the end-to-end tests) runs on the same
    PostgreSQL; sharing its database would let its delivery worker claim the
    harness's deliveries and send them to other receivers and mail sinks.
    """
    return stack.database_url("notify").rsplit("/", 1)[0] + "/" + HARNESS_DATABASE


async def _ensure_harness_database(stack: Stack) -> None:
    conn = await asyncpg.connect(stack.database_url("notify", driver=""))
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", HARNESS_DATABASE):
            await conn.execute(f"CREATE DATABASE {HARNESS_DATABASE}")
    finally:
        await conn.close()


def settings_for(stack: Stack, **overrides: object) -> NotifySettings:
    """The harness's settings; callers present tokens of the stack's test key (published here), which the
    harness verifies against the stack's auth_svc."""
    identity.publish_test_key(stack)
    values: dict[str, object] = {
        "grpc_port": 0,
        **identity.service_settings(stack),
        "database_url": harness_database_url(stack),
        "kafka_bootstrap_servers": stack.kafka_bootstrap,
        # Each harness its own group: it reads the topics from the start.
        "consumer_group": f"notify_svc_test_{uuid.uuid4().hex[:8]}",
        "secret_encryption_key": base64.b64encode(os.urandom(32)).decode(),
        "webhook_allow_private_hosts": True,  # the receivers listen on 127.0.0.1
        "webhook_timeout_seconds": 2.0,
        "smtp_timeout_seconds": 2.0,
        "sms_timeout_seconds": 2.0,
        "delivery_lease_seconds": 10.0,
        "delivery_max_attempts": 3,
        "delivery_backoff_base_seconds": 0.05,
        "delivery_backoff_max_seconds": 0.2,
        "webhook_max_attempts": 3,
        "webhook_backoff_base_seconds": 0.05,
        "webhook_backoff_max_seconds": 0.2,
        "delivery_poll_seconds": 0.05,
        "consumer_retry_max_seconds": 1.0,
        **overrides,
    }
    return NotifySettings(**values)  # type: ignore[arg-type]


async def migrate(stack: Stack) -> None:
    await _ensure_harness_database(stack)
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS, harness_database_url(stack))


@dataclass
class RunningNotify:
    stub: notify_pb2_grpc.NotifyServiceStub
    settings: NotifySettings


@asynccontextmanager
async def running_notify(settings: NotifySettings) -> AsyncIterator[RunningNotify]:
    service_app = await build(settings)
    running = create_server(
        settings,
        service_app.servicers,
        service_app.probes,
        list(service_app.interceptors),
        callers=service_app.callers,
    )
    await running.server.start()
    tasks = [asyncio.create_task(job()) for job in service_app.background]
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield RunningNotify(notify_pb2_grpc.NotifyServiceStub(channel), settings)
    finally:
        await channel.close()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await running.server.stop(None)
        for step in [*service_app.cleanup, service_app.callers.close]:
            await step()


def as_user(user_id: str, role: str = "CUSTOMER") -> Metadata:
    """An end user's credentials: a bearer access token (tests.identity)."""
    return identity.bearer(user_id, role)


def new_user() -> str:
    return str(uuid.uuid4())


def error_reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    raise AssertionError("no ErrorInfo in the status")


# --- events -----------------------------------------------------------------------


def payment_event(
    payer: str, payee: str, amount: int = 1050, state: int = payment_pb2.Payment.SUCCEEDED, event_type: str = ""
) -> events_pb2.Event:
    payment_id = str(uuid.uuid4())
    name = payment_pb2.Payment.State.Name(state).lower()  # type: ignore[arg-type]
    payment = payment_pb2.Payment(
        payment_id=payment_id,
        payer_id=payer,
        payee_id=payee,
        amount=money_pb2.Money(currency="USD", amount=amount),
        state=state,  # type: ignore[arg-type]
    )
    event = events_pb2.Event(
        id=str(uuid.uuid4()),
        type=event_type or f"payment.{name}",
        aggregate_type="payment",
        aggregate_id=payment_id,
        sequence=1,
        producer="payment_svc",
        payment_changed=events_pb2.PaymentChanged(payment=payment),
    )
    event.occurred_at.GetCurrentTime()
    return event


def registered_event(user_id: str, email: str, display_name: str = "Test User") -> events_pb2.Event:
    """user.registered: how notify learns a user's email address."""
    user = auth_pb2.User(user_id=user_id, email=email, display_name=display_name)
    return events_pb2.Event(
        id=str(uuid.uuid4()),
        type="user.registered",
        aggregate_type="user",
        aggregate_id=user_id,
        sequence=1,
        user_registered=events_pb2.UserRegistered(user=user),
    )


async def create_topics(stack: Stack, *names: str) -> None:
    """Topics of a test's own (the broker creates none by itself)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1) for name in names])
    finally:
        await admin.close()


async def produce(stack: Stack, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Sends (key, value) records in order and waits for the broker's acks."""
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(
                topic, key=key, value=value, headers=[("content-type", b"application/x-protobuf")]
            )
    finally:
        await producer.stop()


async def produce_events(stack: Stack, *events: events_pb2.Event, topic: str = TOPIC_PAYMENTS) -> None:
    await produce(stack, topic, [(e.aggregate_id.encode(), e.SerializeToString()) for e in events])


async def eventually(check: Callable[[], Awaitable[T]], within: float = 30.0, interval: float = 0.1) -> T:
    """Awaits `check` until it returns something truthy; fails at the deadline."""
    deadline = time.monotonic() + within
    last: object = None
    while True:
        try:
            value = await check()
            last = value
        except Exception as exc:
            last = exc
        else:
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {within:.0f}s; last result: {last!r}")
        await asyncio.sleep(interval)


async def notifications_of(notify: RunningNotify, user_id: str, role: str = "CUSTOMER") -> list[Any]:
    reply = await notify.stub.ListNotifications(
        notify_pb2.ListNotificationsRequest(page_size=200), metadata=as_user(user_id, role)
    )
    return list(reply.notifications)


# --- the dead-letter topic, read with the real kcat ---------------------------------------


@dataclass(frozen=True)
class KcatRecord:
    key: str
    headers: dict[str, str]
    value_length: int


_FIELD, _RECORD = "\x1f", "\x1e"
_FORMAT = f"%k{_FIELD}%h{_FIELD}%S{_RECORD}"  # key, headers, value length
# kcat prints headers as "n=v,n=v": split before each "name=".
_HEADER_SPLIT = re.compile(r",(?=[a-z0-9-]+=)")


def read_dlq_with_kcat(stack: Stack, topic: str = TOPIC_NOTIFICATIONS_DLQ) -> list[KcatRecord]:
    """Every record of the topic, read from the beginning by the real kcat."""
    result = subprocess.run(
        ["kcat", "-b", stack.kafka_bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", _FORMAT],
        capture_output=True,
        timeout=30,
        check=True,
    )
    records = []
    for raw in result.stdout.decode(errors="replace").split(_RECORD):
        if not raw.strip():
            continue
        key, header_text, length = raw.split(_FIELD)
        pairs = (item.partition("=") for item in _HEADER_SPLIT.split(header_text) if item)
        records.append(KcatRecord(key.strip(), {name: value for name, _, value in pairs}, int(length)))
    return records


# --- an SMTP sink -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _SinkHandler:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.original_content or envelope.content))
        return "250 Message accepted for delivery"


@contextlib.contextmanager
def smtp_sink() -> Iterator[tuple[int, list[Message]]]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1; yields its port and the messages received."""
    handler = _SinkHandler()
    port = _free_port()  # aiosmtpd's readiness check connects to the port it was given
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, handler.messages
    finally:
        controller.stop()
