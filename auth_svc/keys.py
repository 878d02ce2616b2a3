"""Signing keys: generation, encryption at rest, and the rotation timeline.

Pure rules (no gRPC or SQL). A key's life is a timeline, not a status column:

    created ──(publish lead)──▶ activates_at ──▶ next key activates ──(token TTL + grace)──▶ gone
       published, not signing      signing          retired: verifies only

- The signing key at time t is the newest key whose `activates_at` ≤ t.
- A key retires when its successor activates; it stays in the JWKS until
  every token it signed has expired (retire time + token TTL + grace).
- A key created by a rotation is published `publish_lead` before it signs.
  Envoy caches the JWKS and does not refetch on an unknown `kid`, so a token
  signed with a key Envoy has not seen yet would fail until the cache expires;
  the lead (longer than Envoy's cache) makes sure it has seen it.
- A revoked key (compromised) leaves the JWKS at once and never signs again.

Private keys are stored encrypted with AES-256-GCM under the key-encryption
key from the environment; the kid is the associated data, so a ciphertext
cannot be moved to another key's row.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from paymesh_runtime.sealing import SecretSealer, parse_aes256_key

ALGORITHM = "ES256"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class PublicJwk:
    """The public half of a P-256 key as a JWK (RFC 7517/7518)."""

    kid: str
    x: str
    y: str

    def as_dict(self) -> dict[str, str]:
        return {"kty": "EC", "kid": self.kid, "use": "sig", "alg": ALGORITHM, "crv": "P-256", "x": self.x, "y": self.y}


@dataclass(frozen=True)
class NewKey:
    """A freshly generated key pair, private half still in the clear."""

    jwk: PublicJwk
    private_pem: bytes = field(repr=False)


def generate_key() -> NewKey:
    """A new P-256 key; its kid is the RFC 7638 thumbprint of the public key."""
    private = ec.generate_private_key(ec.SECP256R1())
    numbers = private.public_key().public_numbers()
    x, y = _b64url(numbers.x.to_bytes(32, "big")), _b64url(numbers.y.to_bytes(32, "big"))
    # RFC 7638: the required members in lexicographic order, no whitespace.
    canonical = f'{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}'
    kid = _b64url(hashlib.sha256(canonical.encode()).digest())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return NewKey(PublicJwk(kid, x, y), pem)


def load_private_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("a signing key must be an EC private key")
    return key


def key_cipher(key_encryption_key: str) -> SecretSealer:
    """AES-256-GCM for private keys at rest, keyed from AUTH_KEY_ENCRYPTION_KEY; seal with the kid as context."""
    return SecretSealer(parse_aes256_key(key_encryption_key, "AUTH_KEY_ENCRYPTION_KEY"))


@dataclass(frozen=True)
class KeyRecord:
    """One stored key as the timeline sees it (no private material)."""

    kid: str
    jwk: PublicJwk
    created_at: datetime
    activates_at: datetime
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class KeyState:
    """Where a key is on its timeline at one instant."""

    record: KeyRecord
    state: str  # pending | signing | retired | expired | revoked
    retires_at: datetime | None  # when its successor activated (or will)
    published_until: datetime | None  # None: as long as it signs


@dataclass(frozen=True)
class KeyPolicy:
    """The durations that place keys on the timeline."""

    token_ttl: timedelta
    grace: timedelta
    publish_lead: timedelta

    @property
    def retention(self) -> timedelta:
        """How long a retired key must keep verifying: its last token's lifetime."""
        return self.token_ttl + self.grace


def timeline(keys: Sequence[KeyRecord], now: datetime, policy: KeyPolicy) -> list[KeyState]:
    """Every key's state at `now`, newest activation first."""
    live = sorted((k for k in keys if not k.revoked), key=lambda k: (k.activates_at, k.created_at))
    states: list[KeyState] = []
    for index, key in enumerate(live):
        successor = live[index + 1] if index + 1 < len(live) else None
        retires_at = successor.activates_at if successor else None
        published_until = retires_at + policy.retention if retires_at else None
        if key.activates_at > now:
            state = "pending"
        elif retires_at is None or retires_at > now:
            state = "signing"
        elif published_until is not None and published_until > now:
            state = "retired"
        else:
            state = "expired"
        states.append(KeyState(key, state, retires_at, published_until))
    states.extend(KeyState(k, "revoked", None, k.revoked_at) for k in keys if k.revoked)
    return sorted(states, key=lambda s: s.record.activates_at, reverse=True)


def signing_key(keys: Sequence[KeyRecord], now: datetime, policy: KeyPolicy) -> KeyRecord | None:
    """The key new tokens are signed with, if any."""
    return next((s.record for s in timeline(keys, now, policy) if s.state == "signing"), None)


def published_keys(keys: Sequence[KeyRecord], now: datetime, policy: KeyPolicy) -> list[KeyRecord]:
    """The JWKS: keys that sign, will sign, or may still verify a live token; newest first."""
    return [s.record for s in timeline(keys, now, policy) if s.state in ("pending", "signing", "retired")]


def prunable_keys(keys: Sequence[KeyRecord], now: datetime, policy: KeyPolicy) -> list[KeyRecord]:
    """Keys that can no longer verify any live token: safe to delete with their private half."""
    return [s.record for s in timeline(keys, now, policy) if s.state in ("expired", "revoked")]


def revocation_error(keys: Sequence[KeyRecord], kid: str, now: datetime, policy: KeyPolicy) -> str | None:
    """Why `kid` may not be revoked now, or None. The signing key cannot be:
    logins would fail until another key signs (rotate with no lead first)."""
    current = signing_key(keys, now, policy)
    if not any(k.kid == kid for k in keys):
        return f"no key {kid!r}"
    if current is not None and current.kid == kid:
        return f"{kid!r} is the signing key; run `rotate-keys --publish-lead-seconds 0` first"
    return None
