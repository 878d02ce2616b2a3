"""devstack answers like a tool: port variables, one-line usage errors, progress while it waits, logs -f.

The pure parts are called directly; the CLI runs as a subprocess where that is cheap (no component
starts: the port-taken case fails before anything is spawned).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import ports as port_plan
from devstack.components import Component, Context, Progress
from devstack.credentials import Secrets
from devstack.ports import LOCAL, PORT_FIELDS, PortsError, how_to_free, local_ports, port_variable
from devstack.stack import unknown_component

ROOT = Path(__file__).resolve().parents[2]
SECRETS = Secrets(**{f.name: "x" * 44 for f in dataclasses.fields(Secrets)})


# --- port variables -------------------------------------------------------------------------------
def test_without_variables_the_local_profile_keeps_its_documented_ports() -> None:
    assert local_ports({}) == LOCAL
    assert local_ports({"PAYMESH_PORT_ENVOY": "", "PAYMESH_TEST_PORT_BASE": "26000"}) == LOCAL


def test_each_port_variable_moves_its_own_port_and_a_services_metrics_follow_it() -> None:
    moved = local_ports({"PAYMESH_PORT_ENVOY": "18080", "PAYMESH_PORT_WALLET": " 26052 "})
    assert (moved.envoy, moved.wallet, moved.metrics("wallet"), moved.grpc("wallet", 2)) == (18080, 26052, 27052, 26152)
    assert dataclasses.replace(moved, envoy=LOCAL.envoy, wallet=LOCAL.wallet) == LOCAL


def test_every_port_has_a_variable_and_readme_lists_each_one_with_its_default() -> None:
    readme = (ROOT / "README.md").read_text()
    for field in PORT_FIELDS:
        assert getattr(local_ports({port_variable(field): "40001"}), field) == 40001
        row = f"| `{port_variable(field)}` | {getattr(LOCAL, field)} |"
        assert row in readme, f"README.md's Ports table has no row {row!r}"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PAYMESH_PORT_ENVOY": "http"}, r"PAYMESH_PORT_ENVOY='http': expected a TCP port number, 1024\.\.65535"),
        ({"PAYMESH_PORT_ENVOY": "80"}, r"PAYMESH_PORT_ENVOY='80': expected"),
        ({"PAYMESH_PORT_REDIS": "70000"}, r"PAYMESH_PORT_REDIS='70000': expected"),
        (
            {"PAYMESH_PORT_ENVOI": "18080"},
            r"PAYMESH_PORT_ENVOI is not a paymesh port variable; did you mean PAYMESH_PORT_ENVOY\?",
        ),
        (
            {"PAYMESH_PORT_ENVOY": "16379"},
            r"redis and envoy would both listen on 16379: set PAYMESH_PORT_REDIS or PAYMESH_PORT_ENVOY",
        ),
        ({"PAYMESH_PORT_ENVOY": "51052"}, r"envoy and wallet metrics would both listen on 51052"),
        ({"PAYMESH_PORT_AUTH": "65000"}, r"PAYMESH_PORT_AUTH=65000: auth metrics would be 66000, beyond 65535"),
    ],
)
def test_a_bad_port_variable_is_refused_with_its_name(environ: dict[str, str], message: str) -> None:
    with pytest.raises(PortsError, match=message):
        local_ports(environ)


def test_a_taken_port_names_the_variable_that_moves_it() -> None:
    assert (
        how_to_free("local", LOCAL, 8080)
        == "set PAYMESH_PORT_ENVOY to a free port, e.g. PAYMESH_PORT_ENVOY=18080 make up"
    )
    assert how_to_free("local", LOCAL, 9901).startswith("set PAYMESH_PORT_ENVOY_ADMIN to a free port")
    metrics = how_to_free("local", LOCAL, LOCAL.metrics("wallet"))
    assert metrics.startswith("set PAYMESH_PORT_WALLET to a free port, e.g. PAYMESH_PORT_WALLET=60052 make up")
    assert metrics.endswith("(wallet metrics follows it)")
    assert how_to_free("local", LOCAL, LOCAL.grpc("payment", 3)).endswith("(payment-3 gRPC follows it)")
    assert "PAYMESH_TEST_PORT_BASE" in how_to_free("test", port_plan.test_ports(26000), 26080)


# --- unknown components ---------------------------------------------------------------------------
def test_an_unknown_component_is_one_line_with_the_nearest_name_and_what_exists() -> None:
    error = str(unknown_component("paymnt_svc", ["auth", "payment", "envoy"], ["all", "infra"]))
    assert error == (
        "unknown component 'paymnt_svc'; did you mean 'payment'? components: auth, payment, envoy; groups: all, infra"
    )
    assert str(unknown_component("zzz", ["auth"])) == "unknown component 'zzz'; components: auth"


# --- progress ---------------------------------------------------------------------------------------
def test_progress_speaks_once_per_interval_with_the_time_waited() -> None:
    now = [100.0]
    said: list[str] = []
    progress = Progress("kafka", interval=5.0, clock=lambda: now[0], say=said.append)
    for t in (100.25, 104.9, 105.0, 106.0, 109.9, 110.2, 112.0):
        now[0] = t
        progress.tick()
    assert said == [
        "waiting for kafka… 5 s (python -m devstack logs kafka)",
        "waiting for kafka… 10 s (python -m devstack logs kafka)",
    ]


class _SlowComponent(Component):
    """A real process that takes ~1.2 s to become healthy."""

    name = "slow"
    progress_interval = 0.5
    start_timeout = 10.0

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.ready_at = time.monotonic() + 1.2

    def address(self) -> str:
        return "-"

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(30)"]

    def is_healthy(self) -> bool:
        return time.monotonic() >= self.ready_at


def test_a_component_that_is_slow_to_start_says_it_is_being_waited_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    component = _SlowComponent(Context("test", tmp_path, port_plan.test_ports(26000), SECRETS))
    caplog.set_level(logging.INFO, logger="devstack")
    try:
        assert component.start()
    finally:
        component.stop()
    waited = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for slow… ")]
    assert len(waited) >= 2, caplog.text
    assert all(re.fullmatch(r"waiting for slow… [0-2] s \(python -m devstack logs slow\)", m) for m in waited), waited


# --- the CLI, as a subprocess -------------------------------------------------------------------------
def _devstack(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["logs", "nosuch"], {}),
        (["status", "--only", "nosuch"], {}),
        (["up", "--only", "nosuch"], {}),
        (["status"], {"PAYMESH_PORT_ENVOY": "not-a-port"}),
    ],
)
def test_a_usage_error_is_one_line_on_stderr_and_exit_code_2(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    result = _devstack(*args, "--run-dir", str(tmp_path / "run"), env=env)
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("python -m devstack: "), result.stderr
    assert not (tmp_path / "run" / "pids").exists()


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port held by a listener of ours, in this session's test-port block (above every port its stack uses)."""
    base = int(os.environ.get("PAYMESH_TEST_PORT_BASE", "30000"))
    for port in range(base + 1990, base + 2000):
        with socket.socket() as holder:
            try:
                holder.bind(("127.0.0.1", port))
            except OSError:
                continue
            holder.listen()
            yield port
            return
    pytest.fail(f"no free port in {base + 1990}..{base + 1999} to hold")


