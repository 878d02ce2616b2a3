"""PostTransactions' unit of work: a whole batch in one database transaction.

1. claim every reference of the batch, in reference order, as PostTransaction
   claims its one (store.claim_postings: an INSERT that waits for a call in
   flight with the same reference; the statement also opens the
   transaction), and read what earlier calls stored under the others;
2. lock every account the batch names, once, in id order;
3. decide each item in request order on those rows (wallet_svc.batch);
4. give back the references of refused items (a refused call stores nothing),
   store the posted items' transactions and postings (the triggers apply them
   to the balances, the constraints stand behind them) and their
   wallet.posted events, set-based (wallet_svc.batch_store, Outbox.enqueue_many);
5. read back the transactions that replayed items answer, and commit.

References before accounts, accounts in id order: the order every writer
takes its locks in, so batches and single calls never wait on each other in a
cycle.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh_runtime.outbox import Outbox, PendingEvent, trace_context
from wallet_svc import batch, batch_store, events, store
from wallet_svc.batch import Post, PostOutcome, Refuse, Replay
from wallet_svc.ledger import AccountKey, LedgerTransaction, PostRequest


async def post_all(
    engine: AsyncEngine, outbox: Outbox, ids: Mapping[AccountKey, uuid.UUID], requests: Sequence[PostRequest]
) -> list[PostOutcome]:
    """Posts `requests` as PostTransaction would one after another; `ids` resolves every account they name."""
    if not requests:
        return []
    fingerprints = [request.fingerprint() for request in requests]
    first: dict[str, str] = {}  # reference -> the fingerprint of its first item
    for request, fingerprint in zip(requests, fingerprints, strict=True):
        first.setdefault(request.reference, fingerprint)
    transaction_ids = {reference: uuid.uuid4() for reference in first}
    async with store.transaction(engine) as conn:
        claims = [(reference, fingerprint, transaction_ids[reference]) for reference, fingerprint in first.items()]
        claimed = await store.claim_postings(conn, claims)
        db = await store.driver_connection(conn)
        stored = await batch_store.stored_references(db, first.keys() - claimed)
        locked = await batch_store.lock_accounts(db, ids.values())
        decisions = batch.decide(requests, fingerprints, stored, ids, locked, transaction_ids)
        posts = [decision for decision in decisions if isinstance(decision, Post)]
        release, rewrite = batch.settle_claims(posts, {reference: first[reference] for reference in claimed})
        await batch_store.release_references(db, release)
        posted = await batch_store.insert_transactions(db, posts, rewrite)
        await outbox.enqueue_many(db, _posted_events(posts, posted), datetime.now(UTC))
        earlier = {d.transaction_id for d in decisions if isinstance(d, Replay)} - posted.keys()
        found = {**posted, **(await store.load_transactions(conn, earlier) if earlier else {})}
    return [_outcome(decision, found) for decision in decisions]


def _posted_events(posts: Sequence[Post], posted: Mapping[uuid.UUID, LedgerTransaction]) -> list[PendingEvent]:
    """A wallet.posted event per posting to a user's wallet, item by item, each in wallet id order
    (as PostTransaction enqueues them)."""
    context = trace_context()
    return [
        PendingEvent(
            events.TOPIC, events.wallet_posted(posting, planned.account.owner_id, planned.account.held), context
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
