"""Pool units and net asset value per unit: integer arithmetic with three stated roundings.

- Units are integers in micro-units (6 decimal places): 485,146.144648 units is 485146144648.
- NAV per unit = net assets / units outstanding, a `Decimal` with exactly 8 decimal places,
  rounded half-even (`nav_per_unit`). It is a price, never a balance: balances stay in integer
  minor units in each participant's capital account.
- A subscription buys `amount / NAV` units rounded DOWN to the micro-unit (`units_for_amount`):
  the subscriber never gets a unit fraction it did not pay for.
- A partial redemption of `units` pays `units * NAV` rounded DOWN to the minor unit
  (`amount_for_units`): the pool never pays out a fraction of a penny it does not hold. (A
  position's last units pay out its whole capital account instead; see `pool`.)

All of it is exact integer arithmetic on scaled values; `Decimal` appears only at the edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from bank.domain import currency as currencies
from bank.domain.errors import FailedPrecondition
from bank.domain.invariants import ensure

UNIT_DECIMAL_PLACES = 6
MICRO_UNITS_PER_UNIT = 10**UNIT_DECIMAL_PLACES
NAV_DECIMAL_PLACES = 8
NAV_SCALE = 10**NAV_DECIMAL_PLACES
INITIAL_NAV_PER_UNIT = Decimal(NAV_SCALE).scaleb(-NAV_DECIMAL_PLACES)  # 1.00000000


def nav_per_unit(net_assets_minor: int, units_micro: int, currency: str) -> Decimal:
    """Net assets (minor units of `currency`) per unit, to 8 decimal places, rounded half-even.

    Raises `InvariantViolation` if `units_micro` is not positive: a class without units has no
    NAV per unit (its first subscription deals at `INITIAL_NAV_PER_UNIT`).
    """
    ensure(units_micro > 0, f"nav_per_unit: units outstanding must be positive, not {units_micro}")
    scaled = _divide_half_even(net_assets_minor * _scale_factor(currency), units_micro)
    return Decimal(scaled).scaleb(-NAV_DECIMAL_PLACES)


def units_for_amount(amount_minor: int, nav: Decimal, currency: str) -> int:
    """Micro-units that `amount_minor` buys at `nav`, rounded DOWN.

    Raises `FailedPrecondition` (`NAV_NOT_POSITIVE`) when the NAV per unit is zero or negative:
    units cannot be sold at a price of nothing.
    """
    nav_scaled = scaled_nav(nav)
    if nav_scaled <= 0:
        raise FailedPrecondition("NAV_NOT_POSITIVE",
                                 f"cannot deal at a NAV per unit of {nav}; the class has no value")
    return amount_minor * _scale_factor(currency) // nav_scaled


def amount_for_units(units_micro: int, nav: Decimal, currency: str) -> int:
    """Minor units that `units_micro` units are worth at `nav`, rounded DOWN (toward -inf)."""
    return units_micro * scaled_nav(nav) // _scale_factor(currency)


def scaled_nav(nav: Decimal) -> int:
    """NAV per unit as an integer count of 10^-8; refuses (as a bug) anything finer."""
    scaled = nav.scaleb(NAV_DECIMAL_PLACES)
    ensure(scaled == scaled.to_integral_value(),
           f"NAV per unit {nav} has more than {NAV_DECIMAL_PLACES} decimal places")
    return int(scaled)


def format_units(units_micro: int) -> str:
    """Human form of a unit count, e.g. `485146.144648`."""
    return f"{Decimal(units_micro).scaleb(-UNIT_DECIMAL_PLACES):.{UNIT_DECIMAL_PLACES}f}"


def _scale_factor(currency: str) -> int:
    # NAV = (minor / 10^e) / (micro / 10^6); scaled by 10^8 that is minor * 10^(14-e) / micro.
    exponent = UNIT_DECIMAL_PLACES + NAV_DECIMAL_PLACES - currencies.exponent(currency)
    return int(10**exponent)


def _divide_half_even(numerator: int, denominator: int) -> int:
    ensure(denominator > 0, "_divide_half_even: denominator must be positive")
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


@dataclass(frozen=True, slots=True)
class UnitClass:
    """A class of units in a pool. Seniority 0 is the first-loss (junior) class: losses reach a
    class only once every class of lower seniority has lost all its capital.

    `income_weight_bps` scales the class's capital when period income is shared between classes
    (10,000 = at par; 12,000 gives a junior class 1.2 times the income per pound of capital, as
    its reward for standing first in line for losses).
    """

    class_id: str
    seniority: int
    income_weight_bps: int = 10_000


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """One participant's holding in one unit class; ordered by participant, then class."""

    participant_id: str
    class_id: str


@dataclass(frozen=True, slots=True)
class Holding:
    """Units held and the capital account (minor units) of one position at a point in time."""

    position: Position
    units_micro: int
    capital_minor: int
