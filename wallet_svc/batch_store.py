"""The hot statements of batched postings: set-based, on the raw asyncpg connection.

A batch runs a fixed number of statements whatever its size (arrays and
unnest, never one statement per item); asyncpg prepares each once per
connection. They join the transaction wallet_svc.store opened with SQLAlchemy
(store.driver_connection), so the cold paths stay in store.py. The schema's
triggers and constraints apply to these rows exactly as to PostTransaction's.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import Any

import asyncpg

from wallet_svc import store
from wallet_svc.batch import Post
from wallet_svc.ledger import Account, LedgerTransaction, Operation, Posting, StoredReference

_STORED_REFERENCES = """
SELECT reference, operation, fingerprint, hold_id, transaction_id, wallet_id
FROM ledger_references WHERE reference = ANY($1::text[])
"""

# One lock per account, in id order (as every writer takes them). FOR NO KEY
# UPDATE serialises balance changes without blocking other transactions'
# foreign-key checks (see store.lock_accounts).
_LOCK_ACCOUNTS = """
SELECT id, owner_id, system_account, currency, state, state_reason, posted, held, created_at, updated_at
FROM accounts WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE
"""

# References given back: claimed by this very transaction for items it refused
# (the ledger_references_immutable trigger allows nothing else, migration 0005).
_RELEASE_REFERENCES = "DELETE FROM ledger_references WHERE reference = ANY($1::text[])"

# The references still to write, the transaction headers and every posting in
# one statement. Postings go in array order (item by item, each in account id
# order): the postings_apply trigger adds each to its account's balance in that
# order and records balance_after. The postings' foreign key to their header is
# checked at the end of the statement, once the headers CTE has run; the
# references' result ids and each transaction's balance at commit (deferred).
_INSERT_TRANSACTIONS = """
WITH written AS (
    INSERT INTO ledger_references (reference, operation, fingerprint, transaction_id)
    SELECT reference, $10, fingerprint, transaction_id
    FROM unnest($11::text[], $12::text[], $13::uuid[]) AS item(reference, fingerprint, transaction_id)
), headers AS (
    INSERT INTO ledger_transactions (id, reference, payment_id, description)
    SELECT id, reference, payment_id, description
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS item(id, reference, payment_id, description)
)
INSERT INTO postings (id, transaction_id, account_id, currency, amount)
SELECT id, transaction_id, account_id, currency, amount
FROM unnest($5::uuid[], $6::uuid[], $7::uuid[], $8::text[], $9::bigint[])
    WITH ORDINALITY AS leg(id, transaction_id, account_id, currency, amount, n)
ORDER BY n
RETURNING id, seq, balance_after, created_at
"""


class LedgerDiverged(RuntimeError):
    """The database computed another balance than the batch's decisions assumed: a bug, never an answer."""


async def stored_references(db: Any, references: Collection[str]) -> dict[str, StoredReference]:
    """What earlier calls committed under `references` (claimed by others: store.claim_postings waited for them)."""
    if not references:
        return {}
    rows = await db.fetch(_STORED_REFERENCES, list(references))
    return {row["reference"]: store.stored_reference(row) for row in rows}


async def lock_accounts(db: Any, account_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, Account]:
    rows = await db.fetch(_LOCK_ACCOUNTS, sorted(set(account_ids)))
    return {row["id"]: store.account_of(row) for row in rows}


async def release_references(db: Any, references: Sequence[str]) -> None:
    """Gives back references this transaction claimed (store.claim_postings) and will not post under."""
    if references:
        await db.execute(_RELEASE_REFERENCES, list(references))


async def insert_transactions(
    db: Any, posts: Sequence[Post], references: Sequence[Post]
) -> dict[uuid.UUID, LedgerTransaction]:
    """Stores the decided transactions, and the references of `references` (the posts whose claim must
    be written again, batch.settle_claims); returns them by id, postings in the order of each Post's."""
    if not posts:
        return {}
    legs = [(post, planned, uuid.uuid4()) for post in posts for planned in post.postings]
    try:
        rows = await db.fetch(
            _INSERT_TRANSACTIONS,
            [post.transaction_id for post in posts],
            [post.request.reference for post in posts],
            [post.request.payment_id for post in posts],
            [post.request.description for post in posts],
            [posting_id for _, _, posting_id in legs],
            [post.transaction_id for post, _, _ in legs],
            [planned.account.id for _, planned, _ in legs],
            [planned.amount.currency for _, planned, _ in legs],
            [planned.amount.amount for _, planned, _ in legs],
            Operation.POST_TRANSACTION.value,
            [post.request.reference for post in references],
            [post.fingerprint for post in references],
            [post.transaction_id for post in references],
        )
    except asyncpg.IntegrityConstraintViolationError as error:
        known = store.constraint_error(getattr(error, "constraint_name", None))
        if known is None:
            raise
        raise known from error
    stored = {row["id"]: row for row in rows}
    entries: dict[uuid.UUID, list[Posting]] = {post.transaction_id: [] for post in posts}
    for post, planned, posting_id in legs:
        row = stored[posting_id]
        if row["balance_after"] != planned.balance_after:
            raise LedgerDiverged(f"account {planned.account.id}: the batch expected another balance")
        entries[post.transaction_id].append(
            Posting(
                seq=row["seq"],
                id=posting_id,
                transaction_id=post.transaction_id,
                account_id=planned.account.id,
                system_account=planned.account.system_account,
                amount=planned.amount,
                balance_after=row["balance_after"],
                payment_id=post.request.payment_id,
                description=post.request.description,
                created_at=row["created_at"],
            )
        )
    return {
        post.transaction_id: LedgerTransaction(
            post.transaction_id,
            post.request.reference,
            post.request.payment_id,
            post.request.description,
            entries[post.transaction_id][0].created_at,
            tuple(entries[post.transaction_id]),
        )
        for post in posts
    }
