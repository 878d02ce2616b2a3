"""A well-behaved client of the edge: real JWTs, an Idempotency-Key on every request, bounded retries with it.

Retried with the same key (and body): no answer (connection refused, reset,
timeout), 502/503/504, 429, and 409 IDEMPOTENCY_KEY_IN_USE / PAYMENT_IN_PROGRESS
(the first request with the key, or another call on the payment, is still
running). A 401 re-logs the caller in once. Everything else is the answer.
Every attempt and the final answer go into the run's request log.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from devstack.chaos.model import Attempt, RequestRecord

RETRY_STATUSES = frozenset({429, 502, 503, 504})
RETRY_CONFLICTS = frozenset({"IDEMPOTENCY_KEY_IN_USE", "PAYMENT_IN_PROGRESS"})
# Envoy's route timeout is 30 s: a request never needs longer.
REQUEST_TIMEOUT_S = 35.0
PASSWORD_BYTES = 16
SECRET_BODIES = frozenset({"register", "login"})  # their bodies carry passwords: never recorded


@dataclass
class Actor:
    """A user of the workload: who they are, their token and their wallets."""

    label: str
    account_type: str  # CUSTOMER | MERCHANT
    email: str
    password: str
    user_id: str = ""
    token: str = ""
    wallets: dict[str, str] = field(default_factory=dict)  # currency -> wallet id

    @classmethod
    def new(cls, label: str, account_type: str, run_tag: str) -> Actor:
        email = f"chaos-{run_tag}-{label}@example.com"
        return cls(label, account_type, email, uuid.uuid4().hex + uuid.uuid4().hex[:PASSWORD_BYTES])


def backoff(attempt: int) -> float:
    """Seconds before retry number `attempt` (1-based): 0.3 s doubling, at most 4 s."""
    return float(min(0.3 * 2 ** (attempt - 1), 4.0))


def error_reason(body: Any) -> str:
    """The ErrorInfo reason of a google.rpc.Status JSON body ('' if there is none)."""
    if isinstance(body, dict):
        for detail in body.get("details") or ():
            if isinstance(detail, dict) and detail.get("reason"):
                return str(detail["reason"])
    return ""


def should_retry(status: int, reason: str) -> bool:
    return status == 0 or status in RETRY_STATUSES or (status == 409 and reason in RETRY_CONFLICTS)


RESOURCE_ID_FIELDS = {
    "payment": "payment_id",
    "refund": "refund_id",
    "payout": "payout_id",
    "wallet": "wallet_id",
    "user": "user_id",
    "endpoint": "endpoint_id",
}


class Edge:
    """The edge as the workload's clients see it; records every request in `log`."""

    def __init__(self, base_url: str, clock: Callable[[], float], max_attempts: int) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=REQUEST_TIMEOUT_S,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )
        self._clock = clock
        self._max_attempts = max_attempts
        self.log: list[RequestRecord] = []
        self._bodies: dict[int, dict[str, Any]] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def login(self, actor: Actor) -> RequestRecord:
        body = {"email": actor.email, "password": actor.password}
        record = await self.call("login", "POST", "/v1/auth/login", None, body, resource="")
        if record.ok:
            actor.token = str(self.body_of(record).get("access_token", ""))
        return record

    async def call(
        self,
        op: str,
        method: str,
        path: str,
        actor: Actor | None,
        body: dict[str, Any] | None,
        *,
        resource: str,
        key: str | None = None,
        payment_id: str = "",
        capture_method: str = "",
    ) -> RequestRecord:
        """Sends the request until it has an answer worth keeping (see the module docstring)."""
        record = RequestRecord(
            seq=len(self.log),
            op=op,
            actor=actor.user_id if actor else "",
            method=method,
            path=path,
            key=key or uuid.uuid4().hex,
            started=self._clock(),
            resource=resource,
            payment_id=payment_id,
            capture_method=capture_method,
            body=None if op in SECRET_BODIES else body,
        )
        self.log.append(record)
        relogged = False
        for attempt in range(1, self._max_attempts + 1):
            status, answer, replayed = await self._send(method, path, actor, body, record.key)
            reason = error_reason(answer) if status >= 300 or status == 0 else ""
            if status == 0:
                reason = str(answer)
            record.attempts.append(Attempt(status, reason, self._clock()))
            record.status, record.reason, record.replayed = status, reason, replayed
            if status == 401 and actor is not None and not relogged and op != "login":
                relogged = True
                await self.login(actor)
                continue
            if not should_retry(status, reason) or attempt == self._max_attempts:
                break
            await asyncio.sleep(backoff(attempt))
        if record.ok and isinstance(answer, dict):
            self._bodies[record.seq] = answer
            field_name = RESOURCE_ID_FIELDS.get(resource)
            record.resource_id = str(answer.get(field_name, "")) if field_name else ""
            record.state = str(answer.get("state", ""))
        return record

    def body_of(self, record: RequestRecord) -> dict[str, Any]:
        """The JSON body of a 2xx answer ({} otherwise)."""
        return self._bodies.get(record.seq, {})

    async def _send(
        self, method: str, path: str, actor: Actor | None, body: dict[str, Any] | None, key: str
    ) -> tuple[int, Any, bool]:
        headers = {"idempotency-key": key}
        if actor is not None and actor.token:
            headers["authorization"] = f"Bearer {actor.token}"
        try:
            response = await self._http.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            return 0, type(exc).__name__, False
        try:
            answer: Any = response.json()
        except ValueError:
            answer = response.text[:200]
        return response.status_code, answer, response.headers.get("idempotent-replayed") == "true"
