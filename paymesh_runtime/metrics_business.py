"""Business metrics: payments, refunds and payouts by state, currency and failure code; ledger postings.

`state_entered` counts a resource each time it enters a state (the funnel:
PENDING, PROCESSING, SUCCEEDED or FAILED...) with its amount; `created` also
observes a new resource's amount in the currency's major units. The services
call them where the state change is written (payment_svc.events and the batch
path of payment_svc.transfers). Amounts are exact integers in minor units in
the `_minor_units_total` counters; the histogram's buckets are in major units so
that one set of buckets fits USD cents and JPY yen alike.

Labels are bounded: `kind` and `state` come from closed enums, `currency` and
`failure_code` through paymesh_runtime.metrics.BoundedLabel.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from paymesh_runtime.metrics import BoundedLabel, Children
from paymesh_runtime.money import CURRENCY_EXPONENTS

KINDS = ("payment", "refund", "payout")

STATE_CHANGES = Counter(
    "paymesh_payment_state_changes_total",
    "Payments, refunds and payouts entering a state, by kind, state, currency and failure code (FAILED only).",
    ["kind", "state", "currency", "failure_code"],
)
STATE_AMOUNTS = Counter(
    "paymesh_payment_state_amount_minor_units_total",
    "Sum of the amounts of payments, refunds and payouts entering a state, in minor units of the currency.",
    ["kind", "state", "currency"],
)
AMOUNTS = Histogram(
    "paymesh_payment_amount_major_units",
    "Amounts of new payments, refunds and payouts, in major units of their currency (dollars, yen).",
    ["kind", "currency"],
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000, 100000),
)
LEDGER_POSTINGS = Counter(
    "paymesh_ledger_postings_total",
    "Postings to customers' and merchants' wallets, by currency and direction (credit, debit).",
    ["currency", "direction"],
)
LEDGER_AMOUNTS = Counter(
    "paymesh_ledger_posted_amount_minor_units_total",
    "Sum of the postings to customers' and merchants' wallets, in minor units, by currency and direction.",
    ["currency", "direction"],
)

# ISO 4217 has ~180 codes; a deployment moves a handful. Failure codes come from the wallet (a closed
# set), processors (decline codes: dozens) and operators (`resolve --code`).
_currency = BoundedLabel(limit=30)
_failure_code = BoundedLabel(limit=60)
_changes: Children[tuple[str, str, str, str]] = Children(lambda key: STATE_CHANGES.labels(*key))
_amounts: Children[tuple[str, str, str]] = Children(lambda key: STATE_AMOUNTS.labels(*key))
_created: Children[tuple[str, str]] = Children(lambda key: AMOUNTS.labels(*key))
_postings: Children[tuple[str, str]] = Children(lambda key: LEDGER_POSTINGS.labels(*key))
_posted: Children[tuple[str, str]] = Children(lambda key: LEDGER_AMOUNTS.labels(*key))


def state_entered(kind: str, state: str, currency: str, amount_minor: int, failure_code: str = "") -> None:
    """One payment, refund or payout (`kind`) entered `state`; FAILED ones say why in `failure_code`."""
    label = _currency(currency)
    code = _failure_code(failure_code) if failure_code else ""
    _changes[kind, state, label, code].inc()
    if amount_minor > 0:
        _amounts[kind, state, label].inc(amount_minor)


def created(kind: str, currency: str, amount_minor: int) -> None:
    """A new payment, refund or payout of `amount_minor` (in minor units of `currency`)."""
    exponent = CURRENCY_EXPONENTS.get(currency)
    if exponent is not None and amount_minor > 0:
        _created[kind, _currency(currency)].observe(amount_minor / 10**exponent)


def posted(currency: str, amount_minor: int) -> None:
    """A posting to a user's wallet: positive credits it, negative debits it."""
    direction = "credit" if amount_minor >= 0 else "debit"
    label = _currency(currency)
    _postings[label, direction].inc()
    if amount_minor:
        _posted[label, direction].inc(abs(amount_minor))
