"""The adapter for paymesh's processor simulator (devstack/processor_sim): HTTP/JSON.

One attempt per call, bounded by a timeout, turned into a ProcessorResult or a
ProcessorError; retries and the circuit breaker wrap it (resilience.py). The
idempotency key goes into the ``Idempotency-Key`` header, so a retry of the
same call is answered from the simulator's idempotency store.

Errors: a connection that never got through (refused, connect timeout) is
ProcessorUnavailable; no answer in time, a dropped connection after the
request was sent, or "a request with this key is still running" is
ProcessorTimeout (the operation may have happened); 5xx and 429 are
ProcessorUnavailable; other 4xx are ProcessorRejected. A 402 is a decline: a
result, not an error.

Webhooks are signed with paymesh's scheme (paymesh_runtime.webhook_signatures:
``Paymesh-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from payment_svc.processor import (
    Outcome,
    ProcessorError,
    ProcessorRejected,
    ProcessorResult,
    ProcessorTimeout,
    ProcessorUnavailable,
    WebhookEvent,
    WebhookSignatureInvalid,
)
from payment_svc.processors.headers import header
from paymesh_runtime.money import Money
from paymesh_runtime.webhook_signatures import SIGNATURE_HEADER, verify_signature

# Object status -> outcome, per kind of object the simulator returns.
_OUTCOMES: dict[str, dict[str, Outcome]] = {
    "authorization": {
        "authorized": Outcome.SUCCEEDED,
        "captured": Outcome.SUCCEEDED,
        "voided": Outcome.SUCCEEDED,
        "declined": Outcome.DECLINED,
    },
    "refund": {"succeeded": Outcome.SUCCEEDED, "pending": Outcome.PENDING, "failed": Outcome.DECLINED},
    "payout": {"paid": Outcome.SUCCEEDED, "pending": Outcome.PENDING, "failed": Outcome.DECLINED},
}


class SimulatorProcessor:
    """A single-attempt client of the simulator's API; implements ProcessorClient."""

    name = "simulator"

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        timeout_seconds: float,
        webhook_secret: str,
        webhook_tolerance_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`http` has the simulator's base_url; the adapter owns it from now on (aclose)."""
        if not webhook_secret:
            raise ValueError("the simulator's webhook secret must not be empty")
        self._http = http
        self._timeout = timeout_seconds
        self._webhook_secret = webhook_secret
        self._tolerance = webhook_tolerance_seconds
        self._clock = clock

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- operations ------------------------------------------------------------
    async def authorize(self, *, idempotency_key: str, card_token: str, amount: Money) -> ProcessorResult:
        body = {"card_token": card_token, "amount": amount.amount, "currency": amount.currency}
        return await self._post("/v1/authorizations", idempotency_key, body)

    async def capture(self, *, idempotency_key: str, authorization_ref: str, amount: Money) -> ProcessorResult:
        body = {"amount": amount.amount, "currency": amount.currency}
        return await self._post(f"/v1/authorizations/{_segment(authorization_ref)}/capture", idempotency_key, body)

    async def void(self, *, idempotency_key: str, authorization_ref: str) -> ProcessorResult:
        return await self._post(f"/v1/authorizations/{_segment(authorization_ref)}/void", idempotency_key, {})

    async def refund(self, *, idempotency_key: str, authorization_ref: str, amount: Money) -> ProcessorResult:
        body = {"authorization": authorization_ref, "amount": amount.amount, "currency": amount.currency}
        return await self._post("/v1/refunds", idempotency_key, body)

    async def payout(self, *, idempotency_key: str, bank_account_token: str, amount: Money) -> ProcessorResult:
        body = {"bank_account_token": bank_account_token, "amount": amount.amount, "currency": amount.currency}
        return await self._post("/v1/payouts", idempotency_key, body)

    # --- webhooks --------------------------------------------------------------
    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        """Verifies Paymesh-Signature and decodes the event (see the module docstring)."""
        signature = header(headers, SIGNATURE_HEADER)
        if not verify_signature(signature, body, self._webhook_secret, self._clock(), self._tolerance):
            raise WebhookSignatureInvalid(f"{SIGNATURE_HEADER} missing, stale or not matching the body")
        try:
            event = json.loads(body)
            obj = event["data"]["object"]
            kind, status = str(obj["object"]), str(obj["status"])
            event_id, event_type, ref = str(event["id"]), str(event["type"]), str(obj["id"])
        except (ValueError, KeyError, TypeError) as exc:
            # Signed but not an event we understand: reject it like a bad signature (changes nothing).
            raise WebhookSignatureInvalid(f"undecodable webhook event: {exc}") from None
        outcome = _OUTCOMES.get(kind, {}).get(status)
        if outcome is None:
            raise WebhookSignatureInvalid(f"webhook for an unknown object state {kind}/{status}")
        data = {key: str(value) for key, value in obj.items() if isinstance(value, str | int)}
        return WebhookEvent(
            event_id=event_id,
            type=event_type,
            processor_ref=ref,
            outcome=outcome,
            object_kind=kind,
            decline_code=str(obj.get("failure_code") or obj.get("decline_code") or ""),
            data=data,
        )

    # --- one HTTP attempt ------------------------------------------------------
    async def _post(self, path: str, idempotency_key: str, body: dict[str, Any]) -> ProcessorResult:
        headers = {"Idempotency-Key": idempotency_key}
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._http.post(path, json=body, headers=headers, timeout=self._timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise ProcessorUnavailable(f"simulator unreachable: {exc!r}") from exc
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ProcessorTimeout(f"simulator did not answer {path} within {self._timeout}s") from exc
        except httpx.TransportError as exc:
            # The request may have arrived: only a retry with the same key can tell.
            raise ProcessorTimeout(f"connection to the simulator lost during {path}: {exc!r}") from exc
        return _result(response)


def _result(response: httpx.Response) -> ProcessorResult:
    payload = _json(response)
    if response.is_success:
        return _object_result(payload)
    error = payload.get("error")
    if not isinstance(error, dict):
        error = {}
    code = str(error.get("code", ""))
    message = str(error.get("message", response.reason_phrase))
    if response.status_code == 402:
        return ProcessorResult(
            outcome=Outcome.DECLINED,
            processor_ref=str(error.get("object_id", "")),
            decline_code=str(error.get("decline_code") or code),
            message=message,
        )
    raise _error(response.status_code, code, message)


def _error(status: int, code: str, message: str) -> ProcessorError:
    text = f"simulator answered {status} {code}: {message}"
    if status == 409 and code == "idempotency_key_in_use":
        return ProcessorTimeout(text)  # the first attempt with this key is still running
    if status == 429 or status >= 500:
        return ProcessorUnavailable(text)
    return ProcessorRejected(text)


def _object_result(obj: Mapping[str, Any]) -> ProcessorResult:
    kind, status = str(obj.get("object", "")), str(obj.get("status", ""))
    outcome = _OUTCOMES.get(kind, {}).get(status)
    if outcome is None:
        raise ProcessorRejected(f"simulator returned an unexpected object state {kind}/{status}")
    return ProcessorResult(
        outcome=outcome,
        processor_ref=str(obj["id"]),
        decline_code=str(obj.get("decline_code") or obj.get("failure_code") or ""),
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        if response.status_code >= 500:
            return {}
        raise ProcessorRejected(f"simulator answered {response.status_code} without a JSON object")
    return payload


def _segment(ref: str) -> str:
    # A processor ref is interpolated into a path: refuse anything that could change the route.
    if not ref or not ref.replace("_", "").isalnum():
        raise ProcessorRejected(f"invalid processor reference {ref!r}")
    return ref
