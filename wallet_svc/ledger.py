"""The ledger's rules: accounts, postings, holds and idempotency, without I/O.

Pure: no gRPC, SQL or Kafka. The store enforces the same invariants with
database constraints (the backstop against bugs and races); the checks here
run first, on rows locked for the transaction, so that callers get precise
reasons (WALLET_FROZEN, INSUFFICIENT_FUNDS...) instead of a constraint name.
"""

from __future__ import annotations

import enum
import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from paymesh_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, not_found, validation_failed
from paymesh_runtime.idempotency_key import HEADER, MAX_LENGTH, normalized
from paymesh_runtime.money import MAX_AMOUNT, Money

MAX_REFERENCE_LENGTH = 255
# References of public calls with an Idempotency-Key: `wallet-api:<caller>:<key>`.
# Internal references may not start with the prefix, so the two never collide.
API_REFERENCE_PREFIX = "wallet-api:"
MAX_API_REFERENCE_LENGTH = 1024  # the database's ledger_references_length allows as much for the prefix
MAX_PAYMENT_ID_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 500
MAX_LEGS = 16


class AccountState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    FROZEN = "FROZEN"
    CLOSED = "CLOSED"


class SystemAccount(enum.StrEnum):
    """Platform accounts, one per currency; they may go negative."""

    EXTERNAL_SETTLEMENT = "EXTERNAL_SETTLEMENT"
    FEES = "FEES"


class HoldState(enum.StrEnum):
    OPEN = "OPEN"
    CAPTURED = "CAPTURED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"


class Operation(enum.StrEnum):
    """The mutating calls that take an idempotency reference.

    The internal ones always carry a `reference`; the public wallet calls take
    an optional Idempotency-Key, scoped to the caller (IdempotencyKey).
    """

    CREATE_HOLD = "CreateHold"
    CAPTURE_HOLD = "CaptureHold"
    RELEASE_HOLD = "ReleaseHold"
    POST_TRANSACTION = "PostTransaction"
    CREATE_WALLET = "CreateWallet"
    FREEZE_WALLET = "FreezeWallet"
    UNFREEZE_WALLET = "UnfreezeWallet"
    CLOSE_WALLET = "CloseWallet"


# The public calls whose reference records the wallet they produced or changed.
WALLET_OPERATIONS = frozenset(
    {Operation.CREATE_WALLET, Operation.FREEZE_WALLET, Operation.UNFREEZE_WALLET, Operation.CLOSE_WALLET}
)


@dataclass(frozen=True)
class Account:
    """A wallet (owned by a user) or a system account, as stored."""

    id: uuid.UUID
    owner_id: str | None
    system_account: SystemAccount | None
    currency: str
    state: AccountState
    state_reason: str
    posted: int
    held: int
    created_at: datetime
    updated_at: datetime

    @property
    def available(self) -> int:
        return self.posted - self.held

    @property
    def is_system(self) -> bool:
        return self.system_account is not None


@dataclass(frozen=True, order=True)
class WalletRef:
    wallet_id: uuid.UUID


@dataclass(frozen=True, order=True)
class SystemRef:
    kind: SystemAccount
    currency: str


AccountKey = WalletRef | SystemRef


def key_of(account: Account) -> AccountKey:
    if account.system_account is not None:
        return SystemRef(account.system_account, account.currency)
    return WalletRef(account.id)


def describe_key(key: AccountKey) -> str:
    """A stable text form for fingerprints and error metadata."""
    if isinstance(key, WalletRef):
        return f"wallet:{key.wallet_id}"
    return f"system:{key.kind.value}:{key.currency}"


@dataclass(frozen=True)
class Leg:
    """One requested posting: a signed amount on an account."""

    account: AccountKey
    amount: Money


@dataclass(frozen=True)
class Posting:
    """A stored posting (an entry in its account's history)."""

    seq: int
    id: uuid.UUID
    transaction_id: uuid.UUID
    account_id: uuid.UUID
    system_account: SystemAccount | None
    amount: Money
    balance_after: int
    payment_id: str
    description: str
    created_at: datetime


@dataclass(frozen=True)
class LedgerTransaction:
    id: uuid.UUID
    reference: str
    payment_id: str
    description: str
    created_at: datetime
    postings: tuple[Posting, ...]


@dataclass(frozen=True)
class Hold:
    id: uuid.UUID
    wallet_id: uuid.UUID
    amount: Money
    captured_amount: int
    state: HoldState
    reference: str
    payment_id: str
    capture_transaction_id: uuid.UUID | None
    expire_time: datetime
    created_at: datetime


# --- requests -----------------------------------------------------------------


def fingerprint(operation: Operation, fields: Mapping[str, object]) -> str:
    """A digest of a call's arguments: a replay must match it exactly."""
    canonical = json.dumps({"operation": operation.value, **fields}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class PostRequest:
    reference: str
    legs: tuple[Leg, ...]
    payment_id: str
    description: str
    # The W3C trace context of the request this transaction serves, for the events it writes; not part
    # of what the transaction is (nor of its fingerprint).
    trace_context: Mapping[str, str] = field(default_factory=dict, compare=False)

    def fingerprint(self) -> str:
        legs = sorted([describe_key(leg.account), leg.amount.currency, leg.amount.amount] for leg in self.legs)
        fields = {"legs": legs, "payment_id": self.payment_id, "description": self.description}
        return fingerprint(Operation.POST_TRANSACTION, fields)


@dataclass(frozen=True)
class HoldRequest:
    reference: str
    wallet_id: uuid.UUID
    amount: Money
    payment_id: str
    ttl_seconds: int

    def fingerprint(self) -> str:
        fields = {
            "wallet_id": str(self.wallet_id),
            "amount": [self.amount.currency, self.amount.amount],
            "payment_id": self.payment_id,
            "ttl_seconds": self.ttl_seconds,
        }
        return fingerprint(Operation.CREATE_HOLD, fields)


@dataclass(frozen=True)
class CaptureRequest:
    reference: str
    hold_id: uuid.UUID
    amount: Money
    destination: AccountKey
    description: str

    def fingerprint(self) -> str:
        fields = {
            "hold_id": str(self.hold_id),
            "amount": [self.amount.currency, self.amount.amount],
            "destination": describe_key(self.destination),
            "description": self.description,
        }
        return fingerprint(Operation.CAPTURE_HOLD, fields)


@dataclass(frozen=True)
class ReleaseRequest:
    reference: str
    hold_id: uuid.UUID

    def fingerprint(self) -> str:
        return fingerprint(Operation.RELEASE_HOLD, {"hold_id": str(self.hold_id)})


@dataclass(frozen=True)
class IdempotencyKey:
    """A public wallet call's Idempotency-Key, scoped to its caller.

    `reference` is the ledger_references row the call claims, `key` what the
    caller sent (reported back in errors), `fingerprint` a digest of the call:
    the method, the request's deterministic serialization and the target wallet.
    """

    key: str
    reference: str
    operation: Operation
    fingerprint: str

    @classmethod
    def of(
        cls, caller_id: str, key: str, operation: Operation, request: bytes, wallet_id: uuid.UUID | None
    ) -> IdempotencyKey:
        if operation not in WALLET_OPERATIONS:
            raise ValueError(f"{operation} takes a reference, not an Idempotency-Key")
        return cls(key, api_reference(caller_id, key), operation, api_fingerprint(operation, request, wallet_id))


def api_reference(caller_id: str, key: str) -> str:
    """`wallet-api:<caller>:<key>`, one-to-one: the caller's `%` and `:` are escaped, so the
    first `:` after the prefix ends it (user ids are UUIDs; this keeps any id safe)."""
    caller = caller_id.replace("%", "%25").replace(":", "%3A")
    reference = f"{API_REFERENCE_PREFIX}{caller}:{key}"
    if len(reference) > MAX_API_REFERENCE_LENGTH:
        raise validation_failed("idempotency-key", "is too long for this caller")
    return reference


def api_fingerprint(operation: Operation, request: bytes, wallet_id: uuid.UUID | None) -> str:
    fields = {"request": request.hex(), "wallet_id": str(wallet_id) if wallet_id else ""}
    return fingerprint(operation, fields)


@dataclass(frozen=True)
class StoredReference:
    """What an earlier call with the same reference recorded."""

    operation: Operation
    fingerprint: str
    hold_id: uuid.UUID | None
    transaction_id: uuid.UUID | None
    wallet_id: uuid.UUID | None = None


def check_replay(key: str, stored: StoredReference, operation: Operation, request_fingerprint: str) -> None:
    """A reference (or Idempotency-Key, named by `key`) may only be replayed by the very same call."""
    if stored.operation is not operation or stored.fingerprint != request_fingerprint:
        raise AlreadyExists(
            "IDEMPOTENCY_KEY_REUSED",
            f"reference {key!r} was used before with different arguments",
            metadata={"idempotency_key": key},
        )


@dataclass(frozen=True)
class WalletResult:
    """A public wallet call's answer: the wallet, and whether it replays an earlier call's key."""

    account: Account
    replayed: bool = False


# --- validation of request fields ------------------------------------------------


def validate_reference(reference: str) -> str:
    if not 0 < len(reference) <= MAX_REFERENCE_LENGTH or not reference.isprintable():
        raise validation_failed("reference", f"must be 1 to {MAX_REFERENCE_LENGTH} printable characters")
    if reference.startswith(API_REFERENCE_PREFIX):
        raise validation_failed("reference", f"the prefix {API_REFERENCE_PREFIX!r} is reserved")
    return reference


def validate_idempotency_key(values: Sequence[str]) -> str | None:
    """The optional Idempotency-Key of a public call (every value the header came with).

    None when absent; present, it is one value of 1 to 255 printable ASCII
    characters (surrounding spaces dropped, as payment_svc does), else VALIDATION_FAILED.
    """
    if not values:
        return None
    key = normalized(values[0]) if len(values) == 1 else None
    if key is None:
        raise validation_failed(HEADER, f"must be one value of 1 to {MAX_LENGTH} printable ASCII characters")
    return key


def validate_text(field: str, value: str, limit: int) -> str:
    if len(value) > limit:
        raise validation_failed(field, f"must be at most {limit} characters")
    return value


def hold_ttl(requested: int, default: int, maximum: int) -> int:
    """The hold's lifetime in seconds: the default for 0, at most `maximum`."""
    if requested < 0 or requested > maximum:
        raise validation_failed("ttl_seconds", f"must be between 0 (the default) and {maximum}")
    return requested or default


def validate_legs(legs: Sequence[Leg]) -> tuple[Leg, ...]:
    """Two to MAX_LEGS non-zero legs on distinct accounts, summing to zero per currency."""
    if not 2 <= len(legs) <= MAX_LEGS:
        raise validation_failed("postings", f"a transaction has 2 to {MAX_LEGS} postings")
    seen: set[AccountKey] = set()
    totals: dict[str, int] = defaultdict(int)
    for index, leg in enumerate(legs):
        if leg.amount.amount == 0 or abs(leg.amount.amount) > MAX_AMOUNT:
            raise InvalidArgument(
                "INVALID_AMOUNT",
                f"a posting amount is non-zero and at most {MAX_AMOUNT} minor units",
                metadata={"amount": str(leg.amount.amount)},
                field=f"postings[{index}].amount.amount",
            )
        if leg.account in seen:
            raise validation_failed(f"postings[{index}].account", "an account appears once per transaction")
        if isinstance(leg.account, SystemRef) and leg.account.currency != leg.amount.currency:
            raise currency_mismatch(leg.account.currency, leg.amount.currency)
        seen.add(leg.account)
        totals[leg.amount.currency] += leg.amount.amount
    unbalanced = sorted(currency for currency, total in totals.items() if total != 0)
    if unbalanced:
        raise InvalidArgument(
            "UNBALANCED_TRANSACTION",
            "postings must sum to zero per currency",
            metadata={"currencies": ",".join(unbalanced)},
            field="postings",
        )
    return tuple(legs)


# --- rules on locked accounts and holds --------------------------------------------


def currency_mismatch(expected: str, actual: str) -> FailedPrecondition:
    return FailedPrecondition(
        "CURRENCY_MISMATCH",
        f"expected {expected}, got {actual}",
        metadata={"expected": expected, "actual": actual},
    )


def insufficient_funds(account: Account) -> FailedPrecondition:
    return FailedPrecondition(
        "INSUFFICIENT_FUNDS", "the available balance is below the amount", metadata={"wallet_id": str(account.id)}
    )


def wallet_frozen(account: Account) -> FailedPrecondition:
    return FailedPrecondition(
        "WALLET_FROZEN", "the wallet is frozen: no debit or hold", metadata={"wallet_id": str(account.id)}
    )


def wallet_closed(account: Account) -> FailedPrecondition:
    return FailedPrecondition("WALLET_CLOSED", "the wallet is closed", metadata={"wallet_id": str(account.id)})


def check_credit(account: Account, amount: Money) -> None:
    """Credits reach ACTIVE and FROZEN wallets (freezing stops money leaving), not CLOSED ones."""
    if account.currency != amount.currency:
        raise currency_mismatch(account.currency, amount.currency)
    if account.state is AccountState.CLOSED:
        raise wallet_closed(account)


def check_debit(account: Account, amount: Money, *, released: int = 0) -> None:
    """A debit of `amount` (positive) after releasing `released` of the account's holds."""
    check_credit(account, amount)
    if account.state is AccountState.FROZEN:
        raise wallet_frozen(account)
    if not account.is_system and account.available + released < amount.amount:
        raise insufficient_funds(account)


def accounts_by_key(
    ids: Mapping[AccountKey, uuid.UUID], found: Mapping[uuid.UUID, Account]
) -> dict[AccountKey, Account]:
    """The account of each key among the `found` (locked) ones, in the order of `ids`.

    An unknown wallet is NOT_FOUND, and so is a wallet id that names a system
    account (a system account is only reachable by its kind and currency).
    """
    for key, account_id in ids.items():
        if account_id not in found:
            assert isinstance(key, WalletRef)  # system accounts exist once resolved
            raise not_found("wallet", str(key.wallet_id))
    accounts = {key: found[account_id] for key, account_id in ids.items()}
    for key, account in accounts.items():
        if isinstance(key, WalletRef) and account.is_system:
            raise not_found("wallet", str(key.wallet_id))
    return accounts


def check_postings(legs: Iterable[Leg], accounts: Mapping[AccountKey, Account]) -> None:
    for leg in legs:
        account = accounts[leg.account]
        if leg.amount.amount > 0:
            check_credit(account, leg.amount)
        else:
            check_debit(account, -leg.amount)


def check_hold(account: Account, amount: Money) -> None:
    if account.is_system:
        raise validation_failed("wallet_id", "holds are for wallets, not system accounts")
    check_debit(account, amount)


def hold_not_open(hold: Hold, state: HoldState | None = None) -> FailedPrecondition:
    state = state or hold.state
    return FailedPrecondition(
        "HOLD_NOT_OPEN",
        f"the hold is {state.value}, not OPEN",
        metadata={"hold_id": str(hold.id), "state": state.value},
    )


def check_open(hold: Hold, now: datetime) -> None:
    """An OPEN hold past its expiry is as good as expired (the sweeper is just late)."""
    if hold.state is not HoldState.OPEN:
        raise hold_not_open(hold)
    if hold.expire_time <= now:
        raise hold_not_open(hold, HoldState.EXPIRED)


def check_capture(request: CaptureRequest, hold: Hold, now: datetime) -> None:
    """Checks the hold itself; the accounts are checked once locked."""
    check_open(hold, now)
    if request.amount.currency != hold.amount.currency:
        raise currency_mismatch(hold.amount.currency, request.amount.currency)
    if request.amount.amount > hold.amount.amount:
        raise InvalidArgument(
            "CAPTURE_EXCEEDS_AUTHORIZED",
            "the capture amount exceeds the amount held",
            metadata={"requested": str(request.amount.amount), "available": str(hold.amount.amount)},
            field="amount.amount",
        )
    if request.destination == WalletRef(hold.wallet_id):
        raise validation_failed("destination", "the destination is the held wallet itself")


def capture_legs(request: CaptureRequest, hold: Hold) -> tuple[Leg, ...]:
    return (Leg(WalletRef(hold.wallet_id), -request.amount), Leg(request.destination, request.amount))


# --- wallet lifecycle ------------------------------------------------------------


def frozen_state(account: Account, freeze: bool) -> AccountState | None:
    """The state after (un)freezing, or None when nothing changes."""
    if account.is_system:
        raise validation_failed("wallet_id", "system accounts cannot be frozen")
    if account.state is AccountState.CLOSED:
        raise wallet_closed(account)
    target = AccountState.FROZEN if freeze else AccountState.ACTIVE
    return None if account.state is target else target


def check_close(account: Account, by_admin: bool) -> bool:
    """True if the wallet must be closed now, False if it already is."""
    if account.state is AccountState.CLOSED:
        return False
    # An owner must not escape a freeze by closing and reopening.
    if account.state is AccountState.FROZEN and not by_admin:
        raise wallet_frozen(account)
    if account.posted != 0 or account.held != 0:
        raise FailedPrecondition(
            "WALLET_NOT_EMPTY",
            "a wallet can only be closed with a zero balance and no open hold",
            metadata={"wallet_id": str(account.id)},
        )
    return True
