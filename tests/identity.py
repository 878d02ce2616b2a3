"""End-user credentials for tests that call a service's own port, presented as a real client does.

A service trusts an end user only through a bearer access token it verifies
itself against auth_svc's key set (docs/auth.md, "Who a service trusts").
Tests that call a service directly therefore send real ES256 tokens:
`bearer(user_id, role)` is the metadata, `token(...)` the bare JWT.

They are signed with a test key that the test stack's auth_svc publishes: a
P-256 key stored in auth_svc's database like `rotate-keys` stores one (sealed
with the stack's key-encryption key) but activating ten years from now.
auth_svc publishes a pending key in its JWKS, so Envoy and every service
verify its tokens; it never signs with it, so the e2e rotation tests (which
rotate and revoke keys) leave it alone, and it leaves them alone. Any `sub`
can be minted, as the tests' made-up user ids need.

`publish_test_key(stack)` starts auth_svc (and infra) if needed and stores
the key once per stack; the support fixtures call it before `bearer`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.ext.asyncio import create_async_engine

from auth_svc import keys, store
from auth_svc.tokens import access_claims
from devstack.envoy_config import JWT_AUDIENCE, jwt_issuer
from devstack.stack import Stack
from paymesh_runtime.identity import AUTHORIZATION_HEADER, Role

Metadata = tuple[tuple[str, str], ...]
T = TypeVar("T")
# Far enough ahead that the key never signs, however long a kept stack lives.
TEST_KEY_LEAD = timedelta(days=3650)
# A stored key activating later than this is the test key of an earlier session (PAYMESH_KEEP_STACK=1).
TEST_KEY_MIN_LEAD = timedelta(days=365)
# auth_svc's default access-token lifetime (AUTH_ACCESS_TOKEN_TTL_SECONDS).
TOKEN_TTL = timedelta(seconds=900)


@dataclass(frozen=True)
class TokenMinter:
    """Mints access tokens with one key, with the claims auth_svc puts in them."""

    kid: str
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    issuer: str
    audience: str = JWT_AUDIENCE

    def token(self, user_id: str, role: str = "CUSTOMER", *, ttl: timedelta = TOKEN_TTL, **claims: Any) -> str:
        """An access token for `user_id`; `claims` override or add claims (None leaves one out)."""
        payload: dict[str, Any] = access_claims(
            user_id=user_id,
            role=Role.CUSTOMER,
            issuer=self.issuer,
            audience=self.audience,
            ttl=ttl,
            now=datetime.fromtimestamp(int(time.time()), UTC),
        ).as_payload()
        payload |= {"role": role, **claims}
        present = {name: value for name, value in payload.items() if value is not None}
        return jwt.encode(present, self.key, algorithm=keys.ALGORITHM, headers={"kid": self.kid, "typ": "JWT"})

    def bearer(self, user_id: str, role: str = "CUSTOMER") -> Metadata:
        return ((AUTHORIZATION_HEADER, f"Bearer {self.token(user_id, role)}"),)


_published: dict[Path, TokenMinter] = {}
_current: TokenMinter | None = None


def publish_test_key(stack: Stack) -> TokenMinter:
    """The stack's test key (stored on first use), now the key `bearer` and `token` sign with."""
    global _current
    minter = _published.get(stack.run_dir)
    if minter is None:
        stack.up(["infra", "auth"])  # auth_svc creates its first (signing) key before ours exists
        minter = _in_a_loop_of_its_own(_stored_key(stack, reuse=True))
        _published[stack.run_dir] = minter
    _current = minter
    return minter


def minter() -> TokenMinter:
    if _current is None:
        raise RuntimeError("call tests.identity.publish_test_key(stack) first (the support fixtures do)")
    return _current


def token(user_id: str, role: str = "CUSTOMER", **claims: Any) -> str:
    return minter().token(user_id, role, **claims)


def bearer(user_id: str, role: str = "CUSTOMER") -> Metadata:
    """The metadata of a call made by `user_id`: `authorization: Bearer <a fresh access token>`."""
    return minter().bearer(user_id, role)


def service_settings(stack: Stack) -> dict[str, object]:
    """What an in-process service needs to verify the stack's tokens (ServiceSettings fields)."""
    return {
        "auth_addr": f"127.0.0.1:{stack.ports.auth}",
        "jwt_issuer": jwt_issuer(stack.profile),
        "jwt_audience": JWT_AUDIENCE,
        "service_token_secret": stack.secrets.service_token_secret,
    }


def store_pending_key(stack: Stack) -> TokenMinter:
    """Another published-but-never-signing key, stored now (its kid is new to every verifier); the caller
    revokes it when done (`python -m auth_svc revoke-key`)."""
    return _in_a_loop_of_its_own(_stored_key(stack, reuse=False))


def _in_a_loop_of_its_own(work: Coroutine[Any, Any, T]) -> T:
    with ThreadPoolExecutor(1) as worker:  # callable from sync code and from a running event loop alike
        return worker.submit(asyncio.run, work).result()


async def _stored_key(stack: Stack, *, reuse: bool) -> TokenMinter:
    cipher = keys.key_cipher(stack.secrets.key_encryption_key)
    engine = create_async_engine(stack.database_url("auth"))
    try:
        auth_store = store.auth_store(engine)
        now = await auth_store.now()
        for sealed in await auth_store.keys() if reuse else ():
            record = sealed.record
            if not record.revoked and record.activates_at - now > TEST_KEY_MIN_LEAD:
                private = keys.load_private_key(cipher.open(record.kid, sealed.sealed_private_key))
                return TokenMinter(record.kid, private, jwt_issuer(stack.profile))
        new = keys.generate_key()
        await auth_store.add_key(new.jwk.kid, new.jwk, cipher.seal(new.jwk.kid, new.private_pem), TEST_KEY_LEAD)
        return TokenMinter(new.jwk.kid, keys.load_private_key(new.private_pem), jwt_issuer(stack.profile))
    finally:
        await engine.dispose()
