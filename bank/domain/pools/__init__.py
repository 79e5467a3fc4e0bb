"""Cross-council lending pools: pure arithmetic, standard library only.

Public surface (the modules behind it are private in spirit; import from here):

- `split`: `apportion` (largest remainder), `FundingSplit` (basis points summing to 10,000),
  `split_amount`;
- `units`: micro-units, NAV per unit (8 dp), the dealing roundings, `UnitClass`, `Position`;
- `pool`: `PoolAgreement` and `PoolRegister`, the unitised register with its asset side;
- `waterfall`: the period-close allocation rules and `PositionStatement`.
"""

from bank.domain.pools.pool import (
    ClassValuation,
    Deal,
    LoanShare,
    PeriodClose,
    PoolAgreement,
    PoolRegister,
    Valuation,
)
from bank.domain.pools.split import BPS_TOTAL, FundingSplit, apportion, split_amount
from bank.domain.pools.units import (
    INITIAL_NAV_PER_UNIT,
    MICRO_UNITS_PER_UNIT,
    NAV_DECIMAL_PLACES,
    Holding,
    Position,
    UnitClass,
    amount_for_units,
    format_units,
    nav_per_unit,
    units_for_amount,
)
from bank.domain.pools.waterfall import (
    PositionStatement,
    allocate_income,
    allocate_loss,
    allocate_recovery,
    servicing_fee_minor,
)

__all__ = [
    "BPS_TOTAL",
    "INITIAL_NAV_PER_UNIT",
    "MICRO_UNITS_PER_UNIT",
    "NAV_DECIMAL_PLACES",
    "ClassValuation",
    "Deal",
    "FundingSplit",
    "Holding",
    "LoanShare",
    "PeriodClose",
    "PoolAgreement",
    "PoolRegister",
    "Position",
    "PositionStatement",
    "UnitClass",
    "Valuation",
    "allocate_income",
    "allocate_loss",
    "allocate_recovery",
    "amount_for_units",
    "apportion",
    "format_units",
    "nav_per_unit",
    "servicing_fee_minor",
    "split_amount",
    "units_for_amount",
]
