"""Rows → protobuf messages (the API's and the events' view of a payment, refund or payout).

A card payment's `source.card_token` is the payer's: the API shows it to the
payer and to admins only (`as_seen_by`); the payee sees a card source with an
empty token. Events never carry it (`without_card_token`): merchants receive
events as webhooks, and no consumer needs the token (the saga reads it from
the payment row).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from payment_svc.records import Transition
from payment_svc.store import AnyRow
from paymesh.common.v1 import money_pb2
from paymesh.payment.v1 import payment_pb2
from paymesh_runtime.identity import User
from paymesh_runtime.wire import timestamp


def money(currency: str, amount: int) -> money_pb2.Money:
    return money_pb2.Money(currency=currency, amount=amount)


class PaymentFields(Protocol):
    """What the message of a payment is made of: a stored row or a records.Payment."""

    @property
    def payment_id(self) -> uuid.UUID: ...
    @property
    def payer_id(self) -> str: ...
    @property
    def payee_id(self) -> str: ...
    @property
    def source_wallet_id(self) -> str | None: ...
    @property
    def card_token(self) -> str | None: ...
    @property
    def destination_wallet_id(self) -> str: ...
    @property
    def currency(self) -> str: ...
    @property
    def amount(self) -> int: ...
    @property
    def amount_captured(self) -> int: ...
    @property
    def amount_refunded(self) -> int: ...
    @property
    def capture_method(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def failure_code(self) -> str: ...
    @property
    def failure_message(self) -> str: ...
    @property
    def capture_before(self) -> datetime | None: ...
    @property
    def create_time(self) -> datetime: ...
    @property
    def update_time(self) -> datetime: ...


def payment(row: PaymentFields, transitions: Sequence[Transition]) -> payment_pb2.Payment:
    source = (
        payment_pb2.PaymentSource(wallet_id=row.source_wallet_id)
        if row.source_wallet_id is not None
        else payment_pb2.PaymentSource(card_token=row.card_token)
    )
    message = payment_pb2.Payment(
        payment_id=str(row.payment_id),
        payer_id=row.payer_id,
        payee_id=row.payee_id,
        source=source,
        destination_wallet_id=row.destination_wallet_id,
        amount=money(row.currency, row.amount),
        amount_captured=money(row.currency, row.amount_captured),
        amount_refunded=money(row.currency, row.amount_refunded),
        capture_method=row.capture_method,
        state=row.state,
        description=row.description,
        failure_code=row.failure_code,
        failure_message=row.failure_message,
        capture_before=timestamp(row.capture_before),
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )
    message.transitions.extend(
        payment_pb2.StateTransition(
            from_state=t.from_state, to_state=t.to_state, reason=t.reason, time=timestamp(t.time)
        )
        for t in transitions
    )
    return message


def without_card_token(message: payment_pb2.Payment) -> payment_pb2.Payment:
    """The payment with a card source's token blanked (still a card source: the oneof stays set)."""
    if message.source.WhichOneof("kind") != "card_token" or not message.source.card_token:
        return message
    hidden = payment_pb2.Payment()
    hidden.CopyFrom(message)
    hidden.source.card_token = ""
    return hidden


def as_seen_by(message: payment_pb2.Payment, user: User) -> payment_pb2.Payment:
    """The payment as `user` may see it: the card token for its payer and admins only."""
    return message if user.is_admin or user.user_id == message.payer_id else without_card_token(message)


def refund(row: AnyRow) -> payment_pb2.Refund:
    return payment_pb2.Refund(
        refund_id=str(row.refund_id),
        payment_id=str(row.payment_id),
        amount=money(row.currency, row.amount),
        reason=row.reason,
        state=row.state,
        failure_code=row.failure_code,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )


def payout(row: AnyRow) -> payment_pb2.Payout:
    return payment_pb2.Payout(
        payout_id=str(row.payout_id),
        wallet_id=row.wallet_id,
        owner_id=row.owner_id,
        amount=money(row.currency, row.amount),
        bank_account_token=row.bank_account_token,
        state=row.state,
        failure_code=row.failure_code,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )
