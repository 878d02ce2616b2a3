"""The lifecycles of payments, refunds and payouts: one explicit transition table each.

Pure: no gRPC, SQL or Kafka. Every state change in payment_svc goes through
`check_*_transition` before it is written (and the UPDATE that writes it is
conditional on the old state, so a race cannot slip past the check). An
illegal transition raises FAILED_PRECONDITION with reason
INVALID_STATE_TRANSITION and changes nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from paymesh_runtime.errors import FailedPrecondition, InvalidArgument
from paymesh_runtime.money import Money


class PaymentState(enum.StrEnum):
    PENDING = "PENDING"
    REQUIRES_CAPTURE = "REQUIRES_CAPTURE"
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class RefundState(enum.StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class PayoutState(enum.StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class CaptureMethod(enum.StrEnum):
    AUTOMATIC = "AUTOMATIC"
    MANUAL = "MANUAL"


# The transition tables. A state missing as a key is final.
PAYMENT_TRANSITIONS: Mapping[PaymentState, frozenset[PaymentState]] = {
    PaymentState.PENDING: frozenset(
        {PaymentState.REQUIRES_CAPTURE, PaymentState.PROCESSING, PaymentState.FAILED, PaymentState.CANCELED}
    ),
    PaymentState.REQUIRES_CAPTURE: frozenset({PaymentState.PROCESSING, PaymentState.CANCELED}),
    PaymentState.PROCESSING: frozenset({PaymentState.SUCCEEDED, PaymentState.FAILED}),
}
REFUND_TRANSITIONS: Mapping[RefundState, frozenset[RefundState]] = {
    RefundState.PENDING: frozenset({RefundState.SUCCEEDED, RefundState.FAILED}),
}
PAYOUT_TRANSITIONS: Mapping[PayoutState, frozenset[PayoutState]] = {
    PayoutState.PENDING: frozenset({PayoutState.PROCESSING, PayoutState.SUCCEEDED, PayoutState.FAILED}),
    PayoutState.PROCESSING: frozenset({PayoutState.SUCCEEDED, PayoutState.FAILED}),
}

FINAL_PAYMENT_STATES = frozenset(s for s in PaymentState if s not in PAYMENT_TRANSITIONS)
FINAL_REFUND_STATES = frozenset(s for s in RefundState if s not in REFUND_TRANSITIONS)
FINAL_PAYOUT_STATES = frozenset(s for s in PayoutState if s not in PAYOUT_TRANSITIONS)

# States in which a payment waits for its owner, not for payment_svc: the
# saga stops there, and CreatePayment answers.
RESTING_PAYMENT_STATES = FINAL_PAYMENT_STATES | {PaymentState.REQUIRES_CAPTURE}
# A payout PROCESSING waits for the processor's webhook; CreatePayout answers.
RESTING_PAYOUT_STATES = FINAL_PAYOUT_STATES | {PayoutState.PROCESSING}


def _illegal(kind: str, current: str, target: str, action: str) -> FailedPrecondition:
    return FailedPrecondition(
        "INVALID_STATE_TRANSITION",
        f"cannot {action} a {kind} in state {current}",
        metadata={"state": current, "action": action, "target_state": target},
    )


def check_payment_transition(current: PaymentState, target: PaymentState, action: str = "") -> None:
    if target not in PAYMENT_TRANSITIONS.get(current, frozenset()):
        raise _illegal("payment", current, target, action or f"move to {target}")


def check_refund_transition(current: RefundState, target: RefundState, action: str = "") -> None:
    if target not in REFUND_TRANSITIONS.get(current, frozenset()):
        raise _illegal("refund", current, target, action or f"move to {target}")


def check_payout_transition(current: PayoutState, target: PayoutState, action: str = "") -> None:
    if target not in PAYOUT_TRANSITIONS.get(current, frozenset()):
        raise _illegal("payout", current, target, action or f"move to {target}")


def check_refundable(state: PaymentState) -> None:
    """Only a SUCCEEDED payment can be refunded (refunds do not change its state)."""
    if state is not PaymentState.SUCCEEDED:
        raise _illegal("payment", state, state, "refund")


def capture_amount(authorized: Money, requested: Money | None) -> Money:
    """The amount a capture takes: all of the authorization, or a part of it."""
    if requested is None:
        return authorized
    if requested.currency != authorized.currency:
        raise FailedPrecondition(
            "CURRENCY_MISMATCH",
            f"capture currency {requested.currency} differs from the payment's {authorized.currency}",
            metadata={"expected": authorized.currency, "actual": requested.currency},
        )
    if requested.amount > authorized.amount:
        raise InvalidArgument(
            "CAPTURE_EXCEEDS_AUTHORIZED",
            f"cannot capture {requested.format()}: only {authorized.format()} is authorized",
            metadata={"requested": str(requested.amount), "available": str(authorized.amount)},
            field="amount.amount",
        )
    return requested


def refund_amount(captured: Money, already_reserved: int, requested: Money | None) -> Money:
    """The amount a new refund takes; never more than what is still refundable.

    `already_reserved` counts pending and succeeded refunds. The caller holds
    the payment's row lock; a CHECK constraint backs the same rule in the
    database.
    """
    refundable = captured.amount - already_reserved
    if requested is not None and requested.currency != captured.currency:
        raise FailedPrecondition(
            "CURRENCY_MISMATCH",
            f"refund currency {requested.currency} differs from the payment's {captured.currency}",
            metadata={"expected": captured.currency, "actual": requested.currency},
        )
    amount = refundable if requested is None else requested.amount
    if amount <= 0 or amount > refundable:
        raise FailedPrecondition(
            "REFUND_EXCEEDS_CAPTURED",
            f"at most {Money(captured.currency, max(refundable, 0)).format()} can still be refunded",
            metadata={"refundable": str(max(refundable, 0))},
        )
    return Money(captured.currency, amount)


def check_capturable(state: PaymentState) -> None:
    """CapturePayment applies to an authorized payment only (REQUIRES_CAPTURE → PROCESSING)."""
    if state is not PaymentState.REQUIRES_CAPTURE:
        raise _illegal("payment", state, PaymentState.PROCESSING, "capture")
    check_payment_transition(state, PaymentState.PROCESSING, "capture")


def check_cancelable(state: PaymentState) -> None:
    check_payment_transition(state, PaymentState.CANCELED, "cancel")
