"""Hypothesis stateful test: random concurrent ledger traffic never breaks an invariant.

Wallets in two currencies (USD and EUR), each funded from its currency's
settlement account. Each step runs 16-32 operations at once against the real
PostgreSQL through the ledger's unit-of-work layer, every one of them a call
that reaches the ledger: each drawn operation is applied to the model's state
when the step starts (which wallet, hold or earlier call it names), and one
that cannot apply is replaced by one that can (a capture or release with no
open hold by a hold; a freeze or unfreeze, at most one per wallet and step,
by a credit once every wallet has one). The mix: credits, debits, transfers, exchanges (a USD leg pair and a EUR leg
pair in one transaction), holds, captures, releases, freezes and unfreezes
(half of them with an Idempotency-Key), retries of earlier successful calls
with their reference or key, the same new call twice at once, and an earlier
reference or key reused for another request.

A model follows only what succeeded. Each step checks every outcome:
- credits, releases of an uncontested hold, freezes and retries always succeed,
  a retry with the original result (a freeze's as a replay);
- a debit, transfer, exchange, hold or capture taking money from a wallet
  frozen for the whole step fails with WALLET_FROZEN (so it took no effect);
  from a wallet active for the whole step it never does;
- nothing fails with INSUFFICIENT_FUNDS while the step's debits and holds on
  the wallet add up to no more than its available balance;
- a reused reference or key fails with IDEMPOTENCY_KEY_REUSED.
After every step the database must show:
- the postings of every currency sum to zero (USD and EUR both present);
- no customer wallet has a negative available balance;
- every account's posted and held equal the sums recomputed from its
  postings and open holds, and every balance_after is a running sum;
- the machine's wallets (posted, held, ACTIVE or FROZEN) and the system
  accounts hold exactly what the model says, which fails if an idempotent
  retry, a reuse, a duplicate call or a refused call ever took effect.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.stack import Stack
from paymesh.wallet.v1 import wallet_pb2
from paymesh_runtime.db import create_engine, create_pool
from paymesh_runtime.errors import PaymeshError
from paymesh_runtime.money import Money
from paymesh_runtime.outbox import Outbox
from tests.integration.wallet_support import migrate, settings_for
from wallet_svc import ledger, store
from wallet_svc.ledger import AccountKey, IdempotencyKey, Operation, SystemAccount, SystemRef, WalletRef
from wallet_svc.operations import HoldPolicy, Ledger

pytestmark = pytest.mark.integration

T = TypeVar("T")
WALLETS = {"USD": 4, "EUR": 3}
OTHER_CURRENCY = {"USD": "EUR", "EUR": "USD"}
INITIAL_BALANCE = 500
ADMIN = "prop-admin"
REASON = "property test"
# How each kind of fresh operation may fail at all; _check narrows it down per call.
ALLOWED_FAILURES: dict[str, frozenset[str]] = {
    "credit": frozenset(),
    "twice": frozenset(),
    "freeze": frozenset(),
    "release": frozenset(),
    "capture": frozenset({"WALLET_FROZEN"}),
    **dict.fromkeys(("debit", "transfer", "exchange", "hold"), frozenset({"INSUFFICIENT_FUNDS", "WALLET_FROZEN"})),
}


def settlement(currency: str) -> SystemRef:
    return SystemRef(SystemAccount.EXTERNAL_SETTLEMENT, currency)


def fees(currency: str) -> SystemRef:
    return SystemRef(SystemAccount.FEES, currency)


SYSTEM_ACCOUNTS = [account(currency) for currency in WALLETS for account in (settlement, fees)]


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

    async def start() -> tuple[AsyncEngine, asyncpg.Pool, Ledger]:
        engine = create_engine(wallet_settings)
        pool = await create_pool(wallet_settings, 4)
        outbox = Outbox(store.outbox, store.outbox_sequence, "wallet_svc")
        return engine, pool, Ledger(engine, pool, outbox, HoldPolicy(3600, 86_400))

    engine, pool, ledger_ = runner.run(start())
    try:
        yield Harness(runner, engine, ledger_)
    finally:
        runner.run(pool.close())
        runner.run(engine.dispose())
        runner.close()


@dataclass(frozen=True)
class Op:
    """One drawn operation. Its shape never depends on the model (Hypothesis replays and shrinks
    the draws): which wallet, hold or earlier call `first` and `second` name is decided against
    the model's state when the step starts."""

    kind: str
    first: int  # a wallet, a hold, or an earlier call to retry or reuse
    second: int  # a transfer's, exchange's or capture's destination
    amount: int
    other_amount: int  # what an exchange buys; the percentage of a hold a capture takes
    flag: bool  # freeze (or unfreeze); a reuse under another method (or with other arguments)
    keyed: bool  # a freeze or unfreeze with an Idempotency-Key


