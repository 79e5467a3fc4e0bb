"""Loan products and the terms frozen onto a loan at approval.

Conventions (amortisation, frequency, rate, day count, rounding, allocation order, fees, grace,
arrears tolerance, provision matrix) are data: `LoanTerms` is validated on construction and
stored as a plain JSON dict (`to_json`/`terms_from_json` round-trip exactly), so a loan keeps
the conventions it was approved with whatever the product later becomes.

Units: money is an `int` of minor units (pence); the annual nominal rate is a `Decimal` percent
with at most `RATE_DECIMAL_PLACES_MAX` places (`Decimal("9.4822")` is 9.4822 % a year), kept
in JSON as the string `"9.4822"`; provision rates are basis points (10,000 = 100 %).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from decimal import (
    ROUND_CEILING,
    ROUND_DOWN,
    ROUND_FLOOR,
    ROUND_HALF_DOWN,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    ROUND_UP,
    Context,
    Decimal,
    localcontext,
)
from typing import Any

from bank.domain import currency as currencies
from bank.domain.errors import invalid
from bank.domain.lending.daycount import DayCount, parse_day_count
from bank.domain.limits import AMOUNT_MINOR_MAX

INSTALMENTS_MAX = 1_200  # 100 years monthly, 23 years weekly
RATE_PERCENT_MAX = Decimal(100)
RATE_DECIMAL_PLACES_MAX = 6
BASIS_POINTS_WHOLE = 10_000
LATE_FEE_DAYS_MAX = 3_660
PRODUCT_CODE_LENGTH_MAX = 64
# Rate arithmetic (the annuity factor) runs at 50 significant digits, then rounds once to pence.
RATE_CONTEXT = Context(prec=50)
_RATE_PATTERN = re.compile(rf"\d{{1,3}}(\.\d{{1,{RATE_DECIMAL_PLACES_MAX}}})?")


class Amortisation(enum.StrEnum):
    EQUAL_INSTALMENTS = "EQUAL_INSTALMENTS"  # annuity: the same total each period
    EQUAL_PRINCIPAL = "EQUAL_PRINCIPAL"  # the same principal each period, interest on top
    INTEREST_ONLY_BULLET = "INTEREST_ONLY_BULLET"  # interest each period, principal at the end


class Frequency(enum.StrEnum):
    WEEKLY = "WEEKLY"
    FORTNIGHTLY = "FORTNIGHTLY"
    MONTHLY = "MONTHLY"
    QUARTERLY = "QUARTERLY"

    @property
    def periods_per_year(self) -> int:
        return {"WEEKLY": 52, "FORTNIGHTLY": 26, "MONTHLY": 12, "QUARTERLY": 4}[self.value]

    @property
    def step_months(self) -> int:
        """Months between due dates; 0 for the day-based frequencies."""
        return {"MONTHLY": 1, "QUARTERLY": 3}.get(self.value, 0)

    @property
    def step_days(self) -> int:
        """Days between due dates; 0 for the month-based frequencies."""
        return {"WEEKLY": 7, "FORTNIGHTLY": 14}.get(self.value, 0)


class RoundingMode(enum.StrEnum):
    HALF_EVEN = "HALF_EVEN"
    HALF_UP = "HALF_UP"
    HALF_DOWN = "HALF_DOWN"
    UP = "UP"  # away from zero
    DOWN = "DOWN"  # towards zero
    CEILING = "CEILING"
    FLOOR = "FLOOR"

    @property
    def decimal_mode(self) -> str:
        """The `decimal` module's constant for this mode."""
        return {
            "HALF_EVEN": ROUND_HALF_EVEN, "HALF_UP": ROUND_HALF_UP,
            "HALF_DOWN": ROUND_HALF_DOWN, "UP": ROUND_UP, "DOWN": ROUND_DOWN,
            "CEILING": ROUND_CEILING, "FLOOR": ROUND_FLOOR,
        }[self.value]


class Component(enum.StrEnum):
    """What an instalment is made of; repayments are allocated component by component."""

    PENALTY = "PENALTY"
    FEE = "FEE"
    INTEREST = "INTEREST"
    PRINCIPAL = "PRINCIPAL"


