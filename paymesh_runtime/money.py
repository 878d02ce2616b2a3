"""Money rules: ISO 4217 currencies with their exponents, integer minor units.

Pure: no I/O, no gRPC. Amounts are Python ints of minor units; a float never
enters the money path.
"""

from __future__ import annotations

from dataclasses import dataclass

from iso4217 import Currency

from paymesh_runtime.errors import InvalidArgument

# ISO 4217's current list (List One) as the `iso4217` package ships it, so that a
# new code (XCG, 2025) is accepted and a withdrawn one (ANG) refused once the
# package is upgraded, never by editing a table here. Codes without a minor unit
# (XAU, XDR, XXX...) are not payable and are left out.
CURRENCY_EXPONENTS: dict[str, int] = {
    currency.code: currency.exponent for currency in Currency if currency.exponent is not None
}

# Largest amount in minor units paymesh accepts in one request: far below
# int64's limit, so sums of many amounts cannot overflow a BIGINT column.
MAX_AMOUNT = 10**15


def currency_exponent(currency: str, field: str = "currency") -> int:
    """Returns the ISO 4217 exponent of a currency, or raises INVALID_CURRENCY naming `field`."""
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise InvalidArgument(
            "INVALID_CURRENCY",
            f"{currency!r} is not a supported ISO 4217 currency code",
            metadata={"currency": currency},
            field=field,
        ) from None


@dataclass(frozen=True, slots=True)
class Money:
    """An amount of minor units in one currency."""

    currency: str
    amount: int

    def __post_init__(self) -> None:
        currency_exponent(self.currency)
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise TypeError("Money.amount must be an int of minor units")

    def __add__(self, other: Money) -> Money:
        return Money(self.currency, self.amount + self._same_currency(other).amount)

    def __sub__(self, other: Money) -> Money:
        return Money(self.currency, self.amount - self._same_currency(other).amount)

    def __neg__(self) -> Money:
        return Money(self.currency, -self.amount)

    def _same_currency(self, other: Money) -> Money:
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} and {other.currency}")
        return other

    def format(self) -> str:
        """Human-readable form, e.g. "10.50 USD", "1050 JPY", "1.050 BHD"."""
        exp = currency_exponent(self.currency)
        sign = "-" if self.amount < 0 else ""
        whole, frac = divmod(abs(self.amount), 10**exp)
        return f"{sign}{whole}.{frac:0{exp}d} {self.currency}" if exp else f"{sign}{whole} {self.currency}"


def positive_money(currency: str, amount: int, field: str = "amount") -> Money:
    """Validates a request amount: a known currency and 0 < amount <= MAX_AMOUNT; errors name `field`'s parts."""
    if not currency:
        raise InvalidArgument("INVALID_CURRENCY", f"{field}.currency is required", field=f"{field}.currency")
    currency_exponent(currency, f"{field}.currency")
    money = Money(currency, amount)
    if not 0 < amount <= MAX_AMOUNT:
        raise InvalidArgument(
            "INVALID_AMOUNT",
            f"{field} must be between 1 and {MAX_AMOUNT} minor units",
            metadata={"amount": str(amount)},
            field=f"{field}.amount",
        )
    return money
