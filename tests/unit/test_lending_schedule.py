"""Lending: day counts, loan terms and repayment schedules, exact to the penny."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

import numpy_financial as npf
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bank.domain.errors import InvalidArgument
from bank.domain.lending.daycount import DayCount, days_between, year_fraction
from bank.domain.lending.product import (
    Amortisation,
    Component,
    Frequency,
    LateFeeRule,
    LoanProduct,
    LoanTerms,
    ProvisionMatrix,
    RoundingMode,
    terms_from_json,
)
from bank.domain.lending.schedule import (
    add_months,
    annuity_instalment,
    generate_schedule,
    round_fraction,
)

MATRIX = ProvisionMatrix(100, 500, 2_000, 5_000, 10_000)
BOUNDED = settings(max_examples=150, deadline=None)


def terms(**changes: object) -> LoanTerms:
    fields: dict[str, object] = {
        "amortisation": Amortisation.EQUAL_INSTALMENTS,
        "frequency": Frequency.MONTHLY,
        "annual_rate_percent": Decimal("9.4822"),
        "instalments": 6,
        "provision_matrix": MATRIX,
        "day_count": DayCount.THIRTY_360,
    }
    fields.update(changes)
    return LoanTerms(**fields)  # type: ignore[arg-type]


def lines(schedule):
    return [(i.principal_minor, i.interest_minor, i.total_minor) for i in schedule.instalments]


# --- day counts ------------------------------------------------------------------------------


@given(start=st.dates(date(2000, 1, 1), date(2040, 12, 31)), months=st.integers(1, 24))
@BOUNDED
def test_thirty_360_makes_whole_months_between_days_up_to_the_28th_exact_twelfths(start, months):
    start = start.replace(day=min(start.day, 28))
    end = add_months(start, months)
    assert year_fraction(DayCount.THIRTY_360, start, end) == Fraction(months, 12)


def test_thirty_360_does_not_adjust_the_end_of_february_under_the_bond_basis():
    assert year_fraction(DayCount.THIRTY_360, date(2024, 1, 31), date(2024, 2, 29)) == Fraction(
        29, 360)


@pytest.mark.parametrize(
    ("start", "end", "days"),
    [
        (date(2024, 1, 31), date(2024, 3, 31), 60),  # D1 31 -> 30, then D2 31 -> 30
        (date(2024, 1, 30), date(2024, 3, 31), 60),
        (date(2024, 1, 29), date(2024, 3, 31), 62),  # D1 < 30: D2 stays 31 (bond basis)
        (date(2024, 2, 29), date(2024, 3, 31), 32),  # end of February is not adjusted
        (date(2024, 1, 1), date(2025, 1, 1), 360),
    ],
)
def test_thirty_360_follows_the_isda_bond_basis(start, end, days):
    assert days_between(DayCount.THIRTY_360, start, end) == days


def test_actual_conventions_count_calendar_days_over_their_fixed_year():
    start, end = date(2024, 1, 1), date(2025, 1, 1)  # 366 days: a leap year
    assert year_fraction(DayCount.ACT_365F, start, end) == Fraction(366, 365)
    assert year_fraction(DayCount.ACT_360, start, end) == Fraction(366, 360)


def test_a_period_ending_before_it_starts_is_refused():
    with pytest.raises(InvalidArgument):
        year_fraction(DayCount.ACT_365F, date(2024, 2, 1), date(2024, 1, 1))


# --- rounding --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "results"),
    [  # for 2.5, 3.5, 2.4, 2.6, -2.5
        (RoundingMode.HALF_EVEN, (2, 4, 2, 3, -2)),
        (RoundingMode.HALF_UP, (3, 4, 2, 3, -3)),
        (RoundingMode.HALF_DOWN, (2, 3, 2, 3, -2)),
        (RoundingMode.UP, (3, 4, 3, 3, -3)),
        (RoundingMode.DOWN, (2, 3, 2, 2, -2)),
        (RoundingMode.CEILING, (3, 4, 3, 3, -2)),
        (RoundingMode.FLOOR, (2, 3, 2, 2, -3)),
    ],
)
def test_each_rounding_mode_rounds_exact_fractions_as_decimal_does(mode, results):
    values = (Fraction(5, 2), Fraction(7, 2), Fraction(12, 5), Fraction(13, 5), Fraction(-5, 2))
    assert tuple(round_fraction(v, mode) for v in values) == results


# --- terms -----------------------------------------------------------------------------------


def full_terms() -> LoanTerms:
    return terms(
        rounding=RoundingMode.HALF_UP,
        allocation_order=(Component.FEE, Component.PENALTY, Component.INTEREST,
                          Component.PRINCIPAL),
        arrangement_fee_minor=2_500,
        late_fee=LateFeeRule(1_000, 5, 2_000, 5_000, repeat_every_days=30),
        grace_principal_instalments=2,
        arrears_tolerance_minor=100,
    )


def test_terms_round_trip_through_json_exactly():
    original = full_terms()
    data = original.to_json()
    assert terms_from_json(data) == original
    assert terms_from_json(data).to_json() == data
    assert data["annual_rate_percent"] == "9.4822"


@given(
    rate=st.decimals(min_value=0, max_value=100, places=4, allow_nan=False),
    method=st.sampled_from(Amortisation),
    frequency=st.sampled_from(Frequency),
    day_count=st.sampled_from(DayCount),
    rounding=st.sampled_from(RoundingMode),
    order=st.permutations(list(Component)),
    fee=st.integers(0, 10_000),
)
@BOUNDED
def test_any_valid_terms_round_trip_through_json(rate, method, frequency, day_count, rounding,
                                                  order, fee):
    original = terms(annual_rate_percent=rate, amortisation=method, frequency=frequency,
                     day_count=day_count, rounding=rounding, allocation_order=tuple(order),
                     arrangement_fee_minor=fee)
    assert terms_from_json(original.to_json()) == original
    assert terms_from_json(original.to_json()).to_json() == original.to_json()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"annual_rate_percent": Decimal("-1")}, "annual_rate_percent"),
        ({"annual_rate_percent": Decimal("100.5")}, "annual_rate_percent"),
        ({"annual_rate_percent": Decimal("1.1234567")}, "annual_rate_percent"),
        ({"annual_rate_percent": Decimal("NaN")}, "annual_rate_percent"),
        ({"instalments": 0}, "instalments"),
        ({"allocation_order": (Component.FEE, Component.FEE, Component.INTEREST,
                               Component.PRINCIPAL)}, "allocation_order"),
        ({"currency": "XXX"}, "currency"),
        ({"arrangement_fee_minor": -1}, "arrangement_fee_minor"),
        ({"late_fee": LateFeeRule(0, 5, 10, 10)}, "late_fee.amount_minor"),
        ({"late_fee": LateFeeRule(10, 0, 10, 10)}, "late_fee.days_overdue"),
        ({"grace_principal_instalments": 6}, "grace_principal_instalments"),
        ({"arrears_tolerance_minor": -5}, "arrears_tolerance_minor"),
        ({"provision_matrix": ProvisionMatrix(100, 50, 2_000, 5_000, 10_000)},
         "provision_matrix.dpd_1_30_bps"),
        ({"provision_matrix": ProvisionMatrix(0, 0, 0, 0, 10_001)},
         "provision_matrix.dpd_over_90_bps"),
    ],
)
def test_invalid_terms_are_refused_naming_the_field(changes, field):
    with pytest.raises(InvalidArgument) as caught:
        terms(**changes)
    assert caught.value.violations[0].field == field


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(annual_rate_percent="9.48e0"), "annual_rate_percent"),
        (lambda d: d.update(annual_rate_percent=9.4822), "annual_rate_percent"),
        (lambda d: d.update(frequency="DAILY"), "frequency"),
        (lambda d: d.update(day_count="30E/360"), "day_count"),
        (lambda d: d.update(allocation_order=["FEE", "INTEREST", "PRINCIPAL", "TAX"]),
         "allocation_order[3]"),
        (lambda d: d.pop("rounding"), "rounding"),
        (lambda d: d.update(colour="red"), "colour"),
        (lambda d: d["late_fee"].pop("per_loan_cap_minor"), "late_fee.per_loan_cap_minor"),
        (lambda d: d["provision_matrix"].update(current_bps="1"), "provision_matrix.current_bps"),
    ],
)
def test_bad_json_terms_are_refused_naming_the_field(mutate, field):
    data = full_terms().to_json()
    mutate(data)
    with pytest.raises(InvalidArgument) as caught:
        terms_from_json(data)
    assert caught.value.violations[0].field == field


def test_a_product_refuses_a_principal_outside_its_range():
    product = LoanProduct("sme-term", "SME term loan", terms(), 100_000, 25_000_000)
    assert product.check_principal(100_000) == 100_000
    with pytest.raises(InvalidArgument) as caught:
        product.check_principal(99_999)
    assert caught.value.reason == "PRINCIPAL_OUT_OF_RANGE"


# --- schedules: worked examples --------------------------------------------------------------


def test_fineract_case_100_pounds_at_9_4822_percent_over_6_months_is_six_times_17_13():
    schedule = generate_schedule(terms(), 10_000, date(2024, 1, 1))
    assert lines(schedule) == [
        (1634, 79, 1713),
        (1647, 66, 1713),
        (1660, 53, 1713),
        (1673, 40, 1713),
        (1686, 27, 1713),
        (1700, 13, 1713),
    ]
    assert schedule.total_principal_minor == 10_000
    assert schedule.total_interest_minor == 278
    assert [i.due_date for i in schedule.instalments] == [
        date(2024, m, 1) for m in range(2, 8)]


def test_equal_principal_spreads_the_remainder_a_penny_at_a_time_and_charges_interest_on_top():
    schedule = generate_schedule(
        terms(amortisation=Amortisation.EQUAL_PRINCIPAL, instalments=3,
              annual_rate_percent=Decimal("12")), 10_000, date(2024, 1, 15))
    assert lines(schedule) == [(3334, 100, 3434), (3333, 67, 3400), (3333, 33, 3366)]


def test_interest_only_bullet_repays_all_principal_with_the_last_instalment():
    schedule = generate_schedule(
        terms(amortisation=Amortisation.INTEREST_ONLY_BULLET, instalments=4,
              frequency=Frequency.QUARTERLY, annual_rate_percent=Decimal("8")),
        1_000_000, date(2024, 1, 1))
    assert lines(schedule) == [(0, 20_000, 20_000)] * 3 + [(1_000_000, 20_000, 1_020_000)]


def test_grace_makes_the_first_instalments_interest_only_then_amortises_the_whole_principal():
    schedule = generate_schedule(terms(grace_principal_instalments=2, instalments=8),
                                 10_000, date(2024, 1, 1))
    assert lines(schedule)[:2] == [(0, 79, 79), (0, 79, 79)]
    assert lines(schedule)[2:] == lines(generate_schedule(terms(), 10_000, date(2024, 3, 1)))


def test_the_arrangement_fee_is_due_with_the_first_instalment():
    schedule = generate_schedule(terms(arrangement_fee_minor=2_500), 10_000, date(2024, 1, 1))
    assert [i.fee_minor for i in schedule.instalments] == [2_500, 0, 0, 0, 0, 0]


def test_a_zero_rate_loan_repays_principal_only():
    schedule = generate_schedule(terms(annual_rate_percent=Decimal("0")), 10_000,
                                 date(2024, 1, 1))
    assert lines(schedule) == [(1667, 0, 1667)] * 5 + [(1665, 0, 1665)]


def test_month_end_due_dates_stay_anchored_on_the_first_due_date():
    schedule = generate_schedule(terms(instalments=4), 10_000, date(2024, 1, 15),
                                 first_due_on=date(2024, 1, 31))
    assert [i.due_date for i in schedule.instalments] == [
        date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30)]
    first = schedule.instalments[0]
    assert (first.period_start, first.interest_minor) == (date(2024, 1, 15), 42)  # 16/360 days


def test_weekly_due_dates_step_by_seven_days():
    schedule = generate_schedule(terms(frequency=Frequency.WEEKLY, instalments=3,
                                       day_count=DayCount.ACT_365F), 10_000, date(2024, 1, 1))
    assert [i.due_date for i in schedule.instalments] == [
        date(2024, 1, 8), date(2024, 1, 15), date(2024, 1, 22)]


@pytest.mark.parametrize(
    ("principal", "first_due", "field"),
    [
        (0, None, "principal_minor"),
        (10_000, date(2024, 1, 1), "first_due_on"),
        (10_000, date(2025, 1, 2), "first_due_on"),
    ],
)
def test_a_schedule_refuses_bad_inputs_naming_the_field(principal, first_due, field):
    with pytest.raises(InvalidArgument) as caught:
        generate_schedule(terms(), principal, date(2024, 1, 1), first_due)
    assert caught.value.violations[0].field == field


# --- schedules: properties -------------------------------------------------------------------


@given(
    principal=st.integers(1, 10**10),
    rate=st.decimals(min_value=0, max_value=60, places=4, allow_nan=False),
    count=st.integers(1, 120),
    method=st.sampled_from(Amortisation),
    frequency=st.sampled_from(Frequency),
    day_count=st.sampled_from(DayCount),
    rounding=st.sampled_from(RoundingMode),
    grace=st.integers(0, 12),
    disbursed=st.dates(date(2000, 1, 1), date(2040, 12, 31)),
    first_period_days=st.none() | st.integers(1, 120),
)
@BOUNDED
def test_every_schedule_repays_exactly_the_principal_with_no_negative_part(
        principal, rate, count, method, frequency, day_count, rounding, grace, disbursed,
        first_period_days):
    grace = min(grace, count if method is Amortisation.INTEREST_ONLY_BULLET else count - 1)
    loan = terms(annual_rate_percent=rate, instalments=count, amortisation=method,
                 frequency=frequency, day_count=day_count, rounding=rounding,
                 grace_principal_instalments=grace)
    first_due = None if first_period_days is None else disbursed + timedelta(first_period_days)
    schedule = generate_schedule(loan, principal, disbursed, first_due)
    assert schedule.total_principal_minor == principal
    assert len(schedule.instalments) == count
    previous_end = disbursed
    for line in schedule.instalments:
        assert line.principal_minor >= 0 and line.interest_minor >= 0 and line.fee_minor >= 0
        assert line.total_minor == line.principal_minor + line.interest_minor
        assert line.period_start == previous_end < line.period_end == line.due_date
        previous_end = line.period_end
    for line in schedule.instalments[:grace]:
        assert line.principal_minor == (principal if line.number == count else 0)


def _near_half_penny(value: float) -> bool:
    return abs(abs(value) % 1 - 0.5) < 1e-6


@given(
    principal_per_instalment=st.integers(1_000, 10**8),
    rate=st.decimals(min_value=Decimal("0.01"), max_value=40, places=4, allow_nan=False),
    count=st.integers(1, 360),
    disbursed=st.dates(date(2000, 1, 1), date(2040, 12, 28)),
)
@settings(max_examples=200, deadline=None)
def test_equal_instalments_agree_with_numpy_financial_on_regular_monthly_periods(
        principal_per_instalment, rate, count, disbursed):
    principal = principal_per_instalment * count
    loan = terms(annual_rate_percent=rate, instalments=count)
    monthly = float(rate) / 100 / 12
    # Regular means every line but the last is the instalment: the compounded half-pennies of
    # rounding must stay below one instalment, else the loan repays before its last line (still
    # exact, but then the lines before the last are short: long terms at high rates, tiny loans)
    assume(3 * _drift_bound_minor(monthly, count) + 1 < -npf.pmt(monthly, count, principal))
    # a day of month up to the 28th keeps every 30/360 period exactly a twelfth of a year
    schedule = generate_schedule(loan, principal, disbursed.replace(day=min(disbursed.day, 28)))
    reference = -npf.pmt(monthly, count, principal)
    if not _near_half_penny(reference):
        assert annuity_instalment(loan, principal, count) == round(reference)
    instalment = annuity_instalment(loan, principal, count)
    balance = principal
    for line in schedule.instalments[:-1]:
        assert line.total_minor == instalment
        remaining = count - line.number + 1
        # npf on our balance: this period's interest and principal, rounded to pence
        interest = -float(npf.ipmt(monthly, 1, remaining, balance))
        if not _near_half_penny(interest):
            assert line.interest_minor == round(interest)
        assert line.principal_minor == instalment - line.interest_minor
        balance -= line.principal_minor
        # and our balance stays within the compounded half-pennies of per-period rounding of
        # npf's exact amortisation at the same (rounded) instalment
        exact = -float(npf.fv(monthly, line.number, -instalment, principal))
        assert abs(balance - exact) <= _drift_bound_minor(monthly, line.number) + 0.01
    first = schedule.instalments[0]
    if count > 1 and not _near_half_penny(principal * monthly):
        assert first.principal_minor == round(instalment + npf.ipmt(monthly, 1, count, principal))
    last = schedule.instalments[-1]
    assert last.principal_minor == balance  # the last line absorbs the rounding
    # the rounding of the instalment itself compounds too: at most another half-penny a period
    assert abs(last.total_minor - instalment) <= (1 + monthly) * 2 * _drift_bound_minor(
        monthly, count - 1) + 1


def _drift_bound_minor(monthly: float, periods: int) -> float:
    """Half a penny of interest rounding a period, compounding: 0.5 ((1 + r)^k - 1) / r."""
    return 0.5 * ((1 + monthly) ** periods - 1) / monthly
