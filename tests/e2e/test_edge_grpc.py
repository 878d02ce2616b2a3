# The generated *_pb2_grpc modules are untyped.
# mypy: disable-error-code="no-untyped-call"
"""Native gRPC (HTTP/2, `authorization: Bearer` metadata) through Envoy's
listener to the real auth_svc and wallet_svc: public methods pass without a
token, the others need one, and the identity a service acts on is the one
Envoy verified, whatever the client claims in metadata.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from devstack.stack import Stack
from paymesh.auth.v1 import auth_pb2, auth_pb2_grpc
from paymesh.wallet.v1 import wallet_pb2, wallet_pb2_grpc

pytestmark = pytest.mark.e2e
PASSWORD = "correct horse battery"
Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Account:
    user_id: str
    token: str

    @property
    def bearer(self) -> Metadata:
        return (("authorization", f"Bearer {self.token}"),)


@dataclass(frozen=True)
class Edge:
    auth: auth_pb2_grpc.AuthServiceStub
    wallet: wallet_pb2_grpc.WalletServiceStub

    async def account(self) -> Account:
        """Sign-up and login, both public, over native gRPC through the edge."""
        email = f"grpc-{uuid.uuid4().hex[:12]}@example.com"
        user = await self.auth.Register(
            auth_pb2.RegisterRequest(
                email=email, password=PASSWORD, display_name="gRPC", account_type=auth_pb2.User.CUSTOMER
            ),
            timeout=10,
        )
        pair = await self.auth.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD), timeout=10)
        return Account(user.user_id, pair.access_token)


@pytest.fixture
async def edge(_test_stack: Stack) -> AsyncIterator[Edge]:
    _test_stack.up(["infra", "auth", "wallet", "edge"])
    # h2c to Envoy's one listener, as any gRPC client outside the mesh.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{_test_stack.ports.envoy}") as channel:
        yield Edge(auth_pb2_grpc.AuthServiceStub(channel), wallet_pb2_grpc.WalletServiceStub(channel))


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    code: grpc.StatusCode = caught.value.code()
    return code


async def test_a_bearer_token_in_metadata_reaches_auth_svc_as_the_verified_user(edge: Edge) -> None:
    alice, mallory = await edge.account(), await edge.account()
    me = await edge.auth.GetMe(auth_pb2.GetMeRequest(), metadata=alice.bearer, timeout=10)
    assert me.user_id == alice.user_id
    assert me.account_type == auth_pb2.User.CUSTOMER

    # Claims in metadata do not count: Envoy replaces them with the token's.
    spoofed = (*mallory.bearer, ("x-paymesh-user-id", alice.user_id), ("x-paymesh-role", "ADMIN"))
    assert (await edge.auth.GetMe(auth_pb2.GetMeRequest(), metadata=spoofed, timeout=10)).user_id == mallory.user_id

    # The same call without a token (or with only the claim headers) never reaches auth_svc.
    assert await _code(edge.auth.GetMe(auth_pb2.GetMeRequest(), timeout=10)) == grpc.StatusCode.UNAUTHENTICATED
    claims_only = (("x-paymesh-user-id", alice.user_id), ("x-paymesh-role", "CUSTOMER"))
    call = edge.auth.GetMe(auth_pb2.GetMeRequest(), metadata=claims_only, timeout=10)
    assert await _code(call) == grpc.StatusCode.UNAUTHENTICATED


async def test_wallet_svc_acts_on_the_verified_identity_over_native_grpc(edge: Edge) -> None:
    alice, mallory = await edge.account(), await edge.account()
    created = await edge.wallet.CreateWallet(wallet_pb2.CreateWalletRequest(currency="USD"), metadata=alice.bearer)
    assert created.owner_id == alice.user_id

    get = wallet_pb2.GetWalletRequest(wallet_id=created.wallet_id)
    fetched = await edge.wallet.GetWallet(get, metadata=alice.bearer, timeout=10)
    assert (fetched.wallet_id, fetched.owner_id) == (created.wallet_id, alice.user_id)
    # Mallory's verified identity reaches wallet_svc too: not hers, so not found,
    # even when she claims to be Alice in metadata.
    for metadata in (mallory.bearer, (*mallory.bearer, ("x-paymesh-user-id", alice.user_id))):
        assert await _code(edge.wallet.GetWallet(get, metadata=metadata, timeout=10)) == grpc.StatusCode.NOT_FOUND
    assert await _code(edge.wallet.GetWallet(get, timeout=10)) == grpc.StatusCode.UNAUTHENTICATED
