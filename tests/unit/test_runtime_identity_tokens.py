"""The service-side access-token verifier: the edge's checks, the key set's refreshes, the token cache.

Keys are real P-256 keys made by auth_svc.keys and published as JWKs the way
GetJwks answers; the fetch function stands where auth_svc's GetJwks is in a
service (tests/integration/test_service_identity.py runs the real one).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from auth_svc import keys
from devstack import envoy_config
from paymesh_runtime import access_tokens
from paymesh_runtime.access_tokens import AccessTokenVerifier, KeySet
from paymesh_runtime.errors import Unauthenticated, Unavailable
from paymesh_runtime.identity import Role
from tests.identity import TokenMinter

ISSUER = "paymesh-test"
AUDIENCE = "paymesh"
REFRESH = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


class AuthKeys:
    """A JWKS publisher: the keys it lists, how often it was asked, and whether it answers."""

    def __init__(self) -> None:
        self.published: dict[str, TokenMinter] = {}
        self.calls = 0
        self.down = False

    def new_key(self) -> TokenMinter:
        new = keys.generate_key()
        minter = TokenMinter(new.jwk.kid, keys.load_private_key(new.private_pem), ISSUER, AUDIENCE)
        self.published[minter.kid] = minter
        return minter

    def revoke(self, kid: str) -> None:
        del self.published[kid]

    async def fetch(self) -> list[dict[str, str]]:
        self.calls += 1
        if self.down:
            raise ConnectionError("auth_svc is down")
        return [_jwk(minter) for minter in self.published.values()]


def _jwk(minter: TokenMinter) -> dict[str, str]:
    numbers = minter.key.public_key().public_numbers()

    def b64(value: int) -> str:
        return base64.urlsafe_b64encode(value.to_bytes(32, "big")).rstrip(b"=").decode()

    return keys.PublicJwk(minter.kid, b64(numbers.x), b64(numbers.y)).as_dict()


def _verifier(auth: AuthKeys, clock: Clock, cache_size: int = 100) -> tuple[AccessTokenVerifier, KeySet]:
    key_set = KeySet(auth.fetch, refresh_seconds=REFRESH, unknown_kid_interval_seconds=1.0, clock=clock)
    return AccessTokenVerifier(key_set, issuer=ISSUER, audience=AUDIENCE, cache_size=cache_size, clock=clock), key_set


async def _refused(verifier: AccessTokenVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as raised:
        await verifier.verify(token)
    assert raised.value.reason == "UNAUTHENTICATED"
    return raised.value.message


def test_the_clock_skew_and_lifetime_are_the_edges() -> None:
    assert access_tokens.CLOCK_SKEW_SECONDS == envoy_config.JWT_CLOCK_SKEW_SECONDS
    assert access_tokens.MAX_LIFETIME_SECONDS == envoy_config.JWT_MAX_LIFETIME_SECONDS


async def test_a_token_verifies_once_and_then_comes_from_the_cache() -> None:
    auth, clock = AuthKeys(), Clock()
    minter = auth.new_key()
    verifier, _ = _verifier(auth, clock)
    token = minter.token("u1", "MERCHANT")
    user = await verifier.verify(token)
    assert (user.user_id, user.role) == ("u1", Role.MERCHANT)
    # The very object the first verification made: no second decode, no second fetch.
    assert await verifier.verify(token) is user
    assert auth.calls == 1
    # Another token of the same user is verified on its own.
    assert await verifier.verify(minter.token("u1", "MERCHANT")) is not user


async def test_the_cache_is_bounded_and_forgets_the_least_recently_used() -> None:
    auth, clock = AuthKeys(), Clock()
    minter = auth.new_key()
    verifier, _ = _verifier(auth, clock, cache_size=2)
    first, second, third = (minter.token(f"u{n}") for n in range(3))
    kept = await verifier.verify(first)
    evicted = await verifier.verify(second)
    assert await verifier.verify(first) is kept  # first is now the most recent
    await verifier.verify(third)  # evicts second
    assert await verifier.verify(first) is kept
    assert await verifier.verify(second) is not evicted  # verified afresh


async def test_a_cached_token_expires_with_the_edges_skew() -> None:
    auth, clock = AuthKeys(), Clock()
    minter = auth.new_key()
    verifier, _ = _verifier(auth, clock)
    token = minter.token("u1", iat=int(clock.now), exp=int(clock.now) + 60)
    await verifier.verify(token)
    clock.now += 60 + access_tokens.CLOCK_SKEW_SECONDS  # still inside the skew
    await verifier.verify(token)
    clock.now += 1.5
    assert "expired" in await _refused(verifier, token)


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "issued_in_the_future",
        "other_key_same_kid",
        "unknown_kid",
        "wrong_audience",
        "wrong_issuer",
        "alg_none",
        "hs256_with_the_public_key",
        "no_expiry",
        "no_subject",
        "lifetime_over_an_hour",
        "unknown_role",
        "garbage",
    ],
)
async def test_tokens_the_edge_refuses_are_refused(case: str) -> None:
    auth, clock = AuthKeys(), Clock()
    minter = auth.new_key()
    verifier, _ = _verifier(auth, clock)
    now = int(clock.now)
    impostor = TokenMinter(minter.kid, ec.generate_private_key(ec.SECP256R1()), ISSUER, AUDIENCE)
    stranger = TokenMinter("not-published", ec.generate_private_key(ec.SECP256R1()), ISSUER, AUDIENCE)
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u1", "role": "ADMIN", "iat": now, "exp": now + 300}
    public_pem = minter.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tokens: dict[str, Callable[[], str]] = {
        "expired": lambda: minter.token("u1", iat=now - 900, exp=now - access_tokens.CLOCK_SKEW_SECONDS - 1),
        "issued_in_the_future": lambda: minter.token("u1", iat=now + 60, exp=now + 600),
        "other_key_same_kid": lambda: impostor.token("u1"),
        "unknown_kid": lambda: stranger.token("u1"),
        "wrong_audience": lambda: minter.token("u1", aud="another-api"),
        "wrong_issuer": lambda: minter.token("u1", iss="https://evil.example.com"),
        "alg_none": lambda: jwt.encode(payload, "", algorithm="none", headers={"kid": minter.kid}),
        "hs256_with_the_public_key": lambda: _hs256(payload, public_pem, minter.kid),
        "no_expiry": lambda: minter.token("u1", exp=None),
        "no_subject": lambda: minter.token("u1", sub=None),
        "lifetime_over_an_hour": lambda: minter.token("u1", iat=now, exp=now + access_tokens.MAX_LIFETIME_SECONDS + 1),
        "unknown_role": lambda: minter.token("u1", "ROOT"),
        "garbage": lambda: "not.a.jwt",
    }
    await _refused(verifier, tokens[case]())
    # The control: a token minted the same way with nothing wrong passes.
    assert (await verifier.verify(minter.token("u1"))).user_id == "u1"


def _hs256(payload: dict[str, Any], secret: bytes, kid: str) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(payload).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


async def test_a_new_kid_is_fetched_at_once() -> None:
    auth, clock = AuthKeys(), Clock()
    old = auth.new_key()
    verifier, _ = _verifier(auth, clock)
    await verifier.verify(old.token("u1"))
    clock.now += 5  # past the unknown-kid interval, well inside the refresh period
    rotated_in = auth.new_key()
    assert (await verifier.verify(rotated_in.token("u2"))).user_id == "u2"
    assert auth.calls == 2


async def test_a_revoked_key_stops_verifying_after_the_refresh_even_cached_tokens() -> None:
    auth, clock = AuthKeys(), Clock()
    kept, revoked = auth.new_key(), auth.new_key()
    verifier, key_set = _verifier(auth, clock)
    cached = revoked.token("u1")
    await verifier.verify(cached)
    auth.revoke(revoked.kid)
    await verifier.verify(cached)  # until the set is refetched, the key is known
    clock.now += REFRESH
    await verifier.verify(cached)  # the stale set answers this call and refreshes in the background
    await key_set.refresh()
    assert auth.calls >= 2
    assert "not published" in await _refused(verifier, cached)
    assert "not published" in await _refused(verifier, revoked.token("u1"))
    assert (await verifier.verify(kept.token("u1"))).user_id == "u1"


async def test_a_flood_of_unknown_kids_fetches_once_a_second() -> None:
    auth, clock = AuthKeys(), Clock()
    minter = auth.new_key()
    verifier, _ = _verifier(auth, clock)
    forged = [TokenMinter(f"kid-{n}", minter.key, ISSUER, AUDIENCE).token("u1") for n in range(50)]
    results = await asyncio.gather(*(verifier.verify(token) for token in forged), return_exceptions=True)
    assert all(isinstance(result, Unauthenticated) for result in results)
    assert auth.calls == 1
    for token in forged:
        await _refused(verifier, token)
    assert auth.calls == 1
    clock.now += 1.0
    await _refused(verifier, forged[0])
    assert auth.calls == 2


async def test_concurrent_first_calls_share_one_fetch() -> None:
    auth, clock = AuthKeys(), Clock()
    minter = auth.new_key()
    verifier, _ = _verifier(auth, clock)
    users = await asyncio.gather(*(verifier.verify(minter.token(f"u{n}")) for n in range(20)))
    assert {user.user_id for user in users} == {f"u{n}" for n in range(20)}
    assert auth.calls == 1


async def test_without_any_key_set_the_answer_is_unavailable_and_known_keys_outlive_an_outage() -> None:
    auth, clock = AuthKeys(), Clock()
    minter = auth.new_key()
    verifier, key_set = _verifier(auth, clock)
    auth.down = True
    with pytest.raises(Unavailable) as raised:
        await verifier.verify(minter.token("u1"))
    assert raised.value.reason == "DEPENDENCY_UNAVAILABLE"
    with pytest.raises(Unavailable):  # no second fetch inside the interval
        await verifier.verify(minter.token("u1"))
    assert auth.calls == 1

    auth.down = False
    clock.now += 1.0
    assert (await verifier.verify(minter.token("u1"))).user_id == "u1"
    auth.down = True
    clock.now += REFRESH
    await key_set.refresh()
    assert (await verifier.verify(minter.token("u2"))).user_id == "u2"  # the last good set still verifies


async def test_a_broken_entry_in_the_key_set_spoils_only_itself() -> None:
    auth, clock = AuthKeys(), Clock()
    minter = auth.new_key()
    good = auth.fetch

    async def with_a_broken_entry() -> list[dict[str, str]]:
        return [*await good(), {"kty": "EC", "crv": "P-256", "kid": "broken", "x": "AA", "y": "AA"}]

    auth.fetch = with_a_broken_entry  # type: ignore[method-assign]
    verifier, _ = _verifier(auth, clock)
    assert (await verifier.verify(minter.token("u1"))).user_id == "u1"
