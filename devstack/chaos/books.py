"""What the checks read from the stores after a run, as plain values: payment_svc's, wallet_svc's and
notify_svc's rows, the processor simulator's books, and Kafka's records."""

from __future__ import annotations

from dataclasses import dataclass, field

# --- payment_svc -------------------------------------------------------------------


@dataclass(frozen=True)
class Payment:
    payment_id: str
    payer_id: str
    payee_id: str
    source_wallet_id: str  # '' for a card payment
    card_token: str  # '' for a wallet payment
    destination_wallet_id: str
    currency: str
    amount: int
    amount_captured: int
    amount_refunded: int
    refund_reserved: int
    capture_method: str
    state: str
    hold_id: str
    authorization_ref: str
    requested_action: str


@dataclass(frozen=True)
class Refund:
    refund_id: str
    payment_id: str
    currency: str
    amount: int
    state: str
    processor_ref: str


@dataclass(frozen=True)
class Payout:
    payout_id: str
    wallet_id: str
    owner_id: str
    currency: str
    amount: int
    state: str
    hold_id: str
    processor_ref: str


@dataclass(frozen=True)
class Transition:
    transition_id: int
    resource_type: str
    resource_id: str
    from_state: str
    to_state: str


@dataclass(frozen=True)
class IdempotencyKey:
    caller_id: str
    key: str
    method: str
    resource_id: str
    state: str


@dataclass(frozen=True)
class SagaStep:
    resource_id: str
    step: str
    status: str
    outcome_unknown: bool


@dataclass
class PaymentBooks:
    payments: dict[str, Payment] = field(default_factory=dict)
    refunds: dict[str, Refund] = field(default_factory=dict)
    payouts: dict[str, Payout] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    keys: list[IdempotencyKey] = field(default_factory=list)
    steps: list[SagaStep] = field(default_factory=list)


# --- wallet_svc --------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    account_id: str
    owner_id: str  # '' for a system account
    system_account: str  # '' for a user wallet
    currency: str
    posted: int
    held: int
    state: str


@dataclass(frozen=True)
class Posting:
    seq: int
    posting_id: str
    transaction_id: str
    account_id: str
    currency: str
    amount: int
    balance_after: int


@dataclass(frozen=True)
class LedgerTransaction:
    transaction_id: str
    reference: str
    payment_id: str  # the payment, refund or payout that posted it


@dataclass(frozen=True)
class Hold:
    hold_id: str
    wallet_id: str
    currency: str
    amount: int
    captured_amount: int
    state: str
    reference: str
    payment_id: str  # the payment or payout that placed it


@dataclass
class Ledger:
    accounts: dict[str, Account] = field(default_factory=dict)
    postings: list[Posting] = field(default_factory=list)
    transactions: dict[str, LedgerTransaction] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)

    def settlement(self, currency: str) -> Account | None:
        for account in self.accounts.values():
            if account.system_account == "EXTERNAL_SETTLEMENT" and account.currency == currency:
                return account
        return None


# --- the processor simulator's books ---------------------------------------------------


@dataclass(frozen=True)
class SimAuthorization:
    sim_id: str
    status: str  # authorized | captured | voided | declined
    amount: int
    currency: str
    amount_captured: int
    amount_refunded: int
    key: str


@dataclass(frozen=True)
class SimRefund:
    sim_id: str
    status: str  # pending | succeeded | failed
    authorization: str
    amount: int
    currency: str
    key: str


@dataclass(frozen=True)
class SimPayout:
    sim_id: str
    status: str  # pending | paid | failed
    amount: int
    currency: str
    key: str


@dataclass
class ProcessorBooks:
    authorizations: list[SimAuthorization] = field(default_factory=list)
    refunds: list[SimRefund] = field(default_factory=list)
    payouts: list[SimPayout] = field(default_factory=list)


# --- Kafka -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventRecord:
    """One Kafka record of a paymesh event (a copy, if the relay published it twice)."""

    topic: str
    partition: int
    offset: int
    event_id: str
    event_type: str
    aggregate_id: str
    sequence: int
    resource_id: str  # the payment, refund or payout the payload carries ('' for other events)
    state: str  # its state in the payload
    posting_id: str = ""  # wallet.posted: the posting's id


# --- notify_svc and what reached the receivers --------------------------------------------


@dataclass(frozen=True)
class Notification:
    notification_id: str
    user_id: str
    channel: str  # EMAIL | WEBHOOK
    endpoint_id: str
    event_id: str
    state: str


@dataclass(frozen=True)
class Receipt:
    """A message that reached a receiver: an email at the mail sink or a webhook at the harness's endpoint."""

    channel: str  # EMAIL | WEBHOOK
    delivery_id: str  # the email's Message-ID (notification id), or "<endpoint path> <event id>" for a webhook
    event_id: str
    at: float  # seconds since the workload started
    accepted: bool = True  # the receiver answered 2xx
    signature_ok: bool = True  # webhooks: the Standard Webhooks signature verified with the endpoint's secret


@dataclass
class NotifyBooks:
    notifications: list[Notification] = field(default_factory=list)
    processed_event_ids: set[str] = field(default_factory=set)  # notify_svc's processed_event
    topic_event_ids: set[str] = field(default_factory=set)  # every event on the topics notify_svc reads
    receipts: list[Receipt] = field(default_factory=list)
    endpoints: dict[str, str] = field(default_factory=dict)  # the harness's webhook endpoint ids -> their paths
