"""The ceiling: what the same PostgreSQL does with one payment's ledger work per transaction, alone (pgbench).

A scratch database (SCRATCH_DATABASE; created for the run, dropped after it,
never paymesh's own) holds accounts, postings, payments and an outbox shaped
like wallet_svc's and payment_svc's. One transaction is what a wallet-to-wallet
payment must do at least: debit the payer (conditional on balance ≥ amount),
credit the payee, insert the payment row, its two postings and one outbox
row. pgbench runs it with prepared statements at each client count for a
bounded time.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from devstack.bench import parsing
from devstack.bench.loadgen import Run, run_tool
from devstack.ports import HOST
from devstack.postgres import ROLE, postgres_bin_dir
from devstack.stack import Stack

# Created for the run and dropped after it: never one of paymesh's own databases.
SCRATCH_DATABASE = "paymesh_bench_scratch"
AMOUNT = 100
# Large enough that no debit is ever refused: the ceiling measures the work, not refusals.
OPENING_BALANCE = 10**15
_DROP_ATTEMPTS = 5

SCHEMA = """
CREATE TABLE accounts (
    id bigint PRIMARY KEY,
    currency char(3) NOT NULL DEFAULT 'USD',
    posted bigint NOT NULL CHECK (posted >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO accounts (id, posted) SELECT n, {balance} FROM generate_series(1, {accounts}) AS n;
CREATE TABLE payments (
    payment_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    payer bigint NOT NULL,
    payee bigint NOT NULL,
    currency char(3) NOT NULL,
    amount bigint NOT NULL CHECK (amount > 0),
    state text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE postings (
    seq bigserial PRIMARY KEY,
    payment_id uuid NOT NULL,
    account_id bigint NOT NULL REFERENCES accounts (id),
    amount bigint NOT NULL CHECK (amount <> 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX postings_by_account ON postings (account_id, seq);
CREATE TABLE outbox (
    position bigserial PRIMARY KEY,
    aggregate_id uuid NOT NULL,
    payload bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (position) WHERE published_at IS NULL;
VACUUM ANALYZE;
"""

# Payer and payee differ; a deadlock between two transfers crossing the same
# pair is retried (--max-tries) like a service would retry it.
TRANSFER = """\\set payer random(1, {accounts})
\\set payee 1 + (:payer + random(0, {accounts} - 2)) % {accounts}
BEGIN;
UPDATE accounts SET posted = posted - {amount}, updated_at = now() WHERE id = :payer AND posted >= {amount};
UPDATE accounts SET posted = posted + {amount}, updated_at = now() WHERE id = :payee;
INSERT INTO payments (payer, payee, currency, amount, state)
  VALUES (:payer, :payee, 'USD', {amount}, 'SUCCEEDED') RETURNING payment_id \\gset
INSERT INTO postings (payment_id, account_id, amount)
  VALUES (:payment_id, :payer, -{amount}), (:payment_id, :payee, {amount});
INSERT INTO outbox (aggregate_id, payload) VALUES (:payment_id, convert_to(repeat('e', 200), 'UTF8'));
END;
"""


class CeilingFailed(RuntimeError):
    pass


class Ceiling:
    """The scratch database's lifetime and the pgbench runs against it."""

    def __init__(self, stack: Stack, accounts: int) -> None:
        self.stack = stack
        self.accounts = accounts
        self.bin_dir = postgres_bin_dir()
        # The password goes through the environment, never argv.
        self.env = {**os.environ, "PGPASSWORD": stack.secrets.postgres_password, "PGCONNECT_TIMEOUT": "5"}
        self.work = Path(tempfile.mkdtemp(prefix="paymesh-bench-"))

    def _connection(self, database: str) -> list[str]:
        return ["-h", HOST, "-p", str(self.stack.ports.postgres), "-U", ROLE, "-d", database]

    def _psql(self, database: str, sql: str, timeout_s: float = 120) -> None:
        done = subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *self._connection(database)],
            input=sql,
            text=True,
            env=self.env,
            timeout=timeout_s,
            check=False,
            capture_output=True,
        )
        if done.returncode != 0:
            raise CeilingFailed(f"psql on {database}: {done.stderr.strip()[-500:]}")

    def _drop(self) -> None:
        # FORCE ends the sessions still there (pgbench's, just closing) but waits only 5 s for them
        # to go; on a busy machine that can be too short, so try again a few times.
        for attempt in range(_DROP_ATTEMPTS):
            try:
                self._psql("postgres", f"DROP DATABASE IF EXISTS {SCRATCH_DATABASE} WITH (FORCE);")
                return
            except CeilingFailed:
                if attempt == _DROP_ATTEMPTS - 1:
                    raise
                time.sleep(2)

    def __enter__(self) -> Ceiling:
        # A run killed before its clean-up left the database behind: start afresh.
        self._drop()
        self._psql("postgres", f"CREATE DATABASE {SCRATCH_DATABASE} OWNER {ROLE};")
        self._psql(SCRATCH_DATABASE, SCHEMA.format(accounts=self.accounts, balance=OPENING_BALANCE))
        script = self.work / "transfer.sql"
        script.write_text(TRANSFER.format(accounts=self.accounts, amount=AMOUNT))
        self.script = script
        return self

    def __exit__(self, *_: object) -> None:
        self._drop()
        for path in self.work.iterdir():
            path.unlink()
        self.work.rmdir()

    def run(self, clients: int, seconds: int) -> Run:
        prefix = self.work / f"log-{clients}"
        argv = [
            str(self.bin_dir / "pgbench"),
            *self._connection(SCRATCH_DATABASE),
            "--no-vacuum",
            "--protocol=prepared",
            f"--client={clients}",
            f"--jobs={min(clients, 2)}",
            f"--time={seconds}",
            "--max-tries=10",
            f"--file={self.script}",
            "--log",
            f"--log-prefix={prefix}",
        ]
        out, cpu = run_tool(argv, seconds + 60, env=self.env)
        logs = sorted(self.work.glob(f"{prefix.name}.*"))
        lines = [line for path in logs for line in path.read_text().splitlines()]
        for path in logs:
            path.unlink()
        return Run(parsing.pgbench(out, lines), cpu)
