"""Money rules: ISO 4217 currencies with their exponents, integer minor units.

Pure: no I/O, no gRPC. Amounts are Python ints of minor units; a float never
enters the money path.
"""

from __future__ import annotations

from dataclasses import dataclass

from paymesh_runtime.errors import InvalidArgument

# ISO 4217 active codes and their minor-unit exponents. Codes without a minor
# unit in ISO 4217 (e.g. XAU) are not payable and are left out.
_EXPONENT_TABLE = """
2: AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN
2: BWP BYN BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD
2: FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR KES KGS KHR KPW
2: KYD KZT LAK LBP LKR LRD LSL MAD MDL MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN
2: NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG
2: SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH
2: USD UYU UZS VES WST XCD YER ZAR ZMW ZWG
0: BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF
3: BHD IQD JOD KWD LYD OMR TND
4: CLF UYW
"""

CURRENCY_EXPONENTS: dict[str, int] = {
    code: int(exponent)
    for exponent, codes in (line.split(":") for line in _EXPONENT_TABLE.strip().splitlines())
    for code in codes.split()
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
