"""Repayment schedules: instalments with due dates, principal, interest and fees in pence.

Interest of a period is `outstanding x annual rate x year fraction(period start, period end)`
under the loan's day count, computed exactly (as a `Fraction`) and rounded once to pence with the
loan's rounding mode. For 30/360 and monthly periods the fraction is exactly 1/12.

    EQUAL_INSTALMENTS     instalment = annuity(outstanding, periodic rate, periods) rounded to
                          pence, where periodic rate = annual rate / periods a year; principal
                          = instalment - interest (never below zero, never above what is
                          outstanding)
    EQUAL_PRINCIPAL       principal / periods each, the remainder spread a penny at a time over
                          the first instalments (largest remainder), interest on top
    INTEREST_ONLY_BULLET  interest each period, all principal with the last instalment

A grace of N instalments makes the first N interest-only; the rest amortise the whole principal.
The LAST instalment takes whatever principal is left, so principal parts always sum exactly to
the amount lent (asserted). The arrangement fee, if any, is due with the first instalment.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, localcontext
from fractions import Fraction

from bank.domain.errors import invalid
from bank.domain.invariants import ensure
from bank.domain.lending.daycount import year_fraction
from bank.domain.lending.product import (
    RATE_CONTEXT,
    Amortisation,
    Frequency,
    LoanTerms,
    RoundingMode,
)
from bank.domain.limits import AMOUNT_MINOR_MAX
from bank.domain.money import round_to_minor

FIRST_PERIOD_DAYS_MAX = 366


@dataclass(frozen=True, slots=True)
class Instalment:
    """One line of a schedule. Interest accrues over [period_start, period_end]; the line is due
    on `due_date` (the period end, unless a forbearance deferred it)."""

    number: int
    due_date: date
    period_start: date
    period_end: date
    principal_minor: int
    interest_minor: int
    fee_minor: int = 0

    @property
    def total_minor(self) -> int:
        """The instalment amount: principal plus interest (fees are listed apart)."""
        return self.principal_minor + self.interest_minor

    @property
    def period_days(self) -> int:
        return (self.period_end - self.period_start).days


@dataclass(frozen=True, slots=True)
class RepaymentSchedule:
    """A schedule version: the instalments repaying `principal_minor` lent on `starts_on`."""

    principal_minor: int
    starts_on: date
    instalments: tuple[Instalment, ...]

    @property
    def total_interest_minor(self) -> int:
        return sum(line.interest_minor for line in self.instalments)

    @property
    def total_principal_minor(self) -> int:
        return sum(line.principal_minor for line in self.instalments)


def round_fraction(value: Fraction, mode: RoundingMode) -> int:
    """Round an exact `Fraction` to an integer with `mode` (the one rounding step for money)."""
    floor = value.numerator // value.denominator
    rest = value - floor
    if rest == 0:
        return floor
    ceiling = floor + 1
    toward_zero, away_from_zero = (floor, ceiling) if value > 0 else (ceiling, floor)
    if mode is RoundingMode.FLOOR:
        return floor
    if mode is RoundingMode.CEILING:
        return ceiling
    if mode is RoundingMode.DOWN:
        return toward_zero
    if mode is RoundingMode.UP:
        return away_from_zero
    half = Fraction(1, 2)
    if rest != half:
        return floor if rest < half else ceiling
    if mode is RoundingMode.HALF_UP:
        return away_from_zero
    if mode is RoundingMode.HALF_DOWN:
        return toward_zero
    return floor if floor % 2 == 0 else ceiling


def add_months(anchor: date, months: int) -> date:
    """`anchor` moved by `months`, keeping its day of month where the month has it (31 Jan + 1
    month = 28/29 Feb; + 2 months = 31 Mar)."""
    month_index = anchor.month - 1 + months
    year, month = anchor.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(anchor.day, calendar.monthrange(year, month)[1]))


def step_date(frequency: Frequency, anchor: date, periods: int) -> date:
    """The date `periods` repayment periods after `anchor`."""
    if frequency.step_months:
        return add_months(anchor, frequency.step_months * periods)
    return anchor + timedelta(days=frequency.step_days * periods)


def due_dates(frequency: Frequency, first_due_on: date, count: int) -> list[date]:
    """`count` due dates from `first_due_on`, each anchored on it (no drift of month ends)."""
    return [step_date(frequency, first_due_on, k) for k in range(count)]


def period_interest(terms: LoanTerms, outstanding_minor: int, start: date, end: date) -> int:
    """Interest on `outstanding_minor` over [start, end]: exact, rounded once with the loan's
    mode."""
    exact = (outstanding_minor * Fraction(terms.annual_rate_percent) / 100
             * year_fraction(terms.day_count, start, end))
    return round_fraction(exact, terms.rounding)


def annuity_instalment(terms: LoanTerms, principal_minor: int, periods: int) -> int:
    """The equal instalment repaying `principal_minor` over `periods` at the periodic rate:
    P r / (1 - (1 + r)^-n), or P / n at a zero rate; rounded once with the loan's mode."""
    ensure(periods >= 1, "an annuity needs at least one period")
    with localcontext(RATE_CONTEXT):
        rate = terms.periodic_rate
        if rate == 0:
            exact = Decimal(principal_minor) / periods
        else:
            exact = principal_minor * rate / (1 - (1 + rate) ** -periods)
        return round_to_minor(exact, terms.rounding.decimal_mode)


