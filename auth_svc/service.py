"""AuthService gRPC handlers: validate, call the domain, map to protos.

Password hashing runs in a worker thread (Argon2id takes tens of
milliseconds of CPU and would stall every other call on the event loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from auth_svc import accounts, tokens
from auth_svc.accounts import Account, Passwords
from auth_svc.events import user_proto
from auth_svc.keyring import KeyRing
from auth_svc.sessions import LoginThrottle, Outcome, Sessions
from auth_svc.store import AuthStore
from paymesh.auth.v1 import auth_pb2, auth_pb2_grpc
from paymesh_runtime.errors import (
    AlreadyExists,
    ResourceExhausted,
    Unauthenticated,
    not_found,
    validation_failed,
)
from paymesh_runtime.identity import Context, Role, require_user


@dataclass(frozen=True)
class TokenSettings:
    issuer: str
    audience: str
    access_ttl: timedelta


def _invalid_credentials() -> Unauthenticated:
    # One answer for an unknown email and a wrong password.
    return Unauthenticated("INVALID_CREDENTIALS", "the email or the password is wrong")


def _invalid_refresh_token() -> Unauthenticated:
    return Unauthenticated("REFRESH_TOKEN_INVALID", "the refresh token is unknown, expired or revoked")


def _role(account_type: int) -> Role | None:
    try:
        return Role(auth_pb2.User.AccountType.Name(account_type))  # type: ignore[arg-type]
    except ValueError:
        return None  # ACCOUNT_TYPE_UNSPECIFIED or a number this build does not know


def _required(value: str, field: str) -> str:
    if not value:
        raise validation_failed(field, "is required")
    return value


class AuthService(auth_pb2_grpc.AuthServiceServicer):
    """Accounts, token pairs and the JWKS."""

    def __init__(
        self,
        store: AuthStore,
        passwords: Passwords,
        keyring: KeyRing,
        sessions: Sessions,
        throttle: LoginThrottle,
        token_settings: TokenSettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._passwords = passwords
        self._keyring = keyring
        self._sessions = sessions
        self._throttle = throttle
        self._tokens = token_settings
        self._clock = clock

    async def Register(self, request: auth_pb2.RegisterRequest, context: Context) -> auth_pb2.User:
        signup = accounts.sign_up(
            request.email,
            request.password,
            request.display_name,
            _role(request.account_type),
            allowed=accounts.SIGNUP_ROLES,
        )
        password_hash = await asyncio.to_thread(self._passwords.hash, signup.password)
        account = await self._store.create_user(signup, password_hash)
        if account is None:
            raise AlreadyExists(
                "EMAIL_ALREADY_REGISTERED", "an account with this email already exists", metadata={"field": "email"}
            )
        return user_proto(account)

    async def Login(self, request: auth_pb2.LoginRequest, context: Context) -> auth_pb2.TokenPair:
        email = accounts.normalise_email(_required(request.email, "email"))
        password = _required(request.password, "password")
        attempt, wait_seconds = await self._throttle.reserve(email)
        if attempt is None:
            # The same for every email, registered or not.
            raise ResourceExhausted(
                "LOGIN_THROTTLED",
                "too many failed logins for this email; try again later",
                metadata={"retry_after_seconds": str(wait_seconds)},
            )
        stored = await self._store.user_by_email(email)
        # Always one Argon2 verification (a dummy hash for unknown emails), so
        # response times do not tell registered emails apart.
        stored_hash = stored.password_hash if stored else None
        matches = await asyncio.to_thread(self._passwords.verify, stored_hash, password)
        if stored is None or not matches:
            raise _invalid_credentials()
        await self._throttle.succeeded(email, attempt)
        await self._upgrade_hash(stored.account, stored.password_hash, password)
        refresh = await self._sessions.start(stored.account.user_id)
        return await self._token_pair(stored.account, refresh)

    async def Refresh(self, request: auth_pb2.RefreshRequest, context: Context) -> auth_pb2.TokenPair:
        presented = tokens.parse_refresh_token(_required(request.refresh_token, "refresh_token"))
        if presented is None:
            raise _invalid_refresh_token()
        await self._keyring.signer()  # fail before the token is used up, not after
        rotation = await self._sessions.rotate(presented)
        if rotation.outcome is Outcome.REUSED:
            raise Unauthenticated(
                "REFRESH_TOKEN_REUSED", "this refresh token was already used; the session has been revoked"
            )
        if rotation.outcome is not Outcome.OK or rotation.user_id is None or rotation.token is None:
            raise _invalid_refresh_token()
        account = await self._store.user_by_id(rotation.user_id)
        if account is None:
            raise _invalid_refresh_token()
        return await self._token_pair(account, rotation.token)

    async def Logout(self, request: auth_pb2.LogoutRequest, context: Context) -> auth_pb2.LogoutResponse:
        user = require_user(context)
        presented = tokens.parse_refresh_token(_required(request.refresh_token, "refresh_token"))
        # Another user's token is "unknown" to this caller: no session is revealed or ended.
        if presented is None or await self._sessions.revoke(presented, user.user_id) is not Outcome.OK:
            raise _invalid_refresh_token()
        return auth_pb2.LogoutResponse()

    async def GetMe(self, request: auth_pb2.GetMeRequest, context: Context) -> auth_pb2.User:
        user = require_user(context)
        account = await self._store.user_by_id(user.user_id)
        if account is None:
            raise not_found("user", user.user_id)
        return user_proto(account)

    async def GetJwks(self, request: auth_pb2.GetJwksRequest, context: Context) -> auth_pb2.Jwks:
        return auth_pb2.Jwks(keys=[auth_pb2.JsonWebKey(**jwk.as_dict()) for jwk in await self._keyring.published()])

    async def _token_pair(self, account: Account, refresh: tokens.RefreshToken) -> auth_pb2.TokenPair:
        signer = await self._keyring.signer()
        claims = tokens.access_claims(
            user_id=account.user_id,
            role=account.role,
            issuer=self._tokens.issuer,
            audience=self._tokens.audience,
            ttl=self._tokens.access_ttl,
            now=self._clock(),
        )
        return auth_pb2.TokenPair(
            access_token=tokens.sign_access_token(claims, signer.kid, signer.private_key),
            refresh_token=refresh.token,
            token_type=tokens.TOKEN_TYPE,
            expires_in=int(self._tokens.access_ttl.total_seconds()),
        )

    async def _upgrade_hash(self, account: Account, old_hash: str, password: str) -> None:
        if self._passwords.needs_rehash(old_hash):
            new_hash = await asyncio.to_thread(self._passwords.hash, password)
            await self._store.replace_password_hash(account.user_id, old_hash, new_hash)
