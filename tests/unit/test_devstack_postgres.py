"""The stacks' PostgreSQL command line: durable with sized buffers locally, fast and disposable in tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.stack import Stack


def _settings(profile: str, run_dir: Path) -> list[str]:
    argv = Stack.for_profile(profile, run_dir=run_dir).component("postgres").command()
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "-c"]


def test_the_local_database_is_durable_and_sized_for_a_growing_bench_database(tmp_path: Path) -> None:
    settings = _settings("local", tmp_path)
    assert {"shared_buffers=1GB", "max_wal_size=4GB", "autovacuum_naptime=5s"} <= set(settings)
    # What make bench measures must be as durable as production: nothing turns fsync or commits off.
    assert not [s for s in settings if s.startswith(("fsync=", "synchronous_commit=", "full_page_writes="))]


@pytest.mark.parametrize("setting", ["fsync=off", "synchronous_commit=off"])
def test_the_test_database_trades_durability_for_speed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    monkeypatch.setenv("PAYMESH_TEST_PORT_BASE", "30000")
    settings = _settings("test", tmp_path)
    assert setting in settings
    assert "shared_buffers=1GB" not in settings
