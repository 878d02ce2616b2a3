"""The SQL of batched wallet payments (payment_svc.transfers), on a plain asyncpg connection.

One round trip per stage, whatever the batch size: opening a batch is one
statement (data-modifying CTEs, atomic on its own), closing it one call of
the `finish_wallet_transfers` function (migrations 0008, 0009 and 0011: one
update per payment). Both take the whole batch as arrays and the instant of
the change from the caller, which is also the time the events and answers
they store carry; asyncpg prepares each statement once per connection. The
tables and their constraints are those of migrations 0002-0011; the
transitions trigger records every state change (a posted payment's
PENDING -> SUCCEEDED as its two steps, through PROCESSING).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from payment_svc.idempotency import Recorded
from payment_svc.records import TransferIntent
from paymesh_runtime.outbox import OutboxRows

# Claims each payment's idempotency key; creates, leased to `$18`, the payments whose key was free, with
# their `transfer` step STARTED, their outbox sequence and their payment.created event (sequence 1).
# The payment of a key already taken is not created, and its event not stored.
_OPEN = """
WITH input AS (
  SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[], $7::text[],
                       $8::text[], $9::bigint[], $10::text[], $11::uuid[], $12::text[], $13::smallint[],
                       $14::bytea[], $15::jsonb[])
    AS t(payment_id, payer_id, idempotency_key, fingerprint, payee_id, source_wallet_id, destination_wallet_id,
         currency, amount, description, event_id, topic, shard, payload, headers)
),
claimed AS (
  INSERT INTO idempotency_keys (caller_id, idempotency_key, method, fingerprint, resource_id, state, created_at,
                                expires_at)
  SELECT payer_id, idempotency_key, 'CreatePayment', fingerprint, payment_id, 'IN_PROGRESS', $16::timestamptz,
         $16::timestamptz + $17::interval
  FROM input
  ON CONFLICT DO NOTHING
  RETURNING resource_id
),
created AS (
  INSERT INTO payments (payment_id, payer_id, payee_id, source_wallet_id, destination_wallet_id, currency, amount,
                        capture_method, capture_requested, state, state_reason, description,
                        create_time, update_time, next_attempt_at, lease_owner, lease_expires_at)
  SELECT i.payment_id, i.payer_id, i.payee_id, i.source_wallet_id, i.destination_wallet_id, i.currency, i.amount,
         'AUTOMATIC', i.amount, 'PENDING', 'created', i.description,
         $16::timestamptz, $16::timestamptz, $16::timestamptz, $18::text, $16::timestamptz + $19::interval
  FROM input i JOIN claimed c ON c.resource_id = i.payment_id
  RETURNING payment_id
),
started AS (
  INSERT INTO saga_steps (resource_id, step, reference, status, worker, started_at, updated_at)
  SELECT payment_id, 'transfer', payment_id::text || ':transfer', 'STARTED', $18::text, $16::timestamptz,
         $16::timestamptz
  FROM created
),
sequenced AS (
  INSERT INTO outbox_sequence (aggregate_id, last_sequence) SELECT payment_id::text, 1 FROM created
),
published AS (
  INSERT INTO outbox (event_id, topic, shard, aggregate_id, event_type, payload, headers, created_at)
  SELECT i.event_id, i.topic, i.shard, i.payment_id::text, 'payment.created', i.payload, i.headers, $16::timestamptz
  FROM input i JOIN created c USING (payment_id)
)
SELECT array(SELECT payment_id FROM created) AS created
"""

_KEYS = """
SELECT k.caller_id, k.idempotency_key, k.fingerprint, k.state, k.resource_id, k.response_code, k.response_body
FROM idempotency_keys k JOIN unnest($1::text[], $2::text[]) AS i(caller_id, idempotency_key)
  ON k.caller_id = i.caller_id AND k.idempotency_key = i.idempotency_key
"""

_FINISH = """
SELECT finish_wallet_transfers($1, $2, $3::uuid[], $4::boolean[], $5::text[], $6::text[], $7::text[], $8::bytea[],
                               $9::text[], $10::text[], $11::uuid[], $12::text[], $13::smallint[], $14::text[],
                               $15::text[], $16::bytea[], $17::jsonb[], $18::bigint[], $19::uuid[], $20::interval)
"""


async def open_transfers(
    conn: asyncpg.Connection,
    intents: Sequence[TransferIntent],
    created_events: OutboxRows,
    *,
    at: datetime,
    owner: str,
    lease: timedelta,
    key_retention: timedelta,
) -> frozenset[uuid.UUID]:
    """Creates the payments whose idempotency key was free, with their created events (one per intent,
    in order); returns their ids."""
    row = await conn.fetchrow(
        _OPEN,
        [i.payment_id for i in intents],
        [i.payer_id for i in intents],
        [i.idempotency_key for i in intents],
        [i.fingerprint for i in intents],
        [i.payee_id for i in intents],
        [i.source_wallet_id for i in intents],
        [i.destination_wallet_id for i in intents],
        [i.amount.currency for i in intents],
        [i.amount.amount for i in intents],
        [i.description for i in intents],
        created_events.event_ids,
        created_events.topics,
        created_events.shards,
        created_events.payloads,
        created_events.headers,
        at,
        key_retention,
        owner,
        lease,
    )
    assert row is not None
    return frozenset(row["created"])


@dataclass(frozen=True)
class StoredKey:
    """An idempotency key someone used before: the request it fingerprints, and its answer once done."""

    fingerprint: bytes
    resource_id: uuid.UUID
    recorded: Recorded | None


async def stored_keys(conn: asyncpg.Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], StoredKey]:
    """The stored keys among (caller, key) pairs."""
    rows = await conn.fetch(_KEYS, [caller for caller, _ in keys], [key for _, key in keys])
    return {
        (row["caller_id"], row["idempotency_key"]): StoredKey(
            bytes(row["fingerprint"]),
            row["resource_id"],
            Recorded(row["response_code"], bytes(row["response_body"])) if row["state"] == "DONE" else None,
        )
        for row in rows
    }


@dataclass(frozen=True)
class Finish:
    """One payment's definitive end: its transfer posted (or refused, with the wallet's reason), and
    the answer its idempotency key records."""

    payment_id: uuid.UUID
    # Its idempotency key (the key's primary key): the paying caller and the key.
    payer_id: str
    idempotency_key: str
    posted: bool
    result_ref: str
    answer: bytes
    failure_code: str = ""
    failure_message: str = ""


async def finish_transfers(
    conn: asyncpg.Connection,
    ends: Sequence[Finish],
    events: OutboxRows,
    sequences: Sequence[int],
    unknown: Sequence[uuid.UUID],
    *,
    at: datetime,
    owner: str,
    retry_after: timedelta,
) -> set[uuid.UUID]:
    """Stores every definitive end with its events, and gives the unknown ones to the recovery worker,
    in one call; returns the payments finished (those still leased to `owner`; another replica answers
    for the others)."""
    finished = await conn.fetchval(
        _FINISH,
        owner,
        at,
        [e.payment_id for e in ends],
        [e.posted for e in ends],
        [e.result_ref for e in ends],
        [e.failure_code for e in ends],
        [e.failure_message for e in ends],
        [e.answer for e in ends],
        [e.payer_id for e in ends],
        [e.idempotency_key for e in ends],
        events.event_ids,
        events.topics,
        events.shards,
        events.aggregate_ids,
        events.event_types,
        events.payloads,
        events.headers,
        list(sequences),
        list(unknown),
        retry_after,
    )
    return set(finished)
