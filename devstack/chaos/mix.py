"""The workload's choices: which calls, cards, bank accounts and amounts, and what the clients remember
from their answers (the MANUAL payments waiting for capture, the payments a merchant may refund)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from devstack.chaos.client import Actor

# token -> weight; the simulator decides by token (devstack/processor_sim/tokens.py)
DEPOSIT_CARDS = {
    "tok_visa": 70,
    "tok_mastercard": 14,
    "tok_chargeDeclined": 5,
    "tok_insufficientFunds": 3,
    "tok_processingError": 3,
    "tok_timeout": 1,
}
PURCHASE_CARDS = {"tok_visa": 60, "tok_amex": 10, "tok_refundPending": 15, "tok_refundFail": 10, "tok_expiredCard": 5}
BANK_ACCOUNTS = {"btok_success": 80, "btok_failed": 10, "btok_invalidAccount": 10}
# operation -> weight
MIX = {
    "deposit": 12,
    "purchase": 10,
    "purchase_manual": 4,
    "pay": 24,
    "pay_manual": 8,
    "p2p": 5,
    "capture": 9,
    "cancel": 2,
    "refund": 10,
    "payout": 8,
    "login": 2,
    "register": 1,
}
DUPLICATE_SHARE = 0.05  # creates sent twice at once with the same key
RACE_SHARE = 0.15  # captures raced by a cancel; refunds raced by a second refund
PAUSE_S = (0.05, 0.4)  # between two operations of one client


@dataclass(frozen=True)
class Plan:
    customers: int = 6
    merchants: int = 3
    workers: int = 6


@dataclass
class Refundable:
    payment_id: str
    payee: Actor
    currency: str
    captured: int
    refunded: int = 0


@dataclass
class AwaitingCapture:
    payment_id: str
    payer: Actor
    payee: Actor
    currency: str
    amount: int


@dataclass
class Shared:
    """What the clients know from their answers (one event loop: no locks needed)."""

    customers: list[Actor] = field(default_factory=list)
    merchants: list[Actor] = field(default_factory=list)
    refundable: list[Refundable] = field(default_factory=list)
    awaiting_capture: list[AwaitingCapture] = field(default_factory=list)


def pick(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def money(currency: str, amount: int) -> dict[str, str]:
    return {"currency": currency, "amount": str(amount)}
