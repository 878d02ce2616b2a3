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
from datetime import datetime, timedelta

import asyncpg

from payment_svc import transfer_store, views
from payment_svc.events import TOPIC, payment_event
from payment_svc.idempotency import OK, Recorded, previous_answer
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
    max_in_flight: int = 2
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
            self._handle, max_batch=config.max_batch, max_in_flight=config.max_in_flight
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
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
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
        """Transaction 1: the payments whose key was free, their step and their created events."""
        config = self._config
        async with conn.transaction():
            opened = await transfer_store.open_transfers(
                conn,
                [self.intents[i] for i in fresh],
                owner=config.owner,
                lease=config.lease,
                key_retention=config.key_retention,
            )
            created = [i for i in fresh if self.intents[i].payment_id in opened.created]
            events = [
                _event(self.intents[i], views.payment(self.intents[i].created(opened.now), _created(opened.now)), "")
                for i in created
            ]
            await self._outbox.enqueue_many(conn, events, opened.now)
        taken = [i for i in fresh if self.intents[i].payment_id not in opened.created]
        if taken:
            await self._answer_used_keys(conn, taken)
        return created, opened.now

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
        """Transaction 2: every definitive result, its events and its answer; the rest to the recovery worker."""
        ends: dict[int, Finish] = {}
        unknown: list[int] = []
        for index, result in zip(created, results, strict=True):
            intent = self.intents[index]
            if isinstance(result, wallet_pb2.LedgerTransaction):
                ends[index] = Finish(
                    intent.payment_id, "PROCESSING", "SUCCEEDED", "captured", intent.amount.amount, "DONE",
                    result.transaction_id,
                )  # fmt: skip
            elif isinstance(result, WalletRefused):
                ends[index] = Finish(
                    intent.payment_id, "PENDING", "FAILED", result.failure_code, 0, "FAILED", "",
                    result.failure_code, result.message,
                )  # fmt: skip
            else:
                unknown.append(index)
        config = self._config
        async with conn.transaction():
            transferred = [ends[i].payment_id for i in ends if ends[i].state == "SUCCEEDED"]
            still_ours = await transfer_store.move_to_processing(conn, transferred, config.owner)
            finishing = [e for e in ends.values() if e.from_state == "PENDING" or e.payment_id in still_ours]
            finished, now = await transfer_store.finish(conn, finishing, config.owner)
            events: list[PendingEvent] = []
            recorded: list[tuple[Finish, Recorded]] = []
            for index, end in ends.items():
                if end.payment_id not in finished:
                    # Another replica took the payment over (this batch outlived the lease): it answers.
                    self.answers[index] = dependency_unavailable("this replica's lease lapsed; another replica")
                    continue
                assert now is not None
                message = self._finish(self.intents[index], end, opened_at, now, events)
                self.answers[index] = message
                recorded.append((end, Recorded(OK, message.SerializeToString())))
            await transfer_store.record(conn, [end for end, _ in recorded], [answer for _, answer in recorded])
            if now is not None:
                await self._outbox.enqueue_many(conn, events, now)
            if unknown:
                ids = [self.intents[i].payment_id for i in unknown]
                await transfer_store.release(conn, ids, config.owner, config.retry_after)
        for index in unknown:
            self.answers[index] = dependency_unavailable("wallet_svc")

    def _finish(
        self, intent: TransferIntent, end: Finish, opened_at: datetime, now: datetime, events: list[PendingEvent]
    ) -> payment_pb2.Payment:
        """The payment's events up to its final state (appended to `events`); returns its final message."""
        history = _created(opened_at)
        payment = intent.created(opened_at)
        if end.state == "SUCCEEDED":
            history += (Transition("PENDING", "PROCESSING", "transfer_posted", now),)
            payment = moved(payment, PaymentState.PROCESSING, now)
            events.append(_event(intent, views.payment(payment, history), "PENDING"))
            history += (Transition("PROCESSING", "SUCCEEDED", end.reason, now),)
            payment = moved(payment, PaymentState.SUCCEEDED, now, amount_captured=end.captured)
            previous = "PROCESSING"
        else:
            history += (Transition("PENDING", "FAILED", end.reason, now),)
            payment = moved(
                payment, PaymentState.FAILED, now, failure_code=end.failure_code, failure_message=end.failure_message
            )
            previous = "PENDING"
        message = views.payment(payment, history)
        events.append(_event(intent, message, previous))
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
