"""The whole mesh, started once by the session fixture, answers as documented:
health over gRPC, reflection through the real grpcurl, JSON through Envoy."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {
    "auth": "paymesh.auth.v1.AuthService",
    "wallet": "paymesh.wallet.v1.WalletService",
    "payment": "paymesh.payment.v1.PaymentService",
    "notify": "paymesh.notify.v1.NotifyService",
}


def _grpcurl() -> str:
    path = ROOT / ".tools/bin/grpcurl"
    assert path.exists() or shutil.which("grpcurl"), "grpcurl missing: run devstack/bootstrap.sh"
    return str(path) if path.exists() else "grpcurl"


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_every_service_reports_serving_over_grpc_health(stack: Any, service: str) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.grpc(service)}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICES[service]):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_grpcurl_lists_each_service_through_reflection(stack: Any, service: str) -> None:
    out = subprocess.run(
        [_grpcurl(), "-plaintext", f"127.0.0.1:{stack.ports.grpc(service)}", "list"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    assert SERVICES[service] in out
    assert "grpc.health.v1.Health" in out
    # Both reflection protocols (paymesh_runtime.reflection); grpcurl itself asks v1.
    assert {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= set(out)


def test_grpcurl_describes_a_method_with_its_http_route(stack: Any) -> None:
    out = subprocess.run(
        [
            _grpcurl(),
            "-plaintext",
            f"127.0.0.1:{stack.ports.wallet}",
            "describe",
            "paymesh.wallet.v1.WalletService.GetWallet",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert "/v1/wallets/{wallet_id}" in out


def test_json_through_envoy_reaches_a_service_and_answers_json(stack: Any) -> None:
    """A public route is transcoded to gRPC and the service's answer comes back
    as JSON with the HTTP code that matches its gRPC status."""
    response = httpx.post(
        f"http://127.0.0.1:{stack.ports.envoy}/v1/auth/register",
        json={"email": "smoke@example.com", "password": "x" * 12, "display_name": "Smoke"},
        timeout=10,
    )
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    # Whatever the service answers, it is the service's gRPC status or resource,
    # rendered as JSON by the transcoder (never an Envoy text page).
    assert response.status_code < 500 or response.status_code == 501, body
    assert ("code" in body and "message" in body) or "user_id" in body or "userId" in body


def test_an_unknown_route_gives_a_json_404(stack: Any) -> None:
    response = httpx.get(f"http://127.0.0.1:{stack.ports.envoy}/v1/no-such-thing", timeout=10)
    assert response.status_code == 404
    assert isinstance(json.loads(response.text), dict)


def test_internal_methods_are_not_routed_by_the_edge(stack: Any) -> None:
    out = subprocess.run(
        [
            _grpcurl(),
            "-plaintext",
            "-protoset",
            str(ROOT / "gen/paymesh.pb"),
            "-d",
            '{"hold_id": "h1"}',
            f"127.0.0.1:{stack.ports.envoy}",
            "paymesh.wallet.v1.WalletService/GetHold",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0
    # Envoy answers "no such route" itself; wallet_svc never sees the call.
    assert "no such route" in out.stderr or "Unauthenticated" in out.stderr, out.stderr
