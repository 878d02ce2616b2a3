"""The Grafana dashboards (charts/paymesh/files/observability/dashboards): well-formed, and every query
valid PromQL (checked by promtool, which the Debian prometheus package ships).

That each query names metrics the services really export is checked against
the running stack: tests/e2e/test_metrics_catalog.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DASHBOARDS = Path(__file__).resolve().parents[2] / "charts" / "paymesh" / "files" / "observability" / "dashboards"
# Grafana's variables, as a dashboard fills them in.
VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$job": ".*", "$kind": "payment", "$currency": ".*"}


def _boards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(DASHBOARDS.glob("*.json"))}


def test_the_three_dashboards_are_there_each_with_its_own_uid() -> None:
    boards = _boards()
    assert set(boards) == {"golden-signals.json", "payment-funnel.json", "ledger-outbox.json"}
    assert len({b["uid"] for b in boards.values()}) == 3


@pytest.mark.parametrize("name", sorted(_boards()))
def test_a_dashboard_is_well_formed(name: str) -> None:
    board = _boards()[name]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for variable in ("$job", "$kind", "$currency"):
                if variable in target["expr"]:
                    assert variable[1:] in variables, (panel["title"], variable)


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: run devstack/bootstrap.sh (Debian package prometheus)")
    rules = []
    for name, board in _boards().items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in VARIABLES.items():
                    expr = expr.replace(variable, value)
                rules.append({"record": f"dashboard:{name.removesuffix('.json').replace('-', '_')}:{len(rules)}",
                              "expr": expr})  # fmt: skip
    path = tmp_path / "dashboards.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}), encoding="utf-8")
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(rules) > 30
