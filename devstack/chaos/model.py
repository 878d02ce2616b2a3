"""What one run leaves behind, as plain values: the requests it made, the faults it injected and, in a
Snapshot, what it read from the stores afterwards (books.py). The checks (check_*.py) are pure functions
over a Snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from devstack.chaos.books import EventRecord, Ledger, NotifyBooks, PaymentBooks, ProcessorBooks

# --- the client's side -------------------------------------------------------------


@dataclass
class Attempt:
    """One HTTP attempt of a request: its status (0: no answer) and error reason, when it ended."""

    status: int
    reason: str
    at: float  # seconds since the workload started


@dataclass
class RequestRecord:
    """One logical request (all its retries share the Idempotency-Key) and its final answer."""

    seq: int
    op: str  # register, login, wallet, deposit, purchase, pay, capture, cancel, refund, payout, ...
    actor: str  # the caller's user id ('' before registration)
    method: str
    path: str
    key: str  # the Idempotency-Key of every attempt
    started: float
    attempts: list[Attempt] = field(default_factory=list)
    status: int = 0  # the last attempt's HTTP status; 0 if it never got an answer
    reason: str = ""  # ErrorInfo reason of an error answer, or the transport error
    resource: str = ""  # payment, refund, payout, wallet, user
    resource_id: str = ""  # the id the answer names (2xx), else ''
    state: str = ""  # the resource's state in the answer
    payment_id: str = ""  # the payment a capture, cancel or refund acts on
    capture_method: str = ""
    replayed: bool = False  # the last answer came with idempotent-replayed: true
    body: dict[str, Any] | None = None  # what was sent (None for sign-ups and logins: they carry passwords)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def outcome(self) -> str:
        """2xx, 4xx, 5xx or 'no answer', for the summary."""
        if self.status == 0:
            return "no answer"
        return f"{self.status // 100}xx"


@dataclass(frozen=True)
class FaultRecord:
    """A fault as it was carried out: when it began and when its component was back."""

    lane: str
    kind: str
    target: str
    label: str
    planned_at: float
    began: float
    restored: float
    error: str = ""  # why it could not be carried out (the check of the run still happens)


@dataclass
class Snapshot:
    """Everything the checks read, taken after the run settled."""

    payments: PaymentBooks
    ledger: Ledger
    processor: ProcessorBooks
    events: list[EventRecord]
    notify: NotifyBooks
    users: set[str]  # auth_svc's user ids
    requests: list[RequestRecord]
    faults: list[FaultRecord]
