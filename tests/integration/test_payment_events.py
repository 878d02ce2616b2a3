"""Payment events leave through the outbox: Kafka down during 200 payments loses, duplicates and reorders nothing.

Run sparingly (it stops and restarts the test stack's Kafka).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer
from google.protobuf.message import DecodeError

from devstack.stack import Stack
from paymesh.events.v1 import events_pb2
from paymesh.payment.v1 import payment_pb2
from paymesh_runtime.kafka import TOPIC_PAYMENTS
from paymesh_runtime.outbox import CONTENT_TYPE
from tests.integration.payment_support import Mesh, PaymentProcess, start_dependencies

pytestmark = pytest.mark.integration
PAYMENTS = 200


@pytest.fixture(scope="module")
async def mesh(infra: Stack) -> AsyncIterator[Mesh]:
    start_dependencies(infra)
    process = PaymentProcess(infra)
    process.migrate()
    process.start()
    clients = Mesh(infra)
    yield clients
    await clients.close()
    process.stop()


async def consume(bootstrap: str, wanted: set[str], expected: int) -> list[tuple[events_pb2.Event, dict[str, bytes]]]:
    consumer = AIOKafkaConsumer(
        TOPIC_PAYMENTS, bootstrap_servers=bootstrap, group_id=f"test-{uuid.uuid4()}", auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[tuple[events_pb2.Event, dict[str, bytes]]] = []
    try:
        async with asyncio.timeout(120):
            while len({e.id for e, _ in found}) < expected:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        # The topic is shared with other tests (some write poison
                        # records on purpose): decode only this test's payments.
                        if record.key is None or record.key.decode(errors="replace") not in wanted:
                            continue
                        event = events_pb2.Event.FromString(record.value)
                        assert record.key == event.aggregate_id.encode()
                        found.append((event, dict(record.headers)))
    finally:
        await consumer.stop()
    return found


async def test_events_written_while_kafka_is_down_all_arrive_in_order_once_it_is_back(mesh: Mesh, infra: Stack) -> None:
    alice, bob = f"alice-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"
    a, b = await mesh.wallet(alice, 100 * PAYMENTS), await mesh.wallet(bob)
    infra.stop_component("kafka")
    try:
        slots = asyncio.Semaphore(16)

        async def pay(i: int) -> str:
            async with slots:
                payment = await mesh.pay(
                    alice, f"ev-{i}-{uuid.uuid4().hex[:6]}", source_wallet=a, destination=b, amount=1
                )
                return payment.payment_id

        payment_ids = await asyncio.gather(*(pay(i) for i in range(PAYMENTS)))
    finally:
        infra.start_component("kafka")
    assert await mesh.balance(b, bob) == (PAYMENTS, 0)

    found = await consume(infra.kafka_bootstrap, set(payment_ids), expected=3 * PAYMENTS)
    unique: dict[str, events_pb2.Event] = {}
    by_payment: dict[str, list[events_pb2.Event]] = defaultdict(list)
    for event, headers in found:
        assert headers["content-type"] == CONTENT_TYPE.encode()
        assert headers["event-id"] == event.id.encode()
        if event.id in unique:  # at least once: consumers deduplicate on the event id
            continue
        unique[event.id] = event
        by_payment[event.aggregate_id].append(event)
    assert set(by_payment) == set(payment_ids)
    for events in by_payment.values():
        assert [e.type for e in events] == ["payment.created", "payment.processing", "payment.succeeded"]
        assert [e.sequence for e in events] == [1, 2, 3]
        assert events[-1].payment_changed.payment.state == events[-1].payment_changed.payment.SUCCEEDED
        assert events[-1].payment_changed.previous_state == events[-1].payment_changed.payment.PROCESSING


async def _published_card_deposit(mesh: Mesh, infra: Stack, amount: int) -> payment_pb2.Payment:
    """A card deposit whose three events are on Kafka already."""
    alice = f"alice-{uuid.uuid4().hex[:8]}"
    a = await mesh.wallet(alice)
    payment = await mesh.pay(alice, f"kcat-{uuid.uuid4().hex[:6]}", card="tok_visa", destination=a, amount=amount)
    await consume(infra.kafka_bootstrap, {payment.payment_id}, expected=3)
    return payment


async def _kcat(infra: Stack, record_format: str) -> bytes:
    """The payment topic from the beginning, each record printed by the real kcat in `record_format`."""
    kcat = await asyncio.create_subprocess_exec(
        *["kcat", "-C", "-b", infra.kafka_bootstrap, "-t", TOPIC_PAYMENTS, "-o", "beginning", "-e", "-q"],
        *["-f", record_format],
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(kcat.communicate(), timeout=60)
    assert kcat.returncode == 0
    return out


async def test_kcat_reads_a_payment_event_as_the_documented_protobuf_envelope(mesh: Mesh, infra: Stack) -> None:
    payment = await _published_card_deposit(mesh, infra, 250)
    raw = await _kcat(infra, "%R%s")  # 4-byte big-endian length, then the raw value: binary-safe framing
    events = []
    while raw:
        (length,) = struct.unpack(">i", raw[:4])
        value, raw = raw[4 : 4 + length], raw[4 + length :]
        with contextlib.suppress(DecodeError):  # other tests' deliberate poison records share the topic
            events.append(events_pb2.Event.FromString(value))
    mine = [e for e in events if e.aggregate_id == payment.payment_id]
    assert [e.type for e in mine][:3] == ["payment.created", "payment.processing", "payment.succeeded"]
    last = mine[2]
    assert last.producer == "payment_svc"
    assert last.aggregate_type == "payment"
    assert last.payment_changed.payment.amount_captured.amount == 250
    assert last.HasField("occurred_at")
    uuid.UUID(last.id)


async def test_kcat_sees_the_payment_id_as_key_and_trace_and_content_type_headers(mesh: Mesh, infra: Stack) -> None:
    payment = await _published_card_deposit(mesh, infra, 120)
    out = await _kcat(infra, "%k\t%h\n")  # the key, then the headers as name=value,name=value
    lines = out.decode(errors="replace").splitlines()
    mine = [line.split("\t", 1)[1] for line in lines if line.startswith(payment.payment_id + "\t")]
    assert len(mine) >= 3  # created, processing, succeeded: keyed by the payment id
    for headers in mine:
        assert "content-type=application/x-protobuf; proto=paymesh.events.v1.Event" in headers
        assert re.search(r"traceparent=00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", headers), headers
        assert re.search(r"event-id=[0-9a-f-]{36}", headers), headers
