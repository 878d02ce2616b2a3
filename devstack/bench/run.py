"""The whole bench, in order: idle sample, ceiling, set-up, closed loops, open loop, ledger check, report."""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

from devstack.bench import envoy_admin, loadgen, report
from devstack.bench.ceiling import Ceiling, CeilingFailed
from devstack.bench.checks import Book, LedgerCheck, Stores
from devstack.bench.customers import SetupFailed
from devstack.bench.options import CEILING, CLOSED, OPEN, Options, parse
from devstack.bench.scenarios import Runner, Step, ceiling_step, set_up, stack_cpu
from devstack.bench.stats import best, cpu_rate
from devstack.cpu import spent
from devstack.ports import HOST, REPLICABLE
from devstack.procs import StackError
from devstack.stack import Stack
from devstack.topology import Topology

PROFILE = "local"
# With --edge-limits enforce, the open loop stays this far under the edge's
# payment bucket, so that the bucket (production limits in the local profile)
# never shapes the arrivals.
_BUCKET_HEADROOM = 0.9


def _say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def _load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _needed_tools(options: Options) -> list[str]:
    tools = {"wrk": ("http", "deposit", "hot-merchant"), "ghz": ("grpc-edge", "grpc-direct"), "vegeta": (OPEN,)}
    return [name for name, users in tools.items() if any(s in options.scenarios for s in users)]


def _open_rates(options: Options, steps: list[Step], bucket_per_second: int | None, notes: list[str]) -> list[int]:
    if options.open_rates:
        rates = list(options.open_rates)
    else:
        closed = [s for s in steps if s.mode == "closed"]
        http = [s for s in closed if s.scenario == "http"] or closed
        saturating = best(s.result.per_second for s in http)
        if not http or saturating != saturating or saturating <= 0:
            raise SystemExit("--open-rate auto needs a closed-loop scenario in the run (or give --open-rate N)")
        rates = [share * saturating for share in options.open_fractions]
        shares = " and ".join(f"{share:g}" for share in options.open_fractions)
        notes.append(
            f"open-loop rate: {shares} × the best {http[0].scenario} closed-loop rate of this run ({saturating:,.1f}/s)"
        )
    if bucket_per_second is not None:
        cap = int(bucket_per_second * _BUCKET_HEADROOM)
        if any(rate > cap for rate in rates):
            notes.append(f"open-loop rate capped at {cap}/s, under the edge's payment bucket ({bucket_per_second}/s)")
            rates = [min(rate, cap) for rate in rates]
    return [max(1, round(rate)) for rate in rates]


def _payments(
    options: Options,
    stack: Stack,
    roots: dict[str, int],
    idle: dict[str, float],
    work: Path,
    steps: list[Step],
    notes: list[str],
) -> LedgerCheck:
    with httpx.Client(base_url=f"http://{HOST}:{stack.ports.envoy}", timeout=30) as edge:
        _say(f"setting up {options.payers} payers, {options.payers} payees and a merchant through the edge")
        population = set_up(edge, options.payers)
        stores = Stores(stack)
        wallets = {c.wallet_id: c.label for c in population.everyone}
        book = Book(
            since=stores.now(),
            balances=stores.balances(list(wallets)),
            labels=wallets,
            payer_wallets=[p.wallet_id for p in population.payers],
        )
        runner = Runner(options, stack.ports, roots, stores, edge, population, idle, work)
        for scenario in (s for s in CLOSED if s in options.scenarios):
            for concurrency in options.concurrency:
                _say(f"{scenario}: {options.duration} s at {concurrency} in flight")
                steps.append(runner.closed(scenario, concurrency))
                _progress(steps[-1])
        if OPEN in options.scenarios:
            enforced = options.edge_limits == "enforce"
            bucket = envoy_admin.payment_bucket(PROFILE, stack.ports).per_second if enforced else None
            for rate in _open_rates(options, steps, bucket, notes):
                _say(f"open loop: {options.open_duration} s at {rate} payments/s")
                steps.append(runner.open(rate))
                _progress(steps[-1])
        _say(f"ledger check (waiting up to {options.settle_timeout} s for unfinished payments)")
        return stores.ledger_check(book, options.settle_timeout)


