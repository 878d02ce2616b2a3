"""Outbox payloads: every state change of a payment, refund or payout becomes one event.

Topic `paymesh.payments.v1`. Payments and their refunds share one aggregate
(the payment id is the Kafka key and numbers their events in one sequence),
so a consumer sees a payment's refunds after its success, in order. Payouts
are their own aggregate (key = payout id). Types: `payment.<state>` (with
`payment.created` for the first), `refund.<state>`, `payout.<state>`.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from payment_svc import views
from paymesh.common.v1 import money_pb2
from paymesh.events.v1 import events_pb2
from paymesh.payment.v1 import payment_pb2
from paymesh_runtime import metrics_business
from paymesh_runtime.kafka import TOPIC_PAYMENTS
from paymesh_runtime.outbox import Outbox

TOPIC = TOPIC_PAYMENTS


def event_type(resource: str, to_state: str, *, created: bool) -> str:
    return f"{resource}.{'created' if created else to_state.lower()}"


def payment_event(payment: payment_pb2.Payment, previous_state: str) -> events_pb2.Event:
    """The event of a payment's change (`payment.created` when there is no previous state)."""
    return events_pb2.Event(
        type=event_type("payment", payment_pb2.Payment.State.Name(payment.state), created=not previous_state),
        aggregate_type="payment",
        aggregate_id=payment.payment_id,
        # Merchants get events as webhooks: the payer's card token stays out (payment_svc.views).
        payment_changed=events_pb2.PaymentChanged(
            payment=views.without_card_token(payment), previous_state=previous_state or None
        ),
    )


def observe(event: events_pb2.Event) -> None:
    """Counts the state change an event records (paymesh_runtime.metrics_business), once it is written.

    Counted when written, not when committed: a transaction that then fails
    (the database went away) and is redone by the recovery worker counts its
    change twice, a rare over-count the metrics tolerate.
    """
    which = event.WhichOneof("payload")
    if which == "payment_changed":
        payment = event.payment_changed.payment
        _observe(event, "payment", payment_pb2.Payment.State.Name(payment.state), payment.amount, payment.failure_code)
    elif which == "refund_changed":
        refund = event.refund_changed.refund
        _observe(event, "refund", payment_pb2.Refund.State.Name(refund.state), refund.amount, refund.failure_code)
    elif which == "payout_changed":
        payout = event.payout_changed.payout
        _observe(event, "payout", payment_pb2.Payout.State.Name(payout.state), payout.amount, payout.failure_code)


def _observe(event: events_pb2.Event, kind: str, state: str, amount: money_pb2.Money, failure_code: str) -> None:
    metrics_business.state_entered(kind, state, amount.currency, amount.amount, failure_code)
    if event.type.endswith(".created"):
        metrics_business.created(kind, amount.currency, amount.amount)


class PaymentEvents:
    """Writes payment, refund and payout events into the outbox, in the caller's transaction, and counts them."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def payment_changed(
        self, conn: AsyncConnection, payment: payment_pb2.Payment, previous_state: str
    ) -> events_pb2.Event:
        event = await self._outbox.enqueue(conn, topic=TOPIC, event=payment_event(payment, previous_state))
        observe(event)
        return event

    async def refund_changed(
        self, conn: AsyncConnection, refund: payment_pb2.Refund, *, payer_id: str, payee_id: str, created: bool
    ) -> events_pb2.Event:
        event = events_pb2.Event(
            type=event_type("refund", payment_pb2.Refund.State.Name(refund.state), created=created),
            aggregate_type="payment",
            aggregate_id=refund.payment_id,
            refund_changed=events_pb2.RefundChanged(refund=refund, payer_id=payer_id, payee_id=payee_id),
        )
        observe(await self._outbox.enqueue(conn, topic=TOPIC, event=event))
        return event

    async def payout_changed(
        self, conn: AsyncConnection, payout: payment_pb2.Payout, *, created: bool
    ) -> events_pb2.Event:
        event = events_pb2.Event(
            type=event_type("payout", payment_pb2.Payout.State.Name(payout.state), created=created),
            aggregate_type="payout",
            aggregate_id=payout.payout_id,
            payout_changed=events_pb2.PayoutChanged(payout=payout),
        )
        observe(await self._outbox.enqueue(conn, topic=TOPIC, event=event))
        return event