class ArrearsBucket(enum.StrEnum):
    CURRENT = "CURRENT"  # 0 days past due
    DPD_1_30 = "1-30"
    DPD_31_60 = "31-60"
    DPD_61_90 = "61-90"
    DPD_OVER_90 = "90+"  # 91 days and more


DEFAULT_ALLOCATION_ORDER = (Component.PENALTY, Component.FEE, Component.INTEREST,
                            Component.PRINCIPAL)


@dataclass(frozen=True, slots=True)
class LateFeeRule:
    """A fixed penalty of `amount_minor`, charged on an instalment still overdue (beyond the
    arrears tolerance) `days_overdue` days after its due date, then again every
    `repeat_every_days` days while it stays overdue (0 = once only). Each charge is cut down so
    that penalties on one instalment never exceed `per_instalment_cap_minor` and penalties on the
    whole loan never exceed `per_loan_cap_minor`.
    """

    amount_minor: int
    days_overdue: int
    per_instalment_cap_minor: int
    per_loan_cap_minor: int
    repeat_every_days: int = 0


@dataclass(frozen=True, slots=True)
class ProvisionMatrix:
    """Required provision per arrears bucket, in basis points of the gross exposure."""

    current_bps: int
    dpd_1_30_bps: int
    dpd_31_60_bps: int
    dpd_61_90_bps: int
    dpd_over_90_bps: int

    def rate_bps(self, bucket: ArrearsBucket) -> int:
        return {
            ArrearsBucket.CURRENT: self.current_bps,
            ArrearsBucket.DPD_1_30: self.dpd_1_30_bps,
            ArrearsBucket.DPD_31_60: self.dpd_31_60_bps,
            ArrearsBucket.DPD_61_90: self.dpd_61_90_bps,
            ArrearsBucket.DPD_OVER_90: self.dpd_over_90_bps,
        }[bucket]


@dataclass(frozen=True, slots=True)
class LoanTerms:
    """Everything that decides a loan's schedule and servicing, validated on construction.

    Raises `InvalidArgument` naming the first broken field (paths as in `to_json`, e.g.
    `late_fee.per_loan_cap_minor`).
    """

    amortisation: Amortisation
    frequency: Frequency
    annual_rate_percent: Decimal
    instalments: int
    provision_matrix: ProvisionMatrix
    day_count: DayCount = DayCount.ACT_365F
    rounding: RoundingMode = RoundingMode.HALF_EVEN
    allocation_order: tuple[Component, ...] = DEFAULT_ALLOCATION_ORDER
    currency: str = "GBP"
    arrangement_fee_minor: int = 0
    late_fee: LateFeeRule | None = None
    grace_principal_instalments: int = 0
    arrears_tolerance_minor: int = 0

    def __post_init__(self) -> None:
        _check_terms(self)

    @property
    def periodic_rate(self) -> Decimal:
        """The annual nominal rate as a fraction, divided by the periods in a year (to
        `RATE_CONTEXT` precision: 50 significant digits)."""
        with localcontext(RATE_CONTEXT):
            return self.annual_rate_percent / 100 / self.frequency.periods_per_year

    def to_json(self) -> dict[str, Any]:
        """A plain JSON dict; `terms_from_json(terms.to_json()) == terms`."""
        return {
            "amortisation": self.amortisation.value,
            "frequency": self.frequency.value,
            "annual_rate_percent": str(self.annual_rate_percent),
            "instalments": self.instalments,
            "provision_matrix": _matrix_json(self.provision_matrix),
            "day_count": self.day_count.value,
            "rounding": self.rounding.value,
            "allocation_order": [c.value for c in self.allocation_order],
            "currency": self.currency,
            "arrangement_fee_minor": self.arrangement_fee_minor,
            "late_fee": None if self.late_fee is None else _late_fee_json(self.late_fee),
            "grace_principal_instalments": self.grace_principal_instalments,
            "arrears_tolerance_minor": self.arrears_tolerance_minor,
        }


