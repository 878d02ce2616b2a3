"""The keys one replica signs and publishes with, read from PostgreSQL.

For signing, the list is cached for a few seconds (AUTH_KEY_CACHE_SECONDS):
a rotated-in key signs only a publish lead after it was stored, so a stale
list merely keeps the previous key signing a few seconds longer, which the
retention grace covers. The JWKS is always read afresh. Private keys are decrypted only when
they sign, and kept decrypted in memory only for the current signing key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric import ec

from auth_svc import keys
from auth_svc.store import AuthStore, SealedKey
from paymesh_runtime.errors import Unavailable
from paymesh_runtime.sealing import SecretSealer


@dataclass(frozen=True)
class Signer:
    kid: str
    private_key: ec.EllipticCurvePrivateKey


class KeyRing:
    def __init__(
        self,
        store: AuthStore,
        cipher: SecretSealer,
        policy: keys.KeyPolicy,
        *,
        cache_seconds: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._cipher = cipher
        self._policy = policy
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._sealed: list[SealedKey] = []
        self._loaded_at = -float("inf")
        self._signer: Signer | None = None
        self._lock = asyncio.Lock()

    async def ensure_first_key(self) -> None:
        """Creates and activates a key on the very first start (no usable key yet)."""
        new = keys.generate_key()
        await self._store.add_first_key(new.jwk.kid, new.jwk, self._cipher.seal(new.jwk.kid, new.private_pem))

    async def signer(self) -> Signer:
        records = await self._records()
        current = keys.signing_key([s.record for s in records], self._clock(), self._policy)
        if current is None:
            raise Unavailable("DEPENDENCY_UNAVAILABLE", "no signing key is active")
        if self._signer is None or self._signer.kid != current.kid:
            sealed = next(s for s in records if s.record.kid == current.kid)
            pem = self._cipher.open(current.kid, sealed.sealed_private_key)
            self._signer = Signer(current.kid, keys.load_private_key(pem))
        return self._signer

    async def published(self) -> list[keys.PublicJwk]:
        """The JWKS, always read afresh: only Envoy asks (once per cache period), and
        a rotated-in key must be published from the moment it is stored."""
        records = [s.record for s in await self._records(fresh=True)]
        return [record.jwk for record in keys.published_keys(records, self._clock(), self._policy)]

    async def _records(self, *, fresh: bool = False) -> list[SealedKey]:
        async with self._lock:
            if fresh or time.monotonic() - self._loaded_at > self._cache_seconds:
                self._sealed = await self._store.keys()
                self._loaded_at = time.monotonic()
            return self._sealed