KINDS = ("credit", "debit", "transfer", "exchange", "hold", "capture", "release", "freeze", "retry", "reuse", "twice")
pick = st.integers(0, 10_000)
amounts = st.integers(1, 400)
operation = st.builds(Op, st.sampled_from(KINDS), pick, pick, amounts, amounts, st.booleans(), st.booleans())


def ref() -> str:
    return f"prop-{uuid.uuid4()}"


def move(source: AccountKey, destination: AccountKey, amount: Money) -> tuple[ledger.Leg, ...]:
    return (ledger.Leg(source, -amount), ledger.Leg(destination, amount))


@dataclass(frozen=True)
class FreezeRequest:
    """FreezeWallet (freeze) or UnfreezeWallet, with an Idempotency-Key or without."""

    wallet_id: uuid.UUID
    freeze: bool
    key: IdempotencyKey | None
    reason: str = REASON


def freeze_key(raw_key: str, wallet_id: uuid.UUID, freeze: bool, reason: str = REASON) -> IdempotencyKey:
    """The key as the service builds it: the admin's key over the request's bytes and the wallet."""
    message = wallet_pb2.FreezeWalletRequest if freeze else wallet_pb2.UnfreezeWalletRequest
    request = message(wallet_id=str(wallet_id), reason=reason).SerializeToString(deterministic=True)
    method = Operation.FREEZE_WALLET if freeze else Operation.UNFREEZE_WALLET
    return IdempotencyKey.of(ADMIN, raw_key, method, request, wallet_id)


@dataclass
class Done:
    """A call that succeeded, kept for retries and reuses: the method, request and ids it produced."""

    method: str
    request: Any
    ids: tuple[uuid.UUID, ...]


@dataclass
class Call:
    """One operation of a step.

    `method` is the ledger call; `debited` the wallet it takes money from (for
    the freeze rule), `decrease` how much available it may take (for the funds
    rule), `hold_id` the hold it captures or releases; `retried` the earlier
    call it repeats, `reused` whether it reuses an earlier reference or key.
    """

    kind: str
    method: str
    request: Any
    debited: uuid.UUID | None = None
    decrease: int = 0
    hold_id: uuid.UUID | None = None
    retried: Done | None = None
    reused: bool = False

    @property
    def fresh(self) -> bool:
        return self.retried is None and not self.reused


@dataclass(frozen=True)
class Outcome:
    ids: tuple[uuid.UUID, ...]
    replayed: bool = False
    state: str = ""


Result = Outcome | str  # a success, or the reason of the PaymeshError


@dataclass
class Model:
    # Wallets: their posted balance. System accounts: their change since the machine started.
    posted: dict[AccountKey, int] = field(default_factory=lambda: defaultdict(int))
    open_holds: dict[uuid.UUID, tuple[uuid.UUID, Money]] = field(default_factory=dict)
    frozen: set[uuid.UUID] = field(default_factory=set)
    done: list[Done] = field(default_factory=list)

    def available(self, wallet_id: uuid.UUID) -> int:
        held = sum(amount.amount for wallet, amount in self.open_holds.values() if wallet == wallet_id)
        return self.posted[WalletRef(wallet_id)] - held


