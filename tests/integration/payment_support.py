"""Helpers for payment_svc's integration tests: the real mesh pieces and a payment_svc process we control.

The tests start PostgreSQL, Kafka, wallet_svc and the processor simulator
through the session stack, and run payment_svc themselves (on the stack's
payment port, so Envoy and the simulator's webhooks reach it) with the
settings a test needs: short leases, a crash point, a processor URL that goes
nowhere. Callers talk gRPC directly, with a bearer access token as any client
(tests.identity).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence

import asyncpg
import grpc

from devstack.services import grpc_serving
from devstack.stack import Stack
from paymesh.common.v1 import money_pb2
from paymesh.payment.v1 import payment_pb2, payment_pb2_grpc
from paymesh.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from paymesh_runtime.channels import internal_channel
from paymesh_runtime.identity import ServiceTokens
from tests import identity

FINAL = {payment_pb2.Payment.SUCCEEDED, payment_pb2.Payment.FAILED, payment_pb2.Payment.CANCELED}
# Fast recovery for tests: a crashed replica's lease lapses within seconds.
TEST_ENV = {
    "PAYMENT_LEASE_SECONDS": "6",
    "PAYMENT_RECOVERY_INTERVAL_SECONDS": "0.3",
    "PAYMENT_RETRY_BACKOFF_SECONDS": "0.3",
    "PAYMENT_MAX_RETRY_BACKOFF_SECONDS": "2",
    "PAYMENT_PROCESSOR_TIMEOUT_SECONDS": "1",
    "PAYMENT_PROCESSOR_MAX_ATTEMPTS": "2",
    "PAYMENT_PROCESSOR_RETRY_MAX_SECONDS": "0.5",
    "PAYMENT_WALLET_TIMEOUT_SECONDS": "3",
    "PAYMENT_PROCESSOR_BREAKER_OPEN_SECONDS": "1",
    "PAYMENT_LOG_FORMAT": "text",
}


def start_dependencies(stack: Stack) -> None:
    """PostgreSQL, Redis, Kafka, the processor simulator, auth_svc (its key set verifies the tests' tokens, whose
    key it publishes) and wallet_svc; the stack's own payment_svc stopped."""
    stack.up(["infra", "processor"])
    identity.publish_test_key(stack)
    if not grpc_serving(f"127.0.0.1:{stack.ports.wallet}"):
        stack.up(["wallet"])
    stack.stop_component("payment")


@contextlib.contextmanager
def processor_faults(stack: Stack, **faults: float) -> Iterator[None]:
    """The stack's processor simulator misbehaves as told (POST /_sim/config) inside the block, then
    gets its previous settings back."""

    def configure(values: dict[str, float] | None) -> dict[str, float]:
        data = None if values is None else json.dumps(values).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{stack.ports.processor}/_sim/config", data=data, method="GET" if data is None else "POST"
        )
        with urllib.request.urlopen(request, timeout=5) as reply:  # noqa: S310
            current: dict[str, float] = json.load(reply)
            return current

    before = configure(None)
    configure(faults)
    try:
        yield
    finally:
        configure({name: before[name] for name in faults})


def user(user_id: str, role: str = "CUSTOMER", key: str | None = None) -> list[tuple[str, str]]:
    """An end user's credentials (a bearer access token), with an Idempotency-Key if `key` is given."""
    metadata = list(identity.bearer(user_id, role))
    if key is not None:
        metadata.append(("idempotency-key", key))
    return metadata


def usd(amount: int) -> money_pb2.Money:
    return money_pb2.Money(currency="USD", amount=amount)