def test_up_on_a_taken_port_starts_nothing_and_names_the_variable_to_set(tmp_path: Path, taken_port: int) -> None:
    result = _devstack("up", "--only", "redis", "--run-dir", str(tmp_path), env={"PAYMESH_PORT_REDIS": str(taken_port)})
    assert result.returncode == 1, result
    assert f"redis: port {taken_port} on 127.0.0.1 is taken by another process" in result.stderr
    assert "set PAYMESH_PORT_REDIS to a free port" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("pids/*.pid"))


def test_logs_follow_prints_what_is_appended_as_tail_f_does(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "redis.log"
    log.parent.mkdir(parents=True)
    log.write_text("before\n")
    follower = subprocess.Popen(
        [sys.executable, "-m", "devstack", "logs", "redis", "-n", "5", "--follow", "--run-dir", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # A follower that never prints must fail the test, not hang it.
    watchdog = threading.Timer(20, follower.kill)
    watchdog.start()
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "before\n"
        with log.open("a") as handle:
            handle.write("appended\n")
        assert follower.stdout.readline() == "appended\n"
    finally:
        watchdog.cancel()
        follower.kill()
        follower.wait()


def test_make_logs_passes_name_lines_and_follow() -> None:
    # Under `make test` this make is a sub-make (MAKELEVEL, MAKEFLAGS: it would print "Entering directory").
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    dry = subprocess.run(
        ["make", "--no-print-directory", "-n", "logs", "NAME=kafka", "FOLLOW=1", "LINES=7"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert re.search(r"-m devstack logs --profile local kafka +--lines 7 +--follow$", dry.stdout.strip()), dry.stdout
    quiet = subprocess.run(
        ["make", "--no-print-directory", "-n", "logs", "FOLLOW=0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert "--follow" not in quiet.stdout
