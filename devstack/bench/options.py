"""`make bench BENCH_ARGS="..."`: which scenarios, how long, at which concurrencies. Every value is bounded."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack.components import REPO_ROOT
from devstack.envoy_config import RATE_LIMIT_MODES
from devstack.ports import MAX_REPLICAS, REPLICABLE
from devstack.tracing import PRODUCTION_RATIO as PRODUCTION_TRACE_RATIO

CEILING = "ceiling"
OPEN = "open"
# Closed-loop scenarios, in the order they run: name -> what one request is.
CLOSED: dict[str, str] = {
    "http": "wallet → wallet, HTTP/JSON + JWT through Envoy (wrk)",
    "grpc-edge": "wallet → wallet, gRPC through Envoy (ghz)",
    "grpc-direct": "wallet → wallet, gRPC straight to payment_svc (ghz)",
    "deposit": "card deposit (tok_visa) into one's own wallet, HTTP through Envoy (wrk)",
    "hot-merchant": "payers → one merchant wallet, HTTP through Envoy (wrk)",
}
DESCRIPTIONS: dict[str, str] = {
    CEILING: "pgbench: one payment's ledger work per transaction, same PostgreSQL",
    **CLOSED,
    OPEN: "wallet → wallet, HTTP/JSON + JWT through Envoy at a fixed arrival rate (vegeta)",
}
ALL = (CEILING, *CLOSED, OPEN)


@dataclass(frozen=True)
class Options:
    scenarios: tuple[str, ...]
    concurrency: tuple[int, ...]
    duration: int
    open_duration: int
    # One open-loop run per rate (payments/s); empty: one per fraction of the saturating rate measured in
    # this run. Several give latency against arrival rate.
    open_rates: tuple[float, ...]
    open_fractions: tuple[float, ...]
    ceiling_clients: tuple[int, ...]
    ceiling_duration: int
    ceiling_accounts: int
    payers: int
    connections: int
    drain_timeout: int
    settle_timeout: int
    idle_seconds: int
    out_dir: Path
    replicas: int  # of each of REPLICABLE (payment_svc, wallet_svc)
    edge_limits: str  # envoy_config.RATE_LIMIT_MODES
    trace_ratio: float  # parentbased_traceidratio's argument for Envoy and the services during the run


def _int_list(low: int, high: int) -> Callable[[str], tuple[int, ...]]:
    def parse(text: str) -> tuple[int, ...]:
        values = tuple(int(part) for part in text.split(",") if part.strip())
        if not values or any(not low <= value <= high for value in values):
            raise argparse.ArgumentTypeError(f"a comma-separated list of integers in [{low}, {high}]")
        return values

    return parse


def _bounded(low: float, high: float, kind: Callable[[str], float] = int) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in [{low}, {high}]")
        return value

    return parse


def _scenarios(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in ALL]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {', '.join(ALL)}")
    return tuple(name for name in ALL if name in names)  # always run in the documented order


def _float_list(low: float, high: float, auto: bool = False) -> Callable[[str], tuple[float, ...]]:
    """A comma-separated list of numbers in [low, high]; with `auto`, also 'auto' (the empty tuple)."""

    def parse(text: str) -> tuple[float, ...]:
        if auto and text == "auto":
            return ()
        try:
            values = tuple(float(part) for part in text.split(",") if part.strip())
        except ValueError:
            values = ()
        if not values or any(not low <= value <= high for value in values):
            either = "'auto' or " if auto else ""
            raise argparse.ArgumentTypeError(f"{either}a comma-separated list of numbers in [{low:g}, {high:g}]")
        return values

    return parse


def parse(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.bench",
        description="The money path under load, beside the database's own ledger-transfer rate (docs/performance.md).",
    )
    add = parser.add_argument
    add("--scenarios", type=_scenarios, default=ALL, help=f"comma-separated, from: {', '.join(ALL)} (default: all)")
    add("--concurrency", type=_int_list(1, 256), default=(1, 4, 16, 64), help="closed-loop requests in flight")
    add("--duration", type=_bounded(2, 300), default=10, help="seconds per closed-loop step")
    add("--open-duration", type=_bounded(5, 300), default=30, help="seconds of the open-loop run")
    add(
        "--open-rate",
        type=_float_list(0.5, 2000, auto=True),
        default=(),
        help="payments/s of the open loop, comma-separated for one run each, or 'auto' (default)",
    )
    add(
        "--open-fraction",
        type=_float_list(0.05, 1.0),
        default=(0.25, 0.5),
        help="with --open-rate auto: these shares of the best HTTP closed-loop rate of the run, one run each",
    )
    add("--ceiling-clients", type=_int_list(1, 64), default=(1, 16), help="pgbench client counts")
    add("--ceiling-duration", type=_bounded(2, 120), default=10, help="seconds per pgbench run")
    add("--ceiling-accounts", type=_bounded(10, 1_000_000), default=10_000, help="accounts in the scratch ledger")
    add("--payers", type=_bounded(1, 64), default=16, help="paying customers (each with one payee)")
    add("--connections", type=_bounded(1, 16), default=2, help="HTTP/2 connections per ghz run")
    add("--drain-timeout", type=_bounded(1, 600), default=60, help="longest wait for the event backlog after a step")
    # Longer than payment_svc's lease (60 s): a payment whose client hung up is resumed once it lapses.
    add("--settle-timeout", type=_bounded(1, 600), default=90, help="longest wait for unfinished payments at the end")
    add("--idle-seconds", type=_bounded(1, 60), default=5, help="idle CPU sample before the run")
    add("--out-dir", type=Path, default=REPO_ROOT / ".run" / "bench", help="where the report goes")
    add(
        "--replicas",
        type=_bounded(1, MAX_REPLICAS),
        default=1,
        help=f"replicas of {' and '.join(REPLICABLE)} behind Envoy; the bench scales the local stack to it",
    )
    add(
        "--edge-limits",
        choices=RATE_LIMIT_MODES,
        default="shadow",
        help="the edge's production buckets: shadow (default: counted, never refused, so they do not cap what is"
        " measured) or enforce",
    )
    add(
        "--trace-ratio",
        type=_bounded(0.0, 1.0, float),
        default=PRODUCTION_TRACE_RATIO,
        help="share of requests traced (OTEL_TRACES_SAMPLER_ARG, parentbased_traceidratio) during the run; the"
        f" default is what the chart sets in production ({PRODUCTION_TRACE_RATIO}); 0 measures without tracing."
        " The stack's services and Envoy restart when it differs from theirs",
    )
    args = parser.parse_args(argv)
    return Options(
        scenarios=args.scenarios,
        concurrency=args.concurrency,
        duration=args.duration,
        open_duration=args.open_duration,
        open_rates=args.open_rate,
        open_fractions=args.open_fraction,
        ceiling_clients=args.ceiling_clients,
        ceiling_duration=args.ceiling_duration,
        ceiling_accounts=args.ceiling_accounts,
        payers=args.payers,
        connections=args.connections,
        drain_timeout=args.drain_timeout,
        settle_timeout=args.settle_timeout,
        idle_seconds=args.idle_seconds,
        out_dir=args.out_dir,
        replicas=args.replicas,
        edge_limits=args.edge_limits,
        trace_ratio=args.trace_ratio,
    )
