"""What the bench reads from the stack's own stores: the ledger check, step counts, the event backlog.

Read-only, from the services' databases (asyncpg, the paymesh role) and
Kafka's committed offsets; table names are those of the wallet_svc,
payment_svc and notify_svc migrations.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from devstack.stack import Stack
from paymesh_runtime.kafka import TOPIC_PAYMENTS, TOPIC_USERS, TOPIC_WALLETS

FINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELED")
NOTIFY_GROUP = "notify_svc"  # NotifySettings.consumer_group's default, which the local stack runs with
NOTIFY_TOPICS = (TOPIC_PAYMENTS, TOPIC_WALLETS, TOPIC_USERS)
_POLL_S = 0.5


class Stores:
    """Connections to the services' databases and Kafka, for one bench run."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    async def _fetch(self, service: str, sql: str, *args: object) -> list[asyncpg.Record]:
        connection = await asyncpg.connect(self.stack.database_url(service, driver=""), timeout=10)
        try:
            rows: list[asyncpg.Record] = await connection.fetch(sql, *args, timeout=60)
            return rows
        finally:
            await connection.close()

    def fetch(self, service: str, sql: str, *args: object) -> list[asyncpg.Record]:
        return asyncio.run(self._fetch(service, sql, *args))

    def now(self) -> datetime:
        """payment_svc's database clock, which stamps payments' create_time."""
        value: datetime = self.fetch("payment", "SELECT clock_timestamp() AS now")[0]["now"]
        return value

    def balances(self, wallet_ids: Sequence[str]) -> dict[str, int]:
        rows = self.fetch(
            "wallet", "SELECT id::text AS id, posted FROM accounts WHERE id = ANY($1::uuid[])", wallet_ids
        )
        return {row["id"]: int(row["posted"]) for row in rows}

    def succeeded_between(self, payer_ids: Sequence[str], start: datetime, end: datetime) -> int:
        """Payments by these payers created in [start, end) that have SUCCEEDED, whatever the client saw."""
        rows = self.fetch(
            "payment",
            "SELECT count(*) AS n FROM payments WHERE payer_id = ANY($1) AND create_time >= $2 AND create_time < $3"
            " AND state = 'SUCCEEDED'",
            payer_ids,
            start,
            end,
        )
        return int(rows[0]["n"])

    # --- the event pipeline's backlog ---------------------------------------------
    def wait_drained(self, timeout_s: float) -> Drain:
        return asyncio.run(self._wait_drained(timeout_s))

    async def _wait_drained(self, timeout_s: float) -> Drain:
        """Seconds until no outbox row is unpublished, notify_svc's lag is zero and no notification is due."""
        started = time.monotonic()
        admin = AIOKafkaAdminClient(bootstrap_servers=self.stack.kafka_bootstrap, request_timeout_ms=10_000)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.stack.kafka_bootstrap, enable_auto_commit=False)
        await admin.start()
        await consumer.start()
        connections = {
            service: await asyncpg.connect(self.stack.database_url(service, driver=""), timeout=10)
            for service in ("wallet", "payment", "notify")
        }
        try:
            await consumer.topics()  # fetches the metadata partitions_for_topic reads
            partitions = [
                TopicPartition(topic, p) for topic in NOTIFY_TOPICS for p in consumer.partitions_for_topic(topic) or ()
            ]
            while True:
                backlog = await _backlog(connections, admin, consumer, partitions)
                if backlog.empty or time.monotonic() - started > timeout_s:
                    seconds = time.monotonic() - started
                    return Drain(seconds if backlog.empty else math.inf, backlog)
                await asyncio.sleep(_POLL_S)
        finally:
            for connection in connections.values():
                await connection.close()
            await consumer.stop()
            await admin.close()

    # --- the ledger check ------------------------------------------------------------
    def ledger_check(self, book: Book, settle_timeout_s: float) -> LedgerCheck:
        """The ledger's invariants after a run; see LedgerCheck."""
        check = LedgerCheck()
        started = time.monotonic()
        unfinished = check.unfinished_at_end = self._unfinished(book)
        while unfinished and time.monotonic() - started < settle_timeout_s:
            time.sleep(1)
            unfinished = self._unfinished(book)
        check.waited_s = time.monotonic() - started
        if unfinished:
            check.violations.append(f"{sum(unfinished.values())} payments not in a final state: {unfinished}")
        for row in self.fetch(
            "wallet", "SELECT currency, sum(amount) AS total FROM postings GROUP BY currency HAVING sum(amount) <> 0"
        ):
            check.violations.append(f"postings in {row['currency']} sum to {row['total']}, not zero")
        negative = self.fetch(
            "wallet",
            "SELECT count(*) AS n FROM accounts WHERE owner_id IS NOT NULL AND (posted < 0 OR posted - held < 0)",
        )[0]["n"]
        if negative:
            check.violations.append(f"{negative} customer wallets below zero")
        flows = self.fetch(
            "payment",
            "SELECT source_wallet_id AS source, destination_wallet_id AS destination, state,"
            " count(*) AS n, sum(amount_captured) AS captured FROM payments"
            " WHERE create_time >= $1 AND destination_wallet_id = ANY($2) GROUP BY 1, 2, 3",
            book.since,
            list(book.balances),
        )
        expected = dict.fromkeys(book.balances, 0)
        for row in flows:
            check.payments[row["state"]] = check.payments.get(row["state"], 0) + int(row["n"])
            if row["state"] != "SUCCEEDED":
                continue
            amount = int(row["captured"])
            expected[row["destination"]] += amount
            if row["destination"] in book.payer_wallets:
                check.paid_to_payers += amount  # card deposits
            if row["source"] is not None:
                expected[row["source"]] = expected.get(row["source"], 0) - amount
                check.paid_by_payers += amount
        after = self.balances(list(book.balances))
        for wallet, before in book.balances.items():
            moved = after[wallet] - before
            if moved != expected[wallet]:
                check.violations.append(
                    f"wallet {wallet} ({book.labels.get(wallet, '?')}) moved by {moved}; its SUCCEEDED payments"
                    f" add up to {expected[wallet]}"
                )
        check.payers_fell_by = sum(book.balances[w] - after[w] for w in book.payer_wallets)
        return check

    def _unfinished(self, book: Book) -> dict[str, int]:
        rows = self.fetch(
            "payment",
            "SELECT state, count(*) AS n FROM payments WHERE create_time >= $1 AND destination_wallet_id = ANY($2)"
            " AND state <> ALL($3) GROUP BY state",
            book.since,
            list(book.balances),
            list(FINAL_STATES),
        )
        return {row["state"]: int(row["n"]) for row in rows}


