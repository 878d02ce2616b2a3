"""Evidence for the violations of a run, gathered before its stack goes away.

For every resource a violation names (by UUID; at most MAX_IDS), the rows
that tell its story: the payment, refund or payout with its failure code and
reasons, its transitions, saga steps and idempotency key (without the
recorded response), the ledger transactions, postings and holds that name it,
its notifications, and the service log lines that mention it. Written next to
the report as chaos-seed-<n>-evidence.json.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from devstack.chaos.collect import Databases
from devstack.chaos.verdict import CheckResult

MAX_IDS = 30
MAX_LOG_LINES = 60
LOG_NAMES = ("auth", "wallet", "payment", "notify", "processor")
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")

# service -> (what, SQL taking the ids as $1 text[])
QUERIES: dict[str, list[tuple[str, str]]] = {
    "payment": [
        ("payments", "SELECT * FROM payments WHERE payment_id::text = ANY($1)"),
        ("refunds", "SELECT * FROM refunds WHERE refund_id::text = ANY($1) OR payment_id::text = ANY($1)"),
        ("payouts", "SELECT * FROM payouts WHERE payout_id::text = ANY($1)"),
        ("transitions", "SELECT * FROM transitions WHERE resource_id::text = ANY($1) ORDER BY transition_id"),
        ("saga_steps", "SELECT * FROM saga_steps WHERE resource_id::text = ANY($1) ORDER BY started_at"),
        (
            "idempotency_keys",
            "SELECT caller_id, idempotency_key, method, resource_id, state, response_code, created_at, completed_at"
            " FROM idempotency_keys WHERE resource_id::text = ANY($1)",
        ),
    ],
    "wallet": [
        ("ledger_transactions", "SELECT * FROM ledger_transactions WHERE payment_id = ANY($1) ORDER BY created_at"),
        (
            "postings",
            "SELECT p.* FROM postings p JOIN ledger_transactions t ON t.id = p.transaction_id"
            " WHERE t.payment_id = ANY($1) ORDER BY p.seq",
        ),
        ("holds", "SELECT * FROM holds WHERE payment_id = ANY($1) OR id::text = ANY($1)"),
        (
            "ledger_references",
            "SELECT reference, operation, hold_id, transaction_id, created_at FROM ledger_references"
            " WHERE split_part(reference, ':', 1) = ANY($1)",
        ),
    ],
    "notify": [
        (
            "notifications",
            "SELECT notification_id, user_id, channel, endpoint_id, event_id, event_type, state, attempts,"
            " last_error, create_time, delivered_time FROM notification"
            " WHERE notification_id::text = ANY($1) OR event_id::text = ANY($1)",
        ),
    ],
}


def named_ids(checks: Sequence[CheckResult]) -> list[str]:
    """The UUIDs the violations name, in order of first mention."""
    found: dict[str, None] = {}
    for check in checks:
        for violation in check.violations:
            for match in _UUID.findall(violation):
                found.setdefault(match, None)
    return list(found)[:MAX_IDS]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"({len(bytes(value))} bytes)"
    return value


async def gather(db: Databases, ids: list[str], logs_dir: Path) -> dict[str, Any]:
    evidence: dict[str, Any] = {"ids": ids}
    for service, queries in QUERIES.items():
        for name, sql in queries:
            rows = await db.fetch(service, sql, ids)
            evidence[f"{service}.{name}"] = [{k: _plain(v) for k, v in dict(row).items()} for row in rows]
    evidence["logs"] = _log_lines(ids, logs_dir)
    return evidence


def _log_lines(ids: list[str], logs_dir: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name in LOG_NAMES:
        path = logs_dir / f"{name}.log"
        if not path.exists():
            continue
        with path.open(errors="replace") as handle:
            lines = [line.rstrip()[:2000] for line in handle if any(i in line for i in ids)]
        if lines:
            found[name] = lines[:MAX_LOG_LINES]
    return found


def write(evidence: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(evidence, indent=1, default=str) + "\n")
