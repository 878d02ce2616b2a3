"""CPU per event of the outbox relay and of notify_svc, against the test stack's real PostgreSQL and Kafka.

    PAYMESH_TEST_PORT_BASE=38000 python -m devstack up --profile test --only infra
    PAYMESH_TEST_PORT_BASE=38000 python -m tests.bench.event_pipeline relay|idle|notify [--events N]

- relay: N events are written through `Outbox.enqueue` (50 per transaction,
  500 aggregates, each with an unsampled traceparent as production writes
  them) into a database and a Kafka topic of the bench's own; then one
  `OutboxRelay` publishes them. Reported: this process's CPU (the relay and
  its Kafka producer), the bench database's PostgreSQL backends' and the Kafka
  broker's, each per event.
- idle: the same relay with nothing to publish for 10 s: CPU per second.
- notify: N payment.succeeded events (2 emails each) and the user.registered
  events of their 200 users (a welcome email each) on topics of the bench's
  own; then notify_svc's event consumer (as `notify_svc.server.build` wires
  it) stores them, and then its delivery worker sends the emails to an SMTP
  sink in another process. Reported: CPU per event of each, and PostgreSQL's.

Every wait is bounded; the bench stops by itself and drops nothing but its own databases and topics.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from devstack import cpu
from devstack.stack import Stack
from notify_svc.server import build
from notify_svc.settings import NotifySettings
from paymesh.auth.v1 import auth_pb2
from paymesh.common.v1 import money_pb2
from paymesh.events.v1 import events_pb2
from paymesh.payment.v1 import payment_pb2
from paymesh_runtime import migrations
from paymesh_runtime.outbox import (
    Outbox,
    OutboxRelay,
    create_outbox,
    kafka_producer_factory,
    outbox_tables,
)
from tests.helpers import fresh_database

OUTBOX_DATABASE = "paymesh_bench_outbox"
NOTIFY_DATABASE = "paymesh_bench_notify"
NOTIFY_MIGRATIONS = Path(__file__).resolve().parents[2] / "notify_svc" / "migrations"
AGGREGATES = 500
USERS = 200
DEADLINE_SECONDS = 300.0


class Meter:
    """CPU seconds of this process, of one database's PostgreSQL backends and of the Kafka broker, over a window."""

    def __init__(self, stack: Stack, database: str) -> None:
        self._roots = {name: pid for name, pid in stack.pids().items() if name in ("postgres", "kafka")}
        self._database = database
        self._process = time.process_time()
        self._components = cpu.snapshot(self._roots, {"postgres": cpu.postgres_database})

    def spent(self) -> dict[str, float]:
        components = cpu.spent(self._components, cpu.snapshot(self._roots, {"postgres": cpu.postgres_database}))
        return {
            "process": time.process_time() - self._process,
            "postgres": components.get(f"postgres:{self._database}", 0.0),
            "kafka": components.get("kafka", 0.0),
        }


def _report(label: str, spent: dict[str, float], count: int, unit: str) -> None:
    parts = ", ".join(f"{name} {seconds / count * 1e6:6.0f} µs" for name, seconds in spent.items())
    print(f"{label}: {count} {unit}; CPU per {unit.rstrip('s')}: {parts}", flush=True)


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not done within {DEADLINE_SECONDS:.0f}s")
        await asyncio.sleep(0.05)


async def _new_topics(stack: Stack, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=6, replication_factor=1) for name in names])
    finally:
        await admin.close()


@contextlib.contextmanager
def _unsampled_trace() -> Iterator[None]:
    ids = random.SystemRandom()
    context = SpanContext(ids.getrandbits(128), ids.getrandbits(64), is_remote=False, trace_flags=TraceFlags(0))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(context)))
    try:
        yield
    finally:
        otel_context.detach(token)


def _payment(payer: str, payee: str) -> events_pb2.Event:
    payment = payment_pb2.Payment(
        payment_id=str(uuid.uuid4()),
        payer_id=payer,
        payee_id=payee,
        amount=money_pb2.Money(currency="USD", amount=random.randint(100, 100_000)),
        state=payment_pb2.Payment.SUCCEEDED,
    )
    return events_pb2.Event(
        type="payment.succeeded",
        aggregate_type="payment",
        aggregate_id=payment.payment_id,
        payment_changed=events_pb2.PaymentChanged(payment=payment),
    )


