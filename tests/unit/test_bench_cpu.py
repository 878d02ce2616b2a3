"""devstack.cpu as the bench uses it: CPU between two snapshots, processes that come and go, PostgreSQL by database."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from devstack.cpu import Process, postgres_database, snapshot, spent


def test_postgres_backend_titles_name_their_database() -> None:
    assert postgres_database("postgres: paymesh paymesh_wallet 127.0.0.1(51234) idle") == "paymesh_wallet"
    assert postgres_database("postgres: paymesh paymesh_notify 127.0.0.1(40000) SELECT") == "paymesh_notify"
    assert postgres_database("postgres: postgres postgres [local] idle") == "postgres"
    assert postgres_database("postgres: checkpointer ") is None
    assert postgres_database("postgres: autovacuum launcher ") is None
    assert postgres_database("/usr/lib/postgresql/15/bin/postgres -D /data") is None


def test_spent_between_snapshots_counts_new_and_ended_processes_once() -> None:
    root, backend, gone, newcomer = (100, 1), (101, 1), (102, 1), (103, 1)
    before = {
        root: Process("postgres", 1, own=5.0, reaped=1.0),
        backend: Process("postgres:paymesh_wallet", 100, own=2.0, reaped=0.0),
        gone: Process("postgres:paymesh_payment", 100, own=3.0, reaped=0.0),
    }
    # `gone` used 0.5 s more, then ended: its parent now carries its 3.5 s in `reaped`.
    after = {
        root: Process("postgres", 1, own=5.1, reaped=1.0 + 3.5),
        backend: Process("postgres:paymesh_wallet", 100, own=2.4, reaped=0.0),
        newcomer: Process("postgres:paymesh_payment", 100, own=0.3, reaped=0.0),
    }
    used = spent(before, after)
    assert used == pytest.approx(
        {"postgres": 0.1 + 0.5, "postgres:paymesh_wallet": 0.4, "postgres:paymesh_payment": 0.3}
    )
    assert sum(used.values()) == pytest.approx(1.3)  # all of it, nothing from before the first snapshot


def test_a_reused_pid_is_another_process() -> None:
    before = {(200, 1): Process("wallet", 1, own=9.0, reaped=0.0)}
    after = {(200, 7): Process("wallet", 1, own=0.2, reaped=0.0)}
    assert spent(before, after) == pytest.approx({"wallet": 0.2})


def test_snapshot_splits_descendants_by_their_command_line() -> None:
    # A parent with a child titled like a PostgreSQL backend (argv[0] set by exec -a); the parent prints its pid.
    parent = subprocess.Popen(
        ["bash", "-c", "(exec -a 'postgres: bench scratch_db 127.0.0.1(1) idle' sleep 30) & echo $!; wait"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        deadline = time.monotonic() + 10
        found: dict[str, int] = {}
        while time.monotonic() < deadline and "postgres:scratch_db" not in found:
            found = {}
            for process in snapshot({"postgres": parent.pid}, {"postgres": postgres_database}).values():
                found[process.component] = found.get(process.component, 0) + 1
            time.sleep(0.05)
    finally:
        os.kill(child, signal.SIGKILL)
        parent.wait(timeout=10)
    assert found == {"postgres": 1, "postgres:scratch_db": 1}  # bash; the "backend"
