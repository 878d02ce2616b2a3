"""The simulator's API without the HTTP plumbing: routing, validation, idempotency, faults.

``Simulator.handle`` takes a parsed request and returns an ``Answer``; the
HTTP server (server.py) only reads requests and writes answers.
"""

from __future__ import annotations

import logging
import random
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from devstack.processor_sim.idempotency import IdempotencyStore, fingerprint
from devstack.processor_sim.ledger import ApiError, JsonObject, Ledger, invalid
from devstack.processor_sim.tokens import APPROVE, BANK_TOKENS, CARD_TOKENS, Behaviour, Effect
from devstack.processor_sim.webhooks import WebhookSender

log = logging.getLogger("processor_sim")

MAX_AMOUNT = 10**15
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_ID = r"([A-Za-z0-9_]+)"
COLLECTIONS = ("authorizations", "refunds", "payouts", "events")


@dataclass
class Faults:
    """Knobs for misbehaviour; set by flags/env at start and by POST /_sim/config at run time."""

    latency_ms: int = 0  # added to every API request
    latency_jitter_ms: int = 0  # plus uniform(0, this)
    failure_rate: float = 0.0  # share of POSTs answered 503 before anything happens
    lost_response_rate: float = 0.0  # share of POSTs that take effect, then drop the connection
    fail_next: int = 0  # the next N POSTs fail like failure_rate
    lose_next: int = 0  # the next N POSTs lose their response like lost_response_rate
    webhook_drop_rate: float = 0.0  # share of settlement webhooks never delivered (the outcome only by polling)
    drop_next_webhooks: int = 0  # the next N settlement webhooks are never delivered
    hang_seconds: float = 30.0  # how long *_timeout tokens hang
    payout_settle_seconds: float = 1.0  # pending payout → paid/failed (and its webhook)
    refund_settle_seconds: float = 1.0  # pending refund (tok_refundPending, tok_refundFail) → succeeded/failed

    def update(self, changes: JsonObject) -> None:
        known = {f.name: f.type for f in fields(self)}
        for name, value in changes.items():
            if name not in known or isinstance(value, bool) or not isinstance(value, int | float):
                raise invalid("parameter_invalid", f"unknown or non-numeric fault setting {name!r}", name)
            if value < 0:
                raise invalid("parameter_invalid", f"{name} must not be negative", name)
            setattr(self, name, int(value) if known[name] == "int" else float(value))


@dataclass
class Answer:
    status: int
    body: JsonObject
    headers: dict[str, str] = field(default_factory=dict)
    # Take effect but never answer: the client sees the connection drop.
    drop_connection: bool = False


class _Hang(Exception):
    """The token says: do not answer before the client gave up."""


Operation = Callable[[re.Match[str], JsonObject, str], tuple[int, JsonObject]]


