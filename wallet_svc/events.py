"""Outbox payloads of the wallet aggregate (topic paymesh.wallets.v1, key = wallet id)."""

from __future__ import annotations

from paymesh.events.v1 import events_pb2
from paymesh_runtime import metrics_business
from paymesh_runtime.kafka import TOPIC_WALLETS
from paymesh_runtime.money import Money
from paymesh_runtime.wire import money_message
from wallet_svc import convert
from wallet_svc.ledger import Account, Posting

TOPIC = TOPIC_WALLETS
AGGREGATE_TYPE = "wallet"

CREATED = "wallet.created"
FROZEN = "wallet.frozen"
UNFROZEN = "wallet.unfrozen"
CLOSED = "wallet.closed"
POSTED = "wallet.posted"


def wallet_changed(event_type: str, account: Account, reason: str = "") -> events_pb2.Event:
    """A lifecycle change; the envelope's id, sequence and time are set by the outbox."""
    return events_pb2.Event(
        type=event_type,
        aggregate_type=AGGREGATE_TYPE,
        aggregate_id=str(account.id),
        wallet_changed=events_pb2.WalletChanged(wallet=convert.wallet(account), reason=reason),
    )


def wallet_posted(posting: Posting, owner_id: str, held_after: int) -> events_pb2.Event:
    """One posting to a user's wallet (system accounts publish nothing: they have no owner to tell); counted in
    paymesh_ledger_postings_total as it is written."""
    metrics_business.posted(posting.amount.currency, posting.amount.amount)
    available = Money(posting.amount.currency, posting.balance_after - held_after)
    return events_pb2.Event(
        type=POSTED,
        aggregate_type=AGGREGATE_TYPE,
        aggregate_id=str(posting.account_id),
        wallet_posted=events_pb2.WalletPosted(
            entry=convert.entry(posting), owner_id=owner_id, available_balance=money_message(available)
        ),
    )
