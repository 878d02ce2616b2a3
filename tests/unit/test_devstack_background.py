"""The local stack's event consumers and mail sink run as background work (SCHED_IDLE); the test stack's do not."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack import ports as port_plan
from devstack.components import Context
from devstack.credentials import Secrets
from devstack.mailsink import MailSink
from devstack.services import Service, background

SECRETS = Secrets(**{f.name: "x" * 44 for f in dataclasses.fields(Secrets)})


def _context(profile: str, run_dir: Path) -> Context:
    ports = port_plan.LOCAL if profile == "local" else port_plan.test_ports(30000)
    return Context(profile, run_dir, ports, SECRETS)


def test_in_the_local_stack_notify_and_the_mail_sink_run_idle_and_the_money_path_does_not(tmp_path: Path) -> None:
    local = _context("local", tmp_path)
    assert Service(local, "notify", 1).command()[:3] == ["chrt", "--idle", "0"]
    assert MailSink(local).command()[:3] == ["chrt", "--idle", "0"]
    for service in ("auth", "wallet", "payment"):
        assert Service(local, service, 1).command()[0] == sys.executable


def test_the_test_stack_runs_every_service_at_normal_priority(tmp_path: Path) -> None:
    # The suite's timeouts assume the consumers get their share of the CPU.
    test = _context("test", tmp_path)
    assert Service(test, "notify", 1).command()[0] == sys.executable
    assert MailSink(test).command()[0] == sys.executable


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_IDLE is Linux's")
def test_a_background_command_really_runs_under_the_idle_policy() -> None:
    script = "import os; print(os.sched_getscheduler(0) == os.SCHED_IDLE)"
    out = subprocess.run(background([sys.executable, "-c", script]), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the caller itself is untouched
