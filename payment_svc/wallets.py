"""What payment_svc needs to know of a wallet before moving money: its owner and its currency.

Both are fixed when a wallet is created and never change (a wallet is closed,
never moved to another owner or currency), so they are cached after the first
lookup: a payment between known wallets makes no call to wallet_svc before its
first saga step. What does change (balances, frozen or closed) is never cached:
wallet_svc checks it inside the hold or posting itself.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from payment_svc.wallet_client import WalletClient

DEFAULT_CAPACITY = 100_000


@dataclass(frozen=True)
class WalletFacts:
    owner_id: str
    currency: str


class WalletDirectory:
    """An LRU cache of wallet facts in front of wallet_svc's GetWallet (read with payment_svc's identity)."""

    def __init__(self, wallet_svc: WalletClient, capacity: int = DEFAULT_CAPACITY) -> None:
        self._wallet_svc = wallet_svc
        self._capacity = capacity
        self._facts: OrderedDict[str, WalletFacts] = OrderedDict()

    def knows(self, *wallet_ids: str) -> bool:
        return all(wallet_id in self._facts for wallet_id in wallet_ids if wallet_id)

    async def facts(self, wallet_id: str) -> WalletFacts:
        """The wallet's owner and currency; raises WalletRefused (e.g. NOT_FOUND) or WalletUnavailable."""
        cached = self._facts.get(wallet_id)
        if cached is not None:
            self._facts.move_to_end(wallet_id)
            return cached
        wallet = await self._wallet_svc.get_wallet(wallet_id)
        facts = WalletFacts(str(wallet.owner_id), str(wallet.currency))
        self._facts[wallet_id] = facts
        if len(self._facts) > self._capacity:
            self._facts.popitem(last=False)
        return facts
