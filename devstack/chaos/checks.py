"""Every check of a run, in the order docs/reliability.md describes them."""

from __future__ import annotations

from collections.abc import Callable

from devstack.chaos.check_events import check_payment_events, check_wallet_events
from devstack.chaos.check_ledger import (
    check_holds,
    check_money_per_resource,
    check_no_negative,
    check_reconciliation,
    check_zero_sum,
)
from devstack.chaos.check_notify import check_notifications
from devstack.chaos.check_processor import check_processor
from devstack.chaos.check_requests import check_answers, check_errors, check_idempotency, check_unfinished
from devstack.chaos.model import Snapshot
from devstack.chaos.verdict import CheckResult

CHECKS: tuple[Callable[[Snapshot], CheckResult], ...] = (
    check_answers,
    check_unfinished,
    check_idempotency,
    check_errors,
    check_zero_sum,
    check_no_negative,
    check_holds,
    check_reconciliation,
    check_money_per_resource,
    check_processor,
    check_payment_events,
    check_wallet_events,
    check_notifications,
)


def run_checks(snapshot: Snapshot) -> list[CheckResult]:
    return [check(snapshot) for check in CHECKS]
