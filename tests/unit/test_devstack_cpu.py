"""devstack.cpu: a component's CPU time includes its descendants' (read from /proc)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from devstack.cpu import component_cpu_seconds


def test_a_busy_child_counts_toward_its_parent_component() -> None:
    spin = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        before = component_cpu_seconds({"tests": os.getpid(), "child": child.pid})
        deadline = time.monotonic() + 20
        while component_cpu_seconds({"child": child.pid})["child"] < 0.5 and time.monotonic() < deadline:
            time.sleep(0.05)
        after = component_cpu_seconds({"tests": os.getpid(), "child": child.pid})
    finally:
        child.kill()
        child.wait()
    assert after["child"] >= 0.5
    assert after["tests"] - before["tests"] >= (after["child"] - before["child"]) * 0.9  # the child is ours
    assert component_cpu_seconds({"gone": child.pid}) == {"gone": 0.0}
