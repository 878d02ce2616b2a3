"""A check's verdict: what it looked at, what it counted, and every violation with its evidence."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

FINAL_STATES: dict[str, frozenset[str]] = {
    "payment": frozenset({"SUCCEEDED", "FAILED", "CANCELED"}),
    "refund": frozenset({"SUCCEEDED", "FAILED"}),
    "payout": frozenset({"SUCCEEDED", "FAILED"}),
}
SETTLEMENT = "EXTERNAL_SETTLEMENT"


@dataclass
class CheckResult:
    key: str  # "1", "2a"... as in docs/reliability.md
    title: str
    checked: int = 0  # how many items the check examined
    counts: dict[str, int] = field(default_factory=dict)  # what else it counted (shown in the summary)
    violations: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.violations

    def fail(self, message: str) -> None:
        self.violations.append(message)

    def count(self, name: str, by: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + by


def sum_by(pairs: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Adds the amounts of equal keys (e.g. per currency); keys whose total is 0 stay."""
    totals: dict[str, int] = {}
    for key, amount in pairs:
        totals[key] = totals.get(key, 0) + amount
    return totals


def nonzero(totals: dict[str, int]) -> dict[str, int]:
    return {key: value for key, value in totals.items() if value != 0}
