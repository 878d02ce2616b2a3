"""Reads what the checks need from the stack, read-only: the services' databases (asyncpg, the paymesh
role), the processor simulator's books, and Kafka's topics from the beginning (a real consumer, no group)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from devstack.chaos.books import (
    Account,
    EventRecord,
    Hold,
    IdempotencyKey,
    Ledger,
    LedgerTransaction,
    Notification,
    Payment,
    PaymentBooks,
    Payout,
    Posting,
    Refund,
    SagaStep,
    Transition,
)
from devstack.stack import Stack
from paymesh.events.v1 import events_pb2
from paymesh.payment.v1 import payment_pb2

KAFKA_READ_TIMEOUT_S = 120.0


class Databases:
    """One connection per service database, for one collection."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self._connections: dict[str, asyncpg.Connection] = {}

    async def fetch(self, service: str, sql: str, *args: object) -> list[asyncpg.Record]:
        if service not in self._connections:
            dsn = self._stack.database_url(service, driver="")
            self._connections[service] = await asyncpg.connect(dsn, timeout=10)
        rows: list[asyncpg.Record] = await self._connections[service].fetch(sql, *args, timeout=120)
        return rows

    async def close(self) -> None:
        for connection in self._connections.values():
            await connection.close()
        self._connections.clear()


def _text(value: Any) -> str:
    return "" if value is None else str(value)


async def payment_books(db: Databases) -> PaymentBooks:
    books = PaymentBooks()
    for r in await db.fetch("payment", "SELECT * FROM payments"):
        books.payments[str(r["payment_id"])] = Payment(
            payment_id=str(r["payment_id"]), payer_id=r["payer_id"], payee_id=r["payee_id"],
            source_wallet_id=_text(r["source_wallet_id"]), card_token=_text(r["card_token"]),
            destination_wallet_id=r["destination_wallet_id"], currency=r["currency"], amount=r["amount"],
            amount_captured=r["amount_captured"], amount_refunded=r["amount_refunded"],
            refund_reserved=r["refund_reserved"], capture_method=r["capture_method"], state=r["state"],
            hold_id=_text(r["hold_id"]), authorization_ref=_text(r["authorization_ref"]),
            requested_action=_text(r["requested_action"]),
        )  # fmt: skip
    for r in await db.fetch("payment", "SELECT * FROM refunds"):
        books.refunds[str(r["refund_id"])] = Refund(
            str(r["refund_id"]), str(r["payment_id"]), r["currency"], r["amount"], r["state"], _text(r["processor_ref"])
        )
    for r in await db.fetch("payment", "SELECT * FROM payouts"):
        books.payouts[str(r["payout_id"])] = Payout(
            str(r["payout_id"]), r["wallet_id"], r["owner_id"], r["currency"], r["amount"], r["state"],
            _text(r["hold_id"]), _text(r["processor_ref"]),
        )  # fmt: skip
    books.transitions = [
        Transition(r["transition_id"], r["resource_type"], str(r["resource_id"]), r["from_state"], r["to_state"])
        for r in await db.fetch("payment", "SELECT * FROM transitions ORDER BY transition_id")
    ]
    keys_sql = "SELECT caller_id, idempotency_key, method, resource_id, state FROM idempotency_keys"
    books.keys = [
        IdempotencyKey(r["caller_id"], r["idempotency_key"], r["method"], str(r["resource_id"]), r["state"])
        for r in await db.fetch("payment", keys_sql)
    ]
    books.steps = [
        SagaStep(str(r["resource_id"]), r["step"], r["status"], bool(r["outcome_unknown"]))
        for r in await db.fetch("payment", "SELECT resource_id, step, status, outcome_unknown FROM saga_steps")
    ]
    return books


