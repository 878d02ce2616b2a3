"""The bench's report: a Markdown table (printed and saved), the JSON of every figure, a PNG plot."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.bench.checks import LedgerCheck
from devstack.bench.options import CEILING, DESCRIPTIONS, OPEN, Options
from devstack.bench.scenarios import Step
from devstack.bench.stats import GROUPS, OTHER, best, ratio_percent


@dataclass(frozen=True)
class Report:
    started: str  # local time, ISO 8601
    options: Options
    steps: Sequence[Step]
    ledger: LedgerCheck | None
    idle_cpu_ms_per_s: Mapping[str, float]
    load_average: tuple[str, str]  # /proc/loadavg before and after
    notes: Sequence[str]

    def best_rate(self, scenario: str) -> float:
        return best(s.result.per_second for s in self.steps if s.scenario == scenario)

    def ceiling_rate(self) -> float:
        return self.best_rate(CEILING)

    def ratio(self, scenario: str) -> float:
        return ratio_percent(self.best_rate(scenario), self.ceiling_rate())


def _fmt(value: float, digits: int = 1) -> str:
    if math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞"
    return f"{value:,.{digits}f}"


def _load(step: Step) -> str:
    if step.mode == "open":
        return f"{step.load:g}/s"
    return f"{step.load:g} client{'s' if step.load != 1 else ''}" if step.mode == "ceiling" else f"c={step.load:g}"


def _errors(step: Step) -> str:
    if not step.result.errors:
        return "0"
    return ", ".join(f"{kind} ×{count}" for kind, count in sorted(step.result.errors.items(), key=lambda kv: -kv[1]))


def _drain(step: Step) -> str:
    if step.drain is None:
        return "–"
    if math.isinf(step.drain.seconds):
        left = step.drain.left
        return f">timeout (outbox {left.outbox_unpublished}, lag {left.consumer_lag}, due {left.notifications_due})"
    return _fmt(step.drain.seconds)


def database_ms(step: Step) -> float:
    """PostgreSQL's CPU per transfer or payment, all its processes."""
    return sum(ms for name, ms in step.cpu.components.items() if name.startswith("postgres"))


