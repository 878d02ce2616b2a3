"""Who is calling: end users (access tokens the service verifies) and mesh services.

End users. A call's end user is resolved once, by the server interceptor
(paymesh_runtime.callers), before the handler runs; handlers read it with
`require_user(context)`. It comes from one of two places only:

- a bearer access token (`authorization: Bearer <JWT>`) that the service
  verifies itself against auth_svc's key set (paymesh_runtime.access_tokens).
  Envoy forwards the token it verified, so every call through the edge has
  one; a call straight to a service port must bring one too;
- the `x-paymesh-user-id` and `x-paymesh-role` headers, but only on a call
  that also carries a valid service token of a service this one lets act for
  its users (payment_svc reading wallets for the payer). From anyone else,
  Envoy included, these headers mean nothing.

Services never take a user id from a request body.

Services. An internal-only method (a wallet hold, a ledger posting) must not be
callable from outside even if a request slips past the edge, so callers inside
the mesh attach `x-paymesh-service-token`: `v1.<service>.<unix time>.<hmac>`,
an HMAC-SHA256 over `v1.<service>.<unix time>` with the mesh's shared
`SERVICE_TOKEN_SECRET`, valid for a few minutes. Envoy strips this header from
client requests too. (mTLS through a service mesh would do the same job; the
token keeps the local stack free of a certificate authority.)
"""

from __future__ import annotations

import contextvars
import enum
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from paymesh_runtime.errors import PaymeshError, PermissionDenied, Unauthenticated

AUTHORIZATION_HEADER = "authorization"
USER_ID_HEADER = "x-paymesh-user-id"
ROLE_HEADER = "x-paymesh-role"
SERVICE_TOKEN_HEADER = "x-paymesh-service-token"  # noqa: S105 (a header name)
TOKEN_VERSION = "v1"  # noqa: S105 (a format version)
TOKEN_LIFETIME_SECONDS = 300

# Any request context of a grpc.aio handler (the typed generic is noise here).
Context = grpc.aio.ServicerContext[Any, Any]


class Role(enum.StrEnum):
    """The `role` claim of an access token."""

    CUSTOMER = "CUSTOMER"
    MERCHANT = "MERCHANT"
    ADMIN = "ADMIN"


@dataclass(frozen=True)
class User:
    """The end user on whose behalf a request runs."""

    user_id: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def may_see(self, *owner_ids: str) -> bool:
        """Owners and admins may see a resource; everyone else may not know it exists."""
        return self.is_admin or self.user_id in owner_ids


@dataclass(frozen=True)
class Caller:
    """The end user a call runs for, as the server interceptor resolved it before the handler.

    `refusal`: why there is no user although the call presented credentials
    (a token that does not verify, identity headers from a service that may
    not send them), raised by `require_user` instead of the generic answer.
    """

    user: User | None
    refusal: PaymeshError | None = None


NOBODY = Caller(None)
# Each gRPC call runs in its own task, so the value is the call's own; a call
# that went through no resolution (no interceptor) has no user.
_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("paymesh_caller", default=NOBODY)


def bind_caller(caller: Caller) -> contextvars.Token[Caller]:
    """Makes `caller` the end user of the running call (the server interceptor does, once per call)."""
    return _caller.set(caller)


def unbind_caller(token: contextvars.Token[Caller]) -> None:
    _caller.reset(token)


def metadata_of(context: Context) -> dict[str, str]:
    """A call's text metadata, keys lower-cased, the first value of each key."""
    return first_values(context.invocation_metadata() or ())


def first_values(metadata: Iterable[tuple[str, str | bytes]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in metadata:
        if isinstance(value, bytes):
            continue
        found.setdefault(key.lower(), value)
    return found


def optional_user(context: Context) -> User | None:
    """The verified end user of the call, if any (resolved by the server interceptor)."""
    del context  # kept in the signature: handlers ask about *their* call
    return _caller.get().user


def require_user(context: Context) -> User:
    """The verified end user, or UNAUTHENTICATED (UNAVAILABLE while auth_svc's key set cannot be had)."""
    caller = _caller.get()
    if caller.user is not None:
        return caller.user
    if caller.refusal is not None:
        raise caller.refusal
    raise Unauthenticated("UNAUTHENTICATED", "this method needs a signed-in user (a bearer token)")


def require_admin(context: Context) -> User:
    user = require_user(context)
    if not user.is_admin:
        raise PermissionDenied("ADMIN_REQUIRED", "this method is for administrators only")
    return user


def require_merchant(context: Context) -> User:
    user = require_user(context)
    if user.role not in (Role.MERCHANT, Role.ADMIN):
        raise PermissionDenied("MERCHANT_REQUIRED", "this method is for merchant accounts")
    return user


def has_service_token(context: Context) -> bool:
    """Whether the caller presents a service identity at all (verify it with ServiceTokens.require)."""
    return bool(metadata_of(context).get(SERVICE_TOKEN_HEADER))


class ServiceTokens:
    """Issues and verifies service-identity tokens with the mesh's shared secret."""

    def __init__(self, secret: str, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 32:
            raise ValueError("SERVICE_TOKEN_SECRET must be at least 32 characters")
        self._key = secret.encode()
        self._clock = clock

    def _mac(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()

    def issue(self, service: str) -> str:
        body = f"{TOKEN_VERSION}.{service}.{int(self._clock())}"
        return f"{body}.{self._mac(body)}"

    def verify(self, token: str) -> str:
        """Returns the calling service's name, or raises Unauthenticated."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != TOKEN_VERSION:
            raise Unauthenticated("SERVICE_IDENTITY_REQUIRED", "malformed service token")
        version, service, issued, mac = parts
        if not hmac.compare_digest(mac, self._mac(f"{version}.{service}.{issued}")):
            raise Unauthenticated("SERVICE_IDENTITY_REQUIRED", "service token signature does not verify")
        if not issued.isdigit() or abs(self._clock() - int(issued)) > TOKEN_LIFETIME_SECONDS:
            raise Unauthenticated("SERVICE_IDENTITY_REQUIRED", "service token expired")
        return service

    def require(self, context: Context, allowed: Iterable[str]) -> str:
        """The calling service, which must be one of `allowed`; else UNAUTHENTICATED or PERMISSION_DENIED."""
        token = metadata_of(context).get(SERVICE_TOKEN_HEADER)
        if not token:
            raise Unauthenticated("SERVICE_IDENTITY_REQUIRED", "this internal method needs a service identity")
        service = self.verify(token)
        if service not in set(allowed):
            raise PermissionDenied("SERVICE_IDENTITY_REQUIRED", f"service {service!r} may not call this method")
        return service


class ServiceTokenClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc,type-arg]
    """Adds a fresh service token to every outgoing unary call of one service."""

    def __init__(self, tokens: ServiceTokens, service: str) -> None:
        self._tokens = tokens
        self._service = service
        self._cached: tuple[float, str] = (0.0, "")

    def _token(self) -> str:
        # Re-issue once a minute: cheap, and always well inside the lifetime.
        now = time.monotonic()
        if now - self._cached[0] > 60 or not self._cached[1]:
            self._cached = (now, self._tokens.issue(self._service))
        return self._cached[1]

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        metadata: Sequence[tuple[str, str | bytes]] = tuple(client_call_details.metadata or ())
        details = client_call_details._replace(
            metadata=grpc.aio.Metadata(*metadata, (SERVICE_TOKEN_HEADER, self._token()))
        )
        return await continuation(details, request)
