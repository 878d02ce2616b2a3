"""The client SDK (clients/python, `paymesh_client`) as its users see it.

Its types: the README's example program passes mypy --strict and a wrongly
typed request does not; the wheel ships py.typed and the .pyi files and
depends on grpcio and protobuf only. Its behaviour, over native gRPC through
the test stack's Envoy with real tokens: a card deposit, a payment and a
refund; one idempotency key per logical call, reused by the client's own
retries; typed errors with ErrorInfo's reason; lists across pages.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import textwrap
import uuid
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from paymesh_client import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    PaymeshClient,
    RetryPolicy,
    Unauthenticated,
    Unavailable,
    auth_pb2,
    money,
    payment_pb2,
)

from devstack.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "clients" / "python"
EXAMPLE = SDK / "examples" / "quickstart.py"
PASSWORD = "correct horse battery"
# What a caller gets wrong that the types catch: an int for a string field, a float for minor units.
WRONGLY_TYPED = textwrap.dedent(
    """\
    from paymesh_client import PaymeshClient, money, payment_pb2

    async def pay(client: PaymeshClient) -> None:
        await client.payments.CreatePayment(payment_pb2.CreatePaymentRequest(destination_wallet_id=42))
        await client.pay("w1", "w2", money("USD", 25.0))
    """
)


# --- types ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mypy_report(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One mypy --strict run, as a user's project would run it, over the example and a wrong program."""
    folder = tmp_path_factory.mktemp("sdk-typing")
    (folder / "mypy.ini").write_text("[mypy]\nstrict = True\n")
    wrong = folder / "wrongly_typed.py"
    wrong.write_text(WRONGLY_TYPED)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--no-incremental", str(EXAMPLE), wrong.name],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return result.stdout + result.stderr


def test_the_example_program_type_checks_under_mypy_strict(mypy_report: str) -> None:
    assert "quickstart.py" not in mypy_report, mypy_report
    assert "checked 2 source files" in mypy_report, mypy_report


def test_a_wrongly_typed_request_does_not_type_check(mypy_report: str) -> None:
    assert 'wrongly_typed.py:4: error: Argument "destination_wallet_id"' in mypy_report, mypy_report
    assert 'has incompatible type "int"; expected "str"' in mypy_report, mypy_report
    assert 'wrongly_typed.py:5: error: Argument 2 to "money" has incompatible type "float"' in mypy_report
    assert "Found 2 errors in 1 file" in mypy_report, mypy_report


