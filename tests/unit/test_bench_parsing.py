"""devstack.bench.parsing: what wrk, ghz, vegeta and pgbench print, as LoadResults."""

from __future__ import annotations

import base64
import json
import math

import pytest

from devstack.bench import parsing

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:8080
  2 threads and 16 connections
  320 requests in 10.02s, 380.00KB read
Requests/sec:     31.94
BENCH_JSON {"duration_us":10020000,"requests":320,"kinds":{"200 SUCCEEDED":310,"200 FAILED":4,"429 RATE_LIMITED":6},\
"errors":{"connect":0,"read":2,"write":0,"status":6,"timeout":1},\
"latency_us":{"p50":510000,"p95":800000,"p99":901500,"max":1200000}}
"""


def test_wrk_counts_successful_payments_and_names_every_other_outcome() -> None:
    result = parsing.wrk(WRK_OUTPUT)
    assert result.tool == "wrk"
    assert result.succeeded == 310
    # Non-2xx answers are counted once, by status and reason; socket errors by kind.
    assert result.errors == {"200 FAILED": 4, "429 RATE_LIMITED": 6, "socket read": 2, "socket timeout": 1}
    assert result.seconds == pytest.approx(10.02)
    assert result.per_second == pytest.approx(310 / 10.02)
    assert (result.latency.p50, result.latency.p99, result.latency.max) == (510.0, 901.5, 1200.0)


def test_wrk_without_the_script_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="BENCH_JSON"):
        parsing.wrk("Running 10s test @ http://127.0.0.1:8080\n")


def _ghz_report(**overrides: object) -> dict[str, object]:
    report: dict[str, object] = {
        "count": 120,
        "total": 10_000_000_000,
        "slowest": 950_000_000,
        "statusCodeDistribution": {"OK": 100, "Unavailable": 16, "FailedPrecondition": 4},
        "errorDistribution": {
            "rpc error: code = Unavailable desc = error reading from server: read tcp 127.0.0.1:1->127.0.0.1:2:"
            " use of closed network connection": 16,
            "rpc error: code = FailedPrecondition desc = insufficient funds": 4,
        },
        "latencyDistribution": [
            {"percentage": 50, "latency": 500_000_000},
            {"percentage": 95, "latency": 800_000_000},
            {"percentage": 99, "latency": 900_000_000},
        ],
    }
    report.update(overrides)
    return report


def test_ghz_tells_calls_cut_off_at_the_end_from_real_errors() -> None:
    result = parsing.ghz(_ghz_report())
    assert result.succeeded == 100
    assert result.errors == {parsing.CUT_OFF: 16, "FailedPrecondition: insufficient funds": 4}
    assert result.seconds == 10.0
    assert (result.latency.p50, result.latency.p95, result.latency.p99, result.latency.max) == (500, 800, 900, 950)


def test_ghz_unavailable_for_another_reason_stays_an_error() -> None:
    report = _ghz_report(
        statusCodeDistribution={"OK": 10, "Unavailable": 3},
        errorDistribution={"rpc error: code = Unavailable desc = connection refused": 3},
    )
    assert parsing.ghz(report).errors == {"Unavailable: connection refused": 3}


def _vegeta_line(seq: int, sent: str, latency_ms: float, code: int, body: dict[str, object], error: str = "") -> str:
    return json.dumps(
        {
            "attack": "",
            "seq": seq,
            "code": code,
            "timestamp": sent,
            "latency": int(latency_ms * 1e6),
            "bytes_out": 100,
            "bytes_in": 100,
            "error": error,
            "body": base64.b64encode(json.dumps(body).encode()).decode(),
        }
    )


def test_vegeta_latency_counts_the_wait_of_a_request_sent_late() -> None:
    # 10/s: request n is due 0.1 s × n after the first. Request 2 went out 0.3 s late.
    lines = [
        _vegeta_line(0, "2026-12-06T20:00:00.000000000Z", 50, 200, {"state": "SUCCEEDED"}),
        _vegeta_line(1, "2026-12-06T20:00:00.100000000Z", 50, 200, {"state": "SUCCEEDED"}),
        _vegeta_line(2, "2026-12-06T20:00:00.500000000Z", 50, 200, {"state": "FAILED"}),
        _vegeta_line(
            3, "2026-12-06T20:00:00.300000000Z", 20, 429, {"code": 8, "details": [{"reason": "RATE_LIMITED"}]}
        ),
        _vegeta_line(4, "2026-12-06T20:00:00.400000000Z", 0, 0, {}, error="dial tcp: connection refused"),
    ]
    result = parsing.vegeta(lines, rate=10)
    assert result.succeeded == 2
    assert result.errors == {
        "200 FAILED": 1,
        "429 RATE_LIMITED": 1,
        "transport: dial tcp: connection refused": 1,
    }
    assert result.latency.max == pytest.approx(350.0)  # 0.3 s late + 50 ms answer
    assert result.seconds == pytest.approx(0.55)  # first due to last answer


def test_vegeta_without_results() -> None:
    result = parsing.vegeta([], rate=5)
    assert result.succeeded == 0
    assert math.isnan(result.latency.p99)


PGBENCH_OUTPUT = """pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: /tmp/paymesh-bench-x/transfer.sql
scaling factor: 1
query mode: prepared
number of clients: 16
number of threads: 2
maximum number of tries: 10
duration: 10 s
number of transactions actually processed: 13725
number of failed transactions: 2 (0.015%)
number of transactions retried: 3 (0.022%)
total number of retries: 3
latency average = 11.657 ms
initial connection time = 25.123 ms
tps = 1372.500000 (without initial connection time)
"""


def test_pgbench_rate_is_its_own_tps_and_percentiles_come_from_its_log() -> None:
    log = [f"{n % 16} {n} {1000 * (n + 1)} 0 1765051200 {n} 0" for n in range(100)]
    log += ["3 100 failed 0 1765051201 5 9"]
    result = parsing.pgbench(PGBENCH_OUTPUT, log)
    assert result.succeeded == 13725
    assert result.per_second == pytest.approx(1372.5)
    assert result.errors == {"failed transactions": 2}
    assert (result.latency.p50, result.latency.p99, result.latency.max) == (50.0, 99.0, 100.0)


def test_pgbench_output_without_a_summary_is_an_error() -> None:
    with pytest.raises(ValueError, match="pgbench"):
        parsing.pgbench("connection to server failed\n", [])
