"""Access tokens (JWT, ES256) and opaque refresh tokens.

Pure functions (no gRPC, SQL or Redis). Envoy verifies access tokens at the
edge (signature by `kid` from the JWKS, `iss`, `aud`, `exp`) and forwards
them; every service, auth_svc included, verifies them again
(paymesh_runtime.access_tokens). Here they are only issued.

A refresh token is `<family id>.<random>`: the family id routes it to its
session's Redis keys (one hash slot), the random part is 256 bits from
`secrets`. Only its SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from auth_svc.keys import ALGORITHM
from paymesh_runtime.identity import Role

TOKEN_TYPE = "Bearer"  # noqa: S105 (the OAuth token type, not a secret)


@dataclass(frozen=True)
class TokenClaims:
    """What an access token says; `jti` makes each token distinct."""

    issuer: str
    audience: str
    subject: str
    role: Role
    issued_at: datetime
    expires_at: datetime
    token_id: str

    def as_payload(self) -> dict[str, str | int]:
        return {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": self.subject,
            "role": self.role.value,
            "iat": int(self.issued_at.timestamp()),
            "exp": int(self.expires_at.timestamp()),
            "jti": self.token_id,
        }


def access_claims(
    *, user_id: str, role: Role, issuer: str, audience: str, ttl: timedelta, now: datetime
) -> TokenClaims:
    return TokenClaims(issuer, audience, user_id, role, now, now + ttl, str(uuid.uuid4()))


def sign_access_token(claims: TokenClaims, kid: str, private_key: ec.EllipticCurvePrivateKey) -> str:
    return jwt.encode(claims.as_payload(), private_key, algorithm=ALGORITHM, headers={"kid": kid, "typ": "JWT"})


@dataclass(frozen=True)
class RefreshToken:
    """A refresh token as handed out once, and the parts the store keeps."""

    token: str
    family_id: str

    @property
    def digest(self) -> str:
        return hash_refresh_token(self.token)


def new_family_id() -> str:
    return uuid.uuid4().hex


def new_refresh_token(family_id: str) -> RefreshToken:
    return RefreshToken(f"{family_id}.{secrets.token_urlsafe(32)}", family_id)


def parse_refresh_token(token: str) -> RefreshToken | None:
    """The token with its family, or None when it cannot be one of ours."""
    family_id, dot, secret = token.strip().partition(".")
    if not dot or len(family_id) != 32 or len(secret) < 32 or len(token) > 200:
        return None
    try:
        uuid.UUID(hex=family_id)
    except ValueError:
        return None
    return RefreshToken(token.strip(), family_id)


def hash_refresh_token(token: str) -> str:
    # A plain hash is enough: the token has 256 random bits, nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()