def test_the_wheel_ships_its_types_and_needs_grpcio_and_protobuf_only(tmp_path: Path) -> None:
    # Built from a copy: setuptools leaves build/ and *.egg-info/ beside the sources.
    source = shutil.copytree(SDK, tmp_path / "source", ignore=shutil.ignore_patterns("*.egg-info", "build"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("paymesh_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert "paymesh_client/py.typed" in names
    for module in ("paymesh/payment/v1/payment_pb2", "paymesh/wallet/v1/wallet_pb2", "google/rpc/error_details_pb2"):
        assert f"paymesh_client/proto/{module}.pyi" in names
    assert "paymesh_client/proto/paymesh/payment/v1/payment_pb2_grpc.pyi" in names
    requires = sorted(
        line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist")
    )
    assert requires == ["grpcio<2,>=1.85.1", "protobuf<8,>=7.35.1"]


# --- retries without a stack: a port nobody listens on answers UNAVAILABLE ------------------
# Generic in grpc-stubs only, not at run time.
if TYPE_CHECKING:
    _Interceptor = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.UnaryUnaryClientInterceptor


@dataclass
class Attempts(_Interceptor):
    """Records every attempt's method and idempotency key; may shorten the first attempt's deadline."""

    first_deadline: float | None = None
    seen: list[tuple[str, str | None]] = field(default_factory=list)

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Awaitable[Any]], details: Any, request: Any
    ) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        key = next((str(v) for k, v in details.metadata or () if k == "idempotency-key"), None)
        self.seen.append((method.rsplit("/", 1)[-1], key))
        if self.first_deadline is not None and len(self.seen) == 1:
            details = details._replace(timeout=self.first_deadline)
        return await continuation(details, request)

    def keys(self, method: str) -> list[str | None]:
        return [key for name, key in self.seen if name == method]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_unavailable_is_retried_for_reads_and_keyed_calls_only() -> None:
    attempts = Attempts()
    retry = RetryPolicy(attempts=3, initial_backoff=0.01, max_backoff=0.02)
    target = f"127.0.0.1:{_closed_port()}"
    async with PaymeshClient(target, token="t", timeout=2, retry=retry, interceptors=[attempts]) as client:
        with pytest.raises(Unavailable):
            await client.get_wallet("w")
        with pytest.raises(Unavailable):
            await client.deposit("w", money("USD", 100), card_token="tok_visa")
        with pytest.raises(Unavailable):
            await client.create_wallet("USD")  # not idempotent: a retry could create a second wallet
    assert len(attempts.keys("GetWallet")) == 3
    deposit_keys = attempts.keys("CreatePayment")
    assert len(deposit_keys) == 3
    assert deposit_keys[0] is not None
    assert len(set(deposit_keys)) == 1
    assert len(attempts.keys("CreateWallet")) == 1


# --- through the edge ------------------------------------------------------------------------
@dataclass
class People:
    edge: str
    customer: PaymeshClient
    merchant: PaymeshClient


async def _signed_up(edge: str, name: str, account_type: auth_pb2.User.AccountType.ValueType) -> str:
    email = f"sdk-{name}-{uuid.uuid4().hex[:10]}@example.com"
    async with PaymeshClient(edge) as anonymous:
        await anonymous.register(email, PASSWORD, name, account_type)
        return (await anonymous.login(email, PASSWORD)).access_token


@pytest.fixture
def edge(_test_stack: Stack) -> str:
    """The test stack's Envoy, with what a payment needs behind it."""
    _test_stack.up(["infra", "auth", "wallet", "processor", "payment", "edge"])
    return f"127.0.0.1:{_test_stack.ports.envoy}"


@pytest.fixture
async def people(edge: str) -> AsyncIterator[People]:
    customer = await _signed_up(edge, "ada", auth_pb2.User.CUSTOMER)
    merchant = await _signed_up(edge, "shop", auth_pb2.User.MERCHANT)
    async with PaymeshClient(edge, token=customer) as ada, PaymeshClient(edge, token=merchant) as shop:
        yield People(edge, ada, shop)


async def _posted(client: PaymeshClient, wallet_id: str) -> int:
    return (await client.get_wallet(wallet_id)).posted_balance.amount


@pytest.mark.e2e
async def test_a_card_deposit_a_payment_and_a_refund(people: People) -> None:
    ada, shop = people.customer, people.merchant
    wallet = await ada.create_wallet("USD")
    till = await shop.create_wallet("USD")

    deposit = await ada.deposit(wallet.wallet_id, money("USD", 10_000), card_token="tok_visa")
    payment = await ada.pay(wallet.wallet_id, till.wallet_id, money("USD", 2_500), description="sdk order")
    refund = await shop.refund(payment.payment_id, money("USD", 500), reason="one item returned")

    assert deposit.state == payment_pb2.Payment.SUCCEEDED
    assert payment.state == payment_pb2.Payment.SUCCEEDED
    assert refund.state == payment_pb2.Refund.SUCCEEDED
    assert await _posted(ada, wallet.wallet_id) == 10_000 - 2_500 + 500
    assert await _posted(shop, till.wallet_id) == 2_500 - 500
    assert [r.refund_id async for r in shop.list_refunds(payment.payment_id)] == [refund.refund_id]


@pytest.mark.e2e
async def test_a_retry_after_a_deadline_reuses_the_key_and_moves_money_once(people: People) -> None:
    attempts = Attempts(first_deadline=0.02)
    retry = RetryPolicy(attempts=6, initial_backoff=0.05, max_backoff=0.5)
    async with PaymeshClient(people.edge, token=people.customer.token, retry=retry, interceptors=[attempts]) as ada:
        wallet = await ada.create_wallet("USD")
        attempts.seen.clear()  # the first attempt to time out is the deposit's
        deposit = await ada.deposit(wallet.wallet_id, money("USD", 4_200), card_token="tok_visa")
        second = await ada.deposit(wallet.wallet_id, money("USD", 100), card_token="tok_visa")

    keys = attempts.keys("CreatePayment")
    first_call, second_call = keys[:-1], keys[-1:]
    assert len(first_call) >= 2, attempts.seen  # it timed out once, then was retried
    assert len(set(first_call)) == 1
    assert None not in first_call
    assert second_call != first_call[:1]  # a new logical call, a new key
    assert deposit.state == second.state == payment_pb2.Payment.SUCCEEDED
    assert await _posted(people.customer, wallet.wallet_id) == 4_200 + 100
    into_wallet = [p async for p in people.customer.list_payments() if p.destination_wallet_id == wallet.wallet_id]
    assert sorted(p.amount.amount for p in into_wallet) == [100, 4_200]


@pytest.mark.e2e
async def test_errors_are_typed_and_carry_the_error_info_reason(people: People) -> None:
    ada = people.customer
    with pytest.raises(InvalidArgument) as withdrawn:
        await ada.create_wallet("ANG")  # withdrawn from ISO 4217 in 2025
    assert withdrawn.value.reason == "INVALID_CURRENCY"
    assert withdrawn.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in withdrawn.value.field_violations] == ["currency"]

    wallet = await ada.create_wallet("USD")
    till = await people.merchant.create_wallet("USD")
    await ada.deposit(wallet.wallet_id, money("USD", 1_000), card_token="tok_visa")
    payment = await ada.pay(wallet.wallet_id, till.wallet_id, money("USD", 300), idempotency_key="order-7")
    with pytest.raises(FailedPrecondition) as too_much:
        await people.merchant.refund(payment.payment_id, money("USD", 301))
    assert too_much.value.reason == "REFUND_EXCEEDS_CAPTURED"
    assert too_much.value.metadata["refundable"] == "300"
    with pytest.raises(AlreadyExists) as reused:
        await ada.pay(wallet.wallet_id, till.wallet_id, money("USD", 400), idempotency_key="order-7")
    assert reused.value.reason == "IDEMPOTENCY_KEY_REUSED"

    async with PaymeshClient(people.edge) as anonymous:
        with pytest.raises(Unauthenticated) as anonymous_call:
            await anonymous.get_wallet(wallet.wallet_id)
    # Envoy's jwt_authn answers this one itself; for native gRPC its reply carries no ErrorInfo (yet).
    assert anonymous_call.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert anonymous_call.value.reason in ("", "UNAUTHENTICATED")
    assert await _posted(ada, wallet.wallet_id) == 1_000 - 300


