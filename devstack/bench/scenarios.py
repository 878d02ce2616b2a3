"""One measured step of a scenario: the load, then the CPU it cost, the payments it made and the backlog it left.

A step: renew tokens that would expire, read the CPU counters, run the load
tool, read them again, wait (bounded) for the event pipeline to drain (outbox
relayed, notify_svc's consumer lag zero, no notification due), read them a
third time, and count in payment_svc's database the payments of the step that
SUCCEEDED (also those the client gave up on). CPU per payment is what each
component spent during the load plus, while draining, what it spent above its
idle background.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from devstack.bench import customers, envoy_admin, loadgen
from devstack.bench.checks import Drain, Stores
from devstack.bench.customers import Customer
from devstack.bench.options import CEILING, OPEN, Options
from devstack.bench.stats import CpuPerPayment, LoadResult, load_window_cpu
from devstack.cpu import Snapshot, machine_busy_seconds, postgres_database, snapshot, spent
from devstack.ports import HOST, Ports
from devstack.topology import parse_instance

PAYMENT_AMOUNT = 100  # minor units
DEPOSIT_AMOUNT = 100
OPENING_DEPOSIT = 1_000_000_000  # per payer: far more than a run can spend


@dataclass(frozen=True)
class Step:
    scenario: str
    mode: str  # "closed" (load = requests in flight), "open" (load = arrivals/s), "ceiling" (load = clients)
    load: float
    result: LoadResult
    cpu: CpuPerPayment
    load_tool_cpu_ms: float  # per successful payment
    # Cores kept busy meanwhile by everything else on the machine (not the stack, not the load tool): a
    # shared machine's noise, which a figure measured beside it should be read with.
    others_cores: float
    payments_succeeded: int  # from the database: the denominator of `cpu`
    drain: Drain | None
    edge_rate_limited: int
    notes: list[str] = field(default_factory=list)


@dataclass
class Population:
    payers: list[Customer]
    payees: list[Customer]
    merchant: Customer

    @property
    def everyone(self) -> list[Customer]:
        return [*self.payers, *self.payees, self.merchant]


def set_up(edge: httpx.Client, payers: int) -> Population:
    """Payer i pays payee i (no wallet row shared between pairs); every payer also pays the merchant."""
    population = Population(
        payers=[customers.create(edge, f"payer{i}") for i in range(payers)],
        payees=[customers.create(edge, f"payee{i}") for i in range(payers)],
        merchant=customers.create(edge, "merchant", "MERCHANT"),
    )
    for payer in population.payers:
        customers.deposit(edge, payer, OPENING_DEPOSIT)
    return population


def stack_cpu(roots: dict[str, int]) -> Snapshot:
    """The stack's processes and their CPU so far, PostgreSQL's backends by database.

    A service's replicas count as the service (payment-2 as payment): CPU per
    payment is what payment_svc costs, however many processes it runs in.
    """
    found = snapshot(roots, {"postgres": postgres_database})
    return {key: replace(process, component=parse_instance(process.component)[0]) for key, process in found.items()}


class Runner:
    def __init__(
        self,
        options: Options,
        ports: Ports,
        roots: dict[str, int],
        stores: Stores,
        edge: httpx.Client,
        population: Population,
        idle_rate: dict[str, float],
        work: Path,
    ) -> None:
        self.options = options
        self.ports = ports
        self.roots = roots
        self.stores = stores
        self.edge = edge
        self.population = population
        self.idle_rate = idle_rate
        self.work = work
        self.edge_url = f"http://{HOST}:{ports.envoy}"

    def cpu_now(self) -> Snapshot:
        return stack_cpu(self.roots)

    # --- what each scenario sends ------------------------------------------------------
    def _http_requests(self, scenario: str) -> list[tuple[str, str]]:
        pop = self.population
        if scenario == "deposit":
            bodies = [(p, customers.card_deposit(p, DEPOSIT_AMOUNT)) for p in pop.payers]
        elif scenario == "hot-merchant":
            bodies = [(p, customers.wallet_payment(p, pop.merchant.wallet_id, PAYMENT_AMOUNT)) for p in pop.payers]
        else:
            pairs = zip(pop.payers, pop.payees, strict=True)
            bodies = [(p, customers.wallet_payment(p, q.wallet_id, PAYMENT_AMOUNT)) for p, q in pairs]
        return [(payer.token, json.dumps(body, separators=(",", ":"))) for payer, body in bodies]

    def _grpc_run(self, scenario: str, concurrency: int) -> loadgen.Run:
        pop = self.population
        messages: list[dict[str, Any]] = []
        for payer, payee in zip(pop.payers, pop.payees, strict=True):
            message = customers.wallet_payment(payer, payee.wallet_id, PAYMENT_AMOUNT)
            message["amount"]["amount"] = PAYMENT_AMOUNT  # int64 as a JSON number: ghz's protojson takes both
            messages.append(message)
        if scenario == "grpc-edge":
            target, metadata = f"{HOST}:{self.ports.envoy}", [p.bearer for p in pop.payers]
        else:
            # Straight to the service, with the same bearer token: it verifies the token itself.
            target, metadata = f"{HOST}:{self.ports.payment}", [p.bearer for p in pop.payers]
        return loadgen.ghz(target, messages, metadata, concurrency, self.options.connections, self.options.duration)

    # --- steps ---------------------------------------------------------------------------
    def closed(self, scenario: str, concurrency: int) -> Step:
        def run() -> loadgen.Run:
            if scenario.startswith("grpc-"):
                return self._grpc_run(scenario, concurrency)
            requests = self._http_requests(scenario)
            key = f"bench-{uuid.uuid4().hex[:12]}"
            return loadgen.wrk(self.edge_url, requests, concurrency, self.options.duration, key, self.work)

        return self._measure(scenario, "closed", concurrency, run)

    def open(self, rate: int) -> Step:
        def run() -> loadgen.Run:
            key = f"bench-{uuid.uuid4().hex[:12]}"
            requests = self._http_requests("http")
            return loadgen.vegeta(
                f"{self.edge_url}/v1/payments", requests, rate, self.options.open_duration, key, self.work
            )

        return self._measure(OPEN, "open", rate, run)

    def _measure(self, scenario: str, mode: str, load: float, run: Callable[[], loadgen.Run]) -> Step:
        customers.renew_tokens(self.edge, self.population.everyone)
        limited_before = envoy_admin.rate_limited(self.ports)
        over_before = envoy_admin.over_bucket(self.ports)
        start = self.stores.now()
        window = _Window.around(self.cpu_now, run)
        end = self.stores.now()
        drain = self.stores.wait_drained(self.options.drain_timeout)
        drained = spent(window.after, self.cpu_now())
        drain_s = drain.seconds if drain.seconds != float("inf") else float(self.options.drain_timeout)
        used = load_window_cpu(window.stack, drained, self.idle_rate, drain_s)
        succeeded = self.stores.succeeded_between([p.user_id for p in self.population.payers], start, end)
        limited = envoy_admin.rate_limited(self.ports) - limited_before
        over = envoy_admin.over_bucket(self.ports) - over_before
        notes = []
        if limited:
            notes.append(f"the edge's rate limit refused {limited} requests: the limit, not the mesh, capped this step")
        elif over:
            notes.append(
                f"the edge's production buckets would have refused {over} requests (shadow mode: counted, let through)"
            )
        denominator = succeeded or window.outcome.result.succeeded
        return Step(
            scenario=scenario,
            mode=mode,
            load=load,
            result=window.outcome.result,
            cpu=CpuPerPayment.of(used, denominator),
            load_tool_cpu_ms=1000 * window.outcome.tool_cpu_s / denominator if denominator else 0.0,
            others_cores=window.others_cores,
            payments_succeeded=succeeded,
            drain=drain,
            edge_rate_limited=limited,
            notes=notes,
        )


@dataclass(frozen=True)
class _Window:
    """A load run and what the machine did meanwhile."""

    outcome: loadgen.Run
    stack: dict[str, float]  # CPU seconds per component
    after: Snapshot
    others_cores: float

    @classmethod
    def around(cls, cpu_now: Callable[[], Snapshot], run: Callable[[], loadgen.Run]) -> _Window:
        before, busy_before, began = cpu_now(), machine_busy_seconds(), time.monotonic()
        outcome = run()
        after, busy, seconds = cpu_now(), machine_busy_seconds() - busy_before, time.monotonic() - began
        stack = spent(before, after)
        others = (busy - sum(stack.values()) - outcome.tool_cpu_s) / seconds if seconds > 0 else 0.0
        return cls(outcome, stack, after, max(0.0, others))


def ceiling_step(cpu_now: Callable[[], Snapshot], run: Callable[[], loadgen.Run], clients: int) -> Step:
    """A pgbench run; CPU is per committed transaction (mostly PostgreSQL's, on the scratch database)."""
    window = _Window.around(cpu_now, run)
    transfers = window.outcome.result.succeeded
    return Step(
        scenario=CEILING,
        mode="ceiling",
        load=clients,
        result=window.outcome.result,
        cpu=CpuPerPayment.of(window.stack, transfers),
        load_tool_cpu_ms=1000 * window.outcome.tool_cpu_s / transfers if transfers else 0.0,
        others_cores=window.others_cores,
        payments_succeeded=transfers,
        drain=None,
        edge_rate_limited=0,
    )
