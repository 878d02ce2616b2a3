"""`python -m notify_svc redrive-dlq`: failed deliveries re-armed, poison records republished, each once.

On topics of the test's own (events in, dead letters out), so only this
test's records are in play; the command runs as an operator runs it, in its
own process with NOTIFY_* variables.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devstack.stack import Stack
from paymesh.notify.v1 import notify_pb2
from tests.integration.notify_support import (
    RunningNotify,
    as_user,
    create_topics,
    eventually,
    harness_database_url,
    migrate,
    new_user,
    payment_event,
    produce,
    produce_events,
    read_dlq_with_kcat,
    running_notify,
    settings_for,
)
from tests.webhook_receiver import Receiver, receiver_process

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SUFFIX = uuid.uuid4().hex[:8]
EVENTS_TOPIC = f"paymesh.test.redrive.events.{SUFFIX}"
DLQ_TOPIC = f"paymesh.test.redrive.dlq.{SUFFIX}"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with receiver_process() as running:
        yield running


@pytest.fixture(scope="module")
async def notify(infra: Stack) -> AsyncIterator[RunningNotify]:
    await migrate(infra)
    await create_topics(infra, EVENTS_TOPIC, DLQ_TOPIC)
    settings = settings_for(infra, consumer_topics=(EVENTS_TOPIC,), dlq_topic=DLQ_TOPIC, webhook_max_attempts=2)
    async with running_notify(settings) as running:
        yield running


def _redrive(stack: Stack, group: str, *args: str) -> str:
    env = {
        **os.environ,
        "NOTIFY_DATABASE_URL": harness_database_url(stack),
        "NOTIFY_KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
        "NOTIFY_DLQ_TOPIC": DLQ_TOPIC,
        "NOTIFY_REDRIVE_GROUP": group,
    }
    done = subprocess.run(
        [sys.executable, "-m", "notify_svc", "redrive-dlq", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def test_redrive_rearms_a_failed_delivery_and_republishes_poison_once_each(
    infra: Stack, notify: RunningNotify, receiver: Receiver
) -> None:
    merchant = new_user()
    url = receiver.url("fail/2")  # the two attempts of its schedule fail; a third would succeed
    request = notify_pb2.CreateWebhookEndpointRequest(url=url, event_types=["payment.succeeded"])
    await notify.stub.CreateWebhookEndpoint(request, metadata=as_user(merchant, "MERCHANT"))
    event = payment_event(new_user(), merchant)
    await produce_events(infra, event, topic=EVENTS_TOPIC)
    poison_key = uuid.uuid4().hex.encode()
    await produce(infra, EVENTS_TOPIC, [(poison_key, b"\xff not a protobuf event")])

    async def both_dead_lettered() -> dict[str, dict[str, str]]:
        records = await asyncio.to_thread(read_dlq_with_kcat, infra, DLQ_TOPIC)
        found = {r.headers["dlq-reason"]: r.headers for r in records if r.key == poison_key.decode()}
        for r in records:
            if r.headers.get("event-id") == event.id and r.headers.get("dlq-channel") == "WEBHOOK":
                found["WEBHOOK"] = r.headers
        return found if {"WEBHOOK", "UNDECODABLE"} <= set(found) else {}

    dead = await eventually(both_dead_lettered)
    notification_id = dead["WEBHOOK"]["dlq-notification-id"]
    assert len(receiver.for_event(url, event.id)) == 2

    group = f"redrive-test-{SUFFIX}"
    planned = _redrive(infra, group, "--dry-run")
    assert f"would re-arm notification {notification_id}" in planned
    assert f"would republish to {EVENTS_TOPIC}" in planned
    assert "dry run: nothing changed" in planned
    await asyncio.sleep(0.5)
    assert len(receiver.for_event(url, event.id)) == 2  # the dry run changed nothing

    done = _redrive(infra, group)
    assert f"notification {notification_id} re-armed" in done
    assert f"republished to {EVENTS_TOPIC}" in done

    async def delivered_at_last() -> bool:
        return len(receiver.for_event(url, event.id)) == 3

    await eventually(delivered_at_last)

    async def poison_came_back() -> list[dict[str, str]]:
        records = await asyncio.to_thread(read_dlq_with_kcat, infra, DLQ_TOPIC)
        return [r.headers for r in records if r.key == poison_key.decode() and "dlq-redriven-from" in r.headers]

    (again,) = await eventually(poison_came_back)  # still poison: dead-lettered again, marked as re-driven
    assert again["dlq-reason"] == "UNDECODABLE"

    # The group's offsets remember what was re-driven: a second run sees only what came since.
    second = _redrive(infra, group, "--reason", "DELIVERY_FAILED")
    assert notification_id not in second
    assert "republished" not in second
