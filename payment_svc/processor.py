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
    """The call did not produce a definitive answer.

    `may_have_acted`: the request may have reached the processor and taken
    effect there (no answer in time, a connection lost after sending, a 5xx
    answer). Such an outcome is unknown: it is resolved by asking the
    processor again with the same key, never assumed to have failed.
    `counts_against_breaker`: the error says the processor is unhealthy (the
    circuit breaker counts it); a busy key or a refused request does not.
    """

    retryable: bool = True
    may_have_acted: bool = True
    counts_against_breaker: bool = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProcessorTimeout(ProcessorError):
    """No answer in time, or the connection was lost after sending: the operation may or may not
    have happened. Ask again with the same key."""


class ProcessorBusy(ProcessorTimeout):
    """The processor is still working on an earlier request with this key (HTTP 409): the outcome
    is not known yet, but the processor itself is healthy."""

    counts_against_breaker = False


class ProcessorUnavailable(ProcessorError):
    """The processor is down, overloaded, or its circuit breaker is open; fail fast.

    Without `may_have_acted` (refused connection, breaker open, 429) nothing
    reached the processor. A 5xx answer is unavailable *and* may have acted:
    the processor may have done the work before failing to answer.
    """

    may_have_acted = False

    def __init__(self, message: str, *, may_have_acted: bool = False) -> None:
        super().__init__(message)
        self.may_have_acted = may_have_acted


class ProcessorRejected(ProcessorError):
    """The processor refused the request itself (a bug on our side, e.g. a bad token format)."""

    retryable = False
    may_have_acted = False
    counts_against_breaker = False


class Operation(enum.StrEnum):
    """The processor operations, as `Processor.find` looks one up."""

    AUTHORIZE = "authorize"
    CAPTURE = "capture"
    VOID = "void"
    REFUND = "refund"
    PAYOUT = "payout"


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
    # The idempotency key the object was created with (paymesh's step reference), when the processor
    # reports it: finds the payout or refund even before its processor_ref was stored.
    reference: str = ""


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

    async def find(
        self, operation: Operation, *, idempotency_key: str, authorization_ref: str = ""
    ) -> ProcessorResult | None:
        """Asks, without repeating it, what the call of `operation` made with `idempotency_key` did.

        The result describes the object as it is now (a payout found paid is
        SUCCEEDED); None means the processor shows no effect of that call, yet.
        Capture and void are looked up on their authorization
        (`authorization_ref`); the others by the key they were created with.
        """
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
