"""After the workload: restore everything, then wait (bounded) until the mesh has nothing left to do.

Nothing left to do: no payment, refund or payout unfinished in payment_svc
(recovery workers, webhooks and polls), no outbox row unpublished (auth,
wallet, payment relays), notify_svc's consumer group at the end of every
topic it reads, no notification waiting for delivery, and no payout or
refund pending at the processor. Whatever is still there at the deadline is
reported, and the checks judge what it left.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from devstack.bench.checks import NOTIFY_GROUP, NOTIFY_TOPICS
from devstack.chaos.collect import Databases, topic_partitions
from devstack.chaos.faults import FaultRunner
from devstack.chaos.simulator import SimulatorClient
from devstack.stack import Stack

POLL_S = 1.0

UNFINISHED_SQL = {
    "payments": "SELECT count(*) FROM payments"
    " WHERE state IN ('PENDING', 'PROCESSING') OR requested_action IS NOT NULL",
    "refunds": "SELECT count(*) FROM refunds WHERE state = 'PENDING'",
    "payouts": "SELECT count(*) FROM payouts WHERE state IN ('PENDING', 'PROCESSING')",
}
OUTBOX_SERVICES = ("auth", "wallet", "payment")


@dataclass(frozen=True)
class Settled:
    seconds: float
    left: dict[str, int]  # what was still not done at the end (empty: everything settled)

    @property
    def complete(self) -> bool:
        return not self.left


async def backlog(db: Databases, stack: Stack, simulator: SimulatorClient) -> dict[str, int]:
    """What the mesh still has to do, by kind (zeros left out)."""
    left: dict[str, int] = {}
    for kind, sql in UNFINISHED_SQL.items():
        left[f"unfinished {kind}"] = int((await db.fetch("payment", sql))[0][0])
    for service in OUTBOX_SERVICES:
        sql = "SELECT count(*) FROM outbox_pending"
        left[f"outbox {service}"] = int((await db.fetch(service, sql))[0][0])
    left["notifications pending"] = int(
        (await db.fetch("notify", "SELECT count(*) FROM notification WHERE state = 'PENDING'"))[0][0]
    )
    left["notify consumer lag"] = await consumer_lag(stack.kafka_bootstrap)
    left["pending at the processor"] = await simulator.pending()
    return {kind: count for kind, count in left.items() if count}


async def consumer_lag(bootstrap: str) -> int:
    """Records on notify_svc's topics past its group's committed offsets."""
    partitions = await topic_partitions(bootstrap, NOTIFY_TOPICS)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(NOTIFY_GROUP, partitions=partitions)
        ends = await consumer.end_offsets(partitions)
        lag = 0
        for partition in partitions:
            offset = committed.get(partition)
            done = offset.offset if offset is not None and offset.offset >= 0 else 0
            lag += max(0, ends[partition] - done)
        return lag
    finally:
        await consumer.stop()
        await admin.close()


async def settle(
    stack: Stack, faults: FaultRunner, simulator: SimulatorClient, limit_s: float, say: Callable[[str], None]
) -> Settled:
    started = time.monotonic()
    try:
        await faults.restore()
    except Exception as exc:  # e.g. a component that will not start: the checks still judge what is there
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        say(f"settle: could not restore everything: {type(exc).__name__}: {first_line}")
    say(f"settle: components restored ({time.monotonic() - started:.1f}s); waiting for the mesh to finish")
    db = Databases(stack)
    left: dict[str, int] = {"not asked yet": 1}
    last_shown = ""
    try:
        while time.monotonic() - started < limit_s:
            try:
                left = await backlog(db, stack, simulator)
            except (
                OSError,
                TimeoutError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                KafkaError,
                httpx.HTTPError,
            ) as exc:
                # a store still coming back: ask again
                left = {f"unreachable ({type(exc).__name__})": 1}
                await db.close()
            if not left:
                break
            shown = ", ".join(f"{kind} {count}" for kind, count in sorted(left.items()))
            if shown != last_shown:
                say(f"settle +{time.monotonic() - started:5.1f}s: {shown}")
                last_shown = shown
            await asyncio.sleep(POLL_S)
    finally:
        await db.close()
    return Settled(time.monotonic() - started, left)
