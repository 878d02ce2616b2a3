"""PostTransactions' unit of work: a whole batch in one database transaction, four round trips.

1. one statement (batch_store.open_batch) claims every reference of the
   batch, in reference order, as PostTransaction claims its one (waiting for
   a call in flight with the same reference), then locks every account the
   batch names, once, in id order, reads their outbox sequences and reserves
   the postings' numbers; what earlier calls stored under references claimed
   by others is read only if there are any;
2. each item is decided in request order on those rows (wallet_svc.batch),
   and its postings and wallet.posted events are built as they will be stored;
3. one call (post_wallet_batch) gives back the references of refused items
   (a refused call stores nothing), stores the posted items' transactions and
   postings (the triggers apply them to the balances and must arrive at the
   balances decided, the constraints stand behind them) and their events;
4. commit; then the transactions that replayed items answer are read.

References before accounts, accounts in id order: the order every writer
takes its locks in, so batches and single calls never wait on each other in a
cycle.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh_runtime.outbox import Outbox, PendingEvent, trace_context
from wallet_svc import batch, batch_store, events, store
from wallet_svc.batch import Post, PostOutcome, Refuse, Replay
from wallet_svc.ledger import AccountKey, LedgerTransaction, PostRequest


async def post_all(
    pool: asyncpg.Pool,
    engine: AsyncEngine,
    outbox: Outbox,
    ids: Mapping[AccountKey, uuid.UUID],
    requests: Sequence[PostRequest],
) -> list[PostOutcome]:
    """Posts `requests` as PostTransaction would one after another; `ids` resolves every account they name."""
    if not requests:
        return []
    fingerprints = [request.fingerprint() for request in requests]
    first: dict[str, str] = {}  # reference -> the fingerprint of its first item
    for request, fingerprint in zip(requests, fingerprints, strict=True):
        first.setdefault(request.reference, fingerprint)
    transaction_ids = {reference: uuid.uuid4() for reference in first}
    legs = sum(len(request.legs) for request in requests)
    async with pool.acquire() as db, db.transaction():
        claims = [(reference, fingerprint, transaction_ids[reference]) for reference, fingerprint in first.items()]
        opened = await batch_store.open_batch(db, claims, ids.values(), legs)
        stored = await batch_store.stored_references(db, first.keys() - opened.claimed)
        decisions = batch.decide(requests, fingerprints, stored, ids, opened.locked, transaction_ids)
        posts = [decision for decision in decisions if isinstance(decision, Post)]
        release, rewrite = batch.settle_claims(posts, {reference: first[reference] for reference in opened.claimed})
        at = datetime.now(UTC)
        posted = batch_store.planned_transactions(posts, opened.posting_numbers, at)
        pending = _posted_events(posts, posted)
        sequences = _sequences(pending, opened.last_sequences)
        await batch_store.write_batch(db, at, release, rewrite, posted, outbox.rows(pending, sequences, at), sequences)
    earlier = {d.transaction_id for d in decisions if isinstance(d, Replay)} - posted.keys()
    if earlier:  # committed by earlier calls: read after this transaction, on the cold path
        async with engine.connect() as conn:
            posted = {**posted, **await store.load_transactions(conn, earlier)}
    return [_outcome(decision, posted) for decision in decisions]


def _sequences(pending: Sequence[PendingEvent], last: Mapping[str, int]) -> list[int]:
    """Each event's number in its wallet's sequence, after the last one read under the account's lock."""
    counts: Counter[str] = Counter()
    numbers = []
    for event in pending:
        aggregate = event.event.aggregate_id
        counts[aggregate] += 1
        numbers.append(last.get(aggregate, 0) + counts[aggregate])
    return numbers


def _posted_events(posts: Sequence[Post], posted: Mapping[uuid.UUID, LedgerTransaction]) -> list[PendingEvent]:
    """A wallet.posted event per posting to a user's wallet, item by item, each in wallet id order
    (as PostTransaction enqueues them)."""
    context = trace_context()  # the call's, for the items that did not bring their own request's
    return [
        PendingEvent(
            events.TOPIC,
            events.wallet_posted(posting, planned.account.owner_id, planned.account.held),
            post.request.trace_context or context,
        )
        for post in posts
        for planned, posting in zip(post.postings, posted[post.transaction_id].postings, strict=True)
        if planned.account.owner_id is not None
    ]


def _outcome(decision: batch.Decision, found: Mapping[uuid.UUID, LedgerTransaction]) -> PostOutcome:
    if isinstance(decision, Refuse):
        return PostOutcome(error=decision.error)
    if isinstance(decision, Replay):
        return PostOutcome(transaction=found[decision.transaction_id], replayed=True)
    return PostOutcome(transaction=found[decision.transaction_id])