async def bench_relay(stack: Stack, events: int, idle_seconds: float) -> None:
    url = await fresh_database(stack, OUTBOX_DATABASE)
    engine: AsyncEngine = create_async_engine(url)
    outbox, sequences = outbox_tables(MetaData())
    async with engine.begin() as conn:
        await conn.run_sync(create_outbox)
    topic = f"paymesh.bench.relay.{uuid.uuid4().hex[:8]}"
    await _new_topics(stack, topic)
    writer = Outbox(outbox, sequences, "bench")
    aggregates = [str(uuid.uuid4()) for _ in range(AGGREGATES)]
    for start in range(0, events, 50):
        with _unsampled_trace():
            async with engine.begin() as conn:
                for n in range(start, min(start + 50, events)):
                    event = _payment(aggregates[n % AGGREGATES], aggregates[(n + 1) % AGGREGATES])
                    event.aggregate_id = aggregates[n % AGGREGATES]
                    await writer.enqueue(conn, topic=topic, event=event)
    relay = OutboxRelay(engine, kafka_producer_factory(stack.kafka_bootstrap))
    meter = Meter(stack, OUTBOX_DATABASE)
    task = asyncio.create_task(relay.run())
    try:

        async def all_published() -> bool:
            return relay.published >= events

        await _until(all_published, "publishing")
        _report("relay", meter.spent(), events, "events")
        if idle_seconds:
            meter = Meter(stack, OUTBOX_DATABASE)
            await asyncio.sleep(idle_seconds)
            _report("idle relay", meter.spent(), round(idle_seconds), "seconds")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await engine.dispose()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _produce(stack: Stack, records: list[tuple[str, events_pb2.Event]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        sent = []
        for topic, event in records:
            event.id = str(uuid.uuid4())
            event.sequence = 1
            event.producer = "bench"
            event.occurred_at.GetCurrentTime()
            headers = [("content-type", b"application/x-protobuf"), ("event-id", event.id.encode())]
            value = event.SerializeToString()
            sent.append(await producer.send(topic, value=value, key=event.aggregate_id.encode(), headers=headers))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def bench_notify(stack: Stack, events: int, profile: str) -> None:
    """`profile`: write cProfile stats of each phase (this process only) to PATH.consumer and PATH.delivery."""
    profiler = cProfile.Profile()
    url = await fresh_database(stack, NOTIFY_DATABASE)
    await asyncio.to_thread(migrations.upgrade, NOTIFY_MIGRATIONS, url)
    payments, users_topic = (f"paymesh.bench.{kind}.{uuid.uuid4().hex[:8]}" for kind in ("payments", "users"))
    await _new_topics(stack, payments, users_topic)
    users = [str(uuid.uuid4()) for _ in range(USERS)]
    registered = [
        (
            users_topic,
            events_pb2.Event(
                type="user.registered",
                aggregate_type="user",
                aggregate_id=user,
                user_registered=events_pb2.UserRegistered(
                    user=auth_pb2.User(user_id=user, email=f"u{n}@example.com", display_name=f"User {n}")
                ),
            ),
        )
        for n, user in enumerate(users)
    ]
    paid = [(payments, _payment(users[n % USERS], users[(n * 7 + 1) % USERS])) for n in range(events)]
    await _produce(stack, registered + paid)
    port = _free_port()
    sink = subprocess.Popen(  # noqa: ASYNC220 (started once, stopped below)
        [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    settings = NotifySettings(
        grpc_port=0,
        database_url=url,  # type: ignore[arg-type]
        kafka_bootstrap_servers=stack.kafka_bootstrap,
        consumer_group=f"bench_{uuid.uuid4().hex[:8]}",
        consumer_topics=(payments, users_topic),
        secret_encryption_key=base64.b64encode(os.urandom(32)).decode(),  # type: ignore[arg-type]
        service_token_secret=base64.b64encode(os.urandom(32)).decode(),  # type: ignore[arg-type]
        smtp_port=port,
    )
    app = await build(settings)
    consumer_run, worker_run = app.background
    watcher = await asyncpg.connect(url.replace("+asyncpg", ""))
    tasks: list[asyncio.Task[None]] = []
    try:
        await asyncio.sleep(1.0)  # the sink is up
        meter = Meter(stack, NOTIFY_DATABASE)
        if profile:
            profiler.enable()
        tasks.append(asyncio.create_task(consumer_run()))

        async def all_stored() -> bool:
            return int(await watcher.fetchval("SELECT count(*) FROM processed_event")) >= events + USERS

        await _until(all_stored, "consuming")
        _report("notify consumer", meter.spent(), events + USERS, "events")
        if profile:
            profiler.disable()
            profiler.dump_stats(f"{profile}.consumer")
        emails = 2 * events + USERS
        meter = Meter(stack, NOTIFY_DATABASE)
        if profile:
            profiler.enable()
        tasks.append(asyncio.create_task(worker_run()))

        async def all_sent() -> bool:
            done = "SELECT count(*) FROM notification WHERE state = 'DELIVERED'"
            return int(await watcher.fetchval(done)) >= emails

        await _until(all_sent, "delivering")
        _report("notify delivery", meter.spent(), emails, "emails")
        if profile:
            profiler.disable()
            profiler.dump_stats(f"{profile}.delivery")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for step in app.cleanup:
            await step()
        await watcher.close()
        sink.terminate()
        sink.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["relay", "idle", "notify"])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--profile", default="", help="notify: write cProfile stats of each phase to PATH.<phase>")
    args = parser.parse_args()
    if not 0 < args.events <= 50_000:
        parser.error("events must be 1..50000")
    # PAYMESH_BENCH_RUN_DIR: the stack of another checkout (to compare two versions against one stack).
    run_dir = os.environ.get("PAYMESH_BENCH_RUN_DIR")
    stack = Stack.for_profile("test", Path(run_dir) if run_dir else None)
    if not {"postgres", "kafka"} <= set(stack.pids()):
        sys.exit("the test stack's infra is not running: python -m devstack up --profile test --only infra")
    if args.what == "notify":
        asyncio.run(bench_notify(stack, args.events, args.profile))
    else:
        idle = 10.0 if args.what == "idle" else 0.0
        asyncio.run(bench_relay(stack, args.events if args.what == "relay" else 1, idle))


if __name__ == "__main__":
    main()
