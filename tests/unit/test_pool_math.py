"""Pool mathematics: largest-remainder splits, units at NAV, and the period-close waterfall."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bank.domain.errors import FailedPrecondition, InvalidArgument
from bank.domain.pools import (
    BPS_TOTAL,
    FundingSplit,
    PeriodClose,
    PoolAgreement,
    PoolRegister,
    Position,
    UnitClass,
    amount_for_units,
    apportion,
    format_units,
    nav_per_unit,
    servicing_fee_minor,
    split_amount,
    units_for_amount,
)

BOUNDED = settings(max_examples=200, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])

SENIOR = UnitClass("senior", seniority=1)
JUNIOR = UnitClass("junior", seniority=0)


def senior(participant: str) -> Position:
    return Position(participant, "senior")


def junior(participant: str) -> Position:
    return Position(participant, "junior")


def pool(*classes: UnitClass, fee_bps_per_year: int = 0) -> PoolRegister:
    return PoolRegister(PoolAgreement("lancashire", "GBP", classes or (SENIOR,),
                                      servicing_fee_bps_per_year=fee_bps_per_year))


def refused(call: Callable[..., object], *args: object) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        call(*args)
    return caught.value


# -- apportion ------------------------------------------------------------------------------


def test_a_hundred_pence_in_three_equal_parts_gives_the_odd_penny_to_the_first():
    assert apportion(100, [1, 1, 1]) == [34, 33, 33]


def test_leftover_pennies_go_to_the_largest_remainders_not_the_largest_weights():
    # exact shares 1.5 (weight 3), 4.9 (weight 9.8 -> 98), 3.6: remainders .5, .9, .6
    assert apportion(10, [15, 49, 36]) == [1, 5, 4]


def test_a_zero_weight_gets_nothing_even_when_pennies_are_left_over():
    assert apportion(7, [0, 1, 0, 1, 1]) == [0, 3, 0, 2, 2]


def test_a_negative_total_is_split_as_the_mirror_image_of_the_positive_one():
    assert apportion(-100, [1, 1, 1]) == [-34, -33, -33]


def test_empty_weights_are_refused_naming_the_field():
    error = refused(apportion, 10, [])
    assert (error.reason, error.violations[0].field) == ("WEIGHTS_EMPTY", "weights")


def test_a_negative_weight_is_refused_naming_its_index():
    error = refused(apportion, 10, [3, -1, 2])
    assert (error.reason, error.violations[0].field) == ("WEIGHT_NEGATIVE", "weights[1]")


def test_weights_that_are_all_zero_are_refused():
    assert refused(apportion, 10, [0, 0]).reason == "WEIGHTS_ALL_ZERO"


@BOUNDED
@given(st.integers(-10**15, 10**15),
       st.lists(st.integers(0, 10**12), min_size=1, max_size=30).filter(any))
def test_parts_sum_to_the_whole_and_each_is_within_one_of_its_exact_share(total, weights):
    parts = apportion(total, weights)
    assert sum(parts) == total
    weight_sum = sum(weights)
    for part, weight in zip(parts, weights, strict=True):
        assert abs(Fraction(part) - Fraction(total * weight, weight_sum)) < 1
        if weight == 0:
            assert part == 0
    assert apportion(-total, weights) == [-part for part in parts]


# -- funding splits -------------------------------------------------------------------------


def test_a_loan_funded_eighty_twenty_splits_every_penny_of_a_repayment():
    split = FundingSplit.of({"pool:lancashire": 8_000, "bank": 2_000})
    assert split_amount(12_345, split) == {"bank": 2_469, "pool:lancashire": 9_876}


def test_a_split_that_does_not_sum_to_ten_thousand_bps_is_refused():
    error = refused(FundingSplit.of, {"pool": 8_000, "bank": 1_999})
    assert error.reason == "SPLIT_NOT_10000_BPS"
    assert "9999" in error.message


def test_every_bad_share_is_reported_at_once_in_party_order():
    error = refused(FundingSplit.of, {"a": 0, "b": 10_000, "c": -5})
    assert [v.field for v in error.violations] == ["funding_split['a']", "funding_split['c']"]


@BOUNDED
@given(st.lists(st.integers(1, 50), min_size=1, max_size=12), st.integers(-10**12, 10**12))
def test_any_valid_split_sums_to_ten_thousand_bps_and_splits_amounts_exactly(raw, amount):
    bps = apportion(BPS_TOTAL - len(raw), raw)  # 1 bps each plus a share of the rest
    split = FundingSplit.of({f"party-{i}": 1 + part for i, part in enumerate(bps)})
    assert sum(share for _, share in split.shares_bps) == BPS_TOTAL
    assert sum(split_amount(amount, split).values()) == amount


# -- units and NAV --------------------------------------------------------------------------


def test_nav_per_unit_is_rounded_half_even_to_eight_places():
    # 1 penny over 8 micro-units = 1250 per unit exactly; 1 penny over 3 micro-units rounds.
    assert nav_per_unit(1, 8, "GBP") == Decimal("1250.00000000")
    assert nav_per_unit(1, 3, "GBP") == Decimal("3333.33333333")
    assert nav_per_unit(1, 16 * 10**12, "GBP") == Decimal("0.00000000")  # 6.25e-10 -> 0
    assert nav_per_unit(3, 2 * 10**12, "GBP") == Decimal("0.00000002")  # 1.5e-8: half up
    assert nav_per_unit(5, 2 * 10**12, "GBP") == Decimal("0.00000002")  # 2.5e-8: to even


def test_subscriptions_round_units_down_and_redemptions_round_pence_down():
    nav = Decimal("1.03061728")
    assert units_for_amount(50_000_000, nav, "GBP") == 485_146_144_648
    assert units_for_amount(2, Decimal("3.00000000"), "GBP") == 6_666  # 0.0066666.. units
    assert amount_for_units(485_146_144_648, nav, "GBP") == 49_999_999  # 499,999.99999... GBP


def test_the_servicing_fee_is_rounded_down_in_the_participants_favour():
    # 2,000,000 GBP at 25 bps a year for 181 of 365 days = 2,479.452...
    assert servicing_fee_minor(200_000_000, 25, 181) == 247_945
    assert servicing_fee_minor(-5, 25, 181) == 0


# -- the worked scenario of issue 6 -----------------------------------------------------------


def capital_and_units(closed: PeriodClose) -> dict[str, tuple[str, int]]:
    return {s.position.participant_id: (format_units(s.closing_units_micro),
                                        s.closing_capital_minor) for s in closed.statements}


def test_worked_scenario_burnley_shares_in_the_later_loss_but_not_the_earlier_income():
    register = pool(fee_bps_per_year=25)
    for council, pence in [("preston", 100_000_000), ("lancaster", 60_000_000),
                           ("blackburn", 40_000_000)]:
        deal = register.subscribe(senior(council), pence)
        assert deal.nav_per_unit == Decimal("1.00000000")
    register.fund_loan("loan-1", 150_000_000)
    # Half a year (181 days) of interest, of which the servicing fee takes 2,479.45 first,
    # leaving net income of 61,234.56.
    register.accrue_interest("loan-1", 6_123_456 + 247_945)
    first = register.close_period(181)

    assert (first.income_minor, first.servicing_fee_minor) == (6_371_401, 247_945)
    assert register.nav_per_unit("senior") == Decimal("1.03061728")
    assert capital_and_units(first) == {
        "blackburn": ("400000.000000", 41_224_691),
        "lancaster": ("600000.000000", 61_837_037),
        "preston": ("1000000.000000", 103_061_728),
    }
    assert first.valuation.net_assets_minor == 206_123_456 == sum(
        s.closing_capital_minor for s in first.statements)

    deal = register.subscribe(senior("burnley"), 50_000_000)
    assert (deal.nav_per_unit, format_units(deal.units_micro)) == (
        Decimal("1.03061728"), "485146.144648")
    assert register.nav_per_unit("senior") == Decimal("1.03061728")

    register.charge_off("loan-1", 1_000_000)  # a 10,000.00 loss in the following period
    second = register.close_period(184)

    assert (second.losses_minor, second.servicing_fee_minor) == (1_000_000, 322_785)
    by_council = {s.position.participant_id: s for s in second.statements}
    assert by_council["burnley"].opening_capital_minor == 0
    assert by_council["burnley"].contributions_minor == 50_000_000
    assert by_council["burnley"].income_minor == 0
    assert {c: s.losses_minor for c, s in by_council.items()} == {
        "blackburn": 160_956, "burnley": 195_218, "lancaster": 241_435, "preston": 402_391}
    assert {c: s.fees_minor for c, s in by_council.items()} == {
        "blackburn": 51_954, "burnley": 63_014, "lancaster": 77_931, "preston": 129_886}
    assert capital_and_units(second) == {
        "blackburn": ("400000.000000", 41_011_781),
        "burnley": ("485146.144648", 49_741_768),
        "lancaster": ("600000.000000", 61_517_671),
        "preston": ("1000000.000000", 102_529_451),
    }
    assert register.nav_per_unit("senior") == Decimal("1.02529451")
    assert second.valuation.net_assets_minor == 254_800_671 == sum(
        s.closing_capital_minor for s in second.statements)
    # Burnley's share of the loss is its share of units, within a penny.
    exact = Fraction(1_000_000 * 485_146_144_648, 2_485_146_144_648)
    assert abs(by_council["burnley"].losses_minor - exact) < 1


# -- waterfall, calls and dealing rules -------------------------------------------------------


def test_the_first_loss_class_absorbs_losses_up_to_its_capital_before_seniors_lose_a_penny():
    register = pool(JUNIOR, SENIOR)
    register.subscribe(junior("bank"), 1_000_000)
    register.subscribe(senior("preston"), 6_000_000)
    register.subscribe(senior("wigan"), 3_000_000)
    register.fund_loan("loan-1", 8_000_000)
    register.charge_off("loan-1", 600_000)
    small = register.close_period(0)
    assert {s.position: s.losses_minor for s in small.statements} == {
        junior("bank"): 600_000, senior("preston"): 0, senior("wigan"): 0}

    register.charge_off("loan-1", 1_000_000)  # the junior has 400,000 left
    large = register.close_period(0)
    assert {s.position: s.losses_minor for s in large.statements} == {
        junior("bank"): 400_000, senior("preston"): 400_000, senior("wigan"): 200_000}
    assert register.holding(junior("bank")).capital_minor == 0


def test_a_recovery_goes_back_to_whoever_bore_the_loss_even_after_they_have_left():
    register = pool()
    register.subscribe(senior("preston"), 5_000_000)
    register.subscribe(senior("wigan"), 5_000_000)
    register.fund_loan("loan-1", 4_000_000)
    register.charge_off("loan-1", 1_000_000)
    register.close_period(0)
    register.redeem(senior("wigan"), register.holding(senior("wigan")).units_micro)
    register.subscribe(senior("burnley"), 5_000_000)

    register.recover("loan-1", 1_200_000)  # 200,000 more than was ever lost: income
    closed = register.close_period(0)
    recoveries = {s.position.participant_id: s.recoveries_minor for s in closed.statements}
    income = {s.position.participant_id: s.income_minor for s in closed.statements}
    assert recoveries == {"burnley": 0, "preston": 500_000, "wigan": 500_000}
    assert income["wigan"] == 0 and income["preston"] + income["burnley"] == 200_000
    assert register.settle_former_participant(senior("wigan")) == 500_000


def test_a_capital_call_is_split_by_unfunded_commitment():
    register = pool()
    register.commit(senior("preston"), 1_000_000)
    register.commit(senior("wigan"), 500_000)
    register.subscribe(senior("preston"), 700_000)  # 300,000 left unfunded
    call = register.call_capital("senior", 400_001)
    assert call == {senior("preston"): 150_000, senior("wigan"): 250_001}
    with pytest.raises(FailedPrecondition) as caught:
        register.call_capital("senior", 800_001)
    assert caught.value.reason == "EXCEEDS_UNFUNDED_COMMITMENT"


def test_nobody_can_deal_at_a_stale_nav_once_income_has_been_recorded():
    register = pool()
    register.subscribe(senior("preston"), 1_000_000)
    register.fund_loan("loan-1", 500_000)
    register.accrue_interest("loan-1", 10_000)
    with pytest.raises(FailedPrecondition) as caught:
        register.subscribe(senior("burnley"), 1_000_000)
    assert caught.value.reason == "VALUATION_REQUIRED"
    register.close_period(30)
    assert register.subscribe(senior("burnley"), 1_000_000).nav_per_unit == Decimal("1.01000000")


def test_the_last_units_cannot_leave_while_the_pool_still_holds_a_loan():
    register = pool()
    register.subscribe(senior("preston"), 1_000_000)
    register.fund_loan("loan-1", 500_000)
    with pytest.raises(FailedPrecondition) as caught:
        register.redeem(senior("preston"), register.holding(senior("preston")).units_micro)
    assert caught.value.reason == "POOL_WOULD_HAVE_NO_UNITHOLDERS"


# -- property: arbitrary sequences of pool events ---------------------------------------------

PARTICIPANTS = ("blackburn", "burnley", "lancaster", "preston")
LOANS = ("loan-a", "loan-b")
KINDS = ("subscribe", "redeem", "distribute", "fund", "repay", "accrue", "receive", "provide",
         "release", "charge_off", "recover", "pay_fee", "settle", "close", "close")

events = st.lists(
    st.tuples(st.sampled_from(KINDS), st.sampled_from(PARTICIPANTS),
              st.sampled_from(("junior", "senior")), st.sampled_from(LOANS),
              st.integers(1, BPS_TOTAL), st.integers(1, 5_000_000)),
    min_size=10, max_size=60)


@dataclass
class Model:
    """What the test expects, tracked independently of the register."""

    cash_minor: int = 0
    provisions: dict[str, int] = field(default_factory=dict)
    charged_off: dict[str, int] = field(default_factory=dict)
    recovered: dict[str, int] = field(default_factory=dict)
    losses_minor: int = 0  # provisions charged + charge-offs beyond the provision
    restored_minor: int = 0  # provision releases + recoveries up to the charge-off
    statement_losses_minor: int = 0
    statement_recoveries_minor: int = 0


def fraction_of(balance: int, bps: int) -> int:
    return max(1, balance * bps // BPS_TOTAL)


def apply(register: PoolRegister, model: Model, event: tuple[str, str, str, str, int, int],
          ) -> PeriodClose | None:
    kind, participant, class_id, loan_id, bps, pence = event
    position = Position(participant, class_id)
    loan = register.loan(loan_id) if loan_id in register.loan_ids else None
    if kind == "subscribe":
        register.subscribe(position, pence)
        model.cash_minor += pence
    elif kind == "redeem":
        model.cash_minor -= register.redeem(
            position, fraction_of(register.holding(position).units_micro, bps)).amount_minor
    elif kind == "distribute":
        register.distribute(class_id, fraction_of(model.cash_minor, bps))
        model.cash_minor -= fraction_of(model.cash_minor, bps)
    elif kind == "fund":
        register.fund_loan(loan_id, fraction_of(model.cash_minor, bps))
        model.cash_minor -= fraction_of(model.cash_minor, bps)
    elif kind == "settle":
        model.cash_minor -= register.settle_former_participant(position)
    elif kind == "close":
        return register.close_period(bps % 200)
    elif loan is None:
        return None
    else:
        apply_to_loan(register, model, kind, loan_id, bps, pence)
    return None


def apply_to_loan(register: PoolRegister, model: Model, kind: str, loan_id: str, bps: int,
                  pence: int) -> None:
    loan = register.loan(loan_id)
    provision = model.provisions.get(loan_id, 0)
    if kind == "repay":
        register.repay_principal(loan_id, fraction_of(loan.principal_minor, bps))
        model.cash_minor += fraction_of(loan.principal_minor, bps)
    elif kind == "accrue":
        register.accrue_interest(loan_id, pence // 100 + 1)
    elif kind == "receive":
        register.receive_interest(loan_id, fraction_of(loan.accrued_interest_minor, bps))
        model.cash_minor += fraction_of(loan.accrued_interest_minor, bps)
    elif kind == "provide":
        register.provide(loan_id, fraction_of(loan.principal_minor, bps))
        model.provisions[loan_id] = provision + fraction_of(loan.principal_minor, bps)
        model.losses_minor += fraction_of(loan.principal_minor, bps)
    elif kind == "release":
        register.release_provision(loan_id, fraction_of(provision, bps))
        model.provisions[loan_id] = provision - fraction_of(provision, bps)
        model.restored_minor += fraction_of(provision, bps)
    elif kind == "charge_off":
        principal = fraction_of(loan.principal_minor, bps)
        interest = loan.accrued_interest_minor if bps % 2 else 0
        register.charge_off(loan_id, principal, interest)
        used = min(provision, principal + interest)
        model.provisions[loan_id] = provision - used
        model.losses_minor += principal + interest - used
        model.charged_off[loan_id] = model.charged_off.get(loan_id, 0) + principal + interest
    elif kind == "recover":
        register.recover(loan_id, pence)
        model.cash_minor += pence
        outstanding = model.charged_off.get(loan_id, 0) - model.recovered.get(loan_id, 0)
        model.recovered[loan_id] = model.recovered.get(loan_id, 0) + min(pence, outstanding)
        model.restored_minor += min(pence, outstanding)
    elif kind == "pay_fee":
        fee = fraction_of(register.valuation().fees_payable_minor, bps)
        register.pay_servicing_fee(fee)
        model.cash_minor -= fee


def check_invariants(register: PoolRegister, model: Model, closed: PeriodClose | None) -> None:
    valuation = register.valuation()
    holdings = valuation.holdings
    assert valuation.cash_minor == model.cash_minor >= 0
    assert register.units_outstanding_micro() == sum(h.units_micro for h in holdings)
    for unit_class in valuation.classes:
        assert unit_class.units_micro == sum(
            h.units_micro for h in holdings if h.position.class_id == unit_class.class_id)
    if closed is None:
        return
    assert closed.valuation.net_assets_minor == closed.valuation.capital_total_minor
    assert sum(s.closing_capital_minor for s in closed.statements) == (
        closed.valuation.net_assets_minor)
    assert sum(s.losses_minor for s in closed.statements) == closed.losses_minor
    assert sum(s.recoveries_minor for s in closed.statements) == closed.recoveries_minor
    assert sum(s.fees_minor for s in closed.statements) == closed.servicing_fee_minor
    model.statement_losses_minor += closed.losses_minor
    model.statement_recoveries_minor += closed.recoveries_minor
    assert model.statement_losses_minor == model.losses_minor
    assert model.statement_recoveries_minor == model.restored_minor
    for loan_id in register.loan_ids:
        share = register.loan(loan_id)
        borne, restored = dict(share.borne_minor), dict(share.restored_minor)
        assert all(restored[p] <= borne.get(p, 0) for p in restored)
        assert share.recovered_minor <= share.charged_off_minor
        assert sum(borne.values()) - sum(restored.values()) == (
            share.provisions_minor + share.charged_off_minor - share.recovered_minor)


@BOUNDED
@given(events, st.booleans())
def test_pool_invariants_hold_after_any_sequence_of_events(sequence, with_junior):
    classes = (JUNIOR, SENIOR) if with_junior else (SENIOR,)
    register = pool(*classes, fee_bps_per_year=50)
    model = Model()
    register.subscribe(senior("preston"), 10_000_000)  # the pool opens with one council
    register.fund_loan("loan-a", 6_000_000)  # and one loan
    model.cash_minor = 4_000_000
    for event in sequence:
        if event[2] == "junior" and not with_junior:
            event = (event[0], event[1], "senior", *event[3:])
        before = register.valuation()
        try:
            closed = apply(register, model, event)
        except FailedPrecondition:
            assert register.valuation() == before  # a refused event changes nothing
            continue
        check_invariants(register, model, closed)
    closed = register.close_period(1)
    check_invariants(register, model, closed)
