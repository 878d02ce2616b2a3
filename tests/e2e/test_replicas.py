"""Two replicas of payment_svc and of wallet_svc behind Envoy, under a bounded concurrent load.

The session's test stack is scaled with devstack (payment=2, wallet=2): Envoy
lists both replicas of each in its clusters, payment_svc reaches both wallet
replicas through one round-robin channel. A few hundred payments then go
through Envoy at once, as HTTP/JSON with JWTs: wallet to wallet, every payer
to one hot merchant wallet, card deposits. Every payment must end SUCCEEDED
and the ledger must hold (the bench's own check: each wallet moved by exactly
its SUCCEEDED payments, postings sum to zero, no customer wallet below zero);
each replica must have served part of the load. Then the stack is scaled back
to one replica each and the extra processes must be gone.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack.bench.checks import Book, Stores
from devstack.envoy_config import internal_grpc_paths
from devstack.stack import Stack
from devstack.topology import Topology, parse_instance
from tests.e2e.test_authorization import Edge, Person
from tests.helpers import poll_until

pytestmark = pytest.mark.e2e

REPLICAS = {"payment": 2, "wallet": 2}
PAYERS = 8
TRANSFERS_PER_PAYER = 20  # wallet to wallet, payer i to payee i
MERCHANT_PAYMENTS_PER_PAYER = 10  # every payer to the one merchant wallet (a hot row)
DEPOSITS_PER_PAYER = 5  # tok_visa card deposits into the payer's own wallet
IN_FLIGHT = 16
AMOUNT = 100
OPENING_DEPOSIT = 10_000  # more than a payer spends: (20 + 10) x 100
PAYMENT_SERVICE = "paymesh.payment.v1.PaymentService"
WALLET_SERVICE = "paymesh.wallet.v1.WalletService"


def _usd(amount: int) -> dict[str, str]:
    return {"currency": "USD", "amount": str(amount)}


def _with_topology(stack: Stack, topology: Topology) -> Stack:
    return Stack(stack.profile, stack.run_dir, stack.ports, topology)


def _replicas_running(stack: Stack) -> list[str]:
    return sorted(name for name in stack.pids() if parse_instance(name)[1] > 1)


@pytest.fixture(scope="module")
def scaled(stack: Stack) -> Iterator[Stack]:
    """The session stack with two replicas of payment and wallet; one of each again afterwards, whatever happened."""
    scaled = _with_topology(stack, Topology(replicas=REPLICAS))
    try:
        scaled.up()
        yield scaled
    finally:
        _with_topology(stack, Topology()).up()


def _healthy_endpoints(stack: Stack, cluster: str) -> set[int]:
    text = httpx.get(f"http://127.0.0.1:{stack.ports.envoy_admin}/clusters", timeout=5).text
    healthy = set()
    for line in text.splitlines():
        name, _, rest = line.partition("::")
        if name == cluster and rest.endswith("::health_flags::healthy"):
            healthy.add(int(rest.split("::")[0].rsplit(":", 1)[1]))
    return healthy


def _calls(stack: Stack, service: str, replica: int, grpc_service: str, methods: set[str] | None = None) -> int:
    """Calls a replica has handled to `grpc_service` (all its methods, or `methods`), from its /metrics."""
    port = stack.ports.metrics(service, replica)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != "paymesh_rpc_total" or sample.labels.get("service") != grpc_service:
                continue
            if methods is None or sample.labels.get("method") in methods:
                total += sample.value
    return int(total)


def _served(stack: Stack) -> dict[str, int]:
    # Wallet methods without an HTTP binding are blocked at the edge: only payment_svc calls them, so their
    # counts on each wallet replica show payment_svc's client-side round robin, not Envoy's.
    internal = {path.rsplit("/", 1)[1] for path in internal_grpc_paths() if path.startswith(f"/{WALLET_SERVICE}/")}
    served = {}
    for replica in (1, 2):
        served[f"payment-{replica}"] = _calls(stack, "payment", replica, PAYMENT_SERVICE, {"CreatePayment"})
        served[f"wallet-{replica} (from payment_svc)"] = _calls(stack, "wallet", replica, WALLET_SERVICE, internal)
    return served


async def _drive(base_url: str, requests: list[tuple[Person, dict[str, Any]]]) -> list[httpx.Response]:
    """Every request, IN_FLIGHT at a time, on a pool of keep-alive connections to Envoy."""
    gate = asyncio.Semaphore(IN_FLIGHT)
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:

        async def one(payer: Person, body: dict[str, Any]) -> httpx.Response:
            headers = {"authorization": f"Bearer {payer.token}", "idempotency-key": uuid.uuid4().hex}
            async with gate:
                return await client.post("/v1/payments", json=body, headers=headers)

        return await asyncio.gather(*(one(payer, body) for payer, body in requests))


def _load(payers: list[Person], payees: list[Person], merchant: Person) -> list[tuple[Person, dict[str, Any]]]:
    requests: list[tuple[Person, dict[str, Any]]] = []
    for payer, payee in zip(payers, payees, strict=True):
        to_payee = {"source": {"wallet_id": payer.wallet_id}, "destination_wallet_id": payee.wallet_id}
        to_merchant = {"source": {"wallet_id": payer.wallet_id}, "destination_wallet_id": merchant.wallet_id}
        deposit = {"source": {"card_token": "tok_visa"}, "destination_wallet_id": payer.wallet_id}
        requests += [(payer, {**to_payee, "amount": _usd(AMOUNT)})] * TRANSFERS_PER_PAYER
        requests += [(payer, {**to_merchant, "amount": _usd(AMOUNT)})] * MERCHANT_PAYMENTS_PER_PAYER
        requests += [(payer, {**deposit, "amount": _usd(AMOUNT)})] * DEPOSITS_PER_PAYER
    random.Random(7).shuffle(requests)  # every kind of payment in flight at once
    return requests


def test_two_replicas_of_payment_and_wallet_keep_the_ledger_exact_under_concurrent_load(scaled: Stack) -> None:
    assert _replicas_running(scaled) == ["payment-2", "wallet-2"]
    for service in REPLICAS:
        both = {scaled.ports.grpc(service, k) for k in (1, 2)}
        poll_until(lambda service=service, both=both: _healthy_endpoints(scaled, service) == both, timeout=30)
    edge = Edge(scaled)
    # Envoy restarted with the new endpoints and fetches its key set after it starts: the first token may wait.
    first = poll_until(edge.person, timeout=30)
    payers = [first, *(edge.person() for _ in range(PAYERS - 1))]
    payees = [edge.person() for _ in range(PAYERS)]
    merchant = edge.person("MERCHANT")
    for payer in payers:
        card = {"card_token": "tok_visa"}
        funded = edge.pay(
            payer, {"source": card, "destination_wallet_id": payer.wallet_id, "amount": _usd(OPENING_DEPOSIT)}
        )
        assert funded["state"] == "SUCCEEDED", funded

    stores = Stores(scaled)
    wallets = {p.wallet_id: f"payer{i}" for i, p in enumerate(payers)}
    wallets |= {p.wallet_id: f"payee{i}" for i, p in enumerate(payees)} | {merchant.wallet_id: "merchant"}
    book = Book(
        since=stores.now(),
        balances=stores.balances(list(wallets)),
        labels=wallets,
        payer_wallets=[p.wallet_id for p in payers],
    )
    served_before = _served(scaled)
    requests = _load(payers, payees, merchant)
    replies = asyncio.run(_drive(edge.base, requests))

    statuses: dict[int, int] = {}
    for reply in replies:
        statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
    assert statuses == {200: len(requests)}, [r.text for r in replies if r.status_code != 200][:5]
    check = stores.ledger_check(book, settle_timeout_s=60)
    assert check.ok, check.violations
    assert check.payments == {"SUCCEEDED": len(requests)}
    wallet_payments = PAYERS * (TRANSFERS_PER_PAYER + MERCHANT_PAYMENTS_PER_PAYER)
    assert check.paid_by_payers == wallet_payments * AMOUNT
    assert check.paid_to_payers == PAYERS * DEPOSITS_PER_PAYER * AMOUNT
    served = {name: calls - served_before[name] for name, calls in _served(scaled).items()}
    assert all(calls > 0 for calls in served.values()), served
    assert sum(v for k, v in served.items() if k.startswith("payment-")) == len(requests)


def test_scaling_back_to_one_replica_stops_the_extra_ones(scaled: Stack) -> None:
    single = _with_topology(scaled, Topology())
    single.up()
    assert _replicas_running(single) == []
    assert _healthy_endpoints(single, "payment") == {single.ports.payment}
    assert Topology.recorded(single.run_dir) == Topology()
