"""Hypothesis stateful test: random concurrent ledger traffic never breaks an invariant.

Each step runs 16-32 operations at once (credits, debits, transfers, holds,
captures, releases, freezes, retries of earlier calls with their reference,
the same new call twice at once) against the real PostgreSQL through the
ledger's unit-of-work layer. A model follows only what succeeded. After every
step the database must show:
- the postings of every currency sum to zero;
- no customer wallet has a negative available balance;
- every account's posted and held equal the sums recomputed from its
  postings and open holds, and every balance_after is a running sum;
- the machine's wallets hold exactly what the model says, which fails if an
  idempotent retry or a duplicate call ever took effect twice.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.stack import Stack
from paymesh_runtime.db import create_engine
from paymesh_runtime.errors import PaymeshError
from paymesh_runtime.money import Money
from paymesh_runtime.outbox import Outbox
from tests.integration.wallet_support import migrate, settings_for
from wallet_svc import ledger, store
from wallet_svc.ledger import SystemAccount, SystemRef, WalletRef
from wallet_svc.operations import HoldPolicy, Ledger

pytestmark = pytest.mark.integration

T = TypeVar("T")
WALLETS = 4
EXPECTED_FAILURES = {"INSUFFICIENT_FUNDS", "WALLET_FROZEN", "HOLD_NOT_OPEN"}
SETTLEMENT = SystemRef(SystemAccount.EXTERNAL_SETTLEMENT, "USD")
FEES = SystemRef(SystemAccount.FEES, "USD")


class LoopThread:
    """An event loop of its own in a thread: Hypothesis drives the machine synchronously."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, work: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await work

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout=300)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


@dataclass
class Harness:
    runner: LoopThread
    engine: AsyncEngine
    ledger: Ledger


@pytest.fixture(scope="module")
def harness(infra: Stack) -> Iterator[Harness]:
    runner = LoopThread()
    runner.run(migrate(infra))
    wallet_settings = settings_for(infra, database_pool_size=40)

    async def start() -> tuple[AsyncEngine, Ledger]:
        engine = create_engine(wallet_settings)
        outbox = Outbox(store.outbox, store.outbox_sequence, "wallet_svc")
        return engine, Ledger(engine, outbox, HoldPolicy(3600, 86_400))

    engine, ledger_ = runner.run(start())
    try:
        yield Harness(runner, engine, ledger_)
    finally:
        runner.run(engine.dispose())
        runner.close()


def usd(amount: int) -> Money:
    return Money("USD", amount)


def ref() -> str:
    return f"prop-{uuid.uuid4()}"


wallet_index = st.integers(0, WALLETS - 1)
pick = st.integers(0, 10_000)
operation = st.one_of(
    st.tuples(st.just("credit"), wallet_index, st.integers(1, 400)),
    st.tuples(st.just("debit"), wallet_index, st.integers(1, 400)),
    st.tuples(st.just("transfer"), wallet_index, wallet_index, st.integers(1, 300)),
    st.tuples(st.just("hold"), wallet_index, st.integers(1, 300)),
    st.tuples(st.just("capture"), pick, st.integers(1, 100), st.integers(0, WALLETS)),
    st.tuples(st.just("release"), pick),
    st.tuples(st.just("freeze"), wallet_index, st.booleans()),
    st.tuples(st.just("retry"), pick),
    st.tuples(st.just("twice"), wallet_index, st.integers(1, 400)),
)


@dataclass
class Done:
    """A call that succeeded, kept for retries: the request and the ids it produced."""

    kind: str
    request: Any
    result: tuple[uuid.UUID, ...]


@dataclass
class Model:
    posted: dict[uuid.UUID, int] = field(default_factory=dict)
    open_holds: dict[uuid.UUID, tuple[uuid.UUID, int]] = field(default_factory=dict)
    done: list[Done] = field(default_factory=list)


