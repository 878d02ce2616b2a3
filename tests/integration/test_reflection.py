"""Server reflection under grpc.reflection.v1 and v1alpha, on a real server built by
paymesh_runtime.server.create_server, asked by raw gRPC calls and by the real grpcurl."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2

from paymesh.wallet.v1 import wallet_pb2_grpc
from paymesh_runtime import reflection
from paymesh_runtime.callers import Callers
from paymesh_runtime.server import RunningServer, Servicer, create_server
from paymesh_runtime.settings import ServiceSettings

pytestmark = pytest.mark.integration

WALLET = "paymesh.wallet.v1.WalletService"
REPO = Path(__file__).resolve().parents[2]


class _Seen(grpc.aio.ServerInterceptor):  # type: ignore[misc,type-arg]
    """Records the method of every call, to tell which reflection service a client used."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        self.methods.append(details.method)
        return await continuation(details)


@pytest.fixture
async def served() -> AsyncIterator[tuple[RunningServer, _Seen]]:
    seen = _Seen()
    settings = ServiceSettings(grpc_port=0, database_url="postgresql+asyncpg://unused@127.0.0.1/unused")
    wallet = Servicer(
        WALLET, wallet_pb2_grpc.WalletServiceServicer(), wallet_pb2_grpc.add_WalletServiceServicer_to_server
    )
    running = create_server(settings, [wallet], {}, [seen], callers=Callers.nobody())
    await running.server.start()
    try:
        yield running, seen
    finally:
        await running.server.stop(None)


async def _ask(port: int, service: str, request: reflection_pb2.ServerReflectionRequest) -> Any:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        replies = [reply async for reply in call(iter([request]), timeout=10)]
    (reply,) = replies
    return reply


@pytest.mark.parametrize("service", [reflection.V1_SERVICE, reflection.V1ALPHA_SERVICE])
async def test_both_reflection_services_list_the_same_services(
    served: tuple[RunningServer, _Seen], service: str
) -> None:
    running, _ = served
    listed = await _ask(running.port, service, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listed.list_services_response.service}
    assert names == {WALLET, "grpc.health.v1.Health", reflection.V1_SERVICE, reflection.V1ALPHA_SERVICE}
    symbol = await _ask(running.port, service, reflection_pb2.ServerReflectionRequest(file_containing_symbol=WALLET))
    assert symbol.file_descriptor_response.file_descriptor_proto  # the wallet's file and its imports


def test_the_v1_descriptor_is_v1alpha_renamed() -> None:
    v1 = reflection._v1_file()
    assert (v1.name, v1.package) == ("grpc/reflection/v1/reflection.proto", "grpc.reflection.v1")
    (service,) = v1.service
    assert service.method[0].input_type == ".grpc.reflection.v1.ServerReflectionRequest"
    type_names = [f.type_name for m in v1.message_type for f in m.field if f.type_name]
    assert type_names
    assert all(name.startswith(".grpc.reflection.v1.") for name in type_names)


def _grpcurl() -> str:
    path = REPO / ".tools" / "bin" / "grpcurl"
    found = str(path) if path.exists() else shutil.which("grpcurl")
    assert found, "grpcurl missing: run devstack/bootstrap.sh"
    return found


async def test_grpcurl_lists_and_describes_over_reflection_v1(served: tuple[RunningServer, _Seen]) -> None:
    running, seen = served
    target = f"127.0.0.1:{running.port}"

    def grpcurl(*args: str) -> str:
        result = subprocess.run(
            [_grpcurl(), "-plaintext", target, *args], capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    listed = (await asyncio.to_thread(grpcurl, "list")).split()
    assert {WALLET, reflection.V1_SERVICE, reflection.V1ALPHA_SERVICE} <= set(listed)
    described = await asyncio.to_thread(grpcurl, "describe", reflection.V1_SERVICE)
    assert "rpc ServerReflectionInfo ( stream .grpc.reflection.v1.ServerReflectionRequest )" in described
    method = await asyncio.to_thread(grpcurl, "describe", f"{WALLET}.GetWallet")
    assert "/v1/wallets/{wallet_id}" in method
    # Current grpcurl asks v1 first; it got its answers there, never falling back.
    asked = {m for m in seen.methods if "reflection" in m}
    assert asked == {f"/{reflection.V1_SERVICE}/ServerReflectionInfo"}
