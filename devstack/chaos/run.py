"""One chaos run: its own stack, then for each seed workload + faults, settle, snapshot, checks, report."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from types import FrameType

import asyncpg

from devstack.bench.checks import NOTIFY_TOPICS
from devstack.chaos import collect, evidence
from devstack.chaos.books import NotifyBooks
from devstack.chaos.checks import run_checks
from devstack.chaos.client import Edge
from devstack.chaos.faults import FaultRunner
from devstack.chaos.mix import Plan
from devstack.chaos.model import FaultRecord, Snapshot
from devstack.chaos.options import SERVICE_SETTINGS, Options, parse
from devstack.chaos.receivers import MailSinkWatcher, WebhookReceiver
from devstack.chaos.report import SeedReport, overall, schedule_lines, seed_summary, write_json
from devstack.chaos.schedule import ScheduleSpec, baseline_settings, build_schedule, default_fault_counts
from devstack.chaos.settle import Settled, settle
from devstack.chaos.simulator import SimulatorClient
from devstack.chaos.workload import Workload
from devstack.components import REPO_ROOT
from devstack.ports import test_ports
from devstack.procs import StackError
from devstack.stack import Stack

CODE_DIRS = ("auth_svc", "wallet_svc", "payment_svc", "notify_svc", "paymesh_runtime", "devstack", "envoy")


def say(message: str) -> None:
    print(f"[chaos] {message}", flush=True)


def code_version() -> dict[str, object]:
    """The commit the run tested and the files that differed from it (others may be editing the tree)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
        status = subprocess.run(["git", "status", "--porcelain", "--", *CODE_DIRS], cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=10, check=True).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {"head": "unknown", "modified": []}
    return {"head": head, "modified": [line[3:] for line in status.splitlines()]}


class Run:
    """The stack-wide state of one invocation: clock, simulator, receivers, every fault so far."""

    def __init__(self, stack: Stack, options: Options) -> None:
        self.stack = stack
        self.options = options
        self._t0 = time.monotonic()
        self.simulator = SimulatorClient(stack.component("processor").address())
        seed0 = options.seeds[0]
        self.webhooks = WebhookReceiver(self.clock, seed0, options.webhook_failure_share).start()
        self.mail = MailSinkWatcher(stack.run_dir / "logs" / "mailsink.log", self.clock).start()
        self.faults: list[FaultRecord] = []
        self.code = code_version()
        self.endpoints: dict[str, str] = {}  # endpoint id -> path
        self.secrets: dict[str, str] = {}  # endpoint path -> signing secret

    def clock(self) -> float:
        return time.monotonic() - self._t0

    async def close(self) -> None:
        self.webhooks.stop()
        self.mail.stop()
        await self.simulator.aclose()

    async def seed(self, seed: int) -> SeedReport:
        started = self.clock()
        options = self.options
        default_process, default_processor = default_fault_counts(options.duration)
        spec = ScheduleSpec(
            seed=seed,
            duration=options.duration,
            process_faults=default_process if options.process_faults is None else options.process_faults,
            processor_faults=default_processor if options.processor_faults is None else options.processor_faults,
            processor_timeout=float(os.environ["PAYMENT_PROCESSOR_TIMEOUT_SECONDS"]),
        )
        schedule = build_schedule(spec)
        say(f"seed {seed}: {options.duration:.0f}s of workload; schedule from random.Random({seed}):")
        for line in schedule_lines(schedule):
            print(line, flush=True)
        edge = Edge(f"http://127.0.0.1:{self.stack.ports.envoy}", self.clock, options.max_attempts)
        plan = Plan(customers=options.customers, merchants=options.merchants, workers=options.workers)
        workload = Workload(edge, seed, plan, self.webhooks.url, run_tag=f"s{seed}-{uuid.uuid4().hex[:6]}")
        runner = FaultRunner(self.stack, self.simulator, self.clock, say)
        report = SeedReport(seed, schedule, self.clock(), 0.0, 0.0, Settled(0.0, {}), edge.log, runner.records, [])
        report.code = self.code
        try:
            await self.simulator.configure(baseline_settings())
            await workload.setup()
            for endpoint_id, (path, secret) in workload.endpoint_secrets.items():
                self.endpoints[endpoint_id], self.secrets[path] = path, secret
            report.origin = origin = self.clock()
            end = origin + options.duration
            say(f"seed {seed}: set up {len(workload.shared.customers)} customers, {len(workload.shared.merchants)} "
                "merchants; workload and faults start")  # fmt: skip
            await asyncio.gather(workload.run(lambda: self.clock() >= end), runner.run(schedule, origin, end))
            report.workload_s = self.clock() - origin
            say(f"seed {seed}: workload done after {report.workload_s:.0f}s ({len(edge.log)} requests); settling")
            report.settled = await settle(self.stack, runner, self.simulator, options.settle_limit, say)
            self.faults += runner.records
            report.snapshot = await self.snapshot(edge)
            report.checks = run_checks(report.snapshot)
            await self.keep_evidence(report)
        except Exception as exc:  # the seed cannot go on (set-up refused, a store gone): report it, next seed
            report.error = f"{type(exc).__name__}: {exc}"
            say(f"seed {seed} stopped:\n{traceback.format_exc()}")
            self.faults += [f for f in runner.records if f not in self.faults]
        finally:
            await edge.aclose()
        report.seconds = self.clock() - started
        return report

    async def keep_evidence(self, report: SeedReport) -> None:
        """The rows and log lines behind the violations, saved before the stack goes away."""
        ids = evidence.named_ids(report.checks)
        if not ids:
            return
        path = self.stack.run_dir / f"chaos-seed-{report.seed}-evidence.json"
        db = collect.Databases(self.stack)
        try:
            evidence.write(await evidence.gather(db, ids, self.stack.run_dir / "logs"), path)
            say(f"seed {report.seed}: evidence of {len(ids)} resources in {path}")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            say(f"seed {report.seed}: evidence not gathered: {type(exc).__name__}: {exc}")
        finally:
            await db.close()

    async def snapshot(self, edge: Edge) -> Snapshot:
        db = collect.Databases(self.stack)
        try:
            payments = await collect.payment_books(db)
            ledger = await collect.ledger(db)
            users = await collect.users(db)
            notifications, processed = await collect.notifications(db)
        finally:
            await db.close()
        events = await collect.read_topics(self.stack.kafka_bootstrap, NOTIFY_TOPICS)
        self.mail.poll()
        notify = NotifyBooks(
            notifications=notifications,
            processed_event_ids=processed,
            topic_event_ids={e.event_id for e in events if e.event_id},
            receipts=self.mail.receipts + self.webhooks.receipts(self.secrets),
            endpoints=dict(self.endpoints),
        )
        processor = await self.simulator.books()
        return Snapshot(payments, ledger, processor, events, notify, users, list(edge.log), list(self.faults))


