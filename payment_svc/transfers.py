"""Automatic wallet-to-wallet payments, made in batches (group commit): the money path.

Concurrent CreatePayment calls, gathered by paymesh_runtime.group_commit, are
handled as one batch:
1. one transaction claims the batch's idempotency keys and creates the
   payments PENDING, leased to this replica, with their `transfer` step
   STARTED and their payment.created events;
2. one wallet_svc call (PostTransactions) posts every transfer, payer →
   payee with the reference `<payment id>:transfer`, in one database
   transaction of wallet_svc that judges each on its own;
3. one transaction records every result: PENDING → PROCESSING → SUCCEEDED
   for a posted transfer, PENDING → FAILED with the wallet's reason for a
   refused one, the step results, the events and each key's answer.
Every caller gets its own answer, and one caller's refusal (insufficient
funds, frozen wallet, reused key) neither fails nor delays the others.

A transfer without a definitive answer (wallet_svc down, a crash anywhere)
leaves its payment PENDING with the step STARTED: the recovery worker posts
it again with the same reference (saga/wallet_source.py), which the wallet
answers once. A payment is answered only after the commit that records it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from payment_svc import transfer_store, views
from payment_svc.events import TOPIC, observe, payment_event
from payment_svc.idempotency import Recorded, previous_answer
from payment_svc.lifecycle import PaymentState
from payment_svc.records import TransferIntent, Transition, moved
from payment_svc.saga.steps import dependency_unavailable, kill_this_process
from payment_svc.transfer_store import Finish
from payment_svc.wallet_client import (
    Posting,
    PostRequest,
    PostResult,
    WalletClient,
    WalletRefused,
    WalletUnavailable,
    wallet_account,
)
from paymesh.payment.v1 import payment_pb2
from paymesh.wallet.v1 import wallet_pb2
from paymesh_runtime.errors import PaymeshError
from paymesh_runtime.failures import DATABASE_FAILURES
from paymesh_runtime.group_commit import GroupCommit
from paymesh_runtime.outbox import Outbox, PendingEvent

log = logging.getLogger(__name__)

# What a caller gets: its payment (SUCCEEDED, or FAILED with the wallet's reason), the recorded answer of
# an earlier request with its key, or an error (a reused or busy key, no definitive answer yet).
TransferAnswer = payment_pb2.Payment | Recorded | PaymeshError

# The most transfers one PostTransactions call may carry (wallet_svc's limit).
MAX_BATCH = 1000


@dataclass(frozen=True)
class TransferConfig:
    owner: str  # this replica's lease owner id
    lease: timedelta
    key_retention: timedelta
    # A payment whose transfer got no definitive answer goes to the recovery worker after this.
    retry_after: timedelta
    max_batch: int = 200
    max_in_flight: int = 1  # PaymentSettings.batch_max_in_flight
    # TESTS ONLY: `batch:opened` or `batch:posted` SIGKILLs the process there (PAYMENT_CRASH_AFTER_STEP).
    crash_at: str = ""


class WalletTransfers:
    def __init__(
        self,
        pool: asyncpg.Pool,
        wallet: WalletClient,
        outbox: Outbox,
        config: TransferConfig,
        crash: Callable[[str], None] = kill_this_process,
    ) -> None:
        if not 1 <= config.max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch must be within 1..{MAX_BATCH}")
        self._pool = pool
        self._wallet = wallet
        self._outbox = outbox
        self._config = config
        self._crash = crash
        self._batches: GroupCommit[TransferIntent, TransferAnswer] = GroupCommit(
            self._handle, max_batch=config.max_batch, max_in_flight=config.max_in_flight, name="wallet_payments"
        )

    async def pay(self, intent: TransferIntent) -> TransferAnswer:
        return await self._batches.submit(intent)

    def _crash_at(self, point: str) -> None:
        if point == self._config.crash_at:
            self._crash(point)

    async def drain(self) -> None:
        """Finishes the batches under way (at shutdown, before the pool closes)."""
        await self._batches.drain()

    async def _handle(self, intents: Sequence[TransferIntent]) -> list[TransferAnswer]:
        try:
            async with self._pool.acquire() as conn:
                return await _Batch(conn, self._wallet, self._outbox, self._config, intents, self._crash_at).run()
        except DATABASE_FAILURES as error:
            # The database failed mid-batch: whatever was committed is finished by the recovery worker.
            log.warning("payment batch of %d interrupted by the database: %s", len(intents), type(error).__name__)
            unavailable = dependency_unavailable("the payments database")
            return [unavailable] * len(intents)


class _Batch:
    """One batch: its intents and, by position, the answer each caller gets."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        wallet: WalletClient,
        outbox: Outbox,
        config: TransferConfig,
        intents: Sequence[TransferIntent],
        crash_at: Callable[[str], None],
    ) -> None:
        self._conn = conn
        self._crash_at = crash_at
        self._wallet = wallet
        self._outbox = outbox
        self._config = config
        self.intents = intents
        self.answers: list[TransferAnswer | None] = [None] * len(intents)

    async def run(self) -> list[TransferAnswer]:
        fresh = self._first_use_of_each_key()
        created, opened_at = await self._open(self._conn, fresh)
        if created:
            self._crash_at("batch:opened")
            results = await self._post([self.intents[i] for i in created])
            self._crash_at("batch:posted")
            await self._close(self._conn, created, results, opened_at)
        answers = [answer for answer in self.answers if answer is not None]
        assert len(answers) == len(self.intents)
        return answers

    def _first_use_of_each_key(self) -> list[int]:
        """Positions of the intents that go on; a key used twice in the batch: the later one is answered
        like a request arriving while the first runs (IN_USE, or REUSED for another request)."""
        first: dict[tuple[str, str], TransferIntent] = {}
        fresh = []
        for index, intent in enumerate(self.intents):
            key = (intent.payer_id, intent.idempotency_key)
            earlier = first.setdefault(key, intent)
            if earlier is intent:
                fresh.append(index)
            else:
                self.answers[index] = _answer_for_used_key(intent, earlier.fingerprint, earlier.payment_id, done=None)
        return fresh

    async def _open(self, conn: asyncpg.Connection, fresh: list[int]) -> tuple[list[int], datetime]:
        """Stage 1, one statement: the payments whose key was free, their step and created events."""
        config = self._config
        at = datetime.now(UTC)
        intents = [self.intents[i] for i in fresh]
        events = [_event(intent, views.payment(intent.created(at), _created(at)), "") for intent in intents]
        opened = await transfer_store.open_transfers(
            conn,
            intents,
            self._outbox.rows(events, [1] * len(events), at),
            at=at,
            owner=config.owner,
            lease=config.lease,
            key_retention=config.key_retention,
        )
        created = [i for i in fresh if self.intents[i].payment_id in opened]
        for index, pending in zip(fresh, events, strict=True):
            if self.intents[index].payment_id in opened:
                observe(pending.event)  # metrics: the payment exists
        taken = [i for i in fresh if self.intents[i].payment_id not in opened]
        if taken:
            await self._answer_used_keys(conn, taken)
        return created, at

    async def _answer_used_keys(self, conn: asyncpg.Connection, taken: list[int]) -> None:
        stored = await transfer_store.stored_keys(
            conn, [(self.intents[i].payer_id, self.intents[i].idempotency_key) for i in taken]
        )
        for index in taken:
            intent = self.intents[index]
            found = stored.get((intent.payer_id, intent.idempotency_key))
            if found is None:  # pruned in between: rare enough to let the client retry
                self.answers[index] = dependency_unavailable("the payments database")
            else:
                self.answers[index] = _answer_for_used_key(
                    intent, found.fingerprint, found.resource_id, done=found.recorded
                )

    async def _post(self, intents: list[TransferIntent]) -> list[PostResult]:
        """The batch's transfers in one wallet_svc call; without a definitive answer, each is unknown."""
        requests = [
            PostRequest(
                intent.reference,
                [
                    Posting(wallet_account(intent.source_wallet_id), -intent.amount),
                    Posting(wallet_account(intent.destination_wallet_id), intent.amount),
                ],
                str(intent.payment_id),
                f"payment {intent.payment_id}",
                intent.trace_context,
            )
            for intent in intents
        ]
        try:
            return await self._wallet.post_many(requests)
        except WalletUnavailable as unavailable:
            return [unavailable] * len(intents)
        except WalletRefused as refused:
            # The call as a whole was refused: a bug of ours, not an answer about any payment.
            log.error("wallet_svc refused a batch of %d transfers: %s", len(intents), refused)
            return [WalletUnavailable(str(refused))] * len(intents)

    async def _close(
        self, conn: asyncpg.Connection, created: list[int], results: list[PostResult], opened_at: datetime
    ) -> None:
        """Stage 2, one call: every definitive result with its events and answer; the rest to the
        recovery worker."""
        at = datetime.now(UTC)
        ends: dict[int, Finish] = {}
        messages: dict[int, payment_pb2.Payment] = {}
        events: list[PendingEvent] = []
        sequences: list[int] = []
        unknown: list[int] = []
        for index, result in zip(created, results, strict=True):
            intent = self.intents[index]
            if isinstance(result, wallet_pb2.LedgerTransaction):
                posted, ref, code, message = True, str(result.transaction_id), "", ""
            elif isinstance(result, WalletRefused):
                posted, ref, code, message = False, "", result.failure_code, result.message
            else:
                unknown.append(index)
                continue
            messages[index] = _finish(intent, posted, code, message, opened_at, at, events, sequences)
            answer = messages[index].SerializeToString()
            ends[index] = Finish(
                intent.payment_id, intent.payer_id, intent.idempotency_key, posted, ref, answer, code, message
            )
        config = self._config
        finished = await transfer_store.finish_transfers(
            conn,
            list(ends.values()),
            self._outbox.rows(events, sequences, at),
            sequences,
            [self.intents[i].payment_id for i in unknown],
            at=at,
            owner=config.owner,
            retry_after=config.retry_after,
        )
        for pending in events:
            if uuid.UUID(pending.event.aggregate_id) in finished:
                observe(pending.event)  # metrics: the payment's changes are recorded
        for index, end in ends.items():
            # Not finished: another replica took the payment over (this batch outlived the lease); it answers.
            lapsed = dependency_unavailable("this replica's lease lapsed; another replica")
            self.answers[index] = messages[index] if end.payment_id in finished else lapsed
        for index in unknown:
            self.answers[index] = dependency_unavailable("wallet_svc")


