"""PostTransactions' unit of work: a whole batch in one database transaction, in two round trips.

1. one statement (batch_store.read_batch) reads, without a lock, every
   account the batch names with its last outbox sequence, what earlier calls
   stored under the batch's references, and reserves the postings' numbers;
2. each item is decided in request order on those rows (wallet_svc.batch),
   and its postings and wallet.posted events are built as they will be stored;
3. one call (post_wallet_batch_if_unmoved), a transaction of its own, claims
   the references the read found free, locks the accounts and their
   sequences, and, if every one is as read (so every decision is what it
   would be under the locks), gives back the references of refused items (a
   refused call stores nothing), stores the posted items' transactions and
   postings (the triggers apply them to the balances and must arrive at the
   balances decided, the constraints stand behind them) and their events;
4. then the transactions that replayed items answer are read.

If anything moved between 1 and 3 (another batch or a single call wrote to
one of the accounts, or claimed one of the references), nothing was stored
and the batch is decided again under locks, in four round trips: BEGIN; one
statement (batch_store.open_batch) that claims every reference of the
batch, in reference order, as PostTransaction claims its one (waiting for a
call in flight with the same reference), locks every account, once, in id
order, reads their outbox sequences and reserves the postings' numbers; the
decisions; post_wallet_batch; COMMIT.

References before accounts, accounts in id order: the order every writer
takes its locks in, so batches and single calls never wait on each other in a
cycle.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import asyncpg
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from paymesh_runtime.outbox import Outbox, OutboxRows, PendingEvent, trace_context
from wallet_svc import batch, batch_store, events, store
from wallet_svc.batch import Post, PostOutcome, Refuse, Replay
from wallet_svc.ledger import Account, AccountKey, LedgerTransaction, PostRequest, StoredReference

MOVED = Counter(
    "paymesh_wallet_batch_moved_total",
    "Batches of postings whose accounts or references moved between their read and their write,"
    " decided again under locks.",
)


@dataclass(frozen=True)
class _Plan:
    """A batch decided on what it read: what to write, and each item's decision."""

    decisions: list[batch.Decision]
    release: list[str]
    rewrite: list[Post]
    at: datetime
    posted: dict[uuid.UUID, LedgerTransaction]
    events: OutboxRows
    sequences: list[int]


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

    def plan(
        stored: Mapping[str, StoredReference],
        accounts: Mapping[uuid.UUID, Account],
        claimed: Collection[str],
        last_sequences: Mapping[str, int],
        posting_numbers: Sequence[int],
    ) -> _Plan:
        decisions = batch.decide(requests, fingerprints, stored, ids, accounts, transaction_ids)
        posts = [decision for decision in decisions if isinstance(decision, Post)]
        release, rewrite = batch.settle_claims(posts, {reference: first[reference] for reference in claimed})
        at = datetime.now(UTC)
        posted = batch_store.planned_transactions(posts, posting_numbers, at)
        pending = _posted_events(posts, posted)
        sequences = _sequences(pending, last_sequences)
        return _Plan(decisions, release, rewrite, at, posted, outbox.rows(pending, sequences, at), sequences)

    done: _Plan | None = None
    async with pool.acquire() as db:
        read = await batch_store.read_batch(db, first.keys(), ids.values(), legs)
        free = [reference for reference in first if reference not in read.stored]
        planned = plan(read.stored, read.accounts, free, read.last_sequences, read.posting_numbers)
        claims = [(reference, first[reference], transaction_ids[reference]) for reference in free]
        try:
            posted = await batch_store.write_batch_if_unmoved(
                db, read, ids.values(), claims, planned.at, planned.release, planned.rewrite, planned.posted,
                planned.events, planned.sequences,
            )  # fmt: skip
            done = replace(planned, posted=posted)
        except batch_store.BatchMoved:
            MOVED.inc()
    if done is None:
        async with pool.acquire() as db, db.transaction():
            claims = [(reference, fingerprint, transaction_ids[reference]) for reference, fingerprint in first.items()]
            opened = await batch_store.open_batch(db, claims, ids.values(), legs)
            stored = await batch_store.stored_references(db, first.keys() - opened.claimed)
            done = plan(stored, opened.locked, opened.claimed, opened.last_sequences, opened.posting_numbers)
            await batch_store.write_batch(
                db, done.at, done.release, done.rewrite, done.posted, done.events, done.sequences
            )
    posted = done.posted
    earlier = {d.transaction_id for d in done.decisions if isinstance(d, Replay)} - posted.keys()
    if earlier:  # committed by earlier calls: read after this transaction, on the cold path
        async with engine.connect() as conn:
            posted = {**posted, **await store.load_transactions(conn, earlier)}
    return [_outcome(decision, posted) for decision in done.decisions]


def _sequences(pending: Sequence[PendingEvent], last: Mapping[str, int]) -> list[int]:
    """Each event's number in its wallet's sequence, after the last one read under the account's lock."""
    counts: collections.Counter[str] = collections.Counter()
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
