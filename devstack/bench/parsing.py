"""What the load tools print, turned into LoadResults. Pure functions (tests/unit/test_bench_parsing.py)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from devstack.bench.stats import Latency, LoadResult

SUCCEEDED = "200 SUCCEEDED"
# ghz closes its connections when its time is up: the calls then in flight
# fail with one of these (their payments still complete server-side).
CUT_OFF = "cut off at the end of the run"
_GHZ_CUT_OFF = (
    "error reading from server",
    "transport is closing",
    "context canceled",
    "use of closed network connection",
    "the client connection is closing",
)
_WRK_MARKER = "BENCH_JSON "
_REASON = re.compile(rb'"reason"\s*:\s*"([A-Z_]+)"')
_STATE = re.compile(rb'"state"\s*:\s*"([A-Z_]+)"')


def wrk(stdout: str) -> LoadResult:
    """wrk's run with payments.lua: its BENCH_JSON line."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith(_WRK_MARKER)), None)
    if line is None:
        raise ValueError(f"no {_WRK_MARKER.strip()} line in wrk's output:\n{stdout[-2000:]}")
    report: dict[str, Any] = json.loads(line[len(_WRK_MARKER) :])
    kinds: dict[str, int] = dict(report["kinds"])
    succeeded = kinds.pop(SUCCEEDED, 0)
    # "status" errors are the non-2xx answers, already counted by kind.
    transport = {f"socket {name}": int(n) for name, n in report["errors"].items() if name != "status" and n}
    latency_us = report["latency_us"]
    return LoadResult(
        tool="wrk",
        seconds=report["duration_us"] / 1e6,
        succeeded=succeeded,
        errors={**kinds, **transport},
        latency=Latency(
            latency_us["p50"] / 1000, latency_us["p95"] / 1000, latency_us["p99"] / 1000, latency_us["max"] / 1000
        ),
    )


def ghz(report: Mapping[str, Any]) -> LoadResult:
    """ghz's --format=json report. A call counts as a payment when gRPC says OK."""
    codes: dict[str, int] = dict(report.get("statusCodeDistribution") or {})
    succeeded = codes.pop("OK", 0)
    errors: dict[str, int] = {}
    messages: Mapping[str, int] = report.get("errorDistribution") or {}
    for message, count in messages.items():
        if any(sign in message for sign in _GHZ_CUT_OFF):
            errors[CUT_OFF] = errors.get(CUT_OFF, 0) + count
            code = message.split("code = ", 1)[-1].split(" ", 1)[0]
            codes[code] = codes.get(code, 0) - count
    for code, count in codes.items():
        if count <= 0:
            continue
        # Name a code by its most frequent message, e.g. "FailedPrecondition: insufficient funds".
        related = [(n, m) for m, n in messages.items() if f"code = {code} " in m]
        detail = max(related)[1].split("desc = ", 1)[-1][:60] if related else ""
        errors[f"{code}: {detail}" if detail else code] = count
    points = {p["percentage"]: p["latency"] / 1e6 for p in report.get("latencyDistribution") or []}
    return LoadResult(
        tool="ghz",
        seconds=report["total"] / 1e9,
        succeeded=succeeded,
        errors=errors,
        latency=Latency(points.get(50, 0.0), points.get(95, 0.0), points.get(99, 0.0), report.get("slowest", 0) / 1e6),
    )


def _error_kind(code: int, error: str, body: bytes) -> str:
    if code == 0:
        return f"transport: {error[-60:]}" if error else "transport"
    found = (_STATE if code == 200 else _REASON).search(body)
    return f"{code} {found.group(1).decode() if found else '?'}"


def vegeta(lines: Iterable[str], rate: float) -> LoadResult:
    """`vegeta encode --to json` of an open-loop attack, latencies corrected for coordinated omission.

    Request n was due at start + n / rate. If the attacker sent it late (no
    free worker, a starved CPU), the wait counts as latency: what a client
    arriving on time would have seen.
    """
    results = [json.loads(line) for line in lines if line.strip()]
    if not results:
        return LoadResult("vegeta", 0.0, 0, {}, Latency.of([]))
    sent = {r["seq"]: _timestamp(r["timestamp"]) for r in results}
    start = sent[min(sent)] - min(sent) / rate
    latencies: list[float] = []
    errors: dict[str, int] = {}
    succeeded, end = 0, start
    for r in results:
        due = start + r["seq"] / rate
        latency_s = r["latency"] / 1e9 + max(0.0, sent[r["seq"]] - due)
        latencies.append(latency_s * 1000)
        end = max(end, sent[r["seq"]] + r["latency"] / 1e9)
        kind = _error_kind(int(r["code"]), r.get("error") or "", base64.b64decode(r.get("body") or ""))
        if kind == SUCCEEDED:
            succeeded += 1
        else:
            errors[kind] = errors.get(kind, 0) + 1
    return LoadResult("vegeta", end - start, succeeded, errors, Latency.of(latencies))


def _timestamp(value: str) -> float:
    # RFC 3339 with up to nanoseconds; datetime takes microseconds at most.
    head, _, rest = value.partition(".")
    if rest:
        digits = re.match(r"\d+", rest)
        fraction = digits.group(0) if digits else ""
        value = f"{head}.{fraction[:6].ljust(6, '0')}{rest[len(fraction) :]}"
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


_PGBENCH_TPS = re.compile(r"^tps = ([\d.]+) \(without initial connection time\)", re.MULTILINE)
_PGBENCH_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)
_PGBENCH_DONE = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)


def pgbench(stdout: str, log_lines: Iterable[str]) -> LoadResult:
    """pgbench's summary plus its per-transaction log (-l): "client tx latency_us script epoch us [...]"."""
    done = _PGBENCH_DONE.search(stdout)
    tps = _PGBENCH_TPS.search(stdout)
    if done is None or tps is None:
        raise ValueError(f"unexpected pgbench output:\n{stdout[-2000:]}")
    failed = _PGBENCH_FAILED.search(stdout)
    latencies = []
    for line in log_lines:
        fields = line.split()
        if len(fields) >= 3 and fields[2].isdigit():  # "failed"/"skipped" in place of a latency otherwise
            latencies.append(int(fields[2]) / 1000)
    succeeded = int(done.group(1))
    # tps excludes connection set-up; seconds = committed / tps keeps per_second equal to pgbench's own tps.
    seconds = succeeded / float(tps.group(1)) if float(tps.group(1)) > 0 else 0.0
    errors = {"failed transactions": int(failed.group(1))} if failed and int(failed.group(1)) else {}
    return LoadResult("pgbench", seconds, succeeded, errors, Latency.of(latencies))