def ledger_test_machine(h: Harness) -> type[RuleBasedStateMachine]:
    class LedgerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.model = Model()
            self.wallets: list[uuid.UUID] = h.runner.run(self._open_wallets())
            for wallet_id in self.wallets:
                self.model.posted[wallet_id] = 500

        async def _open_wallets(self) -> list[uuid.UUID]:
            opened = []
            for _ in range(WALLETS):
                account = await h.ledger.create_wallet(f"prop-{uuid.uuid4()}", "USD")
                await h.ledger.post(
                    ledger.PostRequest(ref(), self._move(SETTLEMENT, WalletRef(account.id), 500), "", "")
                )
                opened.append(account.id)
            return opened

        @staticmethod
        def _move(source: ledger.AccountKey, destination: ledger.AccountKey, amount: int) -> tuple[ledger.Leg, ...]:
            return (ledger.Leg(source, usd(-amount)), ledger.Leg(destination, usd(amount)))

        # --- one step: many operations at once -------------------------------------------

        @rule(ops=st.lists(operation, min_size=16, max_size=32))
        def concurrent_operations(self, ops: list[tuple[Any, ...]]) -> None:
            holds = sorted(self.model.open_holds)
            done = list(self.model.done)
            calls = [self._call(op, holds, done) for op in ops]
            outcomes = h.runner.run(self._attempt_all(calls))
            for call, result in zip(calls, outcomes, strict=True):
                self._apply(call, result)

        def _call(self, op: tuple[Any, ...], holds: list[uuid.UUID], done: list[Done]) -> tuple[str, Any, Any]:
            kind, *args = op
            w = self.wallets
            if kind == "credit":
                return (
                    "post",
                    ledger.PostRequest(ref(), self._move(SETTLEMENT, WalletRef(w[args[0]]), args[1]), "", ""),
                    None,
                )
            if kind == "debit":
                return "post", ledger.PostRequest(ref(), self._move(WalletRef(w[args[0]]), FEES, args[1]), "", ""), None
            if kind == "transfer" and args[0] != args[1]:
                legs = self._move(WalletRef(w[args[0]]), WalletRef(w[args[1]]), args[2])
                return "post", ledger.PostRequest(ref(), legs, "", ""), None
            if kind == "hold":
                return "hold", ledger.HoldRequest(ref(), w[args[0]], usd(args[1]), "", 0), None
            if kind in ("capture", "release") and holds:
                hold_id = holds[args[0] % len(holds)]
                if kind == "release":
                    return "release", ledger.ReleaseRequest(ref(), hold_id), None
                held = self.model.open_holds[hold_id][1]
                destination = FEES if args[2] == WALLETS else WalletRef(w[args[2]])
                if destination == WalletRef(self.model.open_holds[hold_id][0]):
                    destination = SETTLEMENT
                amount = max(1, held * args[1] // 100)
                return "capture", ledger.CaptureRequest(ref(), hold_id, usd(amount), destination, ""), None
            if kind == "freeze":
                return "freeze", (w[args[0]], args[1]), None
            if kind == "retry" and done:
                earlier = done[args[0] % len(done)]
                return earlier.kind, earlier.request, earlier
            if kind == "twice":
                request = ledger.PostRequest(ref(), self._move(SETTLEMENT, WalletRef(w[args[0]]), args[1]), "", "")
                return "twice", request, None
            return "skip", None, None

        async def _attempt_all(self, calls: list[tuple[str, Any, Any]]) -> list[tuple[uuid.UUID, ...] | str]:
            return list(await asyncio.gather(*(self._attempt(call) for call in calls)))

        async def _attempt(self, call: tuple[str, Any, Any]) -> tuple[uuid.UUID, ...] | str:
            kind, request, _ = call
            try:
                if kind == "post":
                    return ((await h.ledger.post(request)).id,)
                if kind == "twice":
                    first, second = await asyncio.gather(h.ledger.post(request), h.ledger.post(request))
                    assert first.id == second.id, "two calls with one reference made two transactions"
                    return (first.id,)
                if kind == "hold":
                    return ((await h.ledger.create_hold(request)).id,)
                if kind == "capture":
                    hold, tx = await h.ledger.capture_hold(request)
                    return (hold.id, tx.id)
                if kind == "release":
                    return ((await h.ledger.release_hold(request)).id,)
                if kind == "freeze":
                    wallet_id, freeze = request
                    await h.ledger.set_frozen(wallet_id, freeze, "property test")
                return ()
            except PaymeshError as error:
                return error.reason

        def _apply(self, call: tuple[str, Any, Any], result: tuple[uuid.UUID, ...] | str) -> None:
            kind, request, retried = call
            if isinstance(result, str):
                assert result in EXPECTED_FAILURES, f"{kind} failed with {result}"
                assert retried is None, f"a retry of a successful {kind} failed with {result}"
                return
            if retried is not None:
                assert result == retried.result, f"a retried {kind} returned another result"
                return
            if kind in ("post", "twice"):
                for leg in request.legs:
                    if isinstance(leg.account, WalletRef):
                        self.model.posted[leg.account.wallet_id] += leg.amount.amount
            elif kind == "hold":
                self.model.open_holds[result[0]] = (request.wallet_id, request.amount.amount)
            elif kind in ("capture", "release"):
                assert request.hold_id in self.model.open_holds, "a hold left OPEN twice"
                wallet_id, _ = self.model.open_holds.pop(request.hold_id)
                if kind == "capture":
                    self.model.posted[wallet_id] -= request.amount.amount
                    if isinstance(request.destination, WalletRef):
                        self.model.posted[request.destination.wallet_id] += request.amount.amount
            if kind in ("post", "twice", "hold", "capture", "release"):
                self.model.done.append(Done("post" if kind == "twice" else kind, request, result))

        # --- invariants ----------------------------------------------------------------------

        @invariant()
        def ledger_is_consistent(self) -> None:
            h.runner.run(self._check())

        async def _check(self) -> None:
            async with h.engine.connect() as conn:
                sums = (await conn.execute(text("SELECT currency, sum(amount) FROM postings GROUP BY currency"))).all()
                assert all(total == 0 for _, total in sums), sums
                negative = await conn.scalar(
                    text("SELECT count(*) FROM accounts WHERE system_account IS NULL AND posted - held < 0")
                )
                assert negative == 0
                drift = (await conn.execute(text(DRIFT))).all()
                assert drift == [], drift
                running = await conn.scalar(text(RUNNING_SUMS), {"ids": self.wallets})
                assert running == 0
                rows = (
                    await conn.execute(
                        text("SELECT id, posted, held FROM accounts WHERE id = ANY(:ids)"), {"ids": self.wallets}
                    )
                ).all()
            held: dict[uuid.UUID, int] = dict.fromkeys(self.wallets, 0)
            for wallet_id, amount in self.model.open_holds.values():
                held[wallet_id] += amount
            assert {row.id: (row.posted, row.held) for row in rows} == {
                wallet_id: (self.model.posted[wallet_id], held[wallet_id]) for wallet_id in self.wallets
            }

    return LedgerMachine


# Every account's balances recomputed from scratch; any row returned is a drift.
DRIFT = """
SELECT a.id, a.posted, a.held, p.total, h.total
  FROM accounts a
  LEFT JOIN (SELECT account_id, sum(amount) AS total FROM postings GROUP BY account_id) p ON p.account_id = a.id
  LEFT JOIN (SELECT wallet_id, sum(amount) AS total FROM holds WHERE state = 'OPEN' GROUP BY wallet_id) h
         ON h.wallet_id = a.id
 WHERE a.posted <> coalesce(p.total, 0) OR a.held <> coalesce(h.total, 0)
"""
RUNNING_SUMS = """
SELECT count(*) FROM (
  SELECT balance_after, sum(amount) OVER (PARTITION BY account_id ORDER BY seq) AS running
    FROM postings WHERE account_id = ANY(:ids)
) t WHERE balance_after <> running
"""


def test_random_concurrent_ledger_traffic_keeps_every_invariant(harness: Harness) -> None:
    run_state_machine_as_test(
        ledger_test_machine(harness),
        settings=settings(
            max_examples=12,
            stateful_step_count=10,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
