"""devstack.bench options and report: bounded arguments, the ratio, the ledger verdict, the JSON."""

from __future__ import annotations

import json
import math

import pytest

from devstack.bench import options as bench_options
from devstack.bench.checks import Backlog, Drain, LedgerCheck
from devstack.bench.report import Report, as_json, markdown
from devstack.bench.scenarios import Step
from devstack.bench.stats import CpuPerPayment, Latency, LoadResult


def test_defaults_run_everything_in_the_documented_order() -> None:
    chosen = bench_options.parse([])
    assert chosen.scenarios == bench_options.ALL
    assert chosen.concurrency == (1, 4, 16, 64)
    assert (chosen.open_rates, chosen.open_fractions) == ((), (0.25, 0.5))  # of the measured saturating rate
    picked = bench_options.parse(["--scenarios", "open,http", "--concurrency", "2,8", "--open-rate", "12.5"])
    assert picked.scenarios == ("http", "open")
    assert (picked.concurrency, picked.open_rates) == ((2, 8), (12.5,))
    swept = bench_options.parse(["--open-rate", "auto", "--open-fraction", "0.25,0.5"])
    assert (swept.open_rates, swept.open_fractions) == ((), (0.25, 0.5))
    assert bench_options.parse(["--open-rate", "100,150"]).open_rates == (100.0, 150.0)


@pytest.mark.parametrize(
    "argv",
    [
        ["--scenarios", "nope"],
        ["--concurrency", "0"],
        ["--concurrency", "1,1000"],
        ["--duration", "3600"],
        ["--open-rate", "0"],
        ["--open-rate", "100,x"],
        ["--open-fraction", "0.5,2"],
        ["--open-fraction", "auto"],
        ["--payers", "500"],
    ],
)
def test_unbounded_or_unknown_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        bench_options.parse(argv)


def _step(scenario: str, mode: str, load: float, rate: float) -> Step:
    result = LoadResult(
        "wrk", 10.0, int(rate * 10), {"429 RATE_LIMITED": 2} if mode == "closed" else {}, Latency.of([5.0])
    )
    cpu = CpuPerPayment.of({"payment": 0.2, "notify": 0.1, "postgres": 0.05}, int(rate * 10))
    drain = Drain(1.5, Backlog(0, 0, 0)) if mode != "ceiling" else None
    return Step(scenario, mode, load, result, cpu, 0.2, 0.1, int(rate * 10), drain, 0)


def _report(ledger: LedgerCheck) -> Report:
    steps = [
        _step("ceiling", "ceiling", 16, 3000.0),
        _step("http", "closed", 1, 15.0),
        _step("http", "closed", 16, 30.0),
        _step("open", "open", 15, 15.0),
    ]
    return Report(
        started="2026-12-06 20:00",
        options=bench_options.parse(["--scenarios", "ceiling,http,open"]),
        steps=steps,
        ledger=ledger,
        idle_cpu_ms_per_s={"payment": 30.0},
        load_average=("0.1 0.1 0.1", "1.0 1.0 1.0"),
        notes=[],
    )


def test_the_report_states_the_ratio_to_the_ceiling() -> None:
    report = _report(LedgerCheck())
    assert report.ratio("http") == pytest.approx(1.0)  # best 30/s of 3,000/s
    text = markdown(report)
    assert "best 30.0 payments/s = **1.00 %** of the database's own ledger-transfer rate" in text
    assert "Ledger check passed" in text
    assert "| http | c=16 | 30.0 |" in text


def test_a_failed_ledger_check_is_shown_and_kept_in_the_json() -> None:
    report = _report(LedgerCheck(violations=["postings in USD sum to 100, not zero"]))
    assert "Ledger check **FAILED**" in markdown(report)
    assert "- violation: postings in USD sum to 100, not zero" in markdown(report)
    body = json.loads(as_json(report))
    assert body["ledger_ok"] is False
    assert body["ratios_percent"]["http"] == pytest.approx(1.0)
    assert body["steps"][0]["drain"] is None


def test_without_a_ceiling_there_is_no_ratio() -> None:
    full = _report(LedgerCheck())
    report = Report(**{**full.__dict__, "steps": [s for s in full.steps if s.scenario != "ceiling"]})
    assert math.isnan(report.ratio("http"))
    assert "No ceiling in this run" in markdown(report)
    assert json.loads(as_json(report))["ratios_percent"]["http"] is None  # not NaN, which JSON does not have