def _finish(
    intent: TransferIntent,
    posted: bool,
    failure_code: str,
    failure_message: str,
    opened_at: datetime,
    at: datetime,
    events: list[PendingEvent],
    sequences: list[int],
) -> payment_pb2.Payment:
    """The payment's events up to its final state at `at` (appended, with their sequence numbers after
    the created event's 1); returns its final message."""
    history = _created(opened_at)
    payment = intent.created(opened_at)
    if posted:
        history += (Transition("PENDING", "PROCESSING", "transfer_posted", at),)
        payment = moved(payment, PaymentState.PROCESSING, at)
        events.append(_event(intent, views.payment(payment, history), "PENDING"))
        history += (Transition("PROCESSING", "SUCCEEDED", "captured", at),)
        payment = moved(payment, PaymentState.SUCCEEDED, at, amount_captured=intent.amount.amount)
        previous = "PROCESSING"
    else:
        history += (Transition("PENDING", "FAILED", failure_code, at),)
        payment = moved(payment, PaymentState.FAILED, at, failure_code=failure_code, failure_message=failure_message)
        previous = "PENDING"
    message = views.payment(payment, history)
    events.append(_event(intent, message, previous))
    sequences.extend(range(2, 2 + len(history) - 1))
    return message


def _event(intent: TransferIntent, message: payment_pb2.Payment, previous_state: str) -> PendingEvent:
    return PendingEvent(TOPIC, payment_event(message, previous_state), intent.trace_context)


def _created(now: datetime) -> tuple[Transition, ...]:
    return (Transition("", "PENDING", "created", now),)


def _answer_for_used_key(
    intent: TransferIntent, fingerprint: bytes, resource_id: uuid.UUID, *, done: Recorded | None
) -> TransferAnswer:
    try:
        return previous_answer(
            intent.idempotency_key, intent.fingerprint, stored_fingerprint=fingerprint, resource_id=resource_id,
            done=done,
        )  # fmt: skip
    except PaymeshError as error:
        return error
