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


@pytest.mark.parametrize("name", sorted(_boards()))
def test_no_two_panels_of_a_dashboard_overlap(name: str) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in _boards()[name]["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[x, y] = panel["title"]


def _read_by_row(name: str) -> dict[str, str]:
    """Each row's title and the queries of the panels below it, joined, by row."""
    rows: dict[str, str] = {}
    current = ""
    for panel in sorted(_boards()[name]["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])):
        if panel["type"] == "row":
            current = panel["title"]
            rows[current] = ""
        else:
            rows[current] += " ".join(t["expr"] for t in panel["targets"]) + " "
    return rows


def test_the_golden_signals_board_has_each_signal_per_service_and_the_edges() -> None:
    rows = _read_by_row("golden-signals.json")
    assert list(rows) == ["Traffic", "Errors", "Latency", "Saturation", "Edge (Envoy)"]
    assert "sum by (job)" in rows["Traffic"]
    assert "paymesh_rpc_total" in rows["Traffic"]
    assert "paymesh_rpc_total" in rows["Errors"]
    assert "paymesh_rpc_duration_seconds_bucket" in rows["Latency"]
    assert "by (job, le)" in rows["Latency"]
    assert "process_cpu_seconds_total" in rows["Saturation"]
    assert "process_resident_memory_bytes" in rows["Saturation"]
    assert "paymesh_gc_pause_seconds_bucket" in rows["Saturation"]
    for edge_metric in ("envoy_http_downstream_rq_xx", "envoy_http_local_rate_limit_rate_limited"):
        assert edge_metric in rows["Edge (Envoy)"]


def test_the_funnel_and_ledger_boards_read_what_they_are_named_after() -> None:
    funnel = " ".join(_read_by_row("payment-funnel.json").values())
    for metric in (
        "paymesh_payment_state_changes_total",
        "paymesh_payment_state_amount_minor_units_total",
        "paymesh_saga_unfinished",
        "paymesh_processor_circuit_state",
    ):
        assert metric in funnel
    ledger = _read_by_row("ledger-outbox.json")
    assert "paymesh_ledger_postings_total" in ledger["Ledger"]
    for metric in ("paymesh_outbox_oldest_unpublished_age_seconds", "paymesh_kafka_consumer_lag_messages"):
        assert metric in ledger["Outbox and Kafka"]
    assert "paymesh_notification_deliveries_total" in ledger["Notifications"]