def _progress(step: Step) -> None:
    result = step.result
    if step.mode == "ceiling":
        cpu = f"PostgreSQL {report.database_ms(step):.2f} ms CPU/transfer"
    else:
        cpu = f"money path {step.cpu.groups.get('money path', 0):.1f} ms CPU/payment"
    drain = f", event backlog drained in {step.drain.seconds:.1f} s" if step.drain else ""
    _say(
        f"  → {result.per_second:.1f}/s, p50 {result.latency.p50:.1f} ms, p99 {result.latency.p99:.1f} ms,"
        f" {sum(result.errors.values())} errors, {cpu}, other tenants {step.others_cores:.2f} cores{drain}"
    )


def _scaled_stack(options: Options) -> Stack:
    """The local stack with the bench's replicas and edge limits, started or changed to them (idempotent)."""
    topology = Topology(replicas=dict.fromkeys(REPLICABLE, options.replicas), edge_limits=options.edge_limits)
    # The sampler reaches Envoy's config and the services' environment (devstack.tracing), both
    # fingerprinted: a stack started with another ratio restarts those components in up().
    os.environ["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
    os.environ["OTEL_TRACES_SAMPLER_ARG"] = str(options.trace_ratio)
    stack = Stack.for_profile(PROFILE, topology=topology)
    _say(f"local stack: {topology.describe()}; traces sampled: {options.trace_ratio:g}")
    # devstack's progress only (its logger), not every HTTP request the bench's clients log.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[devstack] %(message)s"))
    devstack_log = logging.getLogger("devstack")
    devstack_log.addHandler(handler)
    devstack_log.setLevel(logging.INFO)
    try:
        stack.up()
    except StackError as exc:
        sys.exit(f"the local stack did not come up: {exc}")
    return stack


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    try:
        for name in _needed_tools(options):
            loadgen.tool(name)
    except loadgen.ToolMissing as missing:
        sys.exit(str(missing))
    stack = _scaled_stack(options)
    roots = stack.pids()
    if set(roots) != set(stack.names):
        sys.exit(f"the local stack is not (fully) running: missing {sorted(set(stack.names) - set(roots))}")
    started, stamp = time.strftime("%Y-%m-%d %H:%M"), time.strftime("%Y%m%dT%H%M%S")
    load_before = _load_average()
    _say(f"idle sample: {options.idle_seconds} s")
    first = stack_cpu(roots)
    time.sleep(options.idle_seconds)
    idle = cpu_rate(spent(first, stack_cpu(roots)), options.idle_seconds)
    steps: list[Step] = []
    notes: list[str] = [
        f"stack: {stack.topology.describe()}; traces sampled: {options.trace_ratio:g} (parentbased_traceidratio)"
    ]
    if options.replicas > 1 and "grpc-direct" in options.scenarios:
        notes.append("grpc-direct reaches the first payment_svc replica only (ghz takes one address)")
    ledger = None
    with tempfile.TemporaryDirectory(prefix="paymesh-bench-") as work:
        if CEILING in options.scenarios:
            try:
                with Ceiling(stack, options.ceiling_accounts) as ceiling:
                    for clients in options.ceiling_clients:
                        _say(f"ceiling: pgbench, {options.ceiling_duration} s at {clients} clients")
                        run = functools.partial(ceiling.run, clients, options.ceiling_duration)
                        steps.append(ceiling_step(functools.partial(stack_cpu, roots), run, clients))
                        _progress(steps[-1])
            except CeilingFailed as failed:
                sys.exit(f"the ceiling's scratch database: {failed}")
        if any(s != CEILING for s in options.scenarios):
            try:
                ledger = _payments(options, stack, roots, idle, Path(work), steps, notes)
            except SetupFailed as failed:
                sys.exit(f"set-up through the edge failed: {failed}")
    result = report.Report(
        started=started,
        options=options,
        steps=steps,
        ledger=ledger,
        idle_cpu_ms_per_s={name: 1000 * rate for name, rate in sorted(idle.items())},
        load_average=(load_before, _load_average()),
        notes=notes,
    )
    options.out_dir.mkdir(parents=True, exist_ok=True)
    base = options.out_dir / stamp
    text = report.markdown(result)
    base.with_suffix(".md").write_text(text)
    base.with_suffix(".json").write_text(report.as_json(result))
    plotted = report.plot(result, base.with_suffix(".png"))
    print("\n" + text)
    print(
        f"report: {base}.md, .json" + (", .png" if plotted else " (no plot: matplotlib missing, see the bench extra)")
    )
    if ledger is not None and not ledger.ok:
        print("ledger check FAILED", file=sys.stderr)
        return 1
    return 0
