"""The adapter for Stripe, through the official library (async, over httpx).

- authorize: a PaymentIntent created with ``capture_method=manual`` and
  confirmed in the same call (``confirm=true``) with the card's PaymentMethod;
- capture: ``PaymentIntent.capture(amount_to_capture)``; void:
  ``PaymentIntent.cancel``; refund: ``Refund.create(payment_intent, amount)``;
  payout: ``Payout.create(destination=<bank account>)`` — usually pending,
  settled by a ``payout.paid`` / ``payout.failed`` webhook;
- webhooks: ``stripe.Webhook.construct_event`` checks ``Stripe-Signature``
  and its timestamp tolerance.
- find (what did an earlier call do?): the objects paymesh creates carry their
  idempotency key as ``metadata[paymesh_reference]``; an authorization is
  found with the PaymentIntent search API, a refund among its
  PaymentIntent's refunds, a payout among the newest payouts (Stripe offers no
  payout search: only the last FIND_PAYOUTS_SCAN are looked at, which covers
  the minutes a resolution takes); a capture or a void by the PaymentIntent's
  status.

One attempt per call (the library's own retries are off: max_network_retries=0),
bounded by a timeout; retries and the circuit breaker wrap it (resilience.py),
and every attempt sends our idempotency key as Stripe's ``Idempotency-Key``.
A card decline (402 CardError) is a DECLINED result, not an error.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import stripe

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

SIGNATURE_HEADER = "Stripe-Signature"
# The metadata key that carries paymesh's idempotency key (its saga step reference) on created objects.
REFERENCE_METADATA = "paymesh_reference"
FIND_PAYOUTS_SCAN = 100

# paymesh's card tokens (the simulator's vocabulary) → Stripe's test PaymentMethods.
# Real card tokens from Stripe.js are PaymentMethod ids (pm_...) and pass unchanged.
TEST_PAYMENT_METHODS = {
    "tok_visa": "pm_card_visa",
    "tok_mastercard": "pm_card_mastercard",
    "tok_amex": "pm_card_amex",
    "tok_chargeDeclined": "pm_card_chargeDeclined",
    "tok_insufficientFunds": "pm_card_chargeDeclinedInsufficientFunds",
    "tok_expiredCard": "pm_card_chargeDeclinedExpiredCard",
    "tok_processingError": "pm_card_chargeDeclinedProcessingError",
}

# Object status → outcome, per Stripe object type (webhooks and API answers).
_OUTCOMES: dict[str, dict[str, Outcome]] = {
    "payment_intent": {
        "requires_capture": Outcome.SUCCEEDED,
        "succeeded": Outcome.SUCCEEDED,
        "processing": Outcome.PENDING,
        "requires_payment_method": Outcome.DECLINED,
        "requires_action": Outcome.DECLINED,  # 3-D Secure: paymesh has no customer step to run it
        "requires_confirmation": Outcome.DECLINED,
        "canceled": Outcome.DECLINED,
    },
    "refund": {
        "succeeded": Outcome.SUCCEEDED,
        "pending": Outcome.PENDING,
        "requires_action": Outcome.PENDING,
        "failed": Outcome.DECLINED,
        "canceled": Outcome.DECLINED,
    },
    "payout": {
        "paid": Outcome.SUCCEEDED,
        "pending": Outcome.PENDING,
        "in_transit": Outcome.PENDING,
        "failed": Outcome.DECLINED,
        "canceled": Outcome.DECLINED,
    },
}


# What a PaymentIntent's status says about a capture or a cancel made on it; None: not (yet) done.
_DONE_ON_INTENT: dict[Operation, dict[str, Outcome]] = {
    Operation.CAPTURE: {"succeeded": Outcome.SUCCEEDED, "processing": Outcome.PENDING, "canceled": Outcome.DECLINED},
    Operation.VOID: {"canceled": Outcome.SUCCEEDED, "succeeded": Outcome.DECLINED},
}


def stripe_client(*, api_key: str, api_base: str, timeout_seconds: float) -> tuple[stripe.StripeClient, Any]:
    """A StripeClient on the library's async httpx transport, without its own retries."""
    http_client = stripe.HTTPXClient(timeout=timeout_seconds)
    client = stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base},
        http_client=http_client,
        max_network_retries=0,  # resilience.py retries, with our idempotency key
    )
    return client, http_client


