"""Which events notify whom, and what the email says. Pure: no I/O.

An event concerns its *parties*: the users named in its payload (payer and
payee of a payment or refund, the owner of a wallet or payout, the user who
registered). Every party's webhook endpoints subscribed to the event type get
the event; some parties also get an email, for the changes a person wants to
hear about (money arrived, a payment failed, a wallet was frozen).
Intermediate states (PENDING, PROCESSING) and ledger postings send no email:
the payment events that caused the postings already do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from paymesh.common.v1 import money_pb2
from paymesh.events.v1 import events_pb2
from paymesh.payment.v1 import payment_pb2
from paymesh.wallet.v1 import wallet_pb2
from paymesh_runtime.errors import InvalidArgument
from paymesh_runtime.money import Money


@dataclass(frozen=True)
class Notice:
    """One email to one user about one event."""

    user_id: str
    subject: str
    body: str


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
    emails: tuple[Notice, ...] = ()
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


def _plan(parties: Iterable[str], *emails: Notice) -> Plan:
    # One email per user and event: a deposit's payer is also its payee.
    unique: dict[str, Notice] = {}
    for notice in emails:
        if notice.user_id:
            unique.setdefault(notice.user_id, notice)
    return Plan(_parties(parties), tuple(unique.values()))


def _user_registered(payload: events_pb2.UserRegistered) -> Plan:
    user = payload.user
    if not user.user_id:
        return Plan(frozenset())
    name = user.display_name or user.email
    welcome = Notice(
        user.user_id,
        "Welcome to paymesh",
        f"Hello {name},\n\nyour paymesh account {user.email} is ready.",
    )
    contact = Contact(user.user_id, user.email, user.display_name) if user.email else None
    return Plan(_parties([user.user_id]), (welcome,), contact)


_WALLET_SUBJECTS = {
    "wallet.created": "Your {currency} wallet is open",
    "wallet.frozen": "Your {currency} wallet was frozen",
    "wallet.unfrozen": "Your {currency} wallet was unfrozen",
    "wallet.closed": "Your {currency} wallet was closed",
}


def _wallet_changed(event_type: str, payload: events_pb2.WalletChanged) -> Plan:
    wallet = payload.wallet
    template = _WALLET_SUBJECTS.get(event_type)
    if template is None:
        return _plan([wallet.owner_id])
    subject = template.format(currency=wallet.currency)
    state = wallet_pb2.Wallet.State.Name(wallet.state)
    body = f"{subject}.\n\nWallet {wallet.wallet_id} is now {state}."
    if payload.reason:
        body += f"\nReason: {payload.reason}"
    return _plan([wallet.owner_id], Notice(wallet.owner_id, subject, body))


def _payment_changed(payment: payment_pb2.Payment) -> Plan:
    parties = [payment.payer_id, payment.payee_id]
    states = payment_pb2.Payment.State
    if payment.state == states.SUCCEEDED:
        return _plan(parties, *_payment_succeeded(payment))
    if payment.state == states.FAILED:
        reason = payment.failure_message or payment.failure_code or "no reason given"
        amount = format_money(payment.amount)
        body = f"Your payment {payment.payment_id} of {amount} failed: {reason}.\nNo money was moved."
        return _plan(parties, Notice(payment.payer_id, f"Your payment of {amount} failed", body))
    if payment.state == states.CANCELED:
        amount = format_money(payment.amount)
        body = f"Payment {payment.payment_id} of {amount} was canceled; any held funds were released."
        subject = f"Payment of {amount} canceled"
        return _plan(parties, Notice(payment.payer_id, subject, body), Notice(payment.payee_id, subject, body))
    if payment.state == states.REQUIRES_CAPTURE:
        amount = format_money(payment.amount)
        deadline = payment.capture_before.ToDatetime().isoformat() + "Z" if payment.HasField("capture_before") else ""
        body = f"Payment {payment.payment_id} of {amount} is authorized and waits for your capture"
        body += f" before {deadline}." if deadline else "."
        return _plan(parties, Notice(payment.payee_id, f"Payment of {amount} awaits capture", body))
    return _plan(parties)


def _payment_succeeded(payment: payment_pb2.Payment) -> list[Notice]:
    captured = payment.amount_captured if payment.amount_captured.amount else payment.amount
    amount = format_money(captured)
    ref = f"Payment {payment.payment_id}"
    if payment.payer_id == payment.payee_id:
        return [Notice(payment.payer_id, f"Deposit of {amount} succeeded", f"{ref}: {amount} reached your wallet.")]
    return [
        Notice(payment.payee_id, f"You received {amount}", f"{ref}: {amount} was credited to your wallet."),
        Notice(payment.payer_id, f"You paid {amount}", f"{ref}: you paid {amount}."),
    ]


def _refund_changed(payload: events_pb2.RefundChanged) -> Plan:
    refund = payload.refund
    parties = [payload.payer_id, payload.payee_id]
    amount = format_money(refund.amount)
    ref = f"Refund {refund.refund_id} of payment {refund.payment_id}"
    if refund.state == payment_pb2.Refund.State.SUCCEEDED:
        return _plan(
            parties,
            Notice(payload.payer_id, f"You were refunded {amount}", f"{ref}: {amount} is back in your wallet."),
            Notice(payload.payee_id, f"You refunded {amount}", f"{ref}: {amount} was refunded to the payer."),
        )
    if refund.state == payment_pb2.Refund.State.FAILED:
        body = f"{ref} failed ({refund.failure_code or 'no reason given'}); no money was moved."
        return _plan(parties, Notice(payload.payee_id, f"Refund of {amount} failed", body))
    return _plan(parties)


def _payout_changed(payout: payment_pb2.Payout) -> Plan:
    amount = format_money(payout.amount)
    ref = f"Payout {payout.payout_id}"
    if payout.state == payment_pb2.Payout.State.SUCCEEDED:
        body = f"{ref}: {amount} was sent to your bank account."
        return _plan([payout.owner_id], Notice(payout.owner_id, f"Payout of {amount} sent", body))
    if payout.state == payment_pb2.Payout.State.FAILED:
        body = f"{ref} of {amount} failed ({payout.failure_code or 'no reason given'}); the funds stay in your wallet."
        return _plan([payout.owner_id], Notice(payout.owner_id, f"Payout of {amount} failed", body))
    return _plan([payout.owner_id])