class Simulator:
    def __init__(
        self,
        faults: Faults,
        sender_factory: Callable[[Ledger, threading.Event], WebhookSender],
        rng: random.Random,
    ) -> None:
        self.faults = faults
        self.ledger = Ledger()
        self.idempotency = IdempotencyStore()
        self.stopping = threading.Event()  # set on shutdown: hangs and retry pauses end
        self.sender = sender_factory(self.ledger, self.stopping)
        self._rng = rng
        self._lock = threading.Lock()  # faults counters and the rng
        self._posts: list[tuple[re.Pattern[str], Operation]] = [
            (re.compile(r"^/v1/authorizations$"), self._authorize),
            (re.compile(rf"^/v1/authorizations/{_ID}/capture$"), self._capture),
            (re.compile(rf"^/v1/authorizations/{_ID}/void$"), self._void),
            (re.compile(r"^/v1/refunds$"), self._refund),
            (re.compile(r"^/v1/payouts$"), self._payout),
        ]

    # --- entry point -----------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, str], body: Any, key: str) -> Answer:
        try:
            if path == "/healthz" and method == "GET":
                return Answer(200, {"status": "ok"})
            if path == "/_sim/config":
                return self._config(method, body)
            self._pause(self._latency())
            if method == "GET":
                return Answer(200, self._read(path, query))
            if method == "POST":
                return self._post(path, body, key)
            raise ApiError(405, "invalid_request_error", "method_not_allowed", f"{method} is not supported")
        except ApiError as error:
            return Answer(error.status, error.body)

    # --- POST: faults, idempotency, the operation ----------------------------------
    def _post(self, path: str, body: Any, key: str) -> Answer:
        operation, match = self._route(path)
        if not isinstance(body, dict):
            raise invalid("parameter_invalid", "the body must be a JSON object")
        if self._draw("fail_next", self.faults.failure_rate):
            raise ApiError(503, "api_error", "service_unavailable", "the processor is temporarily unavailable")
        if key:
            stored = self.idempotency.begin(key, fingerprint("POST", path, body))
            if stored is not None:
                return Answer(stored.status, stored.body, {"Idempotent-Replayed": "true"})
        try:
            status, result = self._run(operation, match, body, key)
        except BaseException:
            if key:
                self.idempotency.abandon(key)
            raise
        if key:
            self.idempotency.finish(key, status, result)
        lost = status < 500 and self._draw("lose_next", self.faults.lost_response_rate)
        return Answer(status, result, {"Idempotency-Key": key} if key else {}, drop_connection=lost)

    def _run(self, operation: Operation, match: re.Match[str], body: JsonObject, key: str) -> tuple[int, JsonObject]:
        try:
            return operation(match, body, key)
        except ApiError as error:
            return error.status, error.body
        except _Hang:
            self._pause(self.faults.hang_seconds)
            return 504, ApiError(504, "api_error", "timeout", "the processor did not answer in time").body

    def _route(self, path: str) -> tuple[Operation, re.Match[str]]:
        for pattern, operation in self._posts:
            match = pattern.match(path)
            if match:
                return operation, match
        raise ApiError(404, "invalid_request_error", "unknown_route", f"no route POST {path}")

    # --- operations (return status and body; raise ApiError for refusals) ----------
    def _authorize(self, _: re.Match[str], body: JsonObject, key: str) -> tuple[int, JsonObject]:
        token = _string(body, "card_token")
        behaviour = _behaviour(CARD_TOKENS, token, "card_token")
        amount, currency = _required_amount(body), _required_currency(body)
        auth = self.ledger.authorize(
            card_token=token, amount=amount, currency=currency, key=key, decline_code=behaviour.decline_code
        )
        if behaviour.effect is Effect.DECLINE:
            return _declined(auth, behaviour)
        return 200, auth

    def _capture(self, match: re.Match[str], body: JsonObject, _: str) -> tuple[int, JsonObject]:
        return 200, self.ledger.capture(match.group(1), _amount(body), _currency(body))

    def _void(self, match: re.Match[str], _body: JsonObject, _key: str) -> tuple[int, JsonObject]:
        return 200, self.ledger.void(match.group(1))

    def _refund(self, _: re.Match[str], body: JsonObject, key: str) -> tuple[int, JsonObject]:
        auth_id = _string(body, "authorization")
        behaviour = CARD_TOKENS.get(self.ledger.card_token_of(auth_id), APPROVE)
        refund = self.ledger.refund(auth_id, _amount(body), _currency(body), key, pending=behaviour.refunds_pending)
        if behaviour.refunds_pending:
            self._later(self.faults.refund_settle_seconds, self._settle_refund, refund["id"], behaviour)
        return 200, refund

    def _payout(self, _: re.Match[str], body: JsonObject, key: str) -> tuple[int, JsonObject]:
        token = _string(body, "bank_account_token")
        behaviour = _behaviour(BANK_TOKENS, token, "bank_account_token")
        amount, currency = _required_amount(body), _required_currency(body)
        payout = self.ledger.payout(
            bank_account_token=token, amount=amount, currency=currency, key=key, decline_code=behaviour.decline_code
        )
        if behaviour.effect is Effect.DECLINE:
            return _declined(payout, behaviour)
        self._later(self.faults.payout_settle_seconds, self._settle_payout, payout["id"], behaviour)
        return 200, payout

    @staticmethod
    def _later(seconds: float, settle: Callable[[str, Behaviour], None], object_id: str, behaviour: Behaviour) -> None:
        timer = threading.Timer(seconds, settle, (object_id, behaviour))
        timer.daemon = True
        timer.start()

    def _settle_payout(self, payout_id: str, behaviour: Behaviour) -> None:
        self._announce(self.ledger.settle_payout(payout_id, behaviour.settle_failure))

    def _settle_refund(self, refund_id: str, behaviour: Behaviour) -> None:
        self._announce(self.ledger.settle_refund(refund_id, behaviour.settle_failure))

    def _announce(self, settled: JsonObject) -> None:
        """A signed webhook reports the settled payout or refund (`payout.paid`, `refund.failed`...)."""
        event = self.ledger.record_event(f"{settled['object']}.{settled['status']}", settled)
        log.info("%s %s settled: %s (event %s)", settled["object"], settled["id"], settled["status"], event["id"])
        if self._draw("drop_next_webhooks", self.faults.webhook_drop_rate):
            log.info("fault: event %s is never delivered", event["id"])
            return
        self.sender.send(event)

    # --- reads and config ---------------------------------------------------------
    def _read(self, path: str, query: dict[str, str]) -> JsonObject:
        parts = path.strip("/").split("/")
        if len(parts) in (2, 3) and parts[0] == "v1" and parts[1] in COLLECTIONS:
            if len(parts) == 3:
                return self.ledger.get(parts[1], parts[2])
            return self.ledger.list(parts[1], query.get("idempotency_key"))
        raise ApiError(404, "invalid_request_error", "unknown_route", f"no route GET {path}")

    def _config(self, method: str, body: Any) -> Answer:
        if method == "POST":
            if not isinstance(body, dict):
                raise invalid("parameter_invalid", "the body must be a JSON object")
            with self._lock:
                self.faults.update(body)
        return Answer(200, asdict(self.faults))

    # --- faults --------------------------------------------------------------------
    def _latency(self) -> float:
        with self._lock:
            jitter = self._rng.uniform(0, self.faults.latency_jitter_ms) if self.faults.latency_jitter_ms else 0.0
            return (self.faults.latency_ms + jitter) / 1000

    def _draw(self, counter: str, rate: float) -> bool:
        """True if the next-N counter is positive (and counts it down) or the dice say so."""
        with self._lock:
            left = int(getattr(self.faults, counter))
            if left > 0:
                setattr(self.faults, counter, left - 1)
                return True
            return rate > 0 and self._rng.random() < rate

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self.stopping.wait(seconds)


# --- validation ------------------------------------------------------------------------
def _string(body: JsonObject, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise invalid("parameter_missing", f"{name} is required", name)
    return value


def _behaviour(table: dict[str, Behaviour], token: str, param: str) -> Behaviour:
    behaviour = table.get(token)
    if behaviour is None:
        raise invalid("token_invalid", f"unknown {param} {token!r}", param)
    if behaviour.effect is Effect.PROCESSING_ERROR:
        raise ApiError(500, "api_error", "processing_error", "an error occurred while processing the request")
    if behaviour.effect is Effect.HANG:
        raise _Hang
    return behaviour


def _amount(body: JsonObject) -> int | None:
    return None if body.get("amount") is None else _required_amount(body)


def _required_amount(body: JsonObject) -> int:
    value = body.get("amount")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_AMOUNT:
        raise invalid("parameter_invalid", f"amount must be an integer of minor units in 1..{MAX_AMOUNT}", "amount")
    return value


def _currency(body: JsonObject) -> str | None:
    return None if body.get("currency") is None else _required_currency(body)


def _required_currency(body: JsonObject) -> str:
    value = body.get("currency")
    if not isinstance(value, str) or not _CURRENCY.match(value):
        raise invalid("parameter_invalid", "currency must be an ISO 4217 code like USD", "currency")
    return value


def _declined(obj: JsonObject, behaviour: Behaviour) -> tuple[int, JsonObject]:
    error = ApiError(
        402,
        "card_error",
        "card_declined",
        f"the {obj['object']} was declined",
        decline_code=behaviour.decline_code,
        object_id=obj["id"],
    )
    return error.status, error.body