async def run_seeds(stack: Stack, options: Options) -> list[SeedReport]:
    run = Run(stack, options)
    reports = []
    try:
        for seed in options.seeds:
            report = await run.seed(seed)
            reports.append(report)
            print("\n".join(["", *seed_summary(report), ""]), flush=True)
            say(f"report: {write_json(report, stack.run_dir)}")
    finally:
        await run.close()
    return reports


def _exit_on_sigterm() -> None:
    # A SIGTERM (e.g. a test's timeout) must still stop the stack: turn it into SystemExit.
    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def prepare_stack(options: Options) -> Stack:
    """A fresh stack of the harness's own (empty databases and topics), its services set up for the run."""
    for name, value in SERVICE_SETTINGS.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("PROCESSOR_SIM_SEED", str(options.seeds[0]))  # the simulator's fault dice
    # The mail sink prints each message to its log; unbuffered, a message is there the moment it is accepted
    # (the harness reads the log to see what arrived, and when).
    os.environ["PYTHONUNBUFFERED"] = "1"
    stack = Stack("test", options.run_dir, test_ports(options.port_base))
    if stack.pids():
        say(f"stopping what an earlier run left in {stack.run_dir}")
        stack.down()
    stack.wipe()
    return stack


async def durable_commits(stack: Stack) -> None:
    """Commits that survive a crash of PostgreSQL, as in production, before any service connects.

    The test profile runs PostgreSQL with synchronous_commit=off (devstack/postgres.py): a kill -9 of the
    postmaster then loses the last ~0.5 s of committed transactions, whose events the relays may already
    have published and whose answers the clients already have. A chaos run kills the postmaster on
    purpose, so it turns durable commits back on for the services' role (a role setting overrides the
    server's default; fsync=off only matters if the machine itself crashes).
    """
    connection = await asyncpg.connect(stack.database_url("auth", driver=""), timeout=10)
    try:
        await connection.execute("ALTER ROLE CURRENT_USER SET synchronous_commit = on")
    finally:
        await connection.close()


def start_stack(stack: Stack, attempts: int = 3) -> None:
    """Starts the stack, again after a failure: on a machine shared with other stacks a port can be
    taken for a moment (another stack's client connection got it as its ephemeral port)."""
    for attempt in range(1, attempts + 1):
        try:
            stack.up(["infra"])
            asyncio.run(durable_commits(stack))
            stack.up()
            return
        except StackError as exc:
            if attempt == attempts:
                raise
            say(f"the stack did not start ({str(exc).splitlines()[0]}); trying again")
            stack.down()
            time.sleep(10)


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    logging.basicConfig(level=logging.INFO, format="[devstack] %(message)s", stream=sys.stdout)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    _exit_on_sigterm()
    stack = prepare_stack(options)
    settings = " ".join(f"{name}={os.environ[name]}" for name in SERVICE_SETTINGS)
    say(f"seeds {list(options.seeds)}; stack {stack.run_dir} (port base {options.port_base}); {settings}")
    stop: Callable[[], None] = (lambda: None) if options.keep_stack else stack.down
    try:
        started = time.monotonic()
        start_stack(stack)
        say(f"stack up in {time.monotonic() - started:.0f}s")
        reports = asyncio.run(run_seeds(stack, options))
    except StackError as exc:
        say(f"the stack failed: {exc}")
        return 2
    finally:
        stop()
    print("\n".join(overall(reports)), flush=True)
    return 0 if all(report.passed for report in reports) else 1