class StripeProcessor:
    """A single-attempt Stripe client; implements ProcessorClient."""

    name = "stripe"

    def __init__(
        self,
        *,
        client: stripe.StripeClient,
        http_client: Any,
        timeout_seconds: float,
        webhook_secret: str,
        webhook_tolerance_seconds: int = 300,
    ) -> None:
        """`client` and its `http_client` (a stripe.HTTPXClient) come from `stripe_client`."""
        self._client = client
        self._http_client = http_client
        self._timeout = timeout_seconds
        self._webhook_secret = webhook_secret
        self._tolerance = webhook_tolerance_seconds

    async def aclose(self) -> None:
        await self._http_client.close_async()

    # --- operations ------------------------------------------------------------
    async def authorize(self, *, idempotency_key: str, card_token: str, amount: Money) -> ProcessorResult:
        params = {
            "amount": amount.amount,
            "currency": amount.currency.lower(),
            "capture_method": "manual",
            "confirm": True,
            "payment_method": TEST_PAYMENT_METHODS.get(card_token, card_token),
            "payment_method_types": ["card"],
            "metadata": {REFERENCE_METADATA: idempotency_key},
        }
        intents = self._client.v1.payment_intents
        return await self._call(
            lambda: intents.create_async(params, {"idempotency_key": idempotency_key}),  # type: ignore[arg-type]
            _object_result,
        )

    async def capture(self, *, idempotency_key: str, authorization_ref: str, amount: Money) -> ProcessorResult:
        intents = self._client.v1.payment_intents
        return await self._call(
            lambda: intents.capture_async(
                authorization_ref, {"amount_to_capture": amount.amount}, {"idempotency_key": idempotency_key}
            ),
            _expect("payment_intent", {"succeeded": Outcome.SUCCEEDED, "processing": Outcome.PENDING}),
        )

    async def void(self, *, idempotency_key: str, authorization_ref: str) -> ProcessorResult:
        intents = self._client.v1.payment_intents
        return await self._call(
            lambda: intents.cancel_async(authorization_ref, {}, {"idempotency_key": idempotency_key}),
            _expect("payment_intent", {"canceled": Outcome.SUCCEEDED}),
        )

    async def refund(self, *, idempotency_key: str, authorization_ref: str, amount: Money) -> ProcessorResult:
        refunds = self._client.v1.refunds
        params = {
            "payment_intent": authorization_ref,
            "amount": amount.amount,
            "metadata": {REFERENCE_METADATA: idempotency_key},
        }
        return await self._call(
            lambda: refunds.create_async(params, {"idempotency_key": idempotency_key}),  # type: ignore[arg-type]
            _object_result,
        )

    async def payout(self, *, idempotency_key: str, bank_account_token: str, amount: Money) -> ProcessorResult:
        payouts = self._client.v1.payouts
        params = {
            "amount": amount.amount,
            "currency": amount.currency.lower(),
            "destination": bank_account_token,
            "metadata": {REFERENCE_METADATA: idempotency_key},
        }
        return await self._call(
            lambda: payouts.create_async(params, {"idempotency_key": idempotency_key}),  # type: ignore[arg-type]
            _object_result,
        )

    async def find(
        self, operation: Operation, *, idempotency_key: str, authorization_ref: str = ""
    ) -> ProcessorResult | None:
        v1 = self._client.v1
        if operation in _DONE_ON_INTENT:
            intent = (await self._request(lambda: v1.payment_intents.retrieve_async(authorization_ref))).to_dict()
            outcome = _DONE_ON_INTENT[operation].get(str(intent.get("status", "")))
            return None if outcome is None else ProcessorResult(outcome=outcome, processor_ref=str(intent["id"]))
        page: Any
        if operation is Operation.AUTHORIZE:
            if not idempotency_key.replace("-", "").replace(":", "").replace("_", "").isalnum():
                raise ProcessorRejected(f"cannot search for the reference {idempotency_key!r}")
            query = f"metadata['{REFERENCE_METADATA}']:'{idempotency_key}'"
            page = await self._request(lambda: v1.payment_intents.search_async({"query": query, "limit": 10}))
        elif operation is Operation.REFUND:
            params = {"payment_intent": authorization_ref, "limit": 100}
            page = await self._request(lambda: v1.refunds.list_async(params))  # type: ignore[arg-type]
        else:
            page = await self._request(lambda: v1.payouts.list_async({"limit": FIND_PAYOUTS_SCAN}))
        for obj in (found.to_dict() for found in page.data):
            if (obj.get("metadata") or {}).get(REFERENCE_METADATA) == idempotency_key:
                return _object_result(obj)
        return None

    # --- webhooks --------------------------------------------------------------
    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        """Verifies Stripe-Signature (HMAC and timestamp tolerance) and decodes the event."""
        signature = header(headers, SIGNATURE_HEADER)
        if not self._webhook_secret:
            raise WebhookSignatureInvalid("no Stripe webhook secret configured")
        try:
            stripe.Webhook.construct_event(body, signature, self._webhook_secret, tolerance=self._tolerance)
            event = json.loads(body)
            obj = event["data"]["object"]
            event_id, event_type = str(event["id"]), str(event["type"])
            kind, ref, status = str(obj["object"]), str(obj["id"]), str(obj.get("status", ""))
        except stripe.SignatureVerificationError as exc:
            raise WebhookSignatureInvalid(f"Stripe-Signature does not verify: {exc.user_message}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise WebhookSignatureInvalid(f"undecodable Stripe event: {exc}") from None
        # Events about states paymesh does not act on are acknowledged as PENDING (nothing final).
        outcome = _OUTCOMES.get(kind, {}).get(status, Outcome.PENDING)
        data = {key: str(value) for key, value in obj.items() if isinstance(value, str | int)}
        return WebhookEvent(
            event_id=event_id,
            type=event_type,
            processor_ref=ref,
            outcome=outcome,
            object_kind=kind,
            decline_code=_failure_code(obj) if outcome is Outcome.DECLINED else "",
            data=data,
            reference=str((obj.get("metadata") or {}).get(REFERENCE_METADATA) or ""),
        )

    # --- one attempt ---------------------------------------------------------
    async def _call(
        self,
        request: Callable[[], Awaitable[Any]],
        interpret: Callable[[Mapping[str, Any]], ProcessorResult],
    ) -> ProcessorResult:
        try:
            obj = await self._request(request)
        except _Declined as declined:
            return declined_result(declined.error)
        # A StripeObject is not a Mapping (no .get): interpret its plain-dict form.
        return interpret(obj.to_dict())

    async def _request(self, request: Callable[[], Awaitable[Any]]) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await request()
        except TimeoutError as exc:
            raise ProcessorTimeout(f"Stripe did not answer within {self._timeout}s") from exc
        except stripe.CardError as exc:
            raise _Declined(exc) from exc
        except stripe.StripeError as exc:
            raise processor_error(exc) from exc


class _Declined(Exception):
    """A card decline inside `_request`: a result for the operations, not a ProcessorError."""

    def __init__(self, error: stripe.CardError) -> None:
        super().__init__(str(error))
        self.error = error


def processor_error(exc: stripe.StripeError) -> ProcessorError:
    """The ProcessorError a failed Stripe call (other than a card decline) stands for."""
    text = f"Stripe: {type(exc).__name__} {exc.http_status or ''} {exc.code or ''}: {exc.user_message or exc}"
    if isinstance(exc, stripe.APIConnectionError):
        cause = exc.__cause__
        if isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return ProcessorUnavailable(text)  # the request never left
        return ProcessorTimeout(text)  # it may have arrived: retry with the same key
    if exc.http_status == 409 and exc.code in ("idempotency_key_in_use", "lock_timeout"):
        return ProcessorBusy(text)  # the first attempt with this key is still running
    if isinstance(exc, stripe.RateLimitError):
        return ProcessorUnavailable(text)  # refused before doing anything
    if (exc.http_status or 0) >= 500 or (isinstance(exc, stripe.APIError) and exc.http_status is None):
        # Stripe: the result of a request that failed with a 500 is indeterminate.
        return ProcessorUnavailable(text, may_have_acted=True)
    # Invalid request, authentication, permission, idempotency-key reuse: our bug or config.
    return ProcessorRejected(text)


def declined_result(exc: stripe.CardError) -> ProcessorResult:
    """A card decline: the decline code and the PaymentIntent Stripe recorded it on."""
    body: Any = exc.json_body or {}
    error: Any = body.get("error") or {}
    intent: Any = error.get("payment_intent") or {}
    return ProcessorResult(
        outcome=Outcome.DECLINED,
        processor_ref=str(intent.get("id", "")) if isinstance(intent, dict) else "",
        decline_code=str(error.get("decline_code") or exc.code or "card_declined"),
        message=str(error.get("message") or exc.user_message or ""),
    )


def _object_result(obj: Mapping[str, Any]) -> ProcessorResult:
    kind, status = str(obj.get("object", "")), str(obj.get("status", ""))
    outcome = _OUTCOMES.get(kind, {}).get(status)
    if outcome is None:
        raise ProcessorRejected(f"Stripe returned a {kind} in an unexpected status {status!r}")
    return ProcessorResult(
        outcome=outcome,
        processor_ref=str(obj["id"]),
        decline_code=_failure_code(obj) if outcome is Outcome.DECLINED else "",
    )


def _expect(kind: str, outcomes: Mapping[str, Outcome]) -> Callable[[Mapping[str, Any]], ProcessorResult]:
    """An interpreter for calls whose answer must be in one of a few states (capture, cancel)."""

    def interpret(obj: Mapping[str, Any]) -> ProcessorResult:
        status = str(obj.get("status", ""))
        if obj.get("object") != kind or status not in outcomes:
            found = f"{obj.get('object')} in status {status!r}"
            raise ProcessorRejected(f"Stripe answered a {found}, expected a {kind} in {sorted(outcomes)}")
        return ProcessorResult(outcome=outcomes[status], processor_ref=str(obj["id"]))

    return interpret


def _failure_code(obj: Mapping[str, Any]) -> str:
    last_error = obj.get("last_payment_error") or {}
    for code in (
        last_error.get("decline_code") if isinstance(last_error, Mapping) else None,
        last_error.get("code") if isinstance(last_error, Mapping) else None,
        obj.get("failure_code"),
        obj.get("failure_reason"),
        obj.get("cancellation_reason"),
    ):
        if code:
            return str(code)
    return str(obj.get("status", ""))