def markdown(report: Report) -> str:
    out = [
        f"# make bench, {report.started}",
        "",
        f"Options: `{_options_line(report.options)}`. Load average (1/5/15 min) before: {report.load_average[0]};"
        f" after: {report.load_average[1]}.",
        "",
        "| scenario | load | payments/s | p50 ms | p95 ms | p99 ms | errors by kind |"
        " CPU ms/payment: money path | notify | other | load tool | notify drain s | other tenants (cores) |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for step in report.steps:
        lat = step.result.latency
        if step.mode == "ceiling":
            cpu = [f"db {_fmt(database_ms(step), 2)}", "–", "–"]
        else:
            cpu = [_fmt(step.cpu.groups.get(group, math.nan)) for group in (*GROUPS, OTHER)]
        out.append(
            f"| {step.scenario} | {_load(step)} | {_fmt(step.result.per_second)} | {_fmt(lat.p50)} | {_fmt(lat.p95)}"
            f" | {_fmt(lat.p99)} | {_errors(step)} | {' | '.join(cpu)} | {_fmt(step.load_tool_cpu_ms)}"
            f" | {_drain(step)} | {_fmt(step.others_cores, 2)} |"
        )
    out += ["", "Scenarios:"] + [f"- **{name}**: {DESCRIPTIONS[name]}" for name in report.options.scenarios]
    out += ["", *_ratio_lines(report), "", *_component_table(report), "", *_ledger_lines(report.ledger)]
    idle = ", ".join(f"{name} {_fmt(ms)}" for name, ms in report.idle_cpu_ms_per_s.items() if ms >= 0.05)
    out += ["", f"Idle background before the run (CPU ms per second): {idle or 'none'}."]
    notes = [*report.notes, *_noise(report.steps)]
    notes += [f"{s.scenario} {_load(s)}: {note}" for s in report.steps for note in s.notes]
    if notes:
        out += ["", "Notes:", *(f"- {note}" for note in notes)]
    return "\n".join(out) + "\n"


# Above this, other processes took a share of the 2 cores that the figures should be read with.
NOISY_CORES = 0.25


def _noise(steps: Sequence[Step]) -> list[str]:
    if not steps:
        return []
    others = sorted(s.others_cores for s in steps)
    typical = others[len(others) // 2]
    if typical <= NOISY_CORES:
        return []
    return [
        f"other processes on this machine kept {typical:.2f} cores busy during a typical step"
        f" (from {others[0]:.2f} to {others[-1]:.2f}): the stack had the rest of the 2 cores,"
        " so throughput understates what the machine can do alone; CPU per payment is less affected"
    ]


def _options_line(options: Options) -> str:
    return (
        f"--scenarios {','.join(options.scenarios)} --concurrency {','.join(map(str, options.concurrency))}"
        f" --duration {options.duration} --open-duration {options.open_duration}"
        f" --open-rate {','.join(f'{rate:g}' for rate in options.open_rates) or 'auto'}"
        f" --open-fraction {','.join(f'{share:g}' for share in options.open_fractions)} --payers {options.payers}"
        f" --ceiling-clients {','.join(map(str, options.ceiling_clients))}"
        f" --ceiling-duration {options.ceiling_duration}"
    )


def _ratio_lines(report: Report) -> list[str]:
    ceiling = report.ceiling_rate()
    if math.isnan(ceiling):
        return ["No ceiling in this run (scenario `ceiling` not selected): no ratio."]
    lines = [f"**The ceiling**: pgbench's ledger transfer on the same PostgreSQL, best {_fmt(ceiling)}/s."]
    for scenario in report.options.scenarios:
        if scenario in (CEILING, OPEN):
            continue
        rate = report.best_rate(scenario)
        lines.append(
            f"- {scenario}: best {_fmt(rate)} payments/s = **{_fmt(report.ratio(scenario), 2)} %**"
            " of the database's own ledger-transfer rate"
        )
    return lines


def _best_step(report: Report, scenario: str) -> Step | None:
    steps = [s for s in report.steps if s.scenario == scenario and s.mode == "closed"]
    return max(steps, key=lambda s: s.result.per_second) if steps else None


def _component_table(report: Report) -> list[str]:
    columns = [s for s in (_best_step(report, name) for name in report.options.scenarios) if s is not None]
    columns += [s for s in report.steps if s.mode == "open"]
    if not columns:
        return []
    names = sorted(
        {n for s in columns for n in s.cpu.components}, key=lambda n: -max(s.cpu.components.get(n, 0) for s in columns)
    )
    lines = [
        "CPU ms per successful payment by component (each scenario's best closed-loop step, and the open loop):",
        "",
        "| component | " + " | ".join(f"{s.scenario} {_load(s)}" for s in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(_fmt(s.cpu.components.get(name, 0.0), 2) for s in columns) + " |")
    lines.append("| **total** | " + " | ".join(_fmt(sum(s.cpu.components.values())) for s in columns) + " |")
    idle = sum(report.idle_cpu_ms_per_s.values())
    shares = [idle * s.result.seconds / s.payments_succeeded if s.payments_succeeded else math.nan for s in columns]
    lines.append("| of which idle background | " + " | ".join(_fmt(share) for share in shares) + " |")
    return lines


def _ledger_lines(check: LedgerCheck | None) -> list[str]:
    if check is None:
        return ["Ledger check: not run (no payment scenario)."]
    verdict = "passed" if check.ok else "**FAILED**"
    lines = [
        f"Ledger check {verdict}: postings sum to zero per currency, no customer wallet below zero, every payment"
        " of the run final, each wallet moved by exactly its SUCCEEDED payments"
        f" (payments by state: {check.payments}; payers paid {check.paid_by_payers:,} and received"
        f" {check.paid_to_payers:,} by card; their balances fell by {check.payers_fell_by:,}).",
    ]
    if check.unfinished_at_end:
        lines.append(
            f"- when the check began, payments not yet final: {check.unfinished_at_end};"
            f" all were final {_fmt(check.waited_s)} s later"
            if check.ok
            else f"- when the check began, payments not yet final: {check.unfinished_at_end}"
        )
    lines += [f"- violation: {violation}" for violation in check.violations]
    return lines


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def as_json(report: Report) -> str:
    body = _jsonable(report)
    body["ratios_percent"] = {
        s: _jsonable(report.ratio(s)) for s in report.options.scenarios if s not in (CEILING, OPEN)
    }
    body["ledger_ok"] = report.ledger.ok if report.ledger else None
    return json.dumps(body, indent=2)


def plot(report: Report, path: Path) -> bool:
    """Throughput and p99 against concurrency, one line per scenario; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        return False
    figure, (rate_axis, p99_axis) = plt.subplots(1, 2, figsize=(13, 5))
    for scenario in report.options.scenarios:
        steps = sorted((s for s in report.steps if s.scenario == scenario and s.mode == "closed"), key=lambda s: s.load)
        if not steps:
            continue
        loads = [s.load for s in steps]
        rate_axis.plot(loads, [s.result.per_second for s in steps], marker="o", label=scenario)
        p99_axis.plot(loads, [s.result.latency.p99 for s in steps], marker="o", label=scenario)
    ceiling = report.ceiling_rate()
    if not math.isnan(ceiling):
        rate_axis.axhline(ceiling, linestyle="--", color="grey", label=f"pgbench ceiling {ceiling:,.0f}/s")
    for step in report.steps:
        if step.mode == "open":
            label = f"open loop {step.load:g}/s: p99 {step.result.latency.p99:,.0f} ms"
            p99_axis.axhline(step.result.latency.p99, linestyle=":", color="black", label=label)
    plain = FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 1 else f"{value:g}")
    for axis, title, unit in ((rate_axis, "throughput", "payments/s"), (p99_axis, "p99 latency", "ms")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(list(report.options.concurrency))
        axis.xaxis.set_major_formatter(plain)
        axis.yaxis.set_major_formatter(plain)
        axis.set_xlabel("requests in flight (closed loop)")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        if axis.get_legend_handles_labels()[0]:  # an open loop alone leaves the throughput axis empty
            axis.legend(fontsize="small")
    figure.suptitle(f"make bench {report.started}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
