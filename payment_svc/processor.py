"""The card processor as payment_svc sees it: one interface, several adapters.

Pure domain types (no HTTP, gRPC or SQL). Adapters live in
`payment_svc.processors` (the simulator's HTTP API, Stripe); the saga talks
only to `Processor`. Every call carries the processor's own idempotency key,
derived from the payment and the step, so a retry after a timeout or a crash
never charges twice.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from paymesh_runtime.money import Money


class Outcome(enum.StrEnum):
    SUCCEEDED = "SUCCEEDED"
    # Accepted; the final result arrives later by a signed webhook.
    PENDING = "PENDING"
    # A definitive business refusal (card declined, insufficient funds); retrying will not help.
    DECLINED = "DECLINED"


@dataclass(frozen=True)
class ProcessorResult:
    """What the processor answered for one operation."""

    outcome: Outcome
    # The processor's id of the object it created or changed (authorization, refund, payout).
    processor_ref: str
    decline_code: str = ""
    message: str = ""


class ProcessorError(Exception):
    """The call did not produce a definitive answer."""

    retryable: bool = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProcessorTimeout(ProcessorError):
    """No answer in time: the operation may or may not have happened. Retry with the same key."""


class ProcessorUnavailable(ProcessorError):
    """The processor is down, or its circuit breaker is open; fail fast."""


class ProcessorRejected(ProcessorError):
    """The processor refused the request itself (a bug on our side, e.g. a bad token format)."""

    retryable = False


@dataclass(frozen=True)
class WebhookEvent:
    """An asynchronous result, after its signature was verified."""

    event_id: str
    # e.g. "payout.paid", "payout.failed", "refund.succeeded", "charge.refunded".
    type: str
    processor_ref: str
    outcome: Outcome
    # The kind of object the event is about: "payout", "refund", ...
    object_kind: str
    decline_code: str = ""
    data: Mapping[str, str] = field(default_factory=dict)


class WebhookSignatureInvalid(Exception):
    """A webhook whose signature or timestamp does not verify; it must change nothing."""


class Processor(Protocol):
    """A card/bank processor. Every method is idempotent on `idempotency_key`."""

    name: str

    async def authorize(self, *, idempotency_key: str, card_token: str, amount: Money) -> ProcessorResult:
        """Reserves `amount` on a card (manual capture). DECLINED carries the decline code."""
        ...

    async def capture(self, *, idempotency_key: str, authorization_ref: str, amount: Money) -> ProcessorResult:
        """Captures up to the authorized amount; the rest of the authorization lapses."""
        ...

    async def void(self, *, idempotency_key: str, authorization_ref: str) -> ProcessorResult:
        """Cancels an uncaptured authorization."""
        ...

    async def refund(self, *, idempotency_key: str, authorization_ref: str, amount: Money) -> ProcessorResult:
        """Returns captured money to the card."""
        ...

    async def payout(self, *, idempotency_key: str, bank_account_token: str, amount: Money) -> ProcessorResult:
        """Sends money to a bank account; usually PENDING, settled by a webhook."""
        ...

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        """Verifies the signature (and timestamp tolerance) and decodes the event.

        Raises WebhookSignatureInvalid if it does not verify.
        """
        ...


class ProcessorClient(Processor, Protocol):
    """A Processor that holds connections (an adapter): closed once at shutdown."""

    async def aclose(self) -> None:
        """Closes the adapter's HTTP connections."""
        ...
