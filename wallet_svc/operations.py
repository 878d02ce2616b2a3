"""The ledger's use cases, each exactly one short database transaction.

Every mutating call follows the same steps inside its transaction:
1. claim the idempotency reference (or replay what the reference produced);
   the public wallet calls do so only when they come with an Idempotency-Key;
2. lock what it changes: the hold first, then the accounts in id order;
3. check the rules (wallet_svc.ledger) on the locked rows;
4. write: the triggers apply postings and holds to the balances, the
   constraints reject anything that must never be stored;
5. enqueue the events in the outbox;
and commits, so that the reference, the effect and its events are one unit.

Postings follow the same steps for a whole batch at once
(wallet_svc.batch_operations): PostTransactions is a batch, and single
PostTransaction calls in flight are gathered into batches (group commit), so
the account every card payment, refund and payout posts to is locked once
per batch rather than once per call.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paymesh.events.v1 import events_pb2
from paymesh_runtime.errors import AlreadyExists, not_found
from paymesh_runtime.group_commit import GroupCommit
from paymesh_runtime.outbox import Outbox, trace_context
from wallet_svc import batch_operations, events, ledger, store
from wallet_svc.batch import MAX_TRANSACTIONS, PostOutcome
from wallet_svc.ledger import (
    Account,
    AccountKey,
    AccountState,
    Hold,
    HoldState,
    IdempotencyKey,
    LedgerTransaction,
    Operation,
    Posting,
    WalletRef,
    WalletResult,
)


@dataclass(frozen=True)
class HoldPolicy:
    default_ttl_seconds: int
    max_ttl_seconds: int


class Ledger:
    """The wallet service's unit-of-work layer over the store."""

    def __init__(self, engine: AsyncEngine, pool: asyncpg.Pool, outbox: Outbox, policy: HoldPolicy) -> None:
        """`pool`: plain asyncpg connections for the batched postings (batch_operations)."""
        self._engine = engine
        self._pool = pool
        self._outbox = outbox
        self._policy = policy
        self._system = store.SystemAccounts(engine)
        self._single_posts = GroupCommit(self.post_all, max_batch=MAX_TRANSACTIONS, name="wallet_post")

    # --- wallets ---------------------------------------------------------------------

    async def create_wallet(self, owner_id: str, currency: str, key: IdempotencyKey | None = None) -> WalletResult:
        wallet_id = uuid.uuid4()
        async with store.transaction(self._engine) as conn:
            if key is not None and (replayed := await self._claim(conn, key, wallet_id)):
                return replayed
            account = await store.insert_wallet(conn, wallet_id, owner_id, currency)
            if account is None:
                existing = await store.open_wallet_of(conn, owner_id, currency)
                raise AlreadyExists(
                    "WALLET_ALREADY_EXISTS",
                    f"the caller already has a {currency} wallet",
                    metadata={"currency": currency, "wallet_id": str(existing.id) if existing else ""},
                )
            await self._enqueue(conn, [events.wallet_changed(events.CREATED, account)])
        return WalletResult(account)

    async def get_wallet(self, wallet_id: uuid.UUID) -> Account | None:
        async with self._engine.connect() as conn:
            return await store.get_account(conn, wallet_id)

    async def list_wallets(self, owner_id: str, after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[Account]:
        async with self._engine.connect() as conn:
            return await store.list_wallets(conn, owner_id, after, limit)

    async def list_entries(self, wallet_id: uuid.UUID, before_seq: int | None, limit: int) -> list[Posting]:
        async with self._engine.connect() as conn:
            return await store.list_postings(conn, wallet_id, before_seq, limit)

    async def set_frozen(
        self, wallet_id: uuid.UUID, freeze: bool, reason: str, key: IdempotencyKey | None = None
    ) -> WalletResult:
        async with store.transaction(self._engine) as conn:
            if key is not None and (replayed := await self._claim(conn, key, wallet_id)):
                return replayed
            account = await self._lock_one(conn, wallet_id)
            target = ledger.frozen_state(account, freeze)
            if target is None:
                return WalletResult(account)
            account = await store.set_state(conn, wallet_id, target, reason)
            await self._enqueue(
                conn, [events.wallet_changed(events.FROZEN if freeze else events.UNFROZEN, account, reason)]
            )
        return WalletResult(account)

    async def close_wallet(
        self, wallet_id: uuid.UUID, by_admin: bool, key: IdempotencyKey | None = None
    ) -> WalletResult:
        async with store.transaction(self._engine) as conn:
            if key is not None and (replayed := await self._claim(conn, key, wallet_id)):
                return replayed
            account = await self._lock_one(conn, wallet_id)
            if not ledger.check_close(account, by_admin):
                return WalletResult(account)
            account = await store.set_state(conn, wallet_id, AccountState.CLOSED, "")
            await self._enqueue(conn, [events.wallet_changed(events.CLOSED, account)])
        return WalletResult(account)

    # --- postings ----------------------------------------------------------------------

    async def post(self, request: ledger.PostRequest) -> LedgerTransaction:
        """PostTransaction, gathered with the calls in flight into batches (post_all): the account every card
        payment, refund and payout posts to (the settlement account) is written once per batch, not once per
        call, and each call is judged exactly as alone, after the ones before it in its batch."""
        if not request.trace_context:  # its events belong to this call's trace, not to its batch's
            request = replace(request, trace_context=trace_context())
        outcome = await self._single_posts.submit(request)
        if outcome.error is not None:
            raise outcome.error
        assert outcome.transaction is not None
        return outcome.transaction

    async def post_all(self, requests: Sequence[ledger.PostRequest]) -> list[PostOutcome]:
        """PostTransaction for each request, judged in order, in one database transaction."""
        ids = await self._resolve({leg.account for request in requests for leg in request.legs})
        return await batch_operations.post_all(self._pool, self._engine, self._outbox, ids, requests)

    # --- holds ---------------------------------------------------------------------------

    async def get_hold(self, hold_id: uuid.UUID) -> Hold | None:
        async with self._engine.connect() as conn:
            return await store.get_hold(conn, hold_id)

    async def create_hold(self, request: ledger.HoldRequest) -> Hold:
        ttl = ledger.hold_ttl(request.ttl_seconds, self._policy.default_ttl_seconds, self._policy.max_ttl_seconds)
        hold_id = uuid.uuid4()
        async with store.transaction(self._engine) as conn:
            stored = await store.claim_reference(
                conn, request.reference, Operation.CREATE_HOLD, request.fingerprint(), hold_id=hold_id
            )
            if stored is not None:
                ledger.check_replay(request.reference, stored, Operation.CREATE_HOLD, request.fingerprint())
                return await self._stored_hold(conn, stored)
            account = await self._lock_one(conn, request.wallet_id)
            ledger.check_hold(account, request.amount)
            return await store.insert_hold(conn, hold_id, request, ttl)

    async def capture_hold(self, request: ledger.CaptureRequest) -> tuple[Hold, LedgerTransaction]:
        destination_ids = await self._resolve([request.destination])
        transaction_id = uuid.uuid4()
        async with store.transaction(self._engine) as conn:
            stored = await store.claim_reference(
                conn,
                request.reference,
                Operation.CAPTURE_HOLD,
                request.fingerprint(),
                hold_id=request.hold_id,
                transaction_id=transaction_id,
            )
            if stored is not None:
                ledger.check_replay(request.reference, stored, Operation.CAPTURE_HOLD, request.fingerprint())
                assert stored.transaction_id is not None
                return await self._stored_hold(conn, stored), await store.load_transaction(conn, stored.transaction_id)
            hold, now = await self._lock_hold(conn, request.hold_id)
            ledger.check_capture(request, hold, now)
            source = WalletRef(hold.wallet_id)
            locked = await self._lock_all(conn, {source: hold.wallet_id, **destination_ids})
            ledger.check_debit(locked[source], request.amount, released=hold.amount.amount)
            ledger.check_credit(locked[request.destination], request.amount)
            # Release first, then post: the wallet's available never dips below zero in between.
            hold = await store.finish_hold(conn, hold.id, HoldState.CAPTURED, request.amount.amount, transaction_id)
            legs = [store.ResolvedLeg(locked[leg.account], leg.amount) for leg in ledger.capture_legs(request, hold)]
            tx = await store.insert_transaction(conn, transaction_id, request, hold.payment_id, legs)
            released = {hold.wallet_id: locked[source].held - hold.amount.amount}
            await self._enqueue_postings(conn, tx, locked.values(), released)
        return hold, tx

    async def release_hold(self, request: ledger.ReleaseRequest) -> Hold:
        async with store.transaction(self._engine) as conn:
            stored = await store.claim_reference(
                conn, request.reference, Operation.RELEASE_HOLD, request.fingerprint(), hold_id=request.hold_id
            )
            if stored is not None:
                ledger.check_replay(request.reference, stored, Operation.RELEASE_HOLD, request.fingerprint())
                return await self._stored_hold(conn, stored)
            hold, _ = await self._lock_hold(conn, request.hold_id)
            if hold.state is not HoldState.OPEN:
                raise ledger.hold_not_open(hold)
            await self._lock_one(conn, hold.wallet_id)
            return await store.finish_hold(conn, hold.id, HoldState.RELEASED)

    # --- helpers -------------------------------------------------------------------------

    async def _claim(self, conn: AsyncConnection, key: IdempotencyKey, wallet_id: uuid.UUID) -> WalletResult | None:
        """Claims a public call's Idempotency-Key for `wallet_id` (None: go on), or replays the
        earlier call: the wallet as it is now, with no second effect."""
        stored = await store.claim_reference(conn, key.reference, key.operation, key.fingerprint, wallet_id=wallet_id)
        if stored is None:
            return None
        ledger.check_replay(key.key, stored, key.operation, key.fingerprint)
        assert stored.wallet_id is not None
        account = await store.get_account(conn, stored.wallet_id)
        assert account is not None  # accounts are never deleted
        return WalletResult(account, replayed=True)

    async def _resolve(self, keys: Iterable[AccountKey]) -> dict[AccountKey, uuid.UUID]:
        """Account ids of the keys; system accounts are created on first use (committed apart)."""
        resolved: dict[AccountKey, uuid.UUID] = {}
        for key in keys:
            resolved[key] = key.wallet_id if isinstance(key, WalletRef) else await self._system.id_of(key)
        return resolved

    async def _lock_all(self, conn: AsyncConnection, ids: Mapping[AccountKey, uuid.UUID]) -> dict[AccountKey, Account]:
        return ledger.accounts_by_key(ids, await store.lock_accounts(conn, ids.values()))

    async def _lock_one(self, conn: AsyncConnection, wallet_id: uuid.UUID) -> Account:
        key = WalletRef(wallet_id)
        return (await self._lock_all(conn, {key: wallet_id}))[key]

    async def _lock_hold(self, conn: AsyncConnection, hold_id: uuid.UUID) -> tuple[Hold, datetime]:
        found = await store.lock_hold(conn, hold_id)
        if found is None:
            raise not_found("hold", str(hold_id))
        return found

    async def _stored_hold(self, conn: AsyncConnection, stored: ledger.StoredReference) -> Hold:
        assert stored.hold_id is not None
        hold = await store.get_hold(conn, stored.hold_id)
        assert hold is not None
        return hold

    async def _enqueue_postings(
        self,
        conn: AsyncConnection,
        tx: LedgerTransaction,
        accounts: Iterable[Account],
        held_after: Mapping[uuid.UUID, int],
    ) -> None:
        """A wallet.posted event per posting to a user's wallet, in wallet id order."""
        owners = {account.id: account for account in accounts if account.owner_id is not None}
        await self._enqueue(
            conn,
            [
                events.wallet_posted(
                    posting,
                    owners[posting.account_id].owner_id or "",
                    held_after.get(posting.account_id, owners[posting.account_id].held),
                )
                for posting in sorted(tx.postings, key=lambda p: p.account_id)
                if posting.account_id in owners
            ],
        )

    async def _enqueue(self, conn: AsyncConnection, batch: Iterable[events_pb2.Event]) -> None:
        for event in batch:
            await self._outbox.enqueue(conn, topic=events.TOPIC, event=event)
