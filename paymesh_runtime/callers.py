"""Resolves the end user of each call, once, before its handler runs (paymesh_runtime.identity).

What a service trusts, in order:

1. `authorization: Bearer <JWT>`: the user is the token's `sub` and `role`
   if the token verifies (paymesh_runtime.access_tokens), else nobody, with
   the reason kept for `require_user`. A call through Envoy always has one.
2. `x-paymesh-user-id` / `x-paymesh-role` on a call that also carries a valid
   service token of a service in this service's `delegates`: that service
   verified the user itself and acts for them (payment_svc → wallet_svc).
   The same headers from anyone else (a client on the raw port, Envoy, another
   mesh service) are refused: no user.
3. Nothing: no user. Public methods (login, the key set, webhooks) need none.

The resolution never fails the call itself: a method that needs no user
works whatever credentials came with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import grpc

from paymesh_runtime.access_tokens import AccessTokenVerifier, JwksFetch, KeySet, auth_svc_jwks, refused
from paymesh_runtime.channels import internal_channel
from paymesh_runtime.errors import PaymeshError, Unauthenticated
from paymesh_runtime.identity import (
    AUTHORIZATION_HEADER,
    NOBODY,
    ROLE_HEADER,
    SERVICE_TOKEN_HEADER,
    USER_ID_HEADER,
    Caller,
    Role,
    ServiceTokens,
    User,
    first_values,
)
from paymesh_runtime.settings import ServiceSettings

Close = Callable[[], Awaitable[None]]


async def _nothing_to_close() -> None:
    return None


class Callers:
    """Turns a call's metadata into its Caller: a verified bearer token, or a delegating service's word."""

    def __init__(
        self,
        tokens: AccessTokenVerifier | None,
        *,
        service_tokens: ServiceTokens | None = None,
        delegates: Iterable[str] = (),
        close: Close = _nothing_to_close,
    ) -> None:
        self._tokens = tokens
        self._service_tokens = service_tokens
        self.delegates = frozenset(delegates)
        if self.delegates and service_tokens is None:
            raise ValueError("delegates need the mesh's service tokens to be recognised")
        self.close = close

    @classmethod
    def nobody(cls) -> Callers:
        """No call has an end user (servers without user-facing methods, tests of the runtime)."""
        return cls(None)

    async def resolve(self, metadata: Iterable[tuple[str, str | bytes]]) -> Caller:
        headers = first_values(metadata)
        authorization = headers.get(AUTHORIZATION_HEADER)
        if authorization is not None:
            return await self._bearer(authorization)
        if headers.get(USER_ID_HEADER, "").strip():
            return self._delegated(headers)
        return NOBODY

    async def _bearer(self, authorization: str) -> Caller:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return Caller(None, refused("the authorization header is not a bearer token"))
        if self._tokens is None:
            return Caller(None, refused("this server accepts no access tokens"))
        try:
            return Caller(await self._tokens.verify(token.strip()))
        except PaymeshError as refusal:
            return Caller(None, refusal)

    def _delegated(self, headers: dict[str, str]) -> Caller:
        service_token = headers.get(SERVICE_TOKEN_HEADER)
        if not service_token or self._service_tokens is None:
            return Caller(None, _not_from_a_delegate("a client"))
        try:
            service = self._service_tokens.verify(service_token)
        except PaymeshError as refusal:
            return Caller(None, refusal)
        if service not in self.delegates:
            return Caller(None, _not_from_a_delegate(f"service {service!r}"))
        try:
            role = Role(headers.get(ROLE_HEADER, ""))
        except ValueError:
            return Caller(None, Unauthenticated("UNAUTHENTICATED", "the caller's role is not recognised"))
        return Caller(User(headers[USER_ID_HEADER].strip(), role))


def _not_from_a_delegate(who: str) -> Unauthenticated:
    return Unauthenticated(
        "UNAUTHENTICATED",
        f"{USER_ID_HEADER} from {who} is not accepted here: present a bearer token",
    )


def end_users(
    settings: ServiceSettings,
    service: str,
    *,
    delegates: Iterable[str] = (),
    jwks: JwksFetch | None = None,
) -> Callers:
    """The caller resolution of `service` as deployed.

    Access tokens are verified against `jwks` (default: auth_svc's GetJwks at
    `settings.auth_addr`, over a mesh channel) with the stack's issuer and
    audience; identity headers are honoured from `delegates` only.
    """
    secret = settings.service_token_secret.get_secret_value()
    channel: grpc.aio.Channel | None = None
    if jwks is None:
        # A mesh channel: GetJwks is public, but every call inside the mesh carries the caller's service token.
        channel = internal_channel(settings.auth_addr, caller=service, tokens=ServiceTokens(secret))
        jwks = auth_svc_jwks(channel)
    service_tokens = ServiceTokens(secret) if delegates else None
    keys = KeySet(jwks, refresh_seconds=settings.jwks_refresh_seconds)
    verifier = AccessTokenVerifier(keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience)

    async def close() -> None:
        if channel is not None:
            await channel.close(None)

    return Callers(verifier, service_tokens=service_tokens, delegates=delegates, close=close)
