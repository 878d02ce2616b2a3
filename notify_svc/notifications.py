"""Which events notify whom, and with which message. Pure: no I/O.

An event concerns its *parties*: the users named in its payload (payer and
payee of a payment or refund, the owner of a wallet or payout, the user who
registered). Every party's webhook endpoints subscribed to the event type get
the event; some parties also get a personal notice (by email, SMS or push, as
their preferences say: notify_svc.preferences) for the changes a person wants
to hear about (money arrived, a payment failed, a wallet was frozen).
Intermediate states (PENDING, PROCESSING) and ledger postings send none: the
payment events that caused the postings already do. A notice names its
message template and the values to fill in; notify_svc.templates renders it
in the recipient's locale.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from paymesh.common.v1 import money_pb2
from paymesh.events.v1 import events_pb2
from paymesh.payment.v1 import payment_pb2
from paymesh.wallet.v1 import wallet_pb2
from paymesh_runtime.errors import InvalidArgument
from paymesh_runtime.money import Money


@dataclass(frozen=True)
class Notice:
    """One message to one user about one event: a template of notify_svc/locales and its values."""

    user_id: str
    template: str
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Contact:
    """A user's address, learned from user.registered (notify keeps its own copy)."""

    user_id: str
    email: str
    display_name: str


@dataclass(frozen=True)
class Plan:
    """What one event leads to."""

    parties: frozenset[str]
    notices: tuple[Notice, ...] = ()
    contact: Contact | None = None


def plan_for(event: events_pb2.Event) -> Plan:
    """The notifications an event leads to; an unknown payload leads to none."""
    kind = event.WhichOneof("payload")
    if kind == "user_registered":
        return _user_registered(event.user_registered)
    if kind == "wallet_changed":
        return _wallet_changed(event.type, event.wallet_changed)
    if kind == "wallet_posted":
        return Plan(_parties([event.wallet_posted.owner_id]))
    if kind == "payment_changed":
        return _payment_changed(event.payment_changed.payment)
    if kind == "refund_changed":
        return _refund_changed(event.refund_changed)
    if kind == "payout_changed":
        return _payout_changed(event.payout_changed.payout)
    return Plan(frozenset())


def event_type_matches(subscribed: Iterable[str], event_type: str) -> bool:
    """An endpoint subscribed to `subscribed` wants events of `event_type`."""
    return any(pattern in ("*", event_type) for pattern in subscribed)


def format_money(money: money_pb2.Money) -> str:
    """Money as "10.50 USD"; an unknown currency is shown in minor units rather than dropped."""
    try:
        return Money(money.currency, money.amount).format()
    except InvalidArgument:
        return f"{money.amount} {money.currency} (minor units)"


def _parties(user_ids: Iterable[str]) -> frozenset[str]:
    return frozenset(user_id for user_id in user_ids if user_id)


def _plan(parties: Iterable[str], *notices: Notice) -> Plan:
    # One notice per user and event: a deposit's payer is also its payee.
    unique: dict[str, Notice] = {}
    for notice in notices:
        if notice.user_id:
            unique.setdefault(notice.user_id, notice)
    return Plan(_parties(parties), tuple(unique.values()))


def _user_registered(payload: events_pb2.UserRegistered) -> Plan:
    user = payload.user
    if not user.user_id:
        return Plan(frozenset())
    welcome = Notice(user.user_id, "welcome", {"name": user.display_name or user.email, "email": user.email})
    contact = Contact(user.user_id, user.email, user.display_name) if user.email else None
    return Plan(_parties([user.user_id]), (welcome,), contact)


_WALLET_TEMPLATES = {
    "wallet.created": "wallet_created",
    "wallet.frozen": "wallet_frozen",
    "wallet.unfrozen": "wallet_unfrozen",
    "wallet.closed": "wallet_closed",
}


def _wallet_changed(event_type: str, payload: events_pb2.WalletChanged) -> Plan:
    wallet = payload.wallet
    template = _WALLET_TEMPLATES.get(event_type)
    if template is None:
        return _plan([wallet.owner_id])
    params = {
        "currency": wallet.currency,
        "wallet_id": wallet.wallet_id,
        "state": wallet_pb2.Wallet.State.Name(wallet.state),
        "reason": payload.reason,
    }
    return _plan([wallet.owner_id], Notice(wallet.owner_id, template, params))


def _payment_changed(payment: payment_pb2.Payment) -> Plan:
    parties = [payment.payer_id, payment.payee_id]
    states = payment_pb2.Payment.State
    params = {"payment_id": payment.payment_id, "amount": format_money(payment.amount)}
    if payment.state == states.SUCCEEDED:
        captured = payment.amount_captured if payment.amount_captured.amount else payment.amount
        params["amount"] = format_money(captured)
        if payment.payer_id == payment.payee_id:
            return _plan(parties, Notice(payment.payer_id, "deposit_succeeded", params))
        return _plan(
            parties,
            Notice(payment.payee_id, "payment_received", params),
            Notice(payment.payer_id, "payment_sent", params),
        )
    if payment.state == states.FAILED:
        reason = payment.failure_message or payment.failure_code or "no reason given"
        return _plan(parties, Notice(payment.payer_id, "payment_failed", {**params, "reason": reason}))
    if payment.state == states.CANCELED:
        return _plan(
            parties,
            Notice(payment.payer_id, "payment_canceled", params),
            Notice(payment.payee_id, "payment_canceled", params),
        )
    if payment.state == states.REQUIRES_CAPTURE:
        deadline = payment.capture_before.ToDatetime().isoformat() + "Z" if payment.HasField("capture_before") else ""
        return _plan(parties, Notice(payment.payee_id, "payment_awaits_capture", {**params, "deadline": deadline}))
    return _plan(parties)


def _refund_changed(payload: events_pb2.RefundChanged) -> Plan:
    refund = payload.refund
    parties = [payload.payer_id, payload.payee_id]
    params = {"amount": format_money(refund.amount), "refund_id": refund.refund_id, "payment_id": refund.payment_id}
    if refund.state == payment_pb2.Refund.State.SUCCEEDED:
        return _plan(
            parties,
            Notice(payload.payer_id, "refund_received", params),
            Notice(payload.payee_id, "refund_sent", params),
        )
    if refund.state == payment_pb2.Refund.State.FAILED:
        reason = refund.failure_code or "no reason given"
        return _plan(parties, Notice(payload.payee_id, "refund_failed", {**params, "reason": reason}))
    return _plan(parties)


def _payout_changed(payout: payment_pb2.Payout) -> Plan:
    params = {"amount": format_money(payout.amount), "payout_id": payout.payout_id}
    if payout.state == payment_pb2.Payout.State.SUCCEEDED:
        return _plan([payout.owner_id], Notice(payout.owner_id, "payout_sent", params))
    if payout.state == payment_pb2.Payout.State.FAILED:
        reason = payout.failure_code or "no reason given"
        return _plan([payout.owner_id], Notice(payout.owner_id, "payout_failed", {**params, "reason": reason}))
    return _plan([payout.owner_id])
