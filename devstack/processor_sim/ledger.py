"""The simulator's in-memory books: authorizations, refunds, payouts, events.

Rules a real processor enforces: capture only an authorized (uncaptured,
unvoided) authorization, for at most the authorized amount; void only an
uncaptured one; refunds in total at most the captured amount. One lock
guards everything, so racing requests see a consistent state.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

JsonObject = dict[str, Any]


class ApiError(Exception):
    """An error answer: HTTP status and a Stripe-like {"error": {...}} body."""

    def __init__(self, status: int, type_: str, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body: JsonObject = {"error": {"type": type_, "code": code, "message": message, **extra}}


def invalid(code: str, message: str, param: str = "") -> ApiError:
    return ApiError(400, "invalid_request_error", code, message, **({"param": param} if param else {}))


def not_found(kind: str, object_id: str) -> ApiError:
    return ApiError(404, "invalid_request_error", "resource_missing", f"no such {kind}: {object_id!r}")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass
class Books:
    authorizations: dict[str, JsonObject] = field(default_factory=dict)
    refunds: dict[str, JsonObject] = field(default_factory=dict)
    payouts: dict[str, JsonObject] = field(default_factory=dict)
    events: dict[str, JsonObject] = field(default_factory=dict)


class Ledger:
    """All state of the simulated processor; every method is atomic."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._books = Books()

    # --- authorizations ----------------------------------------------------------
    def authorize(self, *, card_token: str, amount: int, currency: str, key: str, decline_code: str = "") -> JsonObject:
        auth: JsonObject = {
            "id": new_id("auth"),
            "object": "authorization",
            "status": "declined" if decline_code else "authorized",
            "amount": amount,
            "currency": currency,
            "amount_captured": 0,
            "amount_refunded": 0,
            "card_token": card_token,
            "decline_code": decline_code,
            "idempotency_key": key,
            "created": int(time.time()),
        }
        with self._lock:
            self._books.authorizations[auth["id"]] = auth
            return dict(auth)

    def capture(self, auth_id: str, amount: int | None, currency: str | None) -> JsonObject:
        with self._lock:
            auth = self._authorization(auth_id)
            _same_currency(auth, currency)
            if auth["status"] != "authorized":
                raise invalid("unexpected_state", f"authorization {auth_id} is {auth['status']}, not authorized")
            amount = auth["amount"] if amount is None else amount
            if amount > auth["amount"]:
                raise invalid("amount_too_large", f"capture {amount} exceeds the authorized {auth['amount']}", "amount")
            auth["status"] = "captured"
            auth["amount_captured"] = amount  # the rest of the authorization is released
            return dict(auth)

    def void(self, auth_id: str) -> JsonObject:
        with self._lock:
            auth = self._authorization(auth_id)
            if auth["status"] != "authorized":
                raise invalid("unexpected_state", f"authorization {auth_id} is {auth['status']}, not authorized")
            auth["status"] = "voided"
            return dict(auth)

    # --- refunds -------------------------------------------------------------------
    def refund(
        self, auth_id: str, amount: int | None, currency: str | None, key: str, *, pending: bool = False
    ) -> JsonObject:
        with self._lock:
            auth = self._authorization(auth_id)
            _same_currency(auth, currency)
            if auth["status"] != "captured":
                raise invalid("unexpected_state", f"authorization {auth_id} is {auth['status']}, not captured")
            left = auth["amount_captured"] - auth["amount_refunded"]
            amount = left if amount is None else amount
            if amount > left or amount <= 0:
                raise invalid("amount_too_large", f"refund {amount} exceeds the refundable {left}", "amount")
            auth["amount_refunded"] += amount
            refund: JsonObject = {
                "id": new_id("re"),
                "object": "refund",
                "status": "pending" if pending else "succeeded",
                "authorization": auth_id,
                "amount": amount,
                "currency": auth["currency"],
                "idempotency_key": key,
                "created": int(time.time()),
            }
            self._books.refunds[refund["id"]] = refund
            return dict(refund)

    def settle_refund(self, refund_id: str, failure_code: str) -> JsonObject:
        """pending → succeeded, or → failed with `failure_code` (the money goes back to the balance)."""
        with self._lock:
            refund = self._books.refunds[refund_id]
            if refund["status"] == "pending":
                refund["status"] = "failed" if failure_code else "succeeded"
                refund["failure_code"] = failure_code
                if failure_code:
                    self._books.authorizations[refund["authorization"]]["amount_refunded"] -= refund["amount"]
            return dict(refund)

    def card_token_of(self, auth_id: str) -> str:
        with self._lock:
            return str(self._authorization(auth_id)["card_token"])

    # --- payouts -------------------------------------------------------------------
    def payout(
        self, *, bank_account_token: str, amount: int, currency: str, key: str, decline_code: str = ""
    ) -> JsonObject:
        payout: JsonObject = {
            "id": new_id("po"),
            "object": "payout",
            "status": "failed" if decline_code else "pending",
            "amount": amount,
            "currency": currency,
            "bank_account_token": bank_account_token,
            "failure_code": decline_code,
            "idempotency_key": key,
            "created": int(time.time()),
        }
        with self._lock:
            self._books.payouts[payout["id"]] = payout
            return dict(payout)

    def settle_payout(self, payout_id: str, failure_code: str) -> JsonObject:
        """pending → paid, or → failed with `failure_code`. Returns the payout."""
        with self._lock:
            payout = self._books.payouts[payout_id]
            if payout["status"] == "pending":
                payout["status"] = "failed" if failure_code else "paid"
                payout["failure_code"] = failure_code
            return dict(payout)

    # --- events ----------------------------------------------------------------------
    def record_event(self, event_type: str, obj: JsonObject) -> JsonObject:
        event: JsonObject = {
            "id": new_id("evt"),
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "data": {"object": obj},
            "delivery": {"attempts": 0, "delivered": False, "last_status": None},
        }
        with self._lock:
            self._books.events[event["id"]] = event
            return {key: value for key, value in event.items() if key != "delivery"}

    def note_delivery(self, event_id: str, status: int | None) -> None:
        with self._lock:
            delivery = self._books.events[event_id]["delivery"]
            delivery["attempts"] += 1
            delivery["last_status"] = status
            delivery["delivered"] = status is not None and 200 <= status < 300

    # --- reads -----------------------------------------------------------------------
    def get(self, collection: str, object_id: str) -> JsonObject:
        with self._lock:
            found = getattr(self._books, collection).get(object_id)
            if found is None:
                raise not_found(collection.rstrip("s"), object_id)
            return _copy(found)

    def list(self, collection: str, idempotency_key: str | None) -> JsonObject:
        with self._lock:
            rows = [
                _copy(row)
                for row in getattr(self._books, collection).values()
                if idempotency_key is None or row.get("idempotency_key") == idempotency_key
            ]
        return {"object": "list", "data": rows}

    def _authorization(self, auth_id: str) -> JsonObject:
        auth = self._books.authorizations.get(auth_id)
        if auth is None:
            raise not_found("authorization", auth_id)
        return auth


def _same_currency(auth: JsonObject, currency: str | None) -> None:
    if currency is not None and currency != auth["currency"]:
        raise invalid("currency_mismatch", f"authorization is in {auth['currency']}, not {currency}", "currency")


def _copy(row: JsonObject) -> JsonObject:
    return {key: dict(value) if isinstance(value, dict) else value for key, value in row.items()}
