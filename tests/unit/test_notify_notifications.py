"""Which events notify whom (notify_svc.notifications), as rendered in English (notify_svc.templates): no I/O."""

from __future__ import annotations

import pytest

from notify_svc.notifications import Notice, event_type_matches, format_money, plan_for
from notify_svc.templates import Message, Templates
from paymesh.auth.v1 import auth_pb2
from paymesh.common.v1 import money_pb2
from paymesh.events.v1 import events_pb2
from paymesh.payment.v1 import payment_pb2
from paymesh.wallet.v1 import wallet_pb2

PAYER, PAYEE = "user-payer", "user-payee"
State = payment_pb2.Payment.State
TEMPLATES = Templates.load()


def _english(notice: Notice) -> Message:
    return TEMPLATES.render(notice.template, "en", notice.params)


def _payment_event(state: int, payer: str = PAYER, payee: str = PAYEE, **fields: object) -> events_pb2.Event:
    payment = payment_pb2.Payment(
        payment_id="pay-1",
        payer_id=payer,
        payee_id=payee,
        amount=money_pb2.Money(currency="USD", amount=1050),
        state=state,  # type: ignore[arg-type]
        **fields,  # type: ignore[arg-type]
    )
    return events_pb2.Event(id="e", type="payment.x", payment_changed=events_pb2.PaymentChanged(payment=payment))


def _recipients(event: events_pb2.Event) -> dict[str, str]:
    return {notice.user_id: _english(notice).subject for notice in plan_for(event).notices}


def test_a_succeeded_payment_tells_the_payee_it_received_and_the_payer_it_paid() -> None:
    plan = plan_for(_payment_event(State.SUCCEEDED))
    assert plan.parties == {PAYER, PAYEE}
    assert _recipients(_payment_event(State.SUCCEEDED)) == {
        PAYEE: "You received 10.50 USD",
        PAYER: "You paid 10.50 USD",
    }


def test_a_deposit_notifies_its_one_user_once() -> None:
    event = _payment_event(State.SUCCEEDED, payer=PAYER, payee=PAYER)
    assert _recipients(event) == {PAYER: "Deposit of 10.50 USD succeeded"}
    assert plan_for(event).parties == {PAYER}


def test_the_captured_amount_is_reported_when_less_than_authorized() -> None:
    event = _payment_event(State.SUCCEEDED, amount_captured=money_pb2.Money(currency="USD", amount=700))
    assert _recipients(event)[PAYEE] == "You received 7.00 USD"


def test_a_failed_payment_tells_only_the_payer_why() -> None:
    event = _payment_event(State.FAILED, failure_code="card_declined", failure_message="The card was declined")
    plan = plan_for(event)
    assert [notice.user_id for notice in plan.notices] == [PAYER]
    assert "The card was declined" in _english(plan.notices[0]).text
    assert plan.parties == {PAYER, PAYEE}  # the merchant's webhooks still hear of it


def test_a_payment_awaiting_capture_tells_the_payee() -> None:
    assert _recipients(_payment_event(State.REQUIRES_CAPTURE)) == {PAYEE: "Payment of 10.50 USD awaits capture"}


def test_a_canceled_payment_tells_both_sides() -> None:
    assert set(_recipients(_payment_event(State.CANCELED))) == {PAYER, PAYEE}


@pytest.mark.parametrize("state", [State.PENDING, State.PROCESSING])
def test_intermediate_payment_states_send_no_email_but_reach_webhooks(state: int) -> None:
    plan = plan_for(_payment_event(state))
    assert plan.notices == ()
    assert plan.parties == {PAYER, PAYEE}


def test_user_registered_welcomes_the_user_and_records_the_address() -> None:
    user = auth_pb2.User(user_id="u1", email="ann@example.com", display_name="Ann")
    plan = plan_for(events_pb2.Event(type="user.registered", user_registered=events_pb2.UserRegistered(user=user)))
    assert [(n.user_id, _english(n).subject) for n in plan.notices] == [("u1", "Welcome to paymesh")]
    assert plan.contact is not None
    assert (plan.contact.user_id, plan.contact.email) == ("u1", "ann@example.com")


def test_a_frozen_wallet_tells_its_owner_with_the_reason() -> None:
    wallet = wallet_pb2.Wallet(wallet_id="w1", owner_id="u1", currency="EUR", state=wallet_pb2.Wallet.FROZEN)
    event = events_pb2.Event(
        type="wallet.frozen", wallet_changed=events_pb2.WalletChanged(wallet=wallet, reason="fraud review")
    )
    plan = plan_for(event)
    assert [(n.user_id, _english(n).subject) for n in plan.notices] == [("u1", "Your EUR wallet was frozen")]
    assert "Reason: fraud review" in _english(plan.notices[0]).text


def test_a_posting_reaches_the_owners_webhooks_without_an_email() -> None:
    event = events_pb2.Event(type="wallet.posted", wallet_posted=events_pb2.WalletPosted(owner_id="u1"))
    plan = plan_for(event)
    assert (plan.notices, plan.parties) == ((), {"u1"})


def test_a_refund_tells_the_payer_of_the_money_back_and_the_payee() -> None:
    refund = payment_pb2.Refund(
        refund_id="r1",
        payment_id="pay-1",
        amount=money_pb2.Money(currency="JPY", amount=500),
        state=payment_pb2.Refund.SUCCEEDED,
    )
    event = events_pb2.Event(
        type="refund.succeeded",
        refund_changed=events_pb2.RefundChanged(refund=refund, payer_id=PAYER, payee_id=PAYEE),
    )
    assert _recipients(event) == {PAYER: "You were refunded 500 JPY", PAYEE: "You refunded 500 JPY"}


def test_a_failed_payout_tells_its_owner() -> None:
    payout = payment_pb2.Payout(
        payout_id="po1",
        owner_id="u1",
        amount=money_pb2.Money(currency="BHD", amount=1050),
        state=payment_pb2.Payout.FAILED,
    )
    event = events_pb2.Event(type="payout.failed", payout_changed=events_pb2.PayoutChanged(payout=payout))
    assert _recipients(event) == {"u1": "Payout of 1.050 BHD failed"}


def test_an_event_without_a_known_payload_notifies_nobody() -> None:
    plan = plan_for(events_pb2.Event(id="e", type="something.new"))
    assert (plan.parties, plan.notices, plan.contact) == (frozenset(), (), None)


def test_an_unknown_currency_is_shown_in_minor_units_not_dropped() -> None:
    assert format_money(money_pb2.Money(currency="XXX", amount=12)) == "12 XXX (minor units)"


def test_endpoint_subscriptions_match_exact_types_or_everything() -> None:
    assert event_type_matches(["payment.succeeded"], "payment.succeeded")
    assert event_type_matches(["*"], "wallet.frozen")
    assert not event_type_matches(["payment.succeeded"], "payment.failed")
