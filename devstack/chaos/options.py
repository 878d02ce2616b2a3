"""Command-line options of `python -m devstack.chaos`, and the settings the stack's services run with."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from devstack.components import REPO_ROOT

DEFAULT_PORT_BASE = 36000

# Settings the services run with during a chaos run (documented in each service's settings.py). They shorten
# the waits a real deployment can afford but a bounded run cannot: a processor timeout of 2 s (so latency
# faults are cheap), polling a payout or refund whose webhook was lost after 10 s instead of 300 s, retry
# backoffs capped at 5 s, a breaker open for 5 s, leases of 20/25 s (a crashed replica's work is taken over
# sooner), and notification retries capped at 10 s. Webhooks included: their production schedule (30 s,
# then doubling) put a merchant delivery that the receiver failed three times in a row (its 5 % of 500s)
# 30 + 60 + 120 s away, past the settle limit, and a CI run reported it as lost. Values already in the
# environment win.
SERVICE_SETTINGS = {
    "PAYMENT_PROCESSOR_TIMEOUT_SECONDS": "2",
    "PAYMENT_PROCESSOR_POLL_SECONDS": "10",
    "PAYMENT_RETRY_BACKOFF_SECONDS": "0.5",
    "PAYMENT_MAX_RETRY_BACKOFF_SECONDS": "5",
    "PAYMENT_PROCESSOR_BREAKER_OPEN_SECONDS": "5",
    "PAYMENT_LEASE_SECONDS": "20",
    "NOTIFY_DELIVERY_BACKOFF_MAX_SECONDS": "10",
    "NOTIFY_WEBHOOK_BACKOFF_BASE_SECONDS": "2",
    "NOTIFY_WEBHOOK_BACKOFF_MAX_SECONDS": "10",
    "NOTIFY_DELIVERY_LEASE_SECONDS": "25",
    "NOTIFY_CONSUMER_RETRY_MAX_SECONDS": "5",
}


@dataclass(frozen=True)
class Options:
    seeds: tuple[int, ...]
    duration: float
    settle_limit: float
    process_faults: int | None
    processor_faults: int | None
    workers: int
    customers: int
    merchants: int
    max_attempts: int
    webhook_failure_share: float
    port_base: int
    run_dir: Path
    keep_stack: bool


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.chaos",
        description="Seeded fault harness: its own stack, a workload through Envoy, faults from the seed, then "
        "the money checks. Exit 1 on any violation (docs/reliability.md).",
    )
    add = parser.add_argument
    add("--seed", dest="seeds", type=int, nargs="+", default=[1], help="one or more seeds, run one after another")
    add("--duration", type=float, default=60.0, help="seconds of workload per seed (default 60)")
    add("--settle", dest="settle_limit", type=float, default=180.0, help="longest wait for the mesh to finish (s)")
    add("--process-faults", type=int, default=None, help="process faults per seed (default: one per ~12 s)")
    add("--processor-faults", type=int, default=None, help="processor faults per seed (default: one per ~20 s)")
    add("--workers", type=int, default=6, help="concurrent clients")
    add("--customers", type=int, default=6)
    add("--merchants", type=int, default=3)
    add("--max-attempts", type=int, default=10, help="attempts per request (retries with the same key)")
    add("--webhook-failures", dest="webhook_failure_share", type=float, default=0.05,
        help="share of webhook deliveries the merchants' endpoint answers 500")  # fmt: skip
    base = int(os.environ.get("PAYMESH_TEST_PORT_BASE", DEFAULT_PORT_BASE))
    add("--port-base", type=int, default=base, help="port base of its own test-profile stack (default "
        f"$PAYMESH_TEST_PORT_BASE or {DEFAULT_PORT_BASE}, here {base})")  # fmt: skip
    add("--run-dir", type=Path, default=None, help="state dir (default .run/chaos-<port base>; wiped first)")
    add("--keep-stack", action="store_true", help="leave the stack running afterwards (for a look around)")
    return parser


def parse(argv: list[str] | None = None) -> Options:
    args = _parser().parse_args(argv)
    if args.duration <= 0 or args.settle_limit <= 0 or args.workers < 1 or args.max_attempts < 1:
        raise SystemExit("--duration, --settle, --workers and --max-attempts must be positive")
    return Options(
        seeds=tuple(args.seeds),
        duration=args.duration,
        settle_limit=args.settle_limit,
        process_faults=args.process_faults,
        processor_faults=args.processor_faults,
        workers=args.workers,
        customers=max(2, args.customers),
        merchants=max(1, args.merchants),
        max_attempts=args.max_attempts,
        webhook_failure_share=args.webhook_failure_share,
        port_base=args.port_base,
        run_dir=args.run_dir or REPO_ROOT / ".run" / f"chaos-{args.port_base}",
        keep_stack=args.keep_stack,
    )
