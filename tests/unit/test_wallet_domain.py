"""wallet_svc.ledger: the ledger's rules without I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from paymesh_runtime.errors import PaymeshError
from paymesh_runtime.money import MAX_AMOUNT, Money
from wallet_svc import ledger
from wallet_svc.ledger import Account, AccountState, Hold, HoldState, Leg, SystemAccount, SystemRef, WalletRef

NOW = datetime(2030, 1, 1, tzinfo=UTC)
SETTLEMENT = SystemRef(SystemAccount.EXTERNAL_SETTLEMENT, "USD")


def usd(amount: int) -> Money:
    return Money("USD", amount)


def account(posted: int = 0, held: int = 0, state: AccountState = AccountState.ACTIVE, system: bool = False) -> Account:
    return Account(
        id=uuid.uuid4(),
        owner_id=None if system else "user-1",
        system_account=SystemAccount.FEES if system else None,
        currency="USD",
        state=state,
        state_reason="",
        posted=posted,
        held=held,
        created_at=NOW,
        updated_at=NOW,
    )


def hold(amount: int = 100, state: HoldState = HoldState.OPEN, expires_in: int = 60) -> Hold:
    return Hold(
        id=uuid.uuid4(),
        wallet_id=uuid.uuid4(),
        amount=usd(amount),
        captured_amount=0,
        state=state,
        reference="pay_1:hold",
        payment_id="pay_1",
        capture_transaction_id=None,
        expire_time=NOW + timedelta(seconds=expires_in),
        created_at=NOW,
    )


def reason(error: pytest.ExceptionInfo[PaymeshError]) -> str:
    return error.value.reason


# --- balancing -------------------------------------------------------------------------------


@given(st.lists(st.integers(1, MAX_AMOUNT // 8), min_size=1, max_size=7))
def test_legs_that_sum_to_zero_are_accepted(amounts: list[int]) -> None:
    legs = [Leg(WalletRef(uuid.uuid4()), usd(a)) for a in amounts] + [Leg(SETTLEMENT, usd(-sum(amounts)))]
    assert ledger.validate_legs(legs) == tuple(legs)


@given(st.lists(st.integers(-1000, 1000).filter(bool), min_size=2, max_size=8).filter(lambda a: sum(a) != 0))
def test_legs_that_do_not_sum_to_zero_are_unbalanced(amounts: list[int]) -> None:
    legs = [Leg(WalletRef(uuid.uuid4()), usd(a)) for a in amounts]
    with pytest.raises(PaymeshError) as raised:
        ledger.validate_legs(legs)
    assert reason(raised) == "UNBALANCED_TRANSACTION"


def test_each_currency_must_balance_on_its_own() -> None:
    a, b = WalletRef(uuid.uuid4()), WalletRef(uuid.uuid4())
    legs = [Leg(a, usd(-10)), Leg(b, Money("EUR", 10))]
    with pytest.raises(PaymeshError) as raised:
        ledger.validate_legs(legs)
    assert reason(raised) == "UNBALANCED_TRANSACTION"


@pytest.mark.parametrize(
    ("legs", "expected"),
    [
        ([Leg(SETTLEMENT, usd(0)), Leg(WalletRef(uuid.uuid4()), usd(0))], "INVALID_AMOUNT"),
        (
            [Leg(SETTLEMENT, usd(-(MAX_AMOUNT + 1))), Leg(WalletRef(uuid.uuid4()), usd(MAX_AMOUNT + 1))],
            "INVALID_AMOUNT",
        ),
        ([Leg(SETTLEMENT, usd(-1))], "VALIDATION_FAILED"),
        ([Leg(SETTLEMENT, usd(-1)), Leg(SETTLEMENT, usd(1))], "VALIDATION_FAILED"),
        ([Leg(SETTLEMENT, Money("EUR", -1)), Leg(WalletRef(uuid.uuid4()), Money("EUR", 1))], "CURRENCY_MISMATCH"),
    ],
)
def test_malformed_legs_are_refused(legs: list[Leg], expected: str) -> None:
    with pytest.raises(PaymeshError) as raised:
        ledger.validate_legs(legs)
    assert reason(raised) == expected


# --- accounts ---------------------------------------------------------------------------------


def test_a_debit_needs_available_funds_except_on_system_accounts() -> None:
    ledger.check_debit(account(posted=100, held=40), usd(60))
    with pytest.raises(PaymeshError) as raised:
        ledger.check_debit(account(posted=100, held=40), usd(61))
    assert reason(raised) == "INSUFFICIENT_FUNDS"
    ledger.check_debit(account(system=True), usd(10**12))


@pytest.mark.parametrize(
    ("state", "credit", "debit"),
    [
        (AccountState.ACTIVE, None, None),
        (AccountState.FROZEN, None, "WALLET_FROZEN"),
        (AccountState.CLOSED, "WALLET_CLOSED", "WALLET_CLOSED"),
    ],
)
def test_what_each_wallet_state_accepts(state: AccountState, credit: str | None, debit: str | None) -> None:
    for check, expected in ((ledger.check_credit, credit), (ledger.check_debit, debit), (ledger.check_hold, debit)):
        wallet = account(posted=100, state=state)
        if expected is None:
            check(wallet, usd(10))
        else:
            with pytest.raises(PaymeshError) as raised:
                check(wallet, usd(10))
            assert reason(raised) == expected


def test_postings_in_another_currency_are_refused() -> None:
    with pytest.raises(PaymeshError) as raised:
        ledger.check_credit(account(), Money("EUR", 1))
    assert reason(raised) == "CURRENCY_MISMATCH"


def test_closing_needs_an_empty_wallet_and_frozen_wallets_need_an_admin() -> None:
    for wallet in (account(posted=1), account(posted=5, held=5)):
        with pytest.raises(PaymeshError) as raised:
            ledger.check_close(wallet, by_admin=True)
        assert reason(raised) == "WALLET_NOT_EMPTY"
    with pytest.raises(PaymeshError) as raised:
        ledger.check_close(account(state=AccountState.FROZEN), by_admin=False)
    assert reason(raised) == "WALLET_FROZEN"
    assert ledger.check_close(account(state=AccountState.FROZEN), by_admin=True) is True
    assert ledger.check_close(account(state=AccountState.CLOSED), by_admin=False) is False


def test_freezing_is_idempotent_and_closed_wallets_stay_closed() -> None:
    assert ledger.frozen_state(account(), freeze=True) is AccountState.FROZEN
    assert ledger.frozen_state(account(state=AccountState.FROZEN), freeze=True) is None
    assert ledger.frozen_state(account(state=AccountState.FROZEN), freeze=False) is AccountState.ACTIVE
    with pytest.raises(PaymeshError) as raised:
        ledger.frozen_state(account(state=AccountState.CLOSED), freeze=False)
    assert reason(raised) == "WALLET_CLOSED"


# --- holds ------------------------------------------------------------------------------------


def capture(target: Hold, amount: int, destination: ledger.AccountKey = SETTLEMENT) -> ledger.CaptureRequest:
    return ledger.CaptureRequest("pay_1:capture", target.id, usd(amount), destination, "")


def test_a_capture_may_take_up_to_the_amount_held() -> None:
    target = hold(100)
    ledger.check_capture(capture(target, 100), target, NOW)
    with pytest.raises(PaymeshError) as raised:
        ledger.check_capture(capture(target, 101), target, NOW)
    assert reason(raised) == "CAPTURE_EXCEEDS_AUTHORIZED"
    legs = ledger.capture_legs(capture(target, 30), target)
    assert [leg.amount.amount for leg in legs] == [-30, 30]


@pytest.mark.parametrize(
    ("target", "state"),
    [
        (hold(state=HoldState.CAPTURED), "CAPTURED"),
        (hold(state=HoldState.RELEASED), "RELEASED"),
        (hold(expires_in=0), "EXPIRED"),  # due, the sweeper just has not run yet
    ],
)
def test_only_open_unexpired_holds_can_be_captured(target: Hold, state: str) -> None:
    with pytest.raises(PaymeshError) as raised:
        ledger.check_capture(capture(target, 1), target, NOW)
    assert reason(raised) == "HOLD_NOT_OPEN"
    assert raised.value.metadata["state"] == state


def test_a_capture_cannot_pay_the_held_wallet_itself() -> None:
    target = hold()
    with pytest.raises(PaymeshError) as raised:
        ledger.check_capture(capture(target, 1, WalletRef(target.wallet_id)), target, NOW)
    assert reason(raised) == "VALIDATION_FAILED"


def test_hold_lifetimes_default_and_are_capped() -> None:
    assert ledger.hold_ttl(0, default=600, maximum=3600) == 600
    assert ledger.hold_ttl(3600, default=600, maximum=3600) == 3600
    for bad in (-1, 3601):
        with pytest.raises(PaymeshError):
            ledger.hold_ttl(bad, default=600, maximum=3600)


# --- idempotency ------------------------------------------------------------------------------


def test_a_fingerprint_follows_every_argument_but_not_the_order_of_legs() -> None:
    wallet = WalletRef(uuid.uuid4())
    base = ledger.PostRequest("ref", (Leg(SETTLEMENT, usd(-5)), Leg(wallet, usd(5))), "pay_1", "")
    same = ledger.PostRequest("ref", (Leg(wallet, usd(5)), Leg(SETTLEMENT, usd(-5))), "pay_1", "")
    assert base.fingerprint() == same.fingerprint()
    others = [
        ledger.PostRequest("ref", (Leg(SETTLEMENT, usd(-6)), Leg(wallet, usd(6))), "pay_1", ""),
        ledger.PostRequest("ref", base.legs, "pay_2", ""),
        ledger.PostRequest("ref", base.legs, "pay_1", "a description"),
        ledger.PostRequest(
            "ref", (Leg(SystemRef(SystemAccount.FEES, "USD"), usd(-5)), Leg(wallet, usd(5))), "pay_1", ""
        ),
    ]
    assert len({base.fingerprint(), *(o.fingerprint() for o in others)}) == 1 + len(others)


def test_a_reference_replays_only_the_same_call() -> None:
    request = ledger.ReleaseRequest("ref", uuid.uuid4())
    stored = ledger.StoredReference(ledger.Operation.RELEASE_HOLD, request.fingerprint(), request.hold_id, None)
    ledger.check_replay("ref", stored, ledger.Operation.RELEASE_HOLD, request.fingerprint())
    other = ledger.ReleaseRequest("ref", uuid.uuid4())
    for operation, fingerprint in (
        (ledger.Operation.RELEASE_HOLD, other.fingerprint()),
        (ledger.Operation.CREATE_HOLD, request.fingerprint()),
    ):
        with pytest.raises(PaymeshError) as raised:
            ledger.check_replay("ref", stored, operation, fingerprint)
        assert reason(raised) == "IDEMPOTENCY_KEY_REUSED"
        assert raised.value.metadata == {"idempotency_key": "ref"}


@pytest.mark.parametrize("reference", ["", "x" * 256, "line\nbreak"])
def test_references_are_short_printable_strings(reference: str) -> None:
    with pytest.raises(PaymeshError) as raised:
        ledger.validate_reference(reference)
    assert reason(raised) == "VALIDATION_FAILED"


def test_internal_references_may_not_take_the_prefix_of_idempotency_keys() -> None:
    with pytest.raises(PaymeshError) as raised:
        ledger.validate_reference("wallet-api:user-1:key")
    assert reason(raised) == "VALIDATION_FAILED"


# --- Idempotency-Key of the public wallet calls -------------------------------------------------


def test_an_idempotency_key_is_optional_but_never_malformed() -> None:
    assert ledger.validate_idempotency_key([]) is None
    assert ledger.validate_idempotency_key([" order-1 "]) == "order-1"
    assert ledger.validate_idempotency_key(["k" * 255]) == "k" * 255
    for values in (["k" * 256], [""], ["  "], ["tab\there"], ["caf\u00e9"], ["one", "two"]):
        with pytest.raises(PaymeshError) as raised:
            ledger.validate_idempotency_key(values)
        assert reason(raised) == "VALIDATION_FAILED"
        assert raised.value.field == "idempotency-key"


@given(
    st.text(min_size=1, max_size=40),
    st.text(min_size=1, max_size=40),
    st.text(min_size=1, max_size=255),
    st.text(min_size=1, max_size=255),
)
@example("a:b", "a", "c", "b:c")
@example("a%3Ab", "a:b", "c", "c")
@example("user-1", "user-1", "k", "k")
def test_idempotency_key_references_are_scoped_to_the_caller_one_to_one(
    caller_a: str, caller_b: str, key_a: str, key_b: str
) -> None:
    a, b = ledger.api_reference(caller_a, key_a), ledger.api_reference(caller_b, key_b)
    assert a.startswith(ledger.API_REFERENCE_PREFIX)
    assert (a == b) == ((caller_a, key_a) == (caller_b, key_b))


def test_an_idempotency_key_fingerprints_the_method_the_request_and_the_wallet() -> None:
    wallet = uuid.uuid4()
    base = ledger.IdempotencyKey.of("user-1", "k", ledger.Operation.FREEZE_WALLET, b"request", wallet)
    assert base.reference == "wallet-api:user-1:k"
    assert base == ledger.IdempotencyKey.of("user-1", "k", ledger.Operation.FREEZE_WALLET, b"request", wallet)
    others = [
        ledger.IdempotencyKey.of("user-1", "k", ledger.Operation.UNFREEZE_WALLET, b"request", wallet),
        ledger.IdempotencyKey.of("user-1", "k", ledger.Operation.FREEZE_WALLET, b"other request", wallet),
        ledger.IdempotencyKey.of("user-1", "k", ledger.Operation.FREEZE_WALLET, b"request", uuid.uuid4()),
        ledger.IdempotencyKey.of("user-1", "k", ledger.Operation.FREEZE_WALLET, b"request", None),
    ]
    assert len({base.fingerprint, *(o.fingerprint for o in others)}) == 1 + len(others)
    stored = ledger.StoredReference(base.operation, base.fingerprint, None, None, wallet)
    ledger.check_replay(base.key, stored, base.operation, base.fingerprint)
    for other in others:
        with pytest.raises(PaymeshError) as raised:
            ledger.check_replay(other.key, stored, other.operation, other.fingerprint)
        assert reason(raised) == "IDEMPOTENCY_KEY_REUSED"
        assert raised.value.metadata == {"idempotency_key": "k"}  # the caller's key, not the scoped reference
    with pytest.raises(ValueError, match="reference"):
        ledger.IdempotencyKey.of("user-1", "k", ledger.Operation.POST_TRANSACTION, b"", None)
