"""Access tokens verified by the service itself: auth_svc's key set, and a cache of verified tokens.

Envoy verifies every bearer token at the edge, but a service must not trust
that a call came through the edge: its port is reachable from inside the
network. So each service verifies the token Envoy forwards (`forward: true`)
the same way Envoy does: ES256 signature by `kid` against auth_svc's JWKS,
`iss`, `aud`, `exp` (and `iat`) with Envoy's clock skew, `exp - iat` at most
Envoy's `max_lifetime`, and a `role` paymesh knows.

Cost. A verified token is kept by its exact text until it expires (bounded
LRU): a client's repeated token costs a dict lookup, a new one one ECDSA
verification. A cache hit still needs the token's key in the current key set,
so a revoked key stops verifying cached tokens too (unlike Envoy's jwt_cache).

The key set (`KeySet`) comes from a fetch function (auth_svc's GetJwks over
the mesh, or auth_svc's own key store). It is refetched when older than
`refresh_seconds` (in the background; the call in hand still uses the old set)
and at once for an unknown `kid`, at most once per `unknown_kid_interval`, so
a flood of made-up kids costs auth_svc one fetch a second per replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import jwt

from paymesh.auth.v1 import auth_pb2, auth_pb2_grpc
from paymesh_runtime.errors import Unauthenticated, Unavailable
from paymesh_runtime.identity import Role, User

log = logging.getLogger(__name__)

ALGORITHM = "ES256"
# The edge's jwt_authn settings (devstack.envoy_config.JWT_CLOCK_SKEW_SECONDS and
# JWT_MAX_LIFETIME_SECONDS; a unit test keeps them equal): a token the edge
# accepts is one the service accepts, and no other.
CLOCK_SKEW_SECONDS = 5
MAX_LIFETIME_SECONDS = 3600
REQUIRED_CLAIMS = ("iss", "aud", "sub", "iat", "exp")
DEFAULT_CACHE_SIZE = 10_000
DEFAULT_UNKNOWN_KID_INTERVAL_SECONDS = 1.0
JWKS_FETCH_TIMEOUT_SECONDS = 2.0

# Fetches the published key set: a list of JWKs (RFC 7517 members as strings).
JwksFetch = Callable[[], Awaitable[Sequence[Mapping[str, str]]]]


def refused(message: str) -> Unauthenticated:
    """The one answer for a bearer token that does not verify (reason UNAUTHENTICATED, as at the edge)."""
    return Unauthenticated("UNAUTHENTICATED", message)


def auth_svc_jwks(channel: grpc.aio.Channel, timeout_seconds: float = JWKS_FETCH_TIMEOUT_SECONDS) -> JwksFetch:
    """auth_svc's GetJwks over a mesh channel, as a key-set fetch."""
    stub = auth_pb2_grpc.AuthServiceStub(channel)  # type: ignore[no-untyped-call]

    async def fetch() -> list[dict[str, str]]:
        reply: auth_pb2.Jwks = await stub.GetJwks(auth_pb2.GetJwksRequest(), timeout=timeout_seconds)
        return [{field.name: value for field, value in key.ListFields()} for key in reply.keys]

    return fetch


