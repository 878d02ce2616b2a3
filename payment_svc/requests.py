"""Validation of request messages into plain values (pure: protobuf messages in, values or InvalidArgument out)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from payment_svc.lifecycle import CaptureMethod, PaymentState
from payment_svc.records import TransferIntent
from paymesh.payment.v1 import payment_pb2
from paymesh_runtime.errors import validation_failed
from paymesh_runtime.money import Money, positive_money

MAX_TEXT = 500
MAX_ID = 200


def short_text(value: str, field: str) -> str:
    if len(value) > MAX_TEXT:
        raise validation_failed(field, f"at most {MAX_TEXT} characters")
    return value


def required_id(value: str, field: str) -> str:
    if not value.strip():
        raise validation_failed(field, "is required")
    if len(value) > MAX_ID:
        raise validation_failed(field, f"at most {MAX_ID} characters")
    return value


def parse_id(value: str, field: str) -> uuid.UUID | None:
    """A resource id; None when it cannot name anything (the caller answers NOT_FOUND)."""
    required_id(value, field)
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def required_money(message: payment_pb2.CreatePaymentRequest | payment_pb2.CreatePayoutRequest) -> Money:
    if not message.HasField("amount"):
        raise validation_failed("amount", "is required")
    return positive_money(message.amount.currency, message.amount.amount)


@dataclass(frozen=True)
class PaymentDraft:
    source_wallet_id: str
    card_token: str
    destination_wallet_id: str
    amount: Money
    capture_method: CaptureMethod
    description: str

    def row(self, payment_id: uuid.UUID, payer_id: str, payee_id: str) -> dict[str, Any]:
        return {
            "payment_id": payment_id,
            "payer_id": payer_id,
            "payee_id": payee_id,
            "source_wallet_id": self.source_wallet_id or None,
            "card_token": self.card_token or None,
            "destination_wallet_id": self.destination_wallet_id,
            "currency": self.amount.currency,
            "amount": self.amount.amount,
            "capture_method": self.capture_method.value,
            "state": PaymentState.PENDING.value,
            "description": self.description,
        }

    def transfer(
        self,
        payment_id: uuid.UUID,
        payer_id: str,
        payee_id: str,
        key: str,
        fingerprint: bytes,
        trace_context: Mapping[str, str],
    ) -> TransferIntent:
        """An automatic wallet payment as the batched money path takes it."""
        return TransferIntent(
            payment_id=payment_id,
            payer_id=payer_id,
            payee_id=payee_id,
            source_wallet_id=self.source_wallet_id,
            destination_wallet_id=self.destination_wallet_id,
            amount=self.amount,
            description=self.description,
            idempotency_key=key,
            fingerprint=fingerprint,
            trace_context=trace_context,
        )


def payment_draft(request: payment_pb2.CreatePaymentRequest) -> PaymentDraft:
    kind = request.source.WhichOneof("kind")
    if kind is None:
        raise validation_failed("source", "a wallet_id or a card_token is required")
    source = required_id(getattr(request.source, kind), f"source.{kind}")
    destination = required_id(request.destination_wallet_id, "destination_wallet_id")
    if kind == "wallet_id" and source == destination:
        raise validation_failed("destination_wallet_id", "must differ from the source wallet")
    method = CaptureMethod.MANUAL if request.capture_method == payment_pb2.MANUAL else CaptureMethod.AUTOMATIC
    return PaymentDraft(
        source_wallet_id=source if kind == "wallet_id" else "",
        card_token=source if kind == "card_token" else "",
        destination_wallet_id=destination,
        amount=required_money(request),
        capture_method=method,
        description=short_text(request.description, "description"),
    )


def payout_draft(request: payment_pb2.CreatePayoutRequest) -> dict[str, Any]:
    amount = required_money(request)
    return {
        "wallet_id": required_id(request.wallet_id, "wallet_id"),
        "currency": amount.currency,
        "amount": amount.amount,
        "bank_account_token": required_id(request.bank_account_token, "bank_account_token"),
    }
