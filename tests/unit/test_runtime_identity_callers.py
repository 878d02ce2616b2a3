"""Whose call it is: a verified bearer token, or identity headers from an allowed delegating service only.

The last tests serve a handler through the real MeshServerInterceptor on a
local port, so the user is resolved before the handler runs and
`require_user(context)` answers over gRPC exactly as in a service.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import wrappers_pb2

from auth_svc import keys
from paymesh_runtime.access_tokens import AccessTokenVerifier, KeySet
from paymesh_runtime.callers import Callers
from paymesh_runtime.errors import Unauthenticated
from paymesh_runtime.identity import (
    NOBODY,
    ROLE_HEADER,
    SERVICE_TOKEN_HEADER,
    USER_ID_HEADER,
    Context,
    Role,
    ServiceTokens,
    User,
    optional_user,
    require_user,
)
from paymesh_runtime.interceptors import MeshServerInterceptor
from tests.identity import TokenMinter

SECRET = "s" * 48
ISSUER, AUDIENCE = "paymesh-test", "paymesh"
Metadata = tuple[tuple[str, str], ...]


@dataclass
class Mesh:
    minter: TokenMinter
    tokens: ServiceTokens
    callers: Callers

    def bearer(self, user_id: str, role: str = "CUSTOMER") -> Metadata:
        return self.minter.bearer(user_id, role)

    def claims(self, user_id: str, role: str = "CUSTOMER") -> Metadata:
        return ((USER_ID_HEADER, user_id), (ROLE_HEADER, role))

    def service(self, name: str) -> Metadata:
        return ((SERVICE_TOKEN_HEADER, self.tokens.issue(name)),)


@pytest.fixture
def mesh() -> Mesh:
    new = keys.generate_key()
    minter = TokenMinter(new.jwk.kid, keys.load_private_key(new.private_pem), ISSUER, AUDIENCE)

    async def jwks() -> list[dict[str, str]]:
        return [new.jwk.as_dict()]

    verifier = AccessTokenVerifier(KeySet(jwks, refresh_seconds=60), issuer=ISSUER, audience=AUDIENCE)
    tokens = ServiceTokens(SECRET)
    return Mesh(minter, tokens, Callers(verifier, service_tokens=tokens, delegates={"payment_svc"}))


async def test_a_valid_bearer_token_is_the_user(mesh: Mesh) -> None:
    caller = await mesh.callers.resolve(mesh.bearer("u1", "MERCHANT"))
    assert caller.user == User("u1", Role.MERCHANT)


async def test_the_bearer_token_wins_over_identity_headers(mesh: Mesh) -> None:
    # What Envoy sends: the token it verified and the claims it copied; only the token counts.
    caller = await mesh.callers.resolve((*mesh.bearer("u1"), *mesh.claims("admin", "ADMIN")))
    assert caller.user == User("u1", Role.CUSTOMER)


async def test_no_credentials_is_nobody(mesh: Mesh) -> None:
    assert await mesh.callers.resolve(()) is NOBODY
    assert await mesh.callers.resolve(mesh.service("payment_svc")) is NOBODY


@pytest.mark.parametrize(
    "sent",
    [
        "claims_alone",
        "claims_from_a_service_that_may_not_delegate",
        "claims_with_a_forged_service_token",
        "claims_with_an_expired_service_token",
        "a_basic_authorization",
        "an_empty_bearer",
        "a_bad_token_beside_claims_from_a_delegate",
    ],
)
async def test_credentials_that_do_not_hold_give_no_user_and_say_why(mesh: Mesh, sent: str) -> None:
    old = ServiceTokens(SECRET, clock=lambda: time.time() - 3600).issue("payment_svc")
    metadata: dict[str, Metadata] = {
        "claims_alone": mesh.claims("u1", "ADMIN"),
        "claims_from_a_service_that_may_not_delegate": (*mesh.claims("u1"), *mesh.service("notify_svc")),
        "claims_with_a_forged_service_token": (
            *mesh.claims("u1"),
            (SERVICE_TOKEN_HEADER, ServiceTokens("x" * 48).issue("payment_svc")),
        ),
        "claims_with_an_expired_service_token": (*mesh.claims("u1"), (SERVICE_TOKEN_HEADER, old)),
        "a_basic_authorization": (("authorization", "Basic dTE6cGFzcw=="),),
        "an_empty_bearer": (("authorization", "Bearer "),),
        "a_bad_token_beside_claims_from_a_delegate": (
            ("authorization", "Bearer not.a.jwt"),
            *mesh.claims("u1"),
            *mesh.service("payment_svc"),
        ),
    }
    caller = await mesh.callers.resolve(metadata[sent])
    assert caller.user is None
    assert isinstance(caller.refusal, Unauthenticated)


async def test_claims_from_an_allowed_delegate_are_the_user(mesh: Mesh) -> None:
    caller = await mesh.callers.resolve((*mesh.claims("u1", "MERCHANT"), *mesh.service("payment_svc")))
    assert caller.user == User("u1", Role.MERCHANT)
    unknown_role = await mesh.callers.resolve((*mesh.claims("u1", "ROOT"), *mesh.service("payment_svc")))
    assert unknown_role.user is None


def test_delegates_need_service_tokens() -> None:
    with pytest.raises(ValueError, match="delegates"):
        Callers(None, delegates={"payment_svc"})


# --- through the server interceptor ------------------------------------------------------


Call = Callable[[str, Metadata], Awaitable[str]]


@pytest.fixture
async def serve(mesh: Mesh) -> AsyncIterator[Call]:
    async def whoami(request: wrappers_pb2.StringValue, context: Context) -> wrappers_pb2.StringValue:
        return wrappers_pb2.StringValue(value=require_user(context).user_id)

    async def maybe(request: wrappers_pb2.StringValue, context: Context) -> wrappers_pb2.StringValue:
        user = optional_user(context)
        return wrappers_pb2.StringValue(value=user.user_id if user else "nobody")

    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            fn,
            request_deserializer=wrappers_pb2.StringValue.FromString,
            response_serializer=wrappers_pb2.StringValue.SerializeToString,
        )
        for name, fn in (("WhoAmI", whoami), ("Maybe", maybe))
    }
    server = grpc.aio.server(interceptors=[MeshServerInterceptor(mesh.callers)])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Identity", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")

    async def call(method: str, metadata: Metadata) -> str:
        stub: Any = channel.unary_unary(
            f"/test.Identity/{method}",
            request_serializer=wrappers_pb2.StringValue.SerializeToString,
            response_deserializer=wrappers_pb2.StringValue.FromString,
        )
        reply: wrappers_pb2.StringValue = await stub(wrappers_pb2.StringValue(), metadata=metadata, timeout=5)
        return reply.value

    try:
        yield call
    finally:
        await channel.close(None)
        await server.stop(None)


async def test_over_grpc_the_handler_sees_the_verified_user_only(mesh: Mesh, serve: Call) -> None:
    assert await serve("WhoAmI", mesh.bearer("u1")) == "u1"
    assert await serve("WhoAmI", (*mesh.claims("u2"), *mesh.service("payment_svc"))) == "u2"
    assert await serve("Maybe", ()) == "nobody"
    # A method that needs no user works whatever came with the call.
    assert await serve("Maybe", (("authorization", "Bearer not.a.jwt"),)) == "nobody"
    for metadata in (
        mesh.claims("u1", "ADMIN"),
        (*mesh.claims("u1"), *mesh.service("notify_svc")),
        mesh.minter.bearer("u1", "ROOT"),
        (("authorization", "Bearer " + mesh.minter.token("u1", aud="another-api")),),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await serve("WhoAmI", metadata)
        assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_one_calls_user_does_not_leak_into_the_next(mesh: Mesh, serve: Call) -> None:
    assert await serve("Maybe", mesh.bearer("u1")) == "u1"
    assert await serve("Maybe", ()) == "nobody"
