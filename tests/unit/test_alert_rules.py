"""paymesh's alert rules: valid for Prometheus, unit-tested with promtool, each one tested and documented.

promtool comes with the Debian `prometheus` package (devstack/bootstrap.sh);
the tests fail, never skip, without it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "paymesh" / "files" / "observability" / "alerts.yaml"
RULE_TESTS = Path(__file__).resolve().parent / "alert_rules"
RUNBOOK = ROOT / "docs" / "operations.md"


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: run devstack/bootstrap.sh (Debian package prometheus)")
    return path


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    proc = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in proc.stdout


def test_the_rules_pass_their_promtool_unit_tests() -> None:
    files = sorted(RULE_TESTS.glob("*.test.yaml"))
    assert files
    proc = subprocess.run(
        [_promtool(), "test", "rules", *(f.name for f in files)],
        cwd=RULE_TESTS,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_is_unit_tested_firing() -> None:
    fired: set[str] = set()
    for path in RULE_TESTS.glob("*.test.yaml"):
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            fired |= {t["alertname"] for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert {rule["alert"] for rule in _rules()} == fired


def test_every_alert_has_a_severity_a_summary_and_a_runbook_entry() -> None:
    runbook = RUNBOOK.read_text(encoding="utf-8")
    for rule in _rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
        assert f"`{rule['alert']}`" in runbook, f"docs/operations.md does not say what to do about {rule['alert']}"
