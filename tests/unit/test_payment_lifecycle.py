"""The payment, refund and payout state machines: every transition, allowed and forbidden."""

from __future__ import annotations

import itertools

import pytest

from payment_svc.lifecycle import (
    FINAL_PAYMENT_STATES,
    PaymentState,
    PayoutState,
    RefundState,
    capture_amount,
    check_cancelable,
    check_capturable,
    check_payment_transition,
    check_payout_transition,
    check_refund_transition,
    check_refundable,
    refund_amount,
)
from paymesh_runtime.errors import FailedPrecondition, InvalidArgument
from paymesh_runtime.money import Money

P = PaymentState
ALLOWED_PAYMENT = {
    (P.PENDING, P.REQUIRES_CAPTURE),
    (P.PENDING, P.PROCESSING),
    (P.PENDING, P.FAILED),
    (P.PENDING, P.CANCELED),
    (P.REQUIRES_CAPTURE, P.PROCESSING),
    (P.REQUIRES_CAPTURE, P.CANCELED),
    (P.PROCESSING, P.SUCCEEDED),
    (P.PROCESSING, P.FAILED),
}
ALLOWED_REFUND = {(RefundState.PENDING, RefundState.SUCCEEDED), (RefundState.PENDING, RefundState.FAILED)}
PO = PayoutState
ALLOWED_PAYOUT = {
    (PO.PENDING, PO.PROCESSING),
    (PO.PENDING, PO.SUCCEEDED),
    (PO.PENDING, PO.FAILED),
    (PO.PROCESSING, PO.SUCCEEDED),
    (PO.PROCESSING, PO.FAILED),
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(PaymentState, PaymentState)))
def test_payment_transitions_follow_the_documented_table(current: PaymentState, target: PaymentState) -> None:
    if (current, target) in ALLOWED_PAYMENT:
        check_payment_transition(current, target)
        return
    with pytest.raises(FailedPrecondition) as caught:
        check_payment_transition(current, target)
    assert caught.value.reason == "INVALID_STATE_TRANSITION"
    assert caught.value.metadata["state"] == current
    assert caught.value.metadata["target_state"] == target


@pytest.mark.parametrize(("current", "target"), list(itertools.product(RefundState, RefundState)))
def test_refund_transitions_follow_the_documented_table(current: RefundState, target: RefundState) -> None:
    if (current, target) in ALLOWED_REFUND:
        check_refund_transition(current, target)
        return
    with pytest.raises(FailedPrecondition) as caught:
        check_refund_transition(current, target)
    assert caught.value.reason == "INVALID_STATE_TRANSITION"


@pytest.mark.parametrize(("current", "target"), list(itertools.product(PayoutState, PayoutState)))
def test_payout_transitions_follow_the_documented_table(current: PayoutState, target: PayoutState) -> None:
    if (current, target) in ALLOWED_PAYOUT:
        check_payout_transition(current, target)
        return
    with pytest.raises(FailedPrecondition) as caught:
        check_payout_transition(current, target)
    assert caught.value.reason == "INVALID_STATE_TRANSITION"


def test_final_states_are_exactly_succeeded_failed_and_canceled() -> None:
    assert {P.SUCCEEDED, P.FAILED, P.CANCELED} == FINAL_PAYMENT_STATES


@pytest.mark.parametrize("state", list(PaymentState))
def test_only_an_authorized_payment_can_be_captured(state: PaymentState) -> None:
    if state is P.REQUIRES_CAPTURE:
        check_capturable(state)
        return
    with pytest.raises(FailedPrecondition) as caught:
        check_capturable(state)
    assert caught.value.metadata["action"] == "capture"


@pytest.mark.parametrize("state", list(PaymentState))
def test_only_pending_or_authorized_payments_can_be_canceled(state: PaymentState) -> None:
    if state in (P.PENDING, P.REQUIRES_CAPTURE):
        check_cancelable(state)
        return
    with pytest.raises(FailedPrecondition) as caught:
        check_cancelable(state)
    assert caught.value.metadata["action"] == "cancel"


@pytest.mark.parametrize("state", list(PaymentState))
def test_only_succeeded_payments_can_be_refunded(state: PaymentState) -> None:
    if state is P.SUCCEEDED:
        check_refundable(state)
        return
    with pytest.raises(FailedPrecondition) as caught:
        check_refundable(state)
    assert caught.value.reason == "INVALID_STATE_TRANSITION"


def test_a_capture_takes_all_of_the_authorization_by_default_or_a_part_of_it() -> None:
    authorized = Money("USD", 1000)
    assert capture_amount(authorized, None) == authorized
    assert capture_amount(authorized, Money("USD", 400)) == Money("USD", 400)
    assert capture_amount(authorized, Money("USD", 1000)) == authorized


def test_a_capture_above_the_authorization_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        capture_amount(Money("USD", 1000), Money("USD", 1001))
    assert caught.value.reason == "CAPTURE_EXCEEDS_AUTHORIZED"
    assert caught.value.metadata == {"requested": "1001", "available": "1000"}


def test_a_capture_in_another_currency_is_refused() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        capture_amount(Money("USD", 1000), Money("EUR", 10))
    assert caught.value.reason == "CURRENCY_MISMATCH"


def test_refunds_never_exceed_what_was_captured() -> None:
    captured = Money("USD", 100)
    assert refund_amount(captured, 0, None) == Money("USD", 100)
    assert refund_amount(captured, 40, None) == Money("USD", 60)
    assert refund_amount(captured, 40, Money("USD", 60)) == Money("USD", 60)
    for reserved, requested in ((60, 60), (100, None), (0, 101)):
        with pytest.raises(FailedPrecondition) as caught:
            refund_amount(captured, reserved, None if requested is None else Money("USD", requested))
        assert caught.value.reason == "REFUND_EXCEEDS_CAPTURED"
        assert caught.value.metadata["refundable"] == str(100 - reserved)


def test_a_refund_in_another_currency_is_refused() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        refund_amount(Money("USD", 100), 0, Money("JPY", 10))
    assert caught.value.reason == "CURRENCY_MISMATCH"
