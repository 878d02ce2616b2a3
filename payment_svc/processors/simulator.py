"""The adapter for paymesh's processor simulator (devstack/processor_sim): HTTP/JSON.

One attempt per call, bounded by a timeout, turned into a ProcessorResult or a
ProcessorError; retries and the circuit breaker wrap it (resilience.py). The
idempotency key goes into the ``Idempotency-Key`` header, so a retry of the
same call is answered from the simulator's idempotency store.

Errors: a connection that never got through (refused, connect timeout) and
429 are ProcessorUnavailable (nothing happened); no answer in time or a
dropped connection after the request was sent is ProcessorTimeout, "a request
with this key is still running" ProcessorBusy (the operation may have
happened); a 5xx is ProcessorUnavailable that may have acted; other 4xx are
ProcessorRejected. A 402 is a decline: a result, not an error.

`find` asks what an earlier call did without repeating it: the authorization,
refund or payout created with an idempotency key (``GET /v1/<objects>?idempotency_key=``),
or, for a capture or a void, the authorization's status.

Webhooks are signed with paymesh's scheme (paymesh_runtime.webhook_signatures:
``Paymesh-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from payment_svc.processor import (
    Operation,
    Outcome,
    ProcessorBusy,
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
# What an authorization's status says about a capture or a void made on it; None: not (yet) done.
_DONE_ON_AUTHORIZATION: dict[Operation, dict[str, Outcome]] = {
    Operation.CAPTURE: {"captured": Outcome.SUCCEEDED, "voided": Outcome.DECLINED, "declined": Outcome.DECLINED},
    Operation.VOID: {"voided": Outcome.SUCCEEDED, "captured": Outcome.DECLINED, "declined": Outcome.DECLINED},
}
# The collection that holds the objects an operation creates, looked up by idempotency key.
_CREATED_IN = {Operation.AUTHORIZE: "authorizations", Operation.REFUND: "refunds", Operation.PAYOUT: "payouts"}


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

    async def find(
        self, operation: Operation, *, idempotency_key: str, authorization_ref: str = ""
    ) -> ProcessorResult | None:
        if operation in _DONE_ON_AUTHORIZATION:
            authorization = await self._get(f"/v1/authorizations/{_segment(authorization_ref)}", {})
            outcome = _DONE_ON_AUTHORIZATION[operation].get(str(authorization.get("status", "")))
            if outcome is None:
                return None
            return ProcessorResult(outcome=outcome, processor_ref=str(authorization["id"]))
        found = await self._get(f"/v1/{_CREATED_IN[operation]}", {"idempotency_key": idempotency_key})
        objects = found.get("data")
        if not isinstance(objects, list) or not objects:
            return None
        return _object_result(objects[0])

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
            reference=str(obj.get("idempotency_key") or ""),
        )

    # --- one HTTP attempt ------------------------------------------------------
    async def _post(self, path: str, idempotency_key: str, body: dict[str, Any]) -> ProcessorResult:
        headers = {"Idempotency-Key": idempotency_key}
        return _result(
            await self._send(lambda: self._http.post(path, json=body, headers=headers, timeout=self._timeout), path)
        )

    async def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        response = await self._send(lambda: self._http.get(path, params=params, timeout=self._timeout), path)
        payload = _json(response)
        if not response.is_success:
            error = payload.get("error")
            error = error if isinstance(error, dict) else {}
            raise _error(response.status_code, str(error.get("code", "")), str(error.get("message", "")))
        return payload

    async def _send(self, request: Callable[[], Awaitable[httpx.Response]], path: str) -> httpx.Response:
        try:
            async with asyncio.timeout(self._timeout):
                return await request()
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise ProcessorUnavailable(f"simulator unreachable: {exc!r}") from exc
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ProcessorTimeout(f"simulator did not answer {path} within {self._timeout}s") from exc
        except httpx.TransportError as exc:
            # The request may have arrived: only a retry with the same key can tell.
            raise ProcessorTimeout(f"connection to the simulator lost during {path}: {exc!r}") from exc


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
        return ProcessorBusy(text)  # the first attempt with this key is still running
    if status == 429:
        return ProcessorUnavailable(text)  # refused before doing anything
    if status >= 500:
        return ProcessorUnavailable(text, may_have_acted=True)  # it may have acted before failing
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
