"""The run's workload, through the edge like real clients: sign-up, login, wallets, then a mix of money calls.

Customers (USD wallets, some also EUR) and merchants (USD, one also EUR, each
with a webhook endpoint at the harness's receiver subscribed to every event)
are set up first; customers fund their wallets with card deposits. Then
`workers` concurrent clients, each with its own random.Random drawn from the
seed, repeat until the deadline: card deposits (simulator tokens, declines and
hangs included), card purchases from merchants (some MANUAL), wallet payments
(some MANUAL), person-to-person payments, captures (full or partial; some
raced by the payer's cancel) and cancels of the MANUAL payments waiting,
refunds by merchants (partial or full; some raced by a second refund),
payouts (btok_success, btok_failed, btok_invalidAccount), logins and new
sign-ups. Some creates are sent twice at once with the same key. The weights
and tokens are in mix.py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from devstack.chaos.client import Actor, Edge
from devstack.chaos.mix import (
    BANK_ACCOUNTS,
    DEPOSIT_CARDS,
    DUPLICATE_SHARE,
    MIX,
    PAUSE_S,
    PURCHASE_CARDS,
    RACE_SHARE,
    AwaitingCapture,
    Plan,
    Refundable,
    Shared,
    money,
    pick,
)
from devstack.chaos.model import RequestRecord


class Workload:
    def __init__(self, edge: Edge, seed: int, plan: Plan, webhook_url: Callable[[str], str], run_tag: str) -> None:
        self.edge = edge
        self.seed = seed
        self.plan = plan
        self.shared = Shared()
        self._webhook_url = webhook_url
        self._tag = run_tag
        self._signups = 0
        self.endpoint_secrets: dict[str, tuple[str, str]] = {}  # endpoint id -> (path, secret)

    # --- set-up ---------------------------------------------------------------------------
    async def setup(self) -> None:
        """Users, wallets, webhook endpoints and first deposits; fails if the stack cannot do that."""
        customers = [Actor.new(f"c{i}", "CUSTOMER", self._tag) for i in range(self.plan.customers)]
        merchants = [Actor.new(f"m{i}", "MERCHANT", self._tag) for i in range(self.plan.merchants)]
        await asyncio.gather(*(self._sign_up(a, i) for i, a in enumerate(customers + merchants)))
        self.shared.customers, self.shared.merchants = customers, merchants
        rng = random.Random(f"setup-{self.seed}")  # noqa: S311 - a reproducible workload
        deposits = []
        for customer in customers:
            for currency in customer.wallets:
                deposits.append(self._deposit(customer, currency, "tok_visa", rng.randint(20_000, 60_000)))
        await asyncio.gather(*deposits)

    async def _sign_up(self, actor: Actor, index: int) -> None:
        body = {"email": actor.email, "password": actor.password, "display_name": actor.label,
                "account_type": actor.account_type}  # fmt: skip
        user = await self.edge.call("register", "POST", "/v1/auth/register", None, body, resource="user")
        _require(user)
        actor.user_id = user.resource_id
        _require(await self.edge.login(actor))
        if actor.account_type == "MERCHANT":
            path = f"/hooks/{self._tag}/{actor.label}"  # unique per seed: the secrets are kept by path
            endpoint = await self.edge.call(
                "endpoint", "POST", "/v1/webhook-endpoints", actor,
                {"url": self._webhook_url(path), "event_types": ["*"]}, resource="endpoint",
            )  # fmt: skip
            _require(endpoint)
            self.endpoint_secrets[endpoint.resource_id] = (path, str(self.edge.body_of(endpoint).get("secret", "")))
        currencies = ["USD", "EUR"] if index % 3 == 0 else ["USD"]
        for currency in currencies:
            wallet = await self.edge.call(
                "wallet", "POST", "/v1/wallets", actor, {"currency": currency}, resource="wallet"
            )
            _require(wallet)
            actor.wallets[currency] = wallet.resource_id

    # --- the mix ---------------------------------------------------------------------------
    async def run(self, deadline: Callable[[], bool]) -> None:
        """`workers` clients until `deadline()` says stop; requests in flight then finish."""
        await asyncio.gather(*(self._client(index, deadline) for index in range(self.plan.workers)))

    async def _client(self, index: int, deadline: Callable[[], bool]) -> None:
        rng = random.Random(f"workload-{self.seed}-{index}")  # noqa: S311 - a reproducible workload
        operations: dict[str, Callable[[random.Random], Awaitable[None]]] = {
            "deposit": self._op_deposit,
            "purchase": lambda r: self._op_purchase(r, "AUTOMATIC"),
            "purchase_manual": lambda r: self._op_purchase(r, "MANUAL"),
            "pay": lambda r: self._op_pay(r, "AUTOMATIC"),
            "pay_manual": lambda r: self._op_pay(r, "MANUAL"),
            "p2p": self._op_p2p,
            "capture": self._op_capture,
            "cancel": self._op_cancel,
            "refund": self._op_refund,
            "payout": self._op_payout,
            "login": self._op_login,
            "register": self._op_register,
        }
        while not deadline():
            await operations[pick(rng, MIX)](rng)
            await asyncio.sleep(rng.uniform(*PAUSE_S))

    async def _create(
        self, rng: random.Random, op: str, path: str, actor: Actor, body: dict[str, Any], resource: str, **extra: str
    ) -> RequestRecord:
        """A create call; now and then the same request twice at once (one key), as an impatient client would."""
        key = f"{op}-{rng.getrandbits(64):016x}"
        if rng.random() < DUPLICATE_SHARE:
            first, _ = await asyncio.gather(
                self.edge.call(op, "POST", path, actor, body, resource=resource, key=key, **extra),
                self.edge.call(op, "POST", path, actor, body, resource=resource, key=key, **extra),
            )
            return first
        return await self.edge.call(op, "POST", path, actor, body, resource=resource, key=key, **extra)

    async def _deposit(self, customer: Actor, currency: str, card: str, amount: int) -> RequestRecord:
        body = {"source": {"card_token": card}, "destination_wallet_id": customer.wallets[currency],
                "amount": money(currency, amount)}  # fmt: skip
        return await self.edge.call("deposit", "POST", "/v1/payments", customer, body, resource="payment",
                                    capture_method="AUTOMATIC")  # fmt: skip

    async def _op_deposit(self, rng: random.Random) -> None:
        customer = rng.choice(self.shared.customers)
        currency = rng.choice(sorted(customer.wallets))
        body = {"source": {"card_token": pick(rng, DEPOSIT_CARDS)}, "destination_wallet_id": customer.wallets[currency],
                "amount": money(currency, rng.randint(2_000, 20_000))}  # fmt: skip
        await self._create(rng, "deposit", "/v1/payments", customer, body, "payment", capture_method="AUTOMATIC")

    def _counterparts(self, rng: random.Random, payees: list[Actor]) -> tuple[Actor, Actor, str] | None:
        payer = rng.choice(self.shared.customers)
        candidates = [(p, c) for p in payees if p is not payer for c in p.wallets if c in payer.wallets]
        if not candidates:
            return None
        payee, currency = rng.choice(candidates)
        return payer, payee, currency

    async def _op_purchase(self, rng: random.Random, capture_method: str) -> None:
        found = self._counterparts(rng, self.shared.merchants)
        if found is None:
            return
        payer, payee, currency = found
        amount = rng.randint(500, 8_000)
        body = {"source": {"card_token": pick(rng, PURCHASE_CARDS)}, "destination_wallet_id": payee.wallets[currency],
                "amount": money(currency, amount), "capture_method": capture_method}  # fmt: skip
        op = "purchase" if capture_method == "AUTOMATIC" else "purchase_manual"
        record = await self._create(rng, op, "/v1/payments", payer, body, "payment", capture_method=capture_method)
        self._remember(record, payer, payee, currency, amount)

    async def _op_pay(self, rng: random.Random, capture_method: str) -> None:
        found = self._counterparts(rng, self.shared.merchants)
        if found is None:
            return
        payer, payee, currency = found
        amount = rng.randint(100, 4_000)
        body = {"source": {"wallet_id": payer.wallets[currency]}, "destination_wallet_id": payee.wallets[currency],
                "amount": money(currency, amount), "capture_method": capture_method}  # fmt: skip
        op = "pay" if capture_method == "AUTOMATIC" else "pay_manual"
        record = await self._create(rng, op, "/v1/payments", payer, body, "payment", capture_method=capture_method)
        self._remember(record, payer, payee, currency, amount)

    async def _op_p2p(self, rng: random.Random) -> None:
        found = self._counterparts(rng, self.shared.customers)
        if found is None:
            return
        payer, payee, currency = found
        body = {"source": {"wallet_id": payer.wallets[currency]}, "destination_wallet_id": payee.wallets[currency],
                "amount": money(currency, rng.randint(100, 2_000))}  # fmt: skip
        await self._create(rng, "p2p", "/v1/payments", payer, body, "payment", capture_method="AUTOMATIC")

    def _remember(self, record: RequestRecord, payer: Actor, payee: Actor, currency: str, amount: int) -> None:
        if not record.ok:
            return
        if record.state == "REQUIRES_CAPTURE":
            self.shared.awaiting_capture.append(AwaitingCapture(record.resource_id, payer, payee, currency, amount))
        elif record.state == "SUCCEEDED":
            self.shared.refundable.append(Refundable(record.resource_id, payee, currency, amount))

    async def _op_capture(self, rng: random.Random) -> None:
        if not self.shared.awaiting_capture:
            await self._op_pay(rng, "MANUAL")
            return
        waiting = self.shared.awaiting_capture.pop(rng.randrange(len(self.shared.awaiting_capture)))
        amount = waiting.amount if rng.random() < 0.6 else rng.randint(1, waiting.amount)
        by = waiting.payee if rng.random() < 0.8 else waiting.payer
        body = {"amount": money(waiting.currency, amount)}
        capture = self.edge.call(
            "capture", "POST", f"/v1/payments/{waiting.payment_id}:capture", by, body, resource="payment",
            payment_id=waiting.payment_id,
        )  # fmt: skip
        if rng.random() < RACE_SHARE:  # the payer cancels while the merchant captures: one of them wins
            record, _ = await asyncio.gather(capture, self._cancel(waiting, waiting.payer))
        else:
            record = await capture
        if record.ok and record.state == "SUCCEEDED":
            self.shared.refundable.append(Refundable(waiting.payment_id, waiting.payee, waiting.currency, amount))

    async def _op_cancel(self, rng: random.Random) -> None:
        if not self.shared.awaiting_capture:
            return
        waiting = self.shared.awaiting_capture.pop(rng.randrange(len(self.shared.awaiting_capture)))
        await self._cancel(waiting, waiting.payer if rng.random() < 0.5 else waiting.payee)

    async def _cancel(self, waiting: AwaitingCapture, by: Actor) -> RequestRecord:
        return await self.edge.call(
            "cancel", "POST", f"/v1/payments/{waiting.payment_id}:cancel", by, {"reason": "chaos"},
            resource="payment", payment_id=waiting.payment_id,
        )  # fmt: skip

    async def _op_refund(self, rng: random.Random) -> None:
        open_ = [r for r in self.shared.refundable if r.refunded < r.captured]
        if not open_:
            return
        target = rng.choice(open_)
        left = target.captured - target.refunded
        path = f"/v1/payments/{target.payment_id}/refunds"
        if rng.random() < RACE_SHARE and left >= 2:  # two refunds of 60% each at once: one must be refused
            body = {"amount": money(target.currency, left * 6 // 10 or 1), "reason": "chaos race"}
            target.refunded = target.captured
            await asyncio.gather(
                self._create(rng, "refund", path, target.payee, body, "refund", payment_id=target.payment_id),
                self._create(rng, "refund", path, target.payee, body, "refund", payment_id=target.payment_id),
            )
            return
        amount = left if rng.random() < 0.4 else rng.randint(1, left)
        target.refunded += amount
        body = {"amount": money(target.currency, amount), "reason": "chaos"}
        await self._create(rng, "refund", path, target.payee, body, "refund", payment_id=target.payment_id)

    async def _op_payout(self, rng: random.Random) -> None:
        merchant = rng.choice(self.shared.merchants)
        currency = rng.choice(sorted(merchant.wallets))
        body = {"wallet_id": merchant.wallets[currency], "amount": money(currency, rng.randint(200, 4_000)),
                "bank_account_token": pick(rng, BANK_ACCOUNTS)}  # fmt: skip
        await self._create(rng, "payout", "/v1/payouts", merchant, body, "payout")

    async def _op_login(self, rng: random.Random) -> None:
        await self.edge.login(rng.choice(self.shared.customers + self.shared.merchants))

    async def _op_register(self, rng: random.Random) -> None:
        self._signups += 1
        actor = Actor.new(f"n{self._signups}", "CUSTOMER", self._tag)
        try:
            await self._sign_up(actor, 1)
        except SetupFailed:
            return  # a sign-up that failed under faults is just an answer in the log
        self.shared.customers.append(actor)


class SetupFailed(RuntimeError):
    pass


def _require(record: RequestRecord) -> None:
    if not record.ok:
        raise SetupFailed(f"{record.op} {record.path} answered {record.status} {record.reason}")
