"""The period-close waterfall: who gets which penny of a period's income, fees and losses.

At a period close, in this order (`PoolRegister.close_period` drives it):

1. Income (interest earned, recoveries beyond what was ever lost) net of the servicing fee is
   shared between the unit classes by capital (each class's capital times its
   `income_weight_bps`), then within a class pro rata to units held during the period. The fee
   is split by the same key, and each position's income line is its net plus its fee.
2. So the servicing fee comes out first, before any loss reaches the first-loss class.
3. Losses (new provisions, charge-offs beyond the provision held), in the order recorded, fall on
   the first-loss class first, up to its capital, then on the next class, and so on; the most
   senior class holding units bears whatever is left. Within a class, pro rata to units.
4. Provision releases and recoveries go back to whoever bore that loan's loss, pro rata to what
   each bore and has not yet had back, and never more than that.

Units do not change between the first income or loss of a period and its close (dealing happens
only at valuation points), so "units held during the period" is simply the units held at close.
Every step is a largest-remainder `apportion`, so the parts always sum exactly to the whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from bank.domain.errors import FailedPrecondition
from bank.domain.invariants import ensure
from bank.domain.pools.split import BPS_TOTAL, apportion
from bank.domain.pools.units import Holding, Position, UnitClass


def servicing_fee_minor(base_minor: int, fee_bps_per_year: int, days: int,
                        year_days: int = 365) -> int:
    """The servicing fee for `days` on `base_minor` of capital, rounded DOWN to the minor unit.

    Rounding down favours the participants; a base of zero or less earns no fee.
    """
    ensure(fee_bps_per_year >= 0 and days >= 0 and year_days > 0,
           "servicing_fee_minor: fee, days and year length must not be negative")
    if base_minor <= 0:
        return 0
    return base_minor * fee_bps_per_year * days // (BPS_TOTAL * year_days)


def allocate_income(amount_minor: int, unit_classes: Sequence[UnitClass],
                    holdings: Sequence[Holding]) -> dict[Position, int]:
    """Share income, a fee, or their net (any sign) between unit holders: by class capital,
    then by units.

    A class's weight is its capital (floored at zero) times its income weight; if no class has
    positive capital, classes are weighted by units instead. Raises `FailedPrecondition`
    (`NO_UNITHOLDERS`) when nobody holds units and there is something to share.
    """
    if amount_minor == 0:
        return {}
    by_class = _holders_by_class(unit_classes, holdings)
    if not by_class:
        raise FailedPrecondition("NO_UNITHOLDERS", "the pool has no unit holders to share with")
    classes = [unit_class for unit_class in unit_classes if unit_class.class_id in by_class]
    capital_weights = [
        max(0, sum(h.capital_minor for h in by_class[c.class_id])) * c.income_weight_bps
        for c in classes
    ]
    if not any(capital_weights):
        capital_weights = [
            sum(h.units_micro for h in by_class[c.class_id]) * c.income_weight_bps
            for c in classes
        ]
    parts: dict[Position, int] = {}
    class_parts = apportion(amount_minor, capital_weights, "unit_classes")
    for unit_class, class_part in zip(classes, class_parts, strict=True):
        parts.update(_pro_rata_to_units(class_part, by_class[unit_class.class_id]))
    ensure(sum(parts.values()) == amount_minor, "allocate_income: parts do not sum to the whole")
    return parts


def allocate_loss(amount_minor: int, unit_classes: Sequence[UnitClass],
                  holdings: Sequence[Holding]) -> dict[Position, int]:
    """Share a loss (a positive amount) junior class first, each up to its capital.

    The most senior class that holds units bears whatever the classes below could not.
    Raises `FailedPrecondition` (`NO_UNITHOLDERS`) when nobody holds units.
    """
    ensure(amount_minor >= 0, "allocate_loss: a loss is a positive amount")
    if amount_minor == 0:
        return {}
    by_class = _holders_by_class(unit_classes, holdings)
    if not by_class:
        raise FailedPrecondition("NO_UNITHOLDERS", "the pool has no unit holders to bear a loss")
    ordered = sorted((c for c in unit_classes if c.class_id in by_class),
                     key=lambda c: (c.seniority, c.class_id))
    parts: dict[Position, int] = {}
    remaining = amount_minor
    for index, unit_class in enumerate(ordered):
        class_holders = by_class[unit_class.class_id]
        capacity = max(0, sum(h.capital_minor for h in class_holders))
        is_last = index == len(ordered) - 1
        borne = remaining if is_last else min(remaining, capacity)
        parts.update(_pro_rata_to_units(borne, class_holders))
        remaining -= borne
    ensure(remaining == 0 and sum(parts.values()) == amount_minor,
           "allocate_loss: parts do not sum to the loss")
    return parts


def allocate_recovery(amount_minor: int,
                      unrecovered_minor: Mapping[Position, int]) -> dict[Position, int]:
    """Give a recovery back to whoever bore the loss, pro rata to what each has not had back.

    Because the amount never exceeds the total unrecovered, no part exceeds its weight: nobody
    gets back more than they lost. A caller passing more is a bug (`InvariantViolation`).
    """
    weights = {p: w for p, w in sorted(unrecovered_minor.items()) if w > 0}
    ensure(0 <= amount_minor <= sum(weights.values()),
           "allocate_recovery: recovery exceeds the unrecovered loss")
    if amount_minor == 0:
        return {}
    parts = dict(zip(weights, apportion(amount_minor, list(weights.values()), "loss_borne"),
                     strict=True))
    ensure(all(parts[p] <= weights[p] for p in parts), "allocate_recovery: part exceeds loss")
    return parts


def _holders_by_class(unit_classes: Sequence[UnitClass],
                      holdings: Sequence[Holding]) -> dict[str, list[Holding]]:
    known = {c.class_id for c in unit_classes}
    by_class: dict[str, list[Holding]] = {}
    for holding in sorted(holdings, key=lambda h: h.position):
        ensure(holding.position.class_id in known,
               f"holding in unknown unit class {holding.position.class_id!r}")
        if holding.units_micro > 0:
            by_class.setdefault(holding.position.class_id, []).append(holding)
    return by_class


def _pro_rata_to_units(amount_minor: int, holders: Sequence[Holding]) -> dict[Position, int]:
    if amount_minor == 0:
        return {h.position: 0 for h in holders}
    parts = apportion(amount_minor, [h.units_micro for h in holders], "holdings")
    return {h.position: part for h, part in zip(holders, parts, strict=True)}


@dataclass(frozen=True, slots=True)
class PositionStatement:
    """One position's movements over one period; it reconciles to the penny, or it is a bug.

    opening + contributions - redemptions - distributions + income - fees - losses + recoveries
    == closing, and units: opening + issued - redeemed == closing.
    """

    position: Position
    opening_units_micro: int
    opening_capital_minor: int
    contributions_minor: int
    units_issued_micro: int
    redemptions_minor: int
    units_redeemed_micro: int
    distributions_minor: int
    income_minor: int
    fees_minor: int
    losses_minor: int
    recoveries_minor: int
    closing_units_micro: int
    closing_capital_minor: int
    closing_nav_per_unit: Decimal | None

    def __post_init__(self) -> None:
        moved = (self.opening_capital_minor + self.contributions_minor - self.redemptions_minor
                 - self.distributions_minor + self.income_minor - self.fees_minor
                 - self.losses_minor + self.recoveries_minor)
        ensure(moved == self.closing_capital_minor,
               f"statement of {self.position} does not reconcile: {moved} != "
               f"{self.closing_capital_minor}")
        ensure(self.opening_units_micro + self.units_issued_micro - self.units_redeemed_micro
               == self.closing_units_micro, f"units of {self.position} do not reconcile")
