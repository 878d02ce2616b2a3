"""What a run prints (seed, faults, summary tables, each check) and the JSON it leaves in the run dir."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devstack.chaos.model import FaultRecord, RequestRecord, Snapshot
from devstack.chaos.schedule import Fault
from devstack.chaos.settle import Settled
from devstack.chaos.verdict import CheckResult

SHOWN_VIOLATIONS = 25


@dataclass
class SeedReport:
    seed: int
    schedule: tuple[Fault, ...]
    origin: float  # the workload's start on the run's clock
    workload_s: float
    seconds: float  # the whole seed: set-up, workload, settle, collection, checks
    settled: Settled
    requests: list[RequestRecord]
    faults: list[FaultRecord]
    checks: list[CheckResult]
    snapshot: Snapshot | None = None
    error: str = ""  # the seed could not run (set-up failed...)
    code: dict[str, object] = field(default_factory=dict)  # the commit tested, and files changed since

    @property
    def violations(self) -> int:
        return sum(len(check.violations) for check in self.checks) + (1 if self.error else 0)

    @property
    def passed(self) -> bool:
        return self.violations == 0


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A plain-text table: numbers right-aligned, text left-aligned."""
    cells = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [all(isinstance(row[i], int) for row in rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate(cells):
        padded = [
            cell.rjust(w) if numeric[i] else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  " + "  ".join(padded).rstrip())
        if index == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


def schedule_lines(schedule: Sequence[Fault]) -> list[str]:
    return [f"  +{f.at:6.1f}s  {f.lane:9}  {f.label}, hold {f.hold:.1f}s" for f in schedule]


def request_rows(requests: Sequence[RequestRecord]) -> list[list[object]]:
    by_op: dict[str, Counter[str]] = {}
    for r in requests:
        counts = by_op.setdefault(r.op, Counter())
        counts[r.outcome] += 1
        counts["total"] += 1
        counts["retried"] += len(r.attempts) > 1
        counts["replayed"] += r.replayed
    rows: list[list[object]] = []
    for op in sorted(by_op):
        c = by_op[op]
        rows.append([op, c["total"], c["2xx"], c["4xx"], c["5xx"], c["no answer"], c["retried"], c["replayed"]])
    total: Counter[str] = sum(by_op.values(), Counter())
    rows.append(["all", total["total"], total["2xx"], total["4xx"], total["5xx"], total["no answer"],
                 total["retried"], total["replayed"]])  # fmt: skip
    return rows


def error_reasons(requests: Sequence[RequestRecord]) -> str:
    reasons = Counter(f"{r.status} {r.reason}" for r in requests if not r.ok)
    return ", ".join(f"{reason} ×{count}" for reason, count in reasons.most_common(8)) or "none"


def resource_rows(snapshot: Snapshot) -> list[list[object]]:
    books = snapshot.payments
    rows: list[list[object]] = []
    for kind, states in (
        ("payments", Counter(p.state for p in books.payments.values())),
        ("refunds", Counter(r.state for r in books.refunds.values())),
        ("payouts", Counter(o.state for o in books.payouts.values())),
    ):
        rows.append([kind, sum(states.values()), ", ".join(f"{s} {n}" for s, n in sorted(states.items()))])
    return rows


def fault_rows(report: SeedReport) -> list[list[object]]:
    rows: list[list[object]] = []
    for f in sorted(report.faults, key=lambda fault: fault.began):
        began, restored = f.began - report.origin, f.restored - report.origin
        rows.append([f"+{began:.1f}s", f.label, f"{restored - began:.1f}s", f.error or "ok"])
    return rows


def check_lines(checks: Sequence[CheckResult]) -> list[str]:
    lines = []
    for check in checks:
        counts = ", ".join(f"{name} {value}" for name, value in sorted(check.counts.items()))
        verdict = "PASS" if check.passed else f"FAIL ({len(check.violations)})"
        lines.append(
            f"  {verdict:10} {check.key:3} {check.title}: checked {check.checked}" + (f"; {counts}" if counts else "")
        )
        for violation in check.violations[:SHOWN_VIOLATIONS]:
            lines.append(f"               - {violation}")
        if len(check.violations) > SHOWN_VIOLATIONS:
            lines.append(
                f"               ... and {len(check.violations) - SHOWN_VIOLATIONS} more (see the JSON report)"
            )
    return lines


def seed_summary(report: SeedReport) -> list[str]:
    lines = [f"== seed {report.seed}: faults injected =="]
    lines += table(["began", "fault", "lasted", "result"], fault_rows(report)) if report.faults else ["  none"]
    lines += ["", f"== seed {report.seed}: requests by outcome (final answer after retries) =="]
    lines += table(
        ["op", "total", "2xx", "4xx", "5xx", "no answer", "retried", "replayed"], request_rows(report.requests)
    )
    lines += [f"  errors: {error_reasons(report.requests)}"]
    if report.snapshot is not None:
        lines += ["", f"== seed {report.seed}: resources by final state (whole stack) =="]
        lines += table(["kind", "total", "by state"], resource_rows(report.snapshot))
    settled = "settled" if report.settled.complete else f"NOT settled: {report.settled.left}"
    lines += ["", f"== seed {report.seed}: checks ({settled} after {report.settled.seconds:.0f}s) =="]
    lines += check_lines(report.checks)
    if report.error:
        lines.append(f"  ERROR: {report.error}")
    verdict = "PASS" if report.passed else "FAIL"
    lines += ["", f"seed {report.seed}: {len(report.requests)} requests, {len(report.faults)} faults, "
                  f"{report.violations} violations, workload {report.workload_s:.0f}s, {report.seconds:.0f}s in all "
                  f"-> {verdict}"]  # fmt: skip
    return lines


def overall(reports: Sequence[SeedReport]) -> list[str]:
    rows = [
        [r.seed, len(r.requests), len(r.faults), r.violations, f"{r.workload_s:.0f}s", f"{r.seconds:.0f}s"]
        for r in reports
    ]
    return ["== all seeds ==", *table(["seed", "requests", "faults", "violations", "workload", "duration"], rows)]


def to_json(report: SeedReport) -> dict[str, Any]:
    return {
        "seed": report.seed,
        # Request, attempt and receipt times (the requests JSONL, violations) are seconds on the run's clock;
        # fault times here are seconds after the workload began, at origin_s on that clock.
        "origin_s": round(report.origin, 2),
        "requests": len(report.requests),
        "requests_by_outcome": dict(Counter(r.outcome for r in report.requests)),
        "faults": [
            {
                "fault": f.label,
                "began_s": round(f.began - report.origin, 2),
                "restored_s": round(f.restored - report.origin, 2),
                "error": f.error,
            }
            for f in report.faults
        ],
        "schedule": [{"at_s": f.at, "lane": f.lane, "fault": f.label, "hold_s": f.hold} for f in report.schedule],
        "violations": report.violations,
        "workload_s": round(report.workload_s, 1),
        "duration_s": round(report.seconds, 1),
        "settle_s": round(report.settled.seconds, 1),
        "unsettled": report.settled.left,
        "checks": [
            {
                "key": c.key,
                "title": c.title,
                "passed": c.passed,
                "checked": c.checked,
                "counts": c.counts,
                "violations": c.violations,
            }
            for c in report.checks
        ],
        "error": report.error,
        "code": report.code,
    }


def write_json(report: SeedReport, directory: Path) -> Path:
    """The report, and beside it every request with its attempts (chaos-seed-<n>-requests.jsonl), as evidence."""
    path = directory / f"chaos-seed-{report.seed}.json"
    path.write_text(json.dumps(to_json(report), indent=2) + "\n")
    lines = (json.dumps(asdict(r), separators=(",", ":")) for r in report.requests)
    (directory / f"chaos-seed-{report.seed}-requests.jsonl").write_text("\n".join(lines) + "\n")
    return path
