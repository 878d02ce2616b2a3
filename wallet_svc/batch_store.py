"""The hot statements of batched postings: set-based, on a plain asyncpg connection.

A batch is four round trips whatever its size: BEGIN; one statement that
claims its references, locks its accounts and reserves posting numbers
(_OPEN); one call of post_wallet_batch (migration 0006) that writes what the
batch decided; COMMIT. asyncpg prepares each statement once per connection.
The schema's triggers and constraints apply to these rows exactly as to
PostTransaction's.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from paymesh_runtime.outbox import OutboxRows
from wallet_svc import store
from wallet_svc.batch import Post
from wallet_svc.ledger import Account, LedgerTransaction, Operation, Posting, StoredReference

# References before accounts, accounts once each in id order, then their outbox sequences: the order every
# writer takes its locks in. `claimed` runs first (the accounts' WHERE reads it): it claims every reference
# of the batch, in reference order, waiting for a call in flight with the same one, as PostTransaction
# claims its one. FOR NO KEY UPDATE serialises balance changes without blocking other transactions'
# foreign-key checks. The sequences are locked too, so that what is read is their latest value even when
# this statement waited for an account's lock (a read without a lock sees the statement's snapshot, older
# than what the writer it waited for committed). $6 posting numbers are reserved for the legs (unused
# ones are gaps, as after a rollback).
_OPEN = """
WITH claimed AS (
    INSERT INTO ledger_references (reference, operation, fingerprint, transaction_id)
    SELECT reference, $4, fingerprint, transaction_id
    FROM unnest($1::text[], $2::text[], $3::uuid[]) AS claim(reference, fingerprint, transaction_id)
    ORDER BY reference
    ON CONFLICT (reference) DO NOTHING
    RETURNING reference
), locked AS (
    SELECT id, owner_id, system_account, currency, state, state_reason, posted, held, created_at, updated_at
    FROM accounts
    WHERE id = ANY($5::uuid[]) AND (SELECT count(*) FROM claimed) >= 0
    ORDER BY id FOR NO KEY UPDATE
), sequences AS (
    SELECT aggregate_id, last_sequence
    FROM outbox_sequence
    WHERE aggregate_id = ANY($5::uuid[]::text[]) AND (SELECT count(*) FROM locked) >= 0
    ORDER BY aggregate_id FOR UPDATE
)
SELECT l.*, s.last_sequence,
       (SELECT coalesce(array_agg(reference), '{}') FROM claimed) AS claimed,
       (SELECT coalesce(array_agg(nextval('postings_seq_seq')), '{}') FROM generate_series(1, $6::int)) AS seqs
FROM locked l LEFT JOIN sequences s ON s.aggregate_id = l.id::text
ORDER BY l.id
"""

_STORED_REFERENCES = """
SELECT reference, operation, fingerprint, hold_id, transaction_id, wallet_id
FROM ledger_references WHERE reference = ANY($1::text[])
"""

_WRITE = """
SELECT post_wallet_batch($1, $2::text[], $3::text[], $4::text[], $5::uuid[], $6::uuid[], $7::text[], $8::text[],
                         $9::text[], $10::uuid[], $11::bigint[], $12::uuid[], $13::uuid[], $14::text[], $15::bigint[],
                         $16::bigint[], $17::uuid[], $18::text[], $19::smallint[], $20::text[], $21::text[],
                         $22::bytea[], $23::jsonb[], $24::bigint[])
"""


@dataclass(frozen=True)
class Opened:
    """What a batch learned opening its transaction."""

    claimed: set[str]  # the references claimed now (the others were stored before)
    locked: dict[uuid.UUID, Account]
    last_sequences: dict[str, int]  # each locked account's last outbox sequence (0 if none)
    posting_numbers: list[int]  # reserved `postings.seq` values, one per leg the batch may post


async def open_batch(
    db: Any, claims: Sequence[tuple[str, str, uuid.UUID]], account_ids: Collection[uuid.UUID], legs: int
) -> Opened:
    """Claims (reference, fingerprint, transaction id) of each item, locks the accounts, reserves numbers."""
    rows = await db.fetch(
        _OPEN,
        [claim[0] for claim in claims],
        [claim[1] for claim in claims],
        [claim[2] for claim in claims],
        Operation.POST_TRANSACTION.value,
        sorted(set(account_ids)),
        legs,
    )
    if not rows:  # no account to lock: a batch of refusals (the claims still happened)
        return Opened(set(), {}, {}, [])
    return Opened(
        set(rows[0]["claimed"]),
        {row["id"]: store.account_of(row) for row in rows},
        {str(row["id"]): row["last_sequence"] or 0 for row in rows},
        list(rows[0]["seqs"]),
    )


class LedgerDiverged(RuntimeError):
    """The database computed another balance than the batch's decisions assumed: a bug, never an answer."""


async def stored_references(db: Any, references: Collection[str]) -> dict[str, StoredReference]:
    """What earlier calls committed under `references` (claimed by others: open_batch waited for them)."""
    if not references:
        return {}
    rows = await db.fetch(_STORED_REFERENCES, list(references))
    return {row["reference"]: store.stored_reference(row) for row in rows}


def planned_transactions(
    posts: Sequence[Post], posting_numbers: Sequence[int], at: datetime
) -> dict[uuid.UUID, LedgerTransaction]:
    """The transactions `posts` will store, with their postings' numbers and balances as decided."""
    numbers = iter(posting_numbers)
    planned: dict[uuid.UUID, LedgerTransaction] = {}
    for post in posts:
        postings = tuple(
            Posting(
                seq=next(numbers),
                id=uuid.uuid4(),
                transaction_id=post.transaction_id,
                account_id=leg.account.id,
                system_account=leg.account.system_account,
                amount=leg.amount,
                balance_after=leg.balance_after,
                payment_id=post.request.payment_id,
                description=post.request.description,
                created_at=at,
            )
            for leg in post.postings
        )
        request = post.request
        planned[post.transaction_id] = LedgerTransaction(
            post.transaction_id, request.reference, request.payment_id, request.description, at, postings
        )
    return planned


async def write_batch(
    db: Any,
    at: datetime,
    release: Sequence[str],
    rewrite: Sequence[Post],
    transactions: Mapping[uuid.UUID, LedgerTransaction],
    events: OutboxRows,
    event_sequences: Sequence[int],
) -> None:
    """Writes a decided batch in one call (post_wallet_batch); raises LedgerDiverged if the ledger
    computed another balance than the batch decided on, or the known PaymeshError of a constraint."""
    legs = [posting for tx in transactions.values() for posting in tx.postings]
    try:
        await db.execute(
            _WRITE,
            at,
            list(release),
            [post.request.reference for post in rewrite],
            [post.fingerprint for post in rewrite],
            [post.transaction_id for post in rewrite],
            [tx.id for tx in transactions.values()],
            [tx.reference for tx in transactions.values()],
            [tx.payment_id for tx in transactions.values()],
            [tx.description for tx in transactions.values()],
            [leg.id for leg in legs],
            [leg.seq for leg in legs],
            [leg.transaction_id for leg in legs],
            [leg.account_id for leg in legs],
            [leg.amount.currency for leg in legs],
            [leg.amount.amount for leg in legs],
            [leg.balance_after for leg in legs],
            *events.columns(),
            list(event_sequences),
        )
    except asyncpg.IntegrityConstraintViolationError as error:
        constraint = getattr(error, "constraint_name", None)
        if constraint == "postings_batch_balance":
            raise LedgerDiverged("the ledger computed another balance than the batch decided on") from error
        known = store.constraint_error(constraint)
        if known is None:
            raise
        raise known from error