@dataclass(frozen=True)
class Backlog:
    outbox_unpublished: int
    consumer_lag: int
    notifications_due: int

    @property
    def empty(self) -> bool:
        return not (self.outbox_unpublished or self.consumer_lag or self.notifications_due)


@dataclass(frozen=True)
class Drain:
    seconds: float  # inf when the backlog was still there at the timeout
    left: Backlog


async def _backlog(
    connections: Mapping[str, asyncpg.Connection],
    admin: AIOKafkaAdminClient,
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
) -> Backlog:
    unpublished = 0
    for service in ("wallet", "payment"):
        unpublished += await connections[service].fetchval("SELECT count(*) FROM outbox_pending")
    due = await connections["notify"].fetchval(
        "SELECT count(*) FROM notification WHERE state = 'PENDING' AND next_attempt_at <= now()"
    )
    committed = await admin.list_consumer_group_offsets(NOTIFY_GROUP, partitions=partitions)
    ends = await consumer.end_offsets(partitions)
    lag = 0
    for partition in partitions:
        offset = committed.get(partition)
        lag += max(0, ends[partition] - (offset.offset if offset is not None and offset.offset >= 0 else 0))
    return Backlog(int(unpublished), lag, int(due))


@dataclass
class Book:
    """The bench's wallets and their balances once set up; payments created since `since` are the run's."""

    since: datetime
    balances: dict[str, int]
    labels: dict[str, str]
    payer_wallets: list[str]


@dataclass
class LedgerCheck:
    """Violations of: postings sum to zero per currency; no customer wallet below zero; every payment of the
    run final (after waiting a bounded time); each bench wallet moved by exactly its SUCCEEDED payments
    (so the payers' balances fell by exactly what they paid)."""

    violations: list[str] = field(default_factory=list)
    payments: dict[str, int] = field(default_factory=dict)
    unfinished_at_end: dict[str, int] = field(default_factory=dict)  # when the load stopped, by state
    paid_by_payers: int = 0
    paid_to_payers: int = 0
    payers_fell_by: int = 0
    waited_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations
