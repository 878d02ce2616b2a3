from __future__ import annotations

import pytest

from paymesh_runtime.errors import InvalidArgument
from paymesh_runtime.money import MAX_AMOUNT, Money, currency_exponent, positive_money


@pytest.mark.parametrize(("currency", "exponent"), [("JPY", 0), ("USD", 2), ("EUR", 2), ("BHD", 3), ("CLF", 4)])
def test_currency_exponents_follow_iso_4217(currency: str, exponent: int) -> None:
    assert currency_exponent(currency) == exponent


@pytest.mark.parametrize(("currency", "exponent"), [("XCG", 2), ("VED", 2), ("USN", 2)])
def test_codes_added_to_iso_4217_are_accepted(currency: str, exponent: int) -> None:
    # XCG, the Caribbean guilder, replaced ANG in 2025; it was never in a hand-written table here.
    assert positive_money(currency, 100).currency == currency
    assert currency_exponent(currency) == exponent


@pytest.mark.parametrize("currency", ["ANG", "BGN", "HRK", "SLL"])
def test_withdrawn_codes_are_refused_with_invalid_currency(currency: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        positive_money(currency, 100, field="amount")
    assert caught.value.reason == "INVALID_CURRENCY"
    assert caught.value.field == "amount.currency"
    assert caught.value.metadata == {"currency": currency}


def test_codes_without_a_minor_unit_are_not_payable() -> None:
    # Gold, SDRs and the "no currency" code have no exponent in ISO 4217.
    for currency in ("XAU", "XDR", "XXX"):
        with pytest.raises(InvalidArgument):
            currency_exponent(currency)


@pytest.mark.parametrize("currency", ["usd", "XXX", "", "US", "BTC"])
def test_unknown_currency_is_rejected_with_invalid_currency_naming_the_field(currency: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        positive_money(currency, 100, field="refund.amount")
    assert caught.value.reason == "INVALID_CURRENCY"
    assert caught.value.field == "refund.amount.currency"


@pytest.mark.parametrize("amount", [0, -1, MAX_AMOUNT + 1])
def test_amounts_outside_the_allowed_range_are_rejected(amount: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        positive_money("USD", amount)
    assert caught.value.reason == "INVALID_AMOUNT"


def test_money_refuses_floats_and_bools() -> None:
    with pytest.raises(TypeError):
        Money("USD", 10.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Money("USD", True)


def test_money_arithmetic_refuses_mixed_currencies() -> None:
    assert Money("USD", 150) - Money("USD", 50) == Money("USD", 100)
    with pytest.raises(ValueError, match="cannot combine"):
        _ = Money("USD", 1) + Money("EUR", 1)


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money("USD", 1050), "10.50 USD"),
        (Money("JPY", 1050), "1050 JPY"),
        (Money("BHD", 1050), "1.050 BHD"),
        (Money("USD", -5), "-0.05 USD"),
    ],
)
def test_format_places_the_decimal_point_by_the_exponent(money: Money, text: str) -> None:
    assert money.format() == text