def ledger_test_machine(h: Harness) -> type[RuleBasedStateMachine]:
    class LedgerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.model = Model()
            self.reached = 0  # ledger calls made by the current step
            self.baseline = h.runner.run(self._system_balances())
            self.currency_of: dict[uuid.UUID, str] = h.runner.run(self._open_wallets())
            self.wallets = sorted(self.currency_of)
            self.by_currency = {c: [w for w in self.wallets if self.currency_of[w] == c] for c in WALLETS}

        async def _system_balances(self) -> dict[SystemRef, int]:
            async with h.engine.connect() as conn:
                rows = await conn.execute(
                    text("SELECT system_account, currency, posted FROM accounts WHERE system_account IS NOT NULL")
                )
                found = {SystemRef(SystemAccount(r.system_account), r.currency): int(r.posted) for r in rows}
            return {key: found.get(key, 0) for key in SYSTEM_ACCOUNTS}

        async def _open_wallets(self) -> dict[uuid.UUID, str]:
            opened = {}
            for currency, count in WALLETS.items():
                for _ in range(count):
                    owner = f"prop-{uuid.uuid4()}"
                    request = wallet_pb2.CreateWalletRequest(currency=currency).SerializeToString(deterministic=True)
                    key = IdempotencyKey.of(owner, "open", Operation.CREATE_WALLET, request, None)
                    created = await h.ledger.create_wallet(owner, currency, key)
                    again = await h.ledger.create_wallet(owner, currency, key)
                    assert (again.account.id, created.replayed, again.replayed) == (created.account.id, False, True)
                    wallet_id = created.account.id
                    legs = move(settlement(currency), WalletRef(wallet_id), Money(currency, INITIAL_BALANCE))
                    funding = ledger.PostRequest(ref(), legs, "", "")
                    tx = await h.ledger.post(funding)
                    self._apply_legs(funding.legs)
                    self.model.done.append(Done("post", funding, (tx.id,)))
                    opened[wallet_id] = currency
            return opened

        def _apply_legs(self, legs: tuple[ledger.Leg, ...]) -> None:
            for leg in legs:
                self.model.posted[leg.account] += leg.amount.amount

        # --- one step: many operations at once -------------------------------------------

        @rule(ops=st.lists(operation, min_size=16, max_size=32))
        def concurrent_operations(self, ops: list[Op]) -> None:
            toggled: set[uuid.UUID] = set()
            calls = [self._call(op, toggled) for op in ops]
            self.reached = 0
            results = h.runner.run(self._attempt_all(calls))
            assert self.reached == len(calls) == len(ops)  # every operation drawn was a call to the ledger
            self._check(calls, results, toggled)
            for call, result in zip(calls, results, strict=True):
                if isinstance(result, Outcome) and call.fresh:
                    self._apply(call, result)

        # --- operations that apply to the model's state ------------------------------------------

        def _call(self, op: Op, toggled: set[uuid.UUID]) -> Call:
            """The drawn operation against the model's state at the start of the step, or another
            in its place when it cannot apply: a hold for a capture or release with no open hold,
            a credit for a freeze when every wallet already has one in this step."""
            kind = op.kind
            if kind in ("capture", "release") and not self.model.open_holds:
                kind = "hold"
            if kind == "freeze" and len(toggled) == len(self.wallets):
                kind = "credit"
            wallet_id = self.wallets[op.first % len(self.wallets)]
            money = Money(self.currency_of[wallet_id], op.amount)
            if kind in ("credit", "twice"):
                return Call(kind, "twice" if kind == "twice" else "post", self._credit(ref(), wallet_id, op.amount))
            if kind == "debit":
                request = ledger.PostRequest(ref(), move(WalletRef(wallet_id), fees(money.currency), money), "", "")
                return Call(kind, "post", request, wallet_id, money.amount)
            if kind == "hold":
                return Call(kind, kind, ledger.HoldRequest(ref(), wallet_id, money, "", 0), wallet_id, money.amount)
            if kind == "transfer":
                others = [w for w in self.by_currency[money.currency] if w != wallet_id]
                destination = others[op.second % len(others)]
                legs = move(WalletRef(wallet_id), WalletRef(destination), money)
                return Call(kind, "post", ledger.PostRequest(ref(), legs, "", ""), wallet_id, money.amount)
            if kind == "exchange":
                bought = Money(OTHER_CURRENCY[money.currency], op.other_amount)
                receivers = self.by_currency[bought.currency]
                legs = (
                    *move(WalletRef(wallet_id), settlement(money.currency), money),
                    *move(settlement(bought.currency), WalletRef(receivers[op.second % len(receivers)]), bought),
                )
                return Call(kind, "post", ledger.PostRequest(ref(), legs, "", ""), wallet_id, money.amount)
            if kind in ("capture", "release"):
                holds = sorted(self.model.open_holds)
                hold_id = holds[op.first % len(holds)]
                if kind == "release":
                    return Call(kind, kind, ledger.ReleaseRequest(ref(), hold_id), hold_id=hold_id)
                held_wallet, held = self.model.open_holds[hold_id]
                captured = Money(held.currency, max(1, held.amount * (op.other_amount % 100 + 1) // 100))
                others = [WalletRef(w) for w in self.by_currency[held.currency] if w != held_wallet]
                destinations = [*others, fees(held.currency), settlement(held.currency)]
                capture = ledger.CaptureRequest(
                    ref(), hold_id, captured, destinations[op.second % len(destinations)], ""
                )
                return Call(kind, kind, capture, held_wallet, hold_id=hold_id)
            if kind == "freeze":
                free = [w for w in self.wallets if w not in toggled]
                wallet_id = free[op.first % len(free)]
                toggled.add(wallet_id)
                key = freeze_key(f"k-{uuid.uuid4()}", wallet_id, op.flag) if op.keyed else None
                return Call(kind, kind, FreezeRequest(wallet_id, op.flag, key))
            earlier = self.model.done[op.first % len(self.model.done)]
            if kind == "retry":
                return Call(kind, earlier.method, earlier.request, retried=earlier)
            method, request = self._reuse(earlier, op.flag)
            return Call(kind, method, request, reused=True)

        def _credit(self, reference: str, wallet_id: uuid.UUID, amount: int) -> ledger.PostRequest:
            money = Money(self.currency_of[wallet_id], amount)
            return ledger.PostRequest(reference, move(settlement(money.currency), WalletRef(wallet_id), money), "", "")

        def _reuse(self, earlier: Done, other_method: bool) -> tuple[str, Any]:
            """Another request under an earlier call's reference or key: another method, or other arguments."""
            request = earlier.request
            if isinstance(request, FreezeRequest):
                assert request.key is not None
                if other_method:  # an unfreeze under a freeze's key, or the reverse
                    key = freeze_key(request.key.key, request.wallet_id, not request.freeze)
                    return "freeze", FreezeRequest(request.wallet_id, not request.freeze, key)
                key = freeze_key(request.key.key, request.wallet_id, request.freeze, "another reason")
                return "freeze", FreezeRequest(request.wallet_id, request.freeze, key, "another reason")
            wallet_id = self.wallets[0]
            if other_method:
                if isinstance(request, ledger.PostRequest):
                    money = Money(self.currency_of[wallet_id], 1)
                    return "hold", ledger.HoldRequest(request.reference, wallet_id, money, "", 0)
                return "post", self._credit(request.reference, wallet_id, 1)
            if isinstance(request, ledger.PostRequest):
                doubled = tuple(ledger.Leg(leg.account, leg.amount + leg.amount) for leg in request.legs)
                return "post", ledger.PostRequest(request.reference, doubled, "", "")
            if isinstance(request, ledger.HoldRequest):
                more = request.amount + Money(request.amount.currency, 1)
                return "hold", ledger.HoldRequest(request.reference, request.wallet_id, more, "", 0)
            if isinstance(request, ledger.CaptureRequest):
                described = ledger.CaptureRequest(
                    request.reference, request.hold_id, request.amount, request.destination, "another description"
                )
                return "capture", described
            assert isinstance(request, ledger.ReleaseRequest)
            return "release", ledger.ReleaseRequest(request.reference, uuid.uuid4())

        # --- running them ------------------------------------------------------------------------

        async def _attempt_all(self, calls: list[Call]) -> list[Result]:
            return list(await asyncio.gather(*(self._attempt(call) for call in calls)))

        async def _attempt(self, call: Call) -> Result:
            request = call.request
            self.reached += 1
            try:
                if call.method == "post":
                    return Outcome(((await h.ledger.post(request)).id,))
                if call.method == "twice":
                    first, second = await asyncio.gather(h.ledger.post(request), h.ledger.post(request))
                    assert first.id == second.id, "two calls with one reference made two transactions"
                    return Outcome((first.id,))
                if call.method == "hold":
                    return Outcome(((await h.ledger.create_hold(request)).id,))
                if call.method == "capture":
                    hold, tx = await h.ledger.capture_hold(request)
                    return Outcome((hold.id, tx.id))
                if call.method == "release":
                    return Outcome(((await h.ledger.release_hold(request)).id,))
                assert call.method == "freeze", call
                changed = await h.ledger.set_frozen(request.wallet_id, request.freeze, request.reason, request.key)
                return Outcome((changed.account.id,), changed.replayed, changed.account.state.value)
            except PaymeshError as error:
                return error.reason

        # --- what each outcome may be --------------------------------------------------------------

        def _check(self, calls: list[Call], results: list[Result], toggled: set[uuid.UUID]) -> None:
            contested = Counter(call.hold_id for call in calls if call.fresh and call.hold_id is not None)
            taking: dict[uuid.UUID, int] = defaultdict(int)
            for call in calls:
                if call.fresh and call.debited is not None:
                    taking[call.debited] += call.decrease
            for call, result in zip(calls, results, strict=True):
                where = f"{call.kind} {call.request}"
                if call.retried is not None:
                    assert isinstance(result, Outcome), f"a retry of a successful {where} failed with {result}"
                    assert result.ids == call.retried.ids, f"a retried {where} returned another result"
                    assert call.method != "freeze" or result.replayed, f"a retried {where} was not a replay"
                    continue
                if call.reused:
                    assert result == "IDEMPOTENCY_KEY_REUSED", f"{where} under a used reference gave {result}"
                    continue
                allowed = ALLOWED_FAILURES[call.kind]
                if call.hold_id is not None and contested[call.hold_id] > 1:
                    allowed = allowed | {"HOLD_NOT_OPEN"}  # another capture or release may come first
                if call.debited is not None and call.debited not in toggled:
                    if call.debited in self.model.frozen:
                        assert isinstance(result, str), f"{where} took effect on a frozen wallet"
                        allowed = allowed & {"WALLET_FROZEN", "HOLD_NOT_OPEN"}
                    else:
                        allowed = allowed - {"WALLET_FROZEN"}
                if call.debited is not None and taking[call.debited] <= self.model.available(call.debited):
                    allowed = allowed - {"INSUFFICIENT_FUNDS"}
                if isinstance(result, str):
                    assert result in allowed, f"{where} failed with {result}"
                elif call.kind == "freeze":
                    target = "FROZEN" if call.request.freeze else "ACTIVE"
                    assert (result.state, result.replayed) == (target, False), f"{where} answered {result}"

        def _apply(self, call: Call, result: Outcome) -> None:
            request = call.request
            if call.method in ("post", "twice"):
                self._apply_legs(request.legs)
            elif call.method == "hold":
                self.model.open_holds[result.ids[0]] = (request.wallet_id, request.amount)
            elif call.method in ("capture", "release"):
                assert request.hold_id in self.model.open_holds, "a hold left OPEN twice"
                wallet_id, _ = self.model.open_holds.pop(request.hold_id)
                if call.method == "capture":
                    self._apply_legs(move(WalletRef(wallet_id), request.destination, request.amount))
            elif request.freeze:
                self.model.frozen.add(request.wallet_id)
            else:
                self.model.frozen.discard(request.wallet_id)
            if call.method != "freeze" or request.key is not None:
                self.model.done.append(Done("post" if call.method == "twice" else call.method, request, result.ids))

        # --- invariants ----------------------------------------------------------------------

        @invariant()
        def ledger_is_consistent(self) -> None:
            h.runner.run(self._check_database())

        async def _check_database(self) -> None:
            async with h.engine.connect() as conn:
                sums = (await conn.execute(text("SELECT currency, sum(amount) FROM postings GROUP BY currency"))).all()
                assert all(total == 0 for _, total in sums), sums
                assert set(WALLETS) <= {currency for currency, _ in sums}, sums
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
                        text("SELECT id, posted, held, state FROM accounts WHERE id = ANY(:ids)"), {"ids": self.wallets}
                    )
                ).all()
            held: dict[uuid.UUID, int] = dict.fromkeys(self.wallets, 0)
            for wallet_id, amount in self.model.open_holds.values():
                held[wallet_id] += amount.amount
            assert {row.id: (row.posted, row.held, row.state) for row in rows} == {
                wallet_id: (
                    self.model.posted[WalletRef(wallet_id)],
                    held[wallet_id],
                    "FROZEN" if wallet_id in self.model.frozen else "ACTIVE",
                )
                for wallet_id in self.wallets
            }
            system = await self._system_balances()
            assert {key: system[key] - self.baseline[key] for key in SYSTEM_ACCOUNTS} == {
                key: self.model.posted[key] for key in SYSTEM_ACCOUNTS
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