def generate_schedule(
    terms: LoanTerms,
    principal_minor: int,
    disbursed_on: date,
    first_due_on: date | None = None,
    *,
    first_number: int = 1,
) -> RepaymentSchedule:
    """The schedule repaying `principal_minor` lent on `disbursed_on` under `terms`.

    Due dates follow `first_due_on` at the terms' frequency, anchored on it; without it they
    follow `disbursed_on`, anchored on that (the first falls one period after it).

    Raises `InvalidArgument` naming `principal_minor` (not within 1 and `AMOUNT_MINOR_MAX`) or
    `first_due_on` (not after `disbursed_on`, or more than `FIRST_PERIOD_DAYS_MAX` days after).
    """
    if type(principal_minor) is not int or not 1 <= principal_minor <= AMOUNT_MINOR_MAX:
        raise invalid("principal_minor", f"must be an integer within 1 and {AMOUNT_MINOR_MAX}")
    if first_due_on is None:
        # anchored on the disbursement date: lent on 31 Jan, due 29 Feb, 31 Mar, 30 Apr, ...
        dues = [step_date(terms.frequency, disbursed_on, k + 1)
                for k in range(terms.instalments)]
    elif disbursed_on < first_due_on <= disbursed_on + timedelta(FIRST_PERIOD_DAYS_MAX):
        dues = due_dates(terms.frequency, first_due_on, terms.instalments)
    else:
        raise invalid("first_due_on", f"must be after the disbursement date and at most "
                      f"{FIRST_PERIOD_DAYS_MAX} days after it")
    starts = [disbursed_on, *dues[:-1]]
    principals = _PrincipalRule(terms, principal_minor, len(dues))
    lines = []
    outstanding = principal_minor
    for k, (start, end) in enumerate(zip(starts, dues, strict=True)):
        interest = period_interest(terms, outstanding, start, end)
        principal = principals(k, outstanding, interest)
        ensure(0 <= principal <= outstanding, "a principal part must be within the outstanding")
        lines.append(Instalment(first_number + k, end, start, end, principal, interest,
                                terms.arrangement_fee_minor if k == 0 else 0))
        outstanding -= principal
    schedule = RepaymentSchedule(principal_minor, disbursed_on, tuple(lines))
    ensure(outstanding == 0 and schedule.total_principal_minor == principal_minor,
           "principal parts must sum exactly to the amount lent")
    ensure(all(line.interest_minor >= 0 for line in lines), "interest must not be negative")
    return schedule


class _PrincipalRule:
    """The principal part of line k, given what is outstanding and the line's interest."""

    def __init__(self, terms: LoanTerms, principal_minor: int, periods: int) -> None:
        self.terms = terms
        self.periods = periods
        self.grace = terms.grace_principal_instalments
        amortising = periods - self.grace
        self.instalment = (annuity_instalment(terms, principal_minor, amortising)
                           if terms.amortisation is Amortisation.EQUAL_INSTALMENTS
                           and amortising > 0 else 0)
        share, remainder = divmod(principal_minor, max(amortising, 1))
        self.shares = [share + (1 if j < remainder else 0) for j in range(max(amortising, 1))]

    def __call__(self, k: int, outstanding: int, interest: int) -> int:
        if k == self.periods - 1:
            return outstanding  # the last line absorbs every rounding difference
        if k < self.grace:
            return 0
        method = self.terms.amortisation
        if method is Amortisation.EQUAL_INSTALMENTS:
            return max(0, min(self.instalment - interest, outstanding))
        if method is Amortisation.EQUAL_PRINCIPAL:
            return min(self.shares[k - self.grace], outstanding)
        return 0