class KeySet:
    """auth_svc's public keys by kid, refetched periodically and for an unknown kid (rate-limited)."""

    def __init__(
        self,
        fetch: JwksFetch,
        *,
        refresh_seconds: float,
        unknown_kid_interval_seconds: float = DEFAULT_UNKNOWN_KID_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._refresh_seconds = refresh_seconds
        self._unknown_kid_interval = unknown_kid_interval_seconds
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded = False  # a fetch has succeeded at least once
        self._fetched_at = -float("inf")  # last successful fetch
        self._tried_at = -float("inf")  # last attempt, successful or not
        self._failing = False
        self._inflight: asyncio.Task[None] | None = None

    def known(self, kid: str) -> bool:
        """Whether `kid` is in the key set now (a cached token of a revoked key is not)."""
        self._refresh_if_stale()
        return kid in self._keys

    async def key(self, kid: str) -> jwt.PyJWK:
        """The public key `kid`; refetches the set once if it is unknown (rate-limited)."""
        self._refresh_if_stale()
        found = self._keys.get(kid)
        if found is not None:
            return found
        if self._inflight is not None:
            await asyncio.shield(self._inflight)
        elif self._clock() - self._tried_at >= self._unknown_kid_interval:
            await asyncio.shield(self._start_refresh())
        found = self._keys.get(kid)
        if found is not None:
            return found
        if not self._loaded:
            raise Unavailable(
                "DEPENDENCY_UNAVAILABLE",
                "auth_svc's key set, which verifies access tokens, cannot be had right now; retry",
                metadata={"dependency": "auth_svc"},
            )
        raise refused("the access token's signing key is not published (unknown or revoked kid)")

    async def refresh(self) -> None:
        """Fetches the key set now (joining a fetch already under way)."""
        await asyncio.shield(self._inflight or self._start_refresh())

    def _refresh_if_stale(self) -> None:
        now = self._clock()
        # A failed fetch is retried no sooner than an unknown kid would retry it.
        if (
            self._inflight is None
            and now - self._fetched_at >= self._refresh_seconds
            and now - self._tried_at >= self._unknown_kid_interval
        ):
            self._start_refresh()

    def _start_refresh(self) -> asyncio.Task[None]:
        self._tried_at = self._clock()
        self._inflight = asyncio.get_running_loop().create_task(self._load(), name="jwks-refresh")
        return self._inflight

    async def _load(self) -> None:
        try:
            keys = _parse(await self._fetch())
        except Exception as error:
            # The previous set stays: keys auth_svc published keep verifying while it is away.
            if not self._failing:
                log.warning("cannot fetch the JWKS (%s); keeping %d known keys", type(error).__name__, len(self._keys))
            self._failing = True
        else:
            if self._failing:
                log.info("JWKS fetched again: %d keys", len(keys))
            self._keys, self._loaded, self._failing = keys, True, False
            self._fetched_at = self._clock()
        finally:
            self._inflight = None


def _parse(published: Sequence[Mapping[str, str]]) -> dict[str, jwt.PyJWK]:
    keys: dict[str, jwt.PyJWK] = {}
    for jwk in published:
        if not _usable(jwk):
            continue
        try:
            keys[jwk["kid"]] = jwt.PyJWK(dict(jwk), ALGORITHM)
        except jwt.PyJWTError:
            # One broken entry must not take the others with it.
            log.warning("ignoring a JWKS entry that is not a valid P-256 key (kid %.16s)", jwk["kid"])
    return keys


def _usable(jwk: Mapping[str, str]) -> bool:
    """Only P-256 signing keys for ES256: anything else in the set never verifies a token."""
    return (
        jwk.get("kty") == "EC"
        and jwk.get("crv") == "P-256"
        and jwk.get("alg", ALGORITHM) == ALGORITHM
        and jwk.get("use", "sig") == "sig"
        and bool(jwk.get("kid"))
    )


@dataclass(frozen=True)
class _Verified:
    user: User
    kid: str
    expires_at: int


class AccessTokenVerifier:
    """Verifies paymesh access tokens like the edge does, and remembers the ones that verified."""

    def __init__(
        self,
        keys: KeySet,
        *,
        issuer: str,
        audience: str,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._cache_size = cache_size
        self._clock = clock
        self._verified: OrderedDict[str, _Verified] = OrderedDict()

    async def verify(self, token: str) -> User:
        """The token's user, or Unauthenticated (Unavailable while the key set cannot be had)."""
        hit = self._verified.get(token)
        if hit is not None:
            if self._clock() <= hit.expires_at + CLOCK_SKEW_SECONDS and self._keys.known(hit.kid):
                self._verified.move_to_end(token)
                return hit.user
            del self._verified[token]
        verified = await self._verify(token)
        self._verified[token] = verified
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
        return verified.user

    async def _verify(self, token: str) -> _Verified:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise refused("the access token is malformed") from None
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str):
            raise refused("the access token is not an ES256 token with a kid")
        key = await self._keys.key(kid)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                # exp and iat are checked below, on this verifier's clock.
                options={"require": list(REQUIRED_CLAIMS), "verify_exp": False, "verify_iat": False},
            )
        except jwt.InvalidAudienceError:
            raise refused("the access token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise refused("the access token is from another issuer") from None
        except jwt.PyJWTError:
            raise refused("the access token does not verify") from None
        return _Verified(_user(claims), kid, self._check_times(claims))

    def _check_times(self, claims: Mapping[str, Any]) -> int:
        issued_at, expires_at = claims["iat"], claims["exp"]
        if not all(type(value) is int for value in (issued_at, expires_at)):
            raise refused("the access token's iat and exp must be integers")
        now = self._clock()
        if now > expires_at + CLOCK_SKEW_SECONDS:
            raise refused("the access token has expired")
        if issued_at > now + CLOCK_SKEW_SECONDS:
            raise refused("the access token is not valid yet")
        if expires_at - issued_at > MAX_LIFETIME_SECONDS:
            raise refused(f"the access token lives longer than {MAX_LIFETIME_SECONDS} s")
        return int(expires_at)


def _user(claims: Mapping[str, Any]) -> User:
    subject, role = claims.get("sub"), claims.get("role")
    if not isinstance(subject, str) or not subject.strip():
        raise refused("the access token names no user")
    try:
        return User(subject, Role(str(role)))
    except ValueError:
        raise refused("the access token's role is not recognised") from None
