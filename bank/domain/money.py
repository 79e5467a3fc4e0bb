"""Money: an integer count of minor units plus an ISO 4217 currency. No floats, anywhere.

`google.type.Money` carries (units, nanos); `from_units_nanos` is the one way in for amounts
from the wire, `to_units_nanos` the one way out. `Decimal` appears only in `format_minor` and in
rate arithmetic, which ends in exactly one call to `round_to_minor`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from bank.domain import currency as currencies
from bank.domain.errors import invalid
from bank.domain.invariants import ensure
from bank.domain.limits import AMOUNT_MINOR_MAX

NANOS_PER_UNIT = 1_000_000_000
INT64_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Money:
    """A signed amount of `minor` units of `currency` (pence for GBP)."""

    minor: int
    currency: str

    def __post_init__(self) -> None:
        ensure(type(self.minor) is int, "Money.minor must be an int")
        ensure(currencies.is_known(self.currency), f"unknown currency {self.currency!r}")


def from_units_nanos(currency: str, units: int, nanos: int, field_path: str) -> Money:
    """Convert a wire amount to `Money`, refusing anything that is not exact.

    Raises `InvalidArgument` (naming `field_path`) for an unknown currency, nanos outside
    (-10^9, 10^9), mixed signs of units and nanos, or precision finer than the currency's minor
    unit (1.234 GBP).
    """
    currencies.check_currency(currency, f"{field_path}.currency_code")
    if not -NANOS_PER_UNIT < nanos < NANOS_PER_UNIT:
        raise invalid(f"{field_path}.nanos", "must be within (-999999999, 999999999)")
    if (units > 0 and nanos < 0) or (units < 0 and nanos > 0):
        raise invalid(f"{field_path}.nanos", "units and nanos must have the same sign",
                      reason="MIXED_SIGN")
    step = 10 ** (9 - currencies.exponent(currency))
    if nanos % step:
        raise invalid(
            f"{field_path}.nanos",
            f"finer than the minor unit of {currency} "
            f"({currencies.exponent(currency)} decimal places)",
            reason="PRECISION_TOO_FINE",
        )
    # nanos is an exact multiple of step and has the sign of units, so this is exact.
    return Money(units * 10 ** currencies.exponent(currency) + nanos // step, currency)


def positive_amount(money: Money, field_path: str) -> int:
    """The amount of a posting: strictly positive and at most `AMOUNT_MINOR_MAX` minor units."""
    if money.minor <= 0:
        raise invalid(field_path, "must be greater than zero", reason="AMOUNT_NOT_POSITIVE")
    if money.minor > AMOUNT_MINOR_MAX:
        largest = format_minor(AMOUNT_MINOR_MAX, money.currency)
        raise invalid(field_path, f"must be at most {largest}", reason="AMOUNT_TOO_LARGE")
    return money.minor


def to_units_nanos(minor: int, currency: str) -> tuple[int, int]:
    """Split minor units into `google.type.Money` (units, nanos), both with the sign of `minor`."""
    scale = 10 ** currencies.exponent(currency)
    sign = -1 if minor < 0 else 1
    units, rest = divmod(abs(minor), scale)
    return sign * units, sign * rest * 10 ** (9 - currencies.exponent(currency))


def format_minor(minor: int, currency: str) -> str:
    """Human form, e.g. `1234.50 GBP`."""
    exp = currencies.exponent(currency)
    return f"{Decimal(minor).scaleb(-exp):.{exp}f} {currency}"


def round_to_minor(value: Decimal, rounding: str = ROUND_HALF_EVEN) -> int:
    """The one explicit rounding step from a `Decimal` count of minor units to an int."""
    return int(value.to_integral_value(rounding=rounding))
