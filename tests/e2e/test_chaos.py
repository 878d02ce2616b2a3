"""make test's short chaos run: two fixed seeds of `python -m devstack.chaos` on the harness's own stack.

The harness starts and stops its own stack (port base = this session's + 500, so it never meets the
session's stack or another agent's), drives the workload through Envoy while the seeds' faults hit it,
settles, and checks money safety (docs/reliability.md). It must exit 0. Seeds 3 and 7 at 40 s each
between them kill -9 payment_svc, notify_svc and PostgreSQL's postmaster, SIGTERM wallet_svc and
payment_svc, SIGSTOP Kafka, and make the processor slow, hang, lose answers and drop webhooks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from devstack.components import REPO_ROOT

pytestmark = pytest.mark.e2e

SEEDS = ("3", "7")
WORKLOAD_S = 40
# Past this the run is stuck: stop it (SIGTERM makes the harness stop its stack) and fail.
RUN_LIMIT_S = 780


@pytest.mark.timeout(RUN_LIMIT_S + 120)
def test_two_seeded_chaos_runs_keep_every_money_invariant() -> None:
    port_base = int(os.environ.get("PAYMESH_TEST_PORT_BASE", "30000")) + 500
    run_dir = REPO_ROOT / ".run" / f"chaos-{port_base}"
    argv = [sys.executable, "-m", "devstack.chaos", "--seed", *SEEDS, "--duration", str(WORKLOAD_S),
            "--settle", "150", "--port-base", str(port_base)]  # fmt: skip
    process = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=RUN_LIMIT_S)
    except subprocess.TimeoutExpired:
        process.terminate()
        output, _ = process.communicate(timeout=90)
        pytest.fail(f"the chaos run did not finish within {RUN_LIMIT_S}s:\n{output[-20_000:]}")
    assert process.returncode == 0, output[-30_000:]
    for seed in SEEDS:
        report = json.loads((run_dir / f"chaos-seed-{seed}.json").read_text())
        # The run did what it says: a real workload, its faults injected, every check looking at data.
        assert report["requests"] >= 50, report["requests"]
        assert report["faults"]
        assert not any(fault["error"] for fault in report["faults"]), report["faults"]
        assert report["violations"] == 0
        assert len(report["checks"]) == 13
        assert all(check["passed"] and check["checked"] > 0 for check in report["checks"]), report["checks"]
