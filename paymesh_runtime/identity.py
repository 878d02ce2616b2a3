"""Who is calling: end users (claims verified by Envoy) and mesh services.

End users. Envoy's jwt_authn verifies the bearer token and forwards its `sub`
and `role` claims as the `x-paymesh-user-id` and `x-paymesh-role` headers; it
first strips any such header a client sent, so behind the edge they are
trustworthy. Services never take a user id from a request body.

Services. An internal-only method (a wallet hold, a ledger posting) must not be
callable from outside even if a request slips past the edge, so callers inside
the mesh attach `x-paymesh-service-token`: `v1.<service>.<unix time>.<hmac>`,
an HMAC-SHA256 over `v1.<service>.<unix time>` with the mesh's shared
`SERVICE_TOKEN_SECRET`, valid for a few minutes. Envoy strips this header from
client requests too. (mTLS through a service mesh would do the same job; the
token keeps the local stack free of a certificate authority.)
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from paymesh_runtime.errors import PermissionDenied, Unauthenticated

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


def _metadata(context: Context) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, bytes):
            continue
        found.setdefault(key.lower(), value)
    return found


def optional_user(context: Context) -> User | None:
    headers = _metadata(context)
    user_id = headers.get(USER_ID_HEADER, "").strip()
    if not user_id:
        return None
    try:
        role = Role(headers.get(ROLE_HEADER, ""))
    except ValueError:
        raise Unauthenticated("UNAUTHENTICATED", "the caller's role is not recognised") from None
    return User(user_id, role)


def require_user(context: Context) -> User:
    """The verified end user, or UNAUTHENTICATED."""
    user = optional_user(context)
    if user is None:
        raise Unauthenticated("UNAUTHENTICATED", "this method needs a signed-in user (a bearer token)")
    return user


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
    return bool(_metadata(context).get(SERVICE_TOKEN_HEADER))


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
        token = _metadata(context).get(SERVICE_TOKEN_HEADER)
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
