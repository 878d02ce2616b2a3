"""Typed records of payment_svc's resources (pure: no SQL, gRPC or Kafka).

`Payment` is a payment as stored, field for field; the batched wallet path
(payment_svc.transfers) builds it in memory instead of reading rows back, and
views.payment turns either it or a stored row into the API's message.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from payment_svc.lifecycle import CaptureMethod, PaymentState
from paymesh_runtime.money import Money


@dataclass(frozen=True)
class Transition:
    """A state change as `transitions` holds it (the trigger of migration 0005 writes the row)."""

    from_state: str
    to_state: str
    reason: str
    time: datetime


@dataclass(frozen=True)
class Payment:
    payment_id: uuid.UUID
    payer_id: str
    payee_id: str
    source_wallet_id: str | None
    card_token: str | None
    destination_wallet_id: str
    currency: str
    amount: int
    capture_method: str
    state: str
    create_time: datetime
    update_time: datetime
    amount_captured: int = 0
    amount_refunded: int = 0
    description: str = ""
    failure_code: str = ""
    failure_message: str = ""
    capture_before: datetime | None = None


@dataclass(frozen=True)
class TransferIntent:
    """A validated automatic wallet-to-wallet payment, before it exists: what one CreatePayment asks for."""

    payment_id: uuid.UUID
    payer_id: str
    payee_id: str
    source_wallet_id: str
    destination_wallet_id: str
    amount: Money
    description: str
    idempotency_key: str
    # SHA-256 of the method and the request's deterministic bytes (payment_svc.idempotency.fingerprint).
    fingerprint: bytes
    # The W3C trace context of the request, carried by the events it causes.
    trace_context: Mapping[str, str] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        """The transfer's idempotency reference at the wallet: the saga step `<payment id>:transfer`."""
        return f"{self.payment_id}:transfer"

    def created(self, now: datetime) -> Payment:
        return Payment(
            payment_id=self.payment_id,
            payer_id=self.payer_id,
            payee_id=self.payee_id,
            source_wallet_id=self.source_wallet_id,
            card_token=None,
            destination_wallet_id=self.destination_wallet_id,
            currency=self.amount.currency,
            amount=self.amount.amount,
            capture_method=CaptureMethod.AUTOMATIC.value,
            state=PaymentState.PENDING.value,
            create_time=now,
            update_time=now,
            description=self.description,
        )


def moved(payment: Payment, to: PaymentState, now: datetime, **changes: object) -> Payment:
    """The payment after a state change at `now`."""
    return replace(payment, state=to.value, update_time=now, **changes)  # type: ignore[arg-type]