@pytest.mark.e2e
async def test_lists_are_iterated_across_pages(people: People) -> None:
    ada = people.customer
    wallet = await ada.create_wallet("USD")
    made = [
        (await ada.deposit(wallet.wallet_id, money("USD", amount), card_token="tok_visa")).payment_id
        for amount in (100, 200, 300)
    ]
    pages = [page async for page in ada.pages(ada.payments.ListPayments, payment_pb2.ListPaymentsRequest(page_size=1))]
    listed = [p.payment_id async for p in ada.list_payments(page_size=2)]
    assert [len(page.payments) for page in pages] == [1, 1, 1]
    assert sorted(listed) == sorted(made)


@pytest.mark.e2e
def test_the_example_runs_with_nothing_of_the_server_loaded(edge: str) -> None:
    # The SDK alone: neither the server's generated `paymesh` package nor googleapis-common-protos.
    probe = textwrap.dedent(
        f"""\
        import runpy, sys
        sys.argv = ["quickstart.py", {edge!r}]
        runpy.run_path({str(EXAMPLE)!r}, run_name="__main__")
        server = sorted(m for m in sys.modules if m.split(".")[0] in ("paymesh", "paymesh_runtime")
                        or m.startswith(("google.api", "google.rpc")))
        print("server modules:", server)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False, cwd=SDK
    )
    assert result.returncode == 0, result.stderr
    assert "refused as expected: REFUND_EXCEEDS_CAPTURED, refundable 2000" in result.stdout
    assert "server modules: []" in result.stdout
