"""Service-identity tokens, and the end user a handler reads: the one the server interceptor bound, never a header."""

from __future__ import annotations

import grpc
import pytest

from paymesh_runtime.errors import PermissionDenied, Unauthenticated
from paymesh_runtime.identity import (
    SERVICE_TOKEN_HEADER,
    Caller,
    Role,
    ServiceTokenClientInterceptor,
    ServiceTokens,
    User,
    bind_caller,
    optional_user,
    require_admin,
    require_user,
    unbind_caller,
)

SECRET = "s" * 48


class FakeContext:
    def __init__(self, *metadata: tuple[str, str]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


def test_token_round_trips_and_names_the_service() -> None:
    tokens = ServiceTokens(SECRET)
    assert tokens.verify(tokens.issue("payment_svc")) == "payment_svc"


def test_token_signed_with_another_secret_is_rejected() -> None:
    forged = ServiceTokens("x" * 48).issue("payment_svc")
    with pytest.raises(Unauthenticated):
        ServiceTokens(SECRET).verify(forged)


def test_tampered_service_name_is_rejected() -> None:
    token = ServiceTokens(SECRET).issue("notify_svc").replace("notify_svc", "payment_svc")
    with pytest.raises(Unauthenticated):
        ServiceTokens(SECRET).verify(token)


def test_old_token_expires() -> None:
    now = [1_000_000.0]
    tokens = ServiceTokens(SECRET, clock=lambda: now[0])
    token = tokens.issue("payment_svc")
    now[0] += 301
    with pytest.raises(Unauthenticated):
        tokens.verify(token)


def test_require_checks_the_allowed_services() -> None:
    tokens = ServiceTokens(SECRET)
    context = FakeContext((SERVICE_TOKEN_HEADER, tokens.issue("notify_svc")))
    assert tokens.require(context, {"notify_svc"}) == "notify_svc"  # type: ignore[arg-type]
    with pytest.raises(PermissionDenied):
        tokens.require(context, {"payment_svc"})  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated):
        tokens.require(FakeContext(), {"payment_svc"})  # type: ignore[arg-type]


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        ServiceTokens("short")


def test_the_user_is_the_one_bound_to_the_call_and_never_a_header() -> None:
    claims = FakeContext(("x-paymesh-user-id", "u1"), ("x-paymesh-role", "ADMIN"))
    assert optional_user(claims) is None  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated):
        require_user(claims)  # type: ignore[arg-type]

    bound = bind_caller(Caller(User("u1", Role.MERCHANT)))
    try:
        user = require_user(claims)  # type: ignore[arg-type]
        assert (user.user_id, user.role) == ("u1", Role.MERCHANT)
        assert user.may_see("u2", "u1")
        assert not user.may_see("u2")
        with pytest.raises(PermissionDenied):
            require_admin(claims)  # type: ignore[arg-type]
    finally:
        unbind_caller(bound)
    assert optional_user(claims) is None  # type: ignore[arg-type]


def test_a_refused_credential_is_the_answer_of_require_user() -> None:
    refusal = Unauthenticated("UNAUTHENTICATED", "the access token has expired")
    bound = bind_caller(Caller(None, refusal))
    try:
        assert optional_user(FakeContext()) is None  # type: ignore[arg-type]
        with pytest.raises(Unauthenticated) as raised:
            require_user(FakeContext())  # type: ignore[arg-type]
        assert raised.value is refusal
    finally:
        unbind_caller(bound)


async def test_client_interceptor_attaches_a_verifiable_token() -> None:
    tokens = ServiceTokens(SECRET)
    seen: dict[str, str] = {}

    class Echo(grpc.aio.ServerInterceptor):  # type: ignore[misc,type-arg]
        async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
            seen.update({k: v for k, v in details.invocation_metadata if isinstance(v, str)})
            return grpc.unary_unary_rpc_method_handler(lambda req, ctx: b"ok")

    server = grpc.aio.server(interceptors=[Echo()])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}",
            interceptors=[ServiceTokenClientInterceptor(tokens, "payment_svc")],  # type: ignore[list-item]
        ) as channel:
            call = channel.unary_unary("/x.Y/Z")  # type: ignore[call-arg]
            assert await call(b"hi", metadata=(("a", "b"),)) == b"ok"
    finally:
        await server.stop(None)
    assert seen["a"] == "b"
    assert tokens.verify(seen[SERVICE_TOKEN_HEADER]) == "payment_svc"