@dataclass(frozen=True, slots=True)
class LoanProduct:
    """A product on the shelf: default terms and the principal range it lends."""

    code: str
    name: str
    terms: LoanTerms
    principal_minor_min: int
    principal_minor_max: int
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not 0 < len(self.code) <= PRODUCT_CODE_LENGTH_MAX:
            raise invalid("code", f"must be 1 to {PRODUCT_CODE_LENGTH_MAX} characters")
        _check_amount(self.principal_minor_min, "principal_minor_min", minimum=1)
        _check_amount(self.principal_minor_max, "principal_minor_max", minimum=1)
        if self.principal_minor_max < self.principal_minor_min:
            raise invalid("principal_minor_max", "must be at least principal_minor_min")

    def check_principal(self, principal_minor: int, field_path: str = "principal_minor") -> int:
        """`principal_minor` if the product lends it; else `InvalidArgument` naming the field."""
        if not self.principal_minor_min <= principal_minor <= self.principal_minor_max:
            raise invalid(field_path, f"must be within {self.principal_minor_min} and "
                          f"{self.principal_minor_max} minor units for product {self.code}",
                          reason="PRINCIPAL_OUT_OF_RANGE")
        return principal_minor


def _check_amount(value: object, field_path: str, minimum: int = 0) -> int:
    if type(value) is not int:
        raise invalid(field_path, "must be an integer count of minor units")
    if not minimum <= value <= AMOUNT_MINOR_MAX:
        raise invalid(field_path, f"must be within {minimum} and {AMOUNT_MINOR_MAX}")
    return value


