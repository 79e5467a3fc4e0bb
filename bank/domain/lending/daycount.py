"""Day-count conventions: the exact year fraction between two dates.

Fractions are `fractions.Fraction`, never floats, so 30 days under 30/360 is exactly 1/12.

    ACT/365F   actual days / 365 (fixed, leap years included); the default
    30/360     30/360 bond basis as defined by ISDA 2006 section 4.16(f):
               D1 = 31 becomes 30; then D2 = 31 becomes 30 if D1 is 30 (after that change);
               days = 360 (Y2 - Y1) + 30 (M2 - M1) + (D2 - D1)
    ACT/360    actual days / 360
"""

from __future__ import annotations

import enum
from datetime import date
from fractions import Fraction

from bank.domain.errors import invalid


class DayCount(enum.StrEnum):
    ACT_365F = "ACT/365F"
    THIRTY_360 = "30/360"
    ACT_360 = "ACT/360"


_DENOMINATORS = {DayCount.ACT_365F: 365, DayCount.THIRTY_360: 360, DayCount.ACT_360: 360}


def days_between(convention: DayCount, start: date, end: date) -> int:
    """Days from `start` to `end` under `convention` (negative if `end` is before `start`)."""
    if convention is not DayCount.THIRTY_360:
        return (end - start).days
    d1, d2 = start.day, end.day
    if d1 == 31:
        d1 = 30
    if d2 == 31 and d1 == 30:
        d2 = 30
    return 360 * (end.year - start.year) + 30 * (end.month - start.month) + (d2 - d1)


def year_fraction(convention: DayCount, start: date, end: date) -> Fraction:
    """The exact year fraction from `start` to `end`.

    Raises `InvalidArgument` (field `period`) if `end` is before `start`.
    """
    if end < start:
        raise invalid("period", f"end {end} is before start {start}")
    return Fraction(days_between(convention, start, end), _DENOMINATORS[convention])


def parse_day_count(text: object, field_path: str) -> DayCount:
    """`DayCount` from its name (`"ACT/365F"`, `"30/360"`, `"ACT/360"`).

    Raises `InvalidArgument` naming `field_path` for anything else.
    """
    for convention in DayCount:
        if text == convention.value:
            return convention
    names = ", ".join(c.value for c in DayCount)
    raise invalid(field_path, f"must be one of {names}")
