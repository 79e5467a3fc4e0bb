"""Money: exact conversion from and to the wire's (units, nanos), per currency exponent."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bank.domain import currency as currencies
from bank.domain.errors import InvalidArgument, InvariantViolation
from bank.domain.limits import AMOUNT_MINOR_MAX
from bank.domain.money import (
    Money,
    format_minor,
    from_units_nanos,
    positive_amount,
    round_to_minor,
    to_units_nanos,
)


def refused(currency: str, units: int, nanos: int) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        from_units_nanos(currency, units, nanos, "transfers[0].postings[1].amount")
    return caught.value


def test_pounds_and_pence_become_an_exact_count_of_pence():
    assert from_units_nanos("GBP", 12, 340_000_000, "amount") == Money(1234, "GBP")


def test_a_negative_amount_keeps_its_sign_in_units_and_nanos():
    assert from_units_nanos("GBP", -12, -340_000_000, "amount") == Money(-1234, "GBP")


def test_less_than_one_unit_can_be_negative_with_zero_units():
    assert from_units_nanos("EUR", 0, -50_000_000, "amount") == Money(-5, "EUR")


@pytest.mark.parametrize(("units", "nanos"), [(1, -10_000_000), (-1, 10_000_000)])
def test_units_and_nanos_of_opposite_signs_are_refused_naming_the_nanos_field(units, nanos):
    error = refused("GBP", units, nanos)
    assert error.reason == "MIXED_SIGN"
    assert [v.field for v in error.violations] == ["transfers[0].postings[1].amount.nanos"]


def test_a_fraction_of_a_penny_is_refused_as_too_fine():
    error = refused("GBP", 1, 234_000_000 + 5_000_000)  # 1.239 GBP
    assert error.reason == "PRECISION_TOO_FINE"
    assert error.violations[0].field == "transfers[0].postings[1].amount.nanos"


@pytest.mark.parametrize("nanos", [1_000_000_000, -1_000_000_000, 5_000_000_000])
def test_nanos_of_a_whole_unit_or_more_are_refused(nanos):
    error = refused("GBP", 0, nanos)
    assert error.violations[0].field == "transfers[0].postings[1].amount.nanos"


@pytest.mark.parametrize("code", ["XXX", "gbp", "GB", "", "XAU", "ABCDEFGHIJKLMNOP"])
def test_an_unknown_currency_is_refused_naming_the_currency_code_field(code):
    error = refused(code, 1, 0)
    assert error.reason == "UNKNOWN_CURRENCY"
    assert error.violations[0].field == "transfers[0].postings[1].amount.currency_code"


def test_yen_has_no_minor_unit_so_whole_yen_are_minor_units():
    assert currencies.exponent("JPY") == 0
    assert from_units_nanos("JPY", 1500, 0, "amount") == Money(1500, "JPY")


def test_any_fraction_of_a_yen_is_refused():
    assert refused("JPY", 1, 500_000_000).reason == "PRECISION_TOO_FINE"


def test_bahraini_dinar_has_three_decimal_places():
    assert currencies.exponent("BHD") == 3
    assert from_units_nanos("BHD", 1, 234_000_000, "amount") == Money(1234, "BHD")


def test_a_ten_thousandth_of_a_bahraini_dinar_is_refused():
    assert refused("BHD", 1, 234_500_000).reason == "PRECISION_TOO_FINE"


@pytest.mark.parametrize(("minor", "currency", "expected"), [
    (1234, "GBP", (12, 340_000_000)),
    (-1234, "GBP", (-12, -340_000_000)),
    (-5, "GBP", (0, -50_000_000)),
    (0, "GBP", (0, 0)),
    (1500, "JPY", (1500, 0)),
    (-1500, "JPY", (-1500, 0)),
    (1234, "BHD", (1, 234_000_000)),
    (-1, "BHD", (0, -1_000_000)),
])
def test_minor_units_split_into_units_and_nanos_with_one_sign(minor, currency, expected):
    assert to_units_nanos(minor, currency) == expected


@given(minor=st.integers(-(2**63), 2**63 - 1),
       currency=st.sampled_from(["GBP", "EUR", "JPY", "BHD", "CLF", "ISK"]))
def test_every_amount_survives_a_round_trip_through_units_and_nanos(minor, currency):
    units, nanos = to_units_nanos(minor, currency)
    assert -1_000_000_000 < nanos < 1_000_000_000
    assert units == 0 or nanos == 0 or (units > 0) == (nanos > 0)
    assert from_units_nanos(currency, units, nanos, "amount") == Money(minor, currency)


def test_money_refuses_a_float_amount_as_a_bug():
    with pytest.raises(InvariantViolation):
        Money(1.5, "GBP")  # type: ignore[arg-type]


def test_money_refuses_a_bool_amount_as_a_bug():
    with pytest.raises(InvariantViolation):
        Money(True, "GBP")


def test_money_refuses_an_unknown_currency_as_a_bug():
    with pytest.raises(InvariantViolation):
        Money(1, "XXX")


def test_a_posting_amount_must_be_positive():
    with pytest.raises(InvalidArgument) as caught:
        positive_amount(Money(0, "GBP"), "transfers[0].postings[0].amount")
    assert caught.value.reason == "AMOUNT_NOT_POSITIVE"
    assert caught.value.violations[0].field == "transfers[0].postings[0].amount"
    with pytest.raises(InvalidArgument):
        positive_amount(Money(-1, "GBP"), "amount")


def test_a_posting_amount_may_be_at_most_the_maximum():
    assert positive_amount(Money(AMOUNT_MINOR_MAX, "GBP"), "amount") == AMOUNT_MINOR_MAX
    with pytest.raises(InvalidArgument) as caught:
        positive_amount(Money(AMOUNT_MINOR_MAX + 1, "GBP"), "amount")
    assert caught.value.reason == "AMOUNT_TOO_LARGE"


@pytest.mark.parametrize(("minor", "currency", "text"), [
    (123450, "GBP", "1234.50 GBP"),
    (-5, "GBP", "-0.05 GBP"),
    (1500, "JPY", "1500 JPY"),
    (1234, "BHD", "1.234 BHD"),
])
def test_amounts_format_with_the_currency_decimal_places(minor, currency, text):
    assert format_minor(minor, currency) == text


def test_rounding_to_minor_units_is_half_even_by_default():
    assert round_to_minor(Decimal("2.5")) == 2
    assert round_to_minor(Decimal("3.5")) == 4
    assert round_to_minor(Decimal("-2.5")) == -2
    assert round_to_minor(Decimal("2.5"), "ROUND_HALF_UP") == 3