def _check_count(value: object, field_path: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise invalid(field_path, f"must be an integer within {low} and {high}")
    return value


def _check_terms(terms: LoanTerms) -> None:
    for name, kind in (("amortisation", Amortisation), ("frequency", Frequency),
                       ("day_count", DayCount), ("rounding", RoundingMode)):
        if not isinstance(getattr(terms, name), kind):
            raise invalid(name, f"must be a {kind.__name__}")
    rate = terms.annual_rate_percent
    if not isinstance(rate, Decimal) or not _RATE_PATTERN.fullmatch(str(rate)):
        raise invalid("annual_rate_percent", "must be a decimal percent such as 9.4822, "
                      f"with at most {RATE_DECIMAL_PLACES_MAX} decimal places")
    if rate > RATE_PERCENT_MAX:
        raise invalid("annual_rate_percent", f"must be at most {RATE_PERCENT_MAX}")
    _check_count(terms.instalments, "instalments", 1, INSTALMENTS_MAX)
    _check_matrix(terms.provision_matrix)
    order = terms.allocation_order
    if (not isinstance(order, tuple) or len(order) != len(Component)
            or set(order) != set(Component)):
        raise invalid("allocation_order",
                      "must name each of PENALTY, FEE, INTEREST, PRINCIPAL exactly once")
    currencies.check_currency(terms.currency, "currency")
    _check_amount(terms.arrangement_fee_minor, "arrangement_fee_minor")
    if terms.late_fee is not None:
        _check_late_fee(terms.late_fee)
    if terms.amortisation is Amortisation.INTEREST_ONLY_BULLET:
        grace_max = terms.instalments
    else:
        grace_max = terms.instalments - 1
    _check_count(terms.grace_principal_instalments, "grace_principal_instalments", 0, grace_max)
    _check_amount(terms.arrears_tolerance_minor, "arrears_tolerance_minor")


def _check_late_fee(rule: LateFeeRule) -> None:
    _check_amount(rule.amount_minor, "late_fee.amount_minor", minimum=1)
    _check_count(rule.days_overdue, "late_fee.days_overdue", 1, LATE_FEE_DAYS_MAX)
    _check_amount(rule.per_instalment_cap_minor, "late_fee.per_instalment_cap_minor")
    _check_amount(rule.per_loan_cap_minor, "late_fee.per_loan_cap_minor")
    _check_count(rule.repeat_every_days, "late_fee.repeat_every_days", 0, LATE_FEE_DAYS_MAX)


_MATRIX_FIELDS = ("current_bps", "dpd_1_30_bps", "dpd_31_60_bps", "dpd_61_90_bps",
                  "dpd_over_90_bps")


def _check_matrix(matrix: ProvisionMatrix) -> None:
    if not isinstance(matrix, ProvisionMatrix):
        raise invalid("provision_matrix", "must be a ProvisionMatrix")
    previous = 0
    for name in _MATRIX_FIELDS:
        value = _check_count(getattr(matrix, name), f"provision_matrix.{name}", 0,
                             BASIS_POINTS_WHOLE)
        if value < previous:
            raise invalid(f"provision_matrix.{name}",
                          "must not be lower than the rate of a less overdue bucket")
        previous = value


def _matrix_json(matrix: ProvisionMatrix) -> dict[str, Any]:
    return {name: getattr(matrix, name) for name in _MATRIX_FIELDS}


_LATE_FEE_FIELDS = ("amount_minor", "days_overdue", "per_instalment_cap_minor",
                    "per_loan_cap_minor", "repeat_every_days")


def _late_fee_json(rule: LateFeeRule) -> dict[str, Any]:
    return {name: getattr(rule, name) for name in _LATE_FEE_FIELDS}


def _fields(data: object, field_path: str, names: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise invalid(field_path or "terms", "must be a JSON object")
    prefix = f"{field_path}." if field_path else ""
    for key in data:
        if key not in names:
            raise invalid(f"{prefix}{key}", "is not a known field")
    for name in names:
        if name not in data:
            raise invalid(f"{prefix}{name}", "is required")
    return data


def _enum(kind: type[enum.StrEnum], value: object, field_path: str) -> Any:
    if isinstance(value, str) and value in kind.__members__.values():
        return kind(value)
    raise invalid(field_path, "must be one of " + ", ".join(kind))


_TERMS_FIELDS = ("amortisation", "frequency", "annual_rate_percent", "instalments",
                 "provision_matrix", "day_count", "rounding", "allocation_order", "currency",
                 "arrangement_fee_minor", "late_fee", "grace_principal_instalments",
                 "arrears_tolerance_minor")


def terms_from_json(data: object) -> LoanTerms:
    """`LoanTerms` from a `to_json()` dict: every field required, none unknown.

    Raises `InvalidArgument` naming the first bad field.
    """
    raw = _fields(data, "", _TERMS_FIELDS)
    rate = raw["annual_rate_percent"]
    if not isinstance(rate, str) or not _RATE_PATTERN.fullmatch(rate):
        raise invalid("annual_rate_percent", "must be a decimal percent string such as "
                      f"\"9.4822\", with at most {RATE_DECIMAL_PLACES_MAX} decimal places")
    order = raw["allocation_order"]
    if not isinstance(order, list):
        raise invalid("allocation_order", "must be a list")
    late = raw["late_fee"]
    if late is not None:
        late_raw = _fields(late, "late_fee", _LATE_FEE_FIELDS)
        late = LateFeeRule(**{n: late_raw[n] for n in _LATE_FEE_FIELDS})
    matrix_raw = _fields(raw["provision_matrix"], "provision_matrix", _MATRIX_FIELDS)
    return LoanTerms(
        amortisation=_enum(Amortisation, raw["amortisation"], "amortisation"),
        frequency=_enum(Frequency, raw["frequency"], "frequency"),
        annual_rate_percent=Decimal(rate),
        instalments=raw["instalments"],
        provision_matrix=ProvisionMatrix(**{n: matrix_raw[n] for n in _MATRIX_FIELDS}),
        day_count=parse_day_count(raw["day_count"], "day_count"),
        rounding=_enum(RoundingMode, raw["rounding"], "rounding"),
        allocation_order=tuple(_enum(Component, c, f"allocation_order[{i}]")
                               for i, c in enumerate(order)),
        currency=raw["currency"],
        arrangement_fee_minor=raw["arrangement_fee_minor"],
        late_fee=late,
        grace_principal_instalments=raw["grace_principal_instalments"],
        arrears_tolerance_minor=raw["arrears_tolerance_minor"],
    )
