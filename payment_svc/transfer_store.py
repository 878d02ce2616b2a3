"""The SQL of batched wallet payments (payment_svc.transfers), on a plain asyncpg connection.

Set-based: every statement takes the whole batch as unnest()ed arrays, so a
batch costs the same few round trips whatever its size, and asyncpg prepares
each statement once per connection. The caller owns the transaction. The
tables and their constraints are those of migrations 0002-0006; the
transitions trigger records every state change these statements make.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from payment_svc.idempotency import Recorded
from payment_svc.records import TransferIntent

# Claims each payment's idempotency key; creates, leased to `$12`, the payments whose key was free, with
# their `transfer` step STARTED. The payment of a key already taken is not created.
_OPEN = """
WITH input AS (
  SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[], $7::text[],
                       $8::text[], $9::bigint[], $10::text[])
    AS t(payment_id, payer_id, idempotency_key, fingerprint, payee_id, source_wallet_id, destination_wallet_id,
         currency, amount, description)
),
claimed AS (
  INSERT INTO idempotency_keys (caller_id, idempotency_key, method, fingerprint, resource_id, state, expires_at)
  SELECT payer_id, idempotency_key, 'CreatePayment', fingerprint, payment_id, 'IN_PROGRESS', now() + $11::interval
  FROM input
  ON CONFLICT DO NOTHING
  RETURNING resource_id
),
created AS (
  INSERT INTO payments (payment_id, payer_id, payee_id, source_wallet_id, destination_wallet_id, currency, amount,
                        capture_method, capture_requested, state, state_reason, description,
                        lease_owner, lease_expires_at)
  SELECT i.payment_id, i.payer_id, i.payee_id, i.source_wallet_id, i.destination_wallet_id, i.currency, i.amount,
         'AUTOMATIC', i.amount, 'PENDING', 'created', i.description, $12, now() + $13::interval
  FROM input i JOIN claimed c ON c.resource_id = i.payment_id
  RETURNING payment_id
),
started AS (
  INSERT INTO saga_steps (resource_id, step, reference, status, worker)
  SELECT payment_id, 'transfer', payment_id::text || ':transfer', 'STARTED', $12 FROM created
)
SELECT now() AS now, array(SELECT payment_id FROM created) AS created
"""

_KEYS = """
SELECT k.caller_id, k.idempotency_key, k.fingerprint, k.state, k.resource_id, k.response_code, k.response_body
FROM idempotency_keys k JOIN unnest($1::text[], $2::text[]) AS i(caller_id, idempotency_key)
  ON k.caller_id = i.caller_id AND k.idempotency_key = i.idempotency_key
"""

# The transferred payments: PENDING → PROCESSING, still under this replica's lease.
_PROCESSING = """
UPDATE payments SET state = 'PROCESSING', state_reason = 'transfer_posted', update_time = now()
WHERE payment_id = ANY($1::uuid[]) AND state = 'PENDING' AND lease_owner = $2
RETURNING payment_id
"""

# Each payment to its final state (SUCCEEDED from PROCESSING, FAILED from PENDING), lease given back.
_FINISH = """
UPDATE payments p
SET state = i.state, state_reason = i.reason, failure_code = i.failure_code, failure_message = i.failure_message,
    amount_captured = i.captured, update_time = now(), lease_owner = NULL, lease_expires_at = NULL
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[])
  AS i(payment_id, from_state, state, reason, failure_code, failure_message, captured)
WHERE p.payment_id = i.payment_id AND p.state = i.from_state AND p.lease_owner = $8
RETURNING p.payment_id, now() AS now
"""

# The `transfer` step's result and the idempotency key's recorded response, per payment.
_RECORD = """
WITH input AS (
  SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::bytea[])
    AS t(payment_id, status, result_ref, detail, response_code, response_body)
),
steps AS (
  UPDATE saga_steps s SET status = i.status, result_ref = i.result_ref, detail = i.detail, updated_at = now()
  FROM input i WHERE s.resource_id = i.payment_id AND s.step = 'transfer'
)
UPDATE idempotency_keys k
SET state = 'DONE', response_code = i.response_code, response_body = i.response_body, completed_at = now()
FROM input i WHERE k.resource_id = i.payment_id AND k.state = 'IN_PROGRESS'
"""

# No definitive answer from the wallet: the recovery worker takes these over after `$3`.
_RELEASE = """
UPDATE payments
SET lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = now() + $3::interval, attempts = attempts + 1
WHERE payment_id = ANY($1::uuid[]) AND lease_owner = $2
"""


@dataclass(frozen=True)
class Opened:
    now: datetime
    created: frozenset[uuid.UUID]


async def open_transfers(
    conn: asyncpg.Connection,
    intents: Sequence[TransferIntent],
    *,
    owner: str,
    lease: timedelta,
    key_retention: timedelta,
) -> Opened:
    """Creates the payments whose idempotency key was free (see _OPEN)."""
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
        key_retention,
        owner,
        lease,
    )
    assert row is not None
    return Opened(row["now"], frozenset(row["created"]))


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
    """One payment's end: its state change (from → to) with the transfer step's result and the answer."""

    payment_id: uuid.UUID
    from_state: str
    state: str
    reason: str
    captured: int
    step_status: str
    result_ref: str
    failure_code: str = ""
    failure_message: str = ""


async def move_to_processing(conn: asyncpg.Connection, payment_ids: Sequence[uuid.UUID], owner: str) -> set[uuid.UUID]:
    """PENDING → PROCESSING; returns the payments still leased to `owner` (the others were taken over)."""
    rows = await conn.fetch(_PROCESSING, payment_ids, owner)
    return {row["payment_id"] for row in rows}


async def finish(
    conn: asyncpg.Connection, ends: Sequence[Finish], owner: str
) -> tuple[set[uuid.UUID], datetime | None]:
    """Moves each payment to its final state under `owner`'s lease; returns those moved and the time."""
    if not ends:
        return set(), None
    rows = await conn.fetch(
        _FINISH,
        [e.payment_id for e in ends],
        [e.from_state for e in ends],
        [e.state for e in ends],
        [e.reason for e in ends],
        [e.failure_code for e in ends],
        [e.failure_message for e in ends],
        [e.captured for e in ends],
        owner,
    )
    return {row["payment_id"] for row in rows}, (rows[0]["now"] if rows else None)


async def record(conn: asyncpg.Connection, ends: Sequence[Finish], answers: Sequence[Recorded]) -> None:
    """Stores each finished payment's transfer step result and its idempotency key's answer."""
    await conn.execute(
        _RECORD,
        [e.payment_id for e in ends],
        [e.step_status for e in ends],
        [e.result_ref for e in ends],
        [e.failure_code for e in ends],
        [a.code for a in answers],
        [a.body for a in answers],
    )


async def release(
    conn: asyncpg.Connection, payment_ids: Sequence[uuid.UUID], owner: str, retry_after: timedelta
) -> None:
    """Gives the leases back: the recovery worker finishes these payments after `retry_after`."""
    await conn.execute(_RELEASE, payment_ids, owner, retry_after)