class PaymentProcess:
    """One payment_svc process, on the stack's payment port unless `port` names another (a second replica)."""

    def __init__(self, stack: Stack, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.stack = stack
        # One replica name per port: a process restarted on a port resumes its predecessor's work.
        name = {"PAYMENT_REPLICA_ID": f"test-{port or stack.ports.payment}"}
        self.env = {**os.environ, **stack.env("payment"), **name, **TEST_ENV, **(env or {})}
        if port is not None:
            self.env |= {"PAYMENT_GRPC_PORT": str(port), "PAYMENT_METRICS_PORT": "0"}
        self.process: subprocess.Popen[bytes] | None = None
        self.address = f"127.0.0.1:{port or stack.ports.payment}"
        self.log_path = stack.run_dir / "logs" / f"payment-test-{port or stack.ports.payment}.log"

    def migrate(self) -> None:
        subprocess.run([sys.executable, "-m", "payment_svc", "migrate"], env=self.env, check=True, capture_output=True)

    def start(self, timeout: float = 60.0, *, may_crash: bool = False) -> None:
        """Starts the process and waits until it serves. `may_crash`: a crash point set in its
        environment may kill it before it serves (its recovery worker resumes work at once), which
        then ends the wait instead of failing it."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "payment_svc"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while not grpc_serving(self.address, timeout=1.0):
            if self.process.poll() is not None:
                if may_crash and self.process.returncode == -signal.SIGKILL:
                    return
                raise RuntimeError(f"payment_svc exited with {self.process.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"payment_svc not serving after {timeout}s; see {self.log_path}")
            time.sleep(0.2)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


class Mesh:
    """gRPC clients of wallet_svc (as payment_svc, for setup) and payment_svc (as end users)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        tokens = ServiceTokens(stack.secrets.service_token_secret)
        self._wallet_channel = internal_channel(f"127.0.0.1:{stack.ports.wallet}", caller="payment_svc", tokens=tokens)
        self._payment_channel = grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.payment}")
        self.wallets = wallet_pb2_grpc.WalletServiceStub(self._wallet_channel)  # type: ignore[no-untyped-call]
        self.payments = payment_pb2_grpc.PaymentServiceStub(self._payment_channel)  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        await self._wallet_channel.close(None)
        await self._payment_channel.close(None)

    async def wallet(self, owner: str, funds: int = 0, currency: str = "USD") -> str:
        request = wallet_pb2.CreateWalletRequest(currency=currency)
        created = await self.wallets.CreateWallet(request, metadata=user(owner))
        if funds:
            await self.fund(created.wallet_id, funds, currency)
        return str(created.wallet_id)

    async def fund(self, wallet_id: str, amount: int, currency: str = "USD") -> None:
        """Money from outside (as a card deposit would bring it): settlement → wallet."""
        settlement = wallet_pb2.AccountRef(system_account=wallet_pb2.EXTERNAL_SETTLEMENT)
        money = money_pb2.Money(currency=currency, amount=amount)
        await self.wallets.PostTransaction(
            wallet_pb2.PostTransactionRequest(
                reference=f"test-funding:{uuid.uuid4()}",
                postings=[
                    wallet_pb2.Posting(account=settlement, amount=money_pb2.Money(currency=currency, amount=-amount)),
                    wallet_pb2.Posting(account=wallet_pb2.AccountRef(wallet_id=wallet_id), amount=money),
                ],
                payment_id="test-funding",
            )
        )

    async def balance(self, wallet_id: str, owner: str) -> tuple[int, int]:
        """(posted, held) of a wallet."""
        # wait_for_ready: after a test restarts wallet_svc, this channel may still be in its reconnect backoff.
        w = await self.wallets.GetWallet(
            wallet_pb2.GetWalletRequest(wallet_id=wallet_id), metadata=user(owner), wait_for_ready=True, timeout=60
        )
        return int(w.posted_balance.amount), int(w.held_balance.amount)

    async def pay(
        self, payer: str, key: str, *, source_wallet: str = "", card: str = "", destination: str, amount: int,
        manual: bool = False,
    ) -> payment_pb2.Payment:  # fmt: skip
        source = (
            payment_pb2.PaymentSource(wallet_id=source_wallet)
            if source_wallet
            else payment_pb2.PaymentSource(card_token=card)
        )
        request = payment_pb2.CreatePaymentRequest(
            source=source,
            destination_wallet_id=destination,
            amount=usd(amount),
            capture_method=payment_pb2.MANUAL if manual else payment_pb2.AUTOMATIC,
        )
        reply: payment_pb2.Payment = await self.payments.CreatePayment(request, metadata=user(payer, key=key))
        return reply

    async def get(self, payment_id: str, viewer: str, role: str = "CUSTOMER") -> payment_pb2.Payment:
        reply: payment_pb2.Payment = await self.payments.GetPayment(
            payment_pb2.GetPaymentRequest(payment_id=payment_id), metadata=user(viewer, role)
        )
        return reply

    async def wait_final(self, payment_id: str, viewer: str, within: float = 60.0) -> payment_pb2.Payment:
        deadline = time.monotonic() + within
        while True:
            payment = await self.get(payment_id, viewer)
            if payment.state in FINAL:
                return payment
            if time.monotonic() > deadline:
                raise AssertionError(f"payment {payment_id} still {payment.state} after {within}s")
            await asyncio.sleep(0.3)


async def ledger_invariants(stack: Stack, finished_payment_ids: Sequence[str]) -> None:
    """The ledger is balanced per currency and no finished payment keeps an open hold."""
    conn = await asyncpg.connect(stack.database_url("wallet", driver=""))
    try:
        sums = await conn.fetch("SELECT currency, sum(amount) AS total FROM postings GROUP BY currency")
        assert all(row["total"] == 0 for row in sums), sums
        open_holds = await conn.fetch(
            "SELECT payment_id, amount FROM holds WHERE state = 'OPEN' AND payment_id = ANY($1::text[])",
            list(finished_payment_ids),
        )
        assert not open_holds, open_holds
    finally:
        await conn.close()


def error_reason(error: grpc.aio.AioRpcError) -> str:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, error
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    raise AssertionError(f"no ErrorInfo in {error}")