async def ledger(db: Databases) -> Ledger:
    found = Ledger()
    for r in await db.fetch("wallet", "SELECT * FROM accounts"):
        found.accounts[str(r["id"])] = Account(
            str(r["id"]), _text(r["owner_id"]), _text(r["system_account"]), r["currency"], r["posted"], r["held"],
            r["state"],
        )  # fmt: skip
    found.postings = [
        Posting(
            r["seq"],
            str(r["id"]),
            str(r["transaction_id"]),
            str(r["account_id"]),
            r["currency"],
            r["amount"],
            r["balance_after"],
        )
        for r in await db.fetch("wallet", "SELECT * FROM postings ORDER BY seq")
    ]
    for r in await db.fetch("wallet", "SELECT id, reference, payment_id FROM ledger_transactions"):
        found.transactions[str(r["id"])] = LedgerTransaction(str(r["id"]), r["reference"], r["payment_id"])
    for r in await db.fetch("wallet", "SELECT * FROM holds"):
        found.holds[str(r["id"])] = Hold(
            str(r["id"]), str(r["wallet_id"]), r["currency"], r["amount"], r["captured_amount"], r["state"],
            r["reference"], r["payment_id"],
        )  # fmt: skip
    return found


async def users(db: Databases) -> set[str]:
    return {str(r["user_id"]) for r in await db.fetch("auth", "SELECT user_id FROM users")}


async def notifications(db: Databases) -> tuple[list[Notification], set[str]]:
    rows = await db.fetch(
        "notify", "SELECT notification_id, user_id, channel, endpoint_id, event_id, state FROM notification"
    )
    found = [
        Notification(
            str(r["notification_id"]),
            r["user_id"],
            r["channel"],
            _text(r["endpoint_id"]),
            str(r["event_id"]),
            r["state"],
        )
        for r in rows
    ]
    processed = {str(r["event_id"]) for r in await db.fetch("notify", "SELECT event_id FROM processed_event")}
    return found, processed


def decode(topic: str, partition: int, offset: int, value: bytes | None) -> EventRecord:
    """One record as an EventRecord; an undecodable one keeps its place with type '(undecodable)'."""
    try:
        event = events_pb2.Event.FromString(value or b"")
    except Exception:  # protobuf's DecodeError and friends: a poison record is a finding, not a crash
        return EventRecord(topic, partition, offset, "", "(undecodable)", "", 0, "", "")
    payload = event.WhichOneof("payload")
    resource_id = state = posting_id = ""
    if payload == "payment_changed":
        payment = event.payment_changed.payment
        resource_id, state = payment.payment_id, payment_pb2.Payment.State.Name(payment.state)
    elif payload == "refund_changed":
        refund = event.refund_changed.refund
        resource_id, state = refund.refund_id, payment_pb2.Refund.State.Name(refund.state)
    elif payload == "payout_changed":
        payout = event.payout_changed.payout
        resource_id, state = payout.payout_id, payment_pb2.Payout.State.Name(payout.state)
    elif payload == "wallet_posted":
        posting_id = event.wallet_posted.entry.entry_id
    return EventRecord(
        topic, partition, offset, event.id, event.type, event.aggregate_id, event.sequence, resource_id, state,
        posting_id,
    )  # fmt: skip


async def topic_partitions(bootstrap: str, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of `topics`, from the cluster's metadata (a consumer only knows those it subscribed to)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    found = [
        TopicPartition(str(topic["topic"]), int(partition["partition"]))
        for topic in described
        if topic.get("error_code") == 0
        for partition in topic.get("partitions", ())
    ]
    missing = set(topics) - {tp.topic for tp in found}
    if missing:
        raise LookupError(f"Kafka does not describe topics {sorted(missing)}")
    return sorted(found)


async def read_topics(bootstrap: str, topics: Sequence[str]) -> list[EventRecord]:
    """Every record of `topics`, from the first offset up to the end offsets at the time of the call."""
    partitions = await topic_partitions(bootstrap, topics)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=30_000)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[EventRecord] = []
        deadline = time.monotonic() + KAFKA_READ_TIMEOUT_S
        while time.monotonic() < deadline:
            behind = [tp for tp in partitions if await consumer.position(tp) < ends[tp]]
            if not behind:
                break
            batches = await consumer.getmany(*behind, timeout_ms=1000)
            for tp, messages in batches.items():
                found += [decode(tp.topic, tp.partition, m.offset, m.value) for m in messages if m.offset < ends[tp]]
        else:
            raise TimeoutError(f"Kafka topics {list(topics)} not read to their end within {KAFKA_READ_TIMEOUT_S:.0f}s")
        return found
    finally:
        await consumer.stop()
