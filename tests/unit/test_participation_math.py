"""Loan participations, property-tested: after any sequence of a loan's movements and
participation transfers, the lines of each movement sum exactly to it, the funders' holdings
(the fold of the lines) add up to the loan, no funder holds less than nothing, provisions stay
within each funder's exposure, write-offs take what each funder held, and recoveries go back
only to those who bore the loss, never more than they lost."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bank.domain.errors import InvalidArgument
from bank.domain.pools.participation import (
    Movements,
    Share,
    holdings_of,
    split_booking,
    take,
    transfer,
)
from bank.domain.pools.split import FundingSplit

FUNDERS = ("bank", "pools/a", "pools/b", "pools/c")


@st.composite
def splits(draw: st.DrawFn) -> FundingSplit:
    parties = draw(st.lists(st.sampled_from(FUNDERS), min_size=1, max_size=4, unique=True))
    cuts = sorted(draw(st.lists(st.integers(1, 9_999), min_size=len(parties) - 1,
                                max_size=len(parties) - 1, unique=True)))
    bounds = [0, *cuts, 10_000]
    return FundingSplit.of({p: bounds[i + 1] - bounds[i] for i, p in enumerate(parties)})


@dataclass
class Loan:
    """The loan's own figures, as its ledger buckets would hold them."""

    principal: int = 0
    income: int = 0
    allowance: int = 0
    lost: int = 0
    recovered: int = 0

    def movements(self, principal: int = 0, accrued: int = 0, received: int = 0,
                  written_off: bool = False, recovered: int = 0,
                  allowance: int | None = None) -> Movements:
        wo_p, wo_i = (self.principal + principal, self.income + accrued - received) \
            if written_off else (0, 0)
        self.principal += principal - wo_p
        self.income += accrued - received - wo_i
        self.lost += wo_p + wo_i
        self.recovered += recovered
        self.allowance = min(self.allowance if allowance is None else allowance,
                             self.principal + self.income)
        return Movements(principal, accrued, received, wo_p, wo_i, self.allowance, recovered)


OPERATIONS = st.lists(st.tuples(
    st.sampled_from(("fund", "accrue", "reverse_accrual", "receive", "reverse_receipt",
                     "repay", "provide", "write_off", "recover", "transfer")),
    st.integers(0, 2_000_000), st.sampled_from(FUNDERS), st.integers(1, 10_000)),
    max_size=40)


@settings(max_examples=300, deadline=None)
@given(split=splits(), principal=st.integers(1, 50_000_000), operations=OPERATIONS)
def test_any_life_of_a_loan_keeps_the_participation_invariants(split, principal, operations):
    loan = Loan()
    holdings: dict[str, Share] = {}
    lines_all = []

    def apply(moved: Movements) -> None:
        nonlocal holdings
        before = holdings
        lines, holdings = split_booking(split, before, moved)
        lines_all.extend(lines)
        assert holdings == holdings_of(lines, before)
        parts: dict[str, int] = {}
        for line in lines:
            parts[line.movement] = parts.get(line.movement, 0) + line.amount_minor
            assert line.amount_minor > 0
            assert line.bps == dict(split.shares_bps).get(line.funder, 0)
        assert parts.get("fund", 0) == max(moved.principal_minor, 0)
        assert parts.get("repay", 0) == max(-moved.principal_minor, 0)
        assert parts.get("accrue", 0) == max(moved.accrued_minor, 0)
        assert parts.get("reverse_accrual", 0) == max(-moved.accrued_minor, 0)
        assert parts.get("receive", 0) == max(moved.received_minor, 0)
        assert parts.get("reverse_receipt", 0) == max(-moved.received_minor, 0)
        assert parts.get("write_off_principal", 0) == moved.written_off_principal_minor
        assert parts.get("write_off_income", 0) == moved.written_off_income_minor
        assert parts.get("recover", 0) == moved.recovered_minor
        if moved.written_off_principal_minor or moved.written_off_income_minor:
            for funder, share in holdings.items():  # each lost exactly what it held
                held = before.get(funder, Share())
                assert share.lost_minor - held.lost_minor == held.exposure_minor
        if moved.recovered_minor:
            for funder, share in holdings.items():  # back only to who bore the loss
                gained = share.recovered_minor - before.get(funder, Share()).recovered_minor
                assert gained == 0 or before.get(funder, Share()).unrecovered_minor > 0
        check(loan, holdings)

    apply(loan.movements(principal=principal))
    for kind, amount, funder, bps in operations:
        if kind == "fund":
            apply(loan.movements(principal=amount))
        elif kind == "accrue":
            apply(loan.movements(accrued=amount))
        elif kind == "reverse_accrual":
            apply(loan.movements(accrued=-min(amount, loan.income)))
        elif kind == "receive":
            apply(loan.movements(received=min(amount, loan.income)))
        elif kind == "reverse_receipt":
            apply(loan.movements(received=-amount))
        elif kind == "repay":
            apply(loan.movements(principal=-min(amount, loan.principal)))
        elif kind == "provide":
            apply(loan.movements(allowance=min(amount, loan.principal + loan.income)))
        elif kind == "write_off":
            apply(loan.movements(written_off=True))
        elif kind == "recover":
            apply(loan.movements(recovered=min(amount, loan.lost - loan.recovered)))
        elif split.parties:
            seller = split.parties[amount % len(split.parties)]
            held = dict(split.shares_bps)[seller]
            if funder == seller:
                continue
            new_split, lines, after = transfer(split, holdings, seller, funder,
                                               1 + bps % held)
            assert after == holdings_of(lines, holdings)
            for a, b in (("sell_principal", "buy_principal"), ("sell_income", "buy_income"),
                         ("release", "provide")):
                assert sum(x.amount_minor for x in lines if x.movement == a) == sum(
                    x.amount_minor for x in lines if x.movement == b)
            split, holdings = new_split, after
            lines_all.extend(lines)
            check(loan, holdings)
    nonzero = {f: s for f, s in holdings.items() if s != Share()}
    assert {f: s for f, s in holdings_of(lines_all).items() if s != Share()} == nonzero


def check(loan: Loan, holdings: dict[str, Share]) -> None:
    shares = holdings.values()
    assert sum(s.principal_minor for s in shares) == loan.principal
    assert sum(s.income_minor for s in shares) == loan.income
    assert sum(s.provisions_minor for s in shares) == loan.allowance
    assert sum(s.lost_minor for s in shares) == loan.lost
    assert sum(s.recovered_minor for s in shares) == loan.recovered
    for s in shares:
        assert min(s.principal_minor, s.income_minor, s.provisions_minor) >= 0
        assert s.provisions_minor <= s.exposure_minor
        assert 0 <= s.recovered_minor <= s.lost_minor


@settings(max_examples=500, deadline=None)
@given(balances=st.dictionaries(st.sampled_from(FUNDERS), st.integers(0, 10**9), min_size=1),
       weights=st.dictionaries(st.sampled_from(FUNDERS), st.integers(0, 10_000)),
       fraction=st.floats(0, 1))
def test_take_never_gives_a_party_more_than_it_holds(balances, weights, fraction):
    total = sum(balances.values())
    amount = int(total * fraction)
    parts = take(amount, weights, balances)
    assert sum(parts.values()) == amount
    assert all(0 <= parts[p] <= balances[p] for p in balances)
    assert take(total, weights, balances) == balances


def test_a_growth_is_split_by_basis_points_with_the_largest_remainder():
    split = FundingSplit.of({"pools/a": 8_000, "bank": 2_000})
    lines, held = split_booking(split, {}, Movements(1_000_003, 0, 0, 0, 0, 0, 0))
    assert [(x.movement, x.funder, x.amount_minor) for x in lines] == [
        ("fund", "bank", 200_001), ("fund", "pools/a", 800_002)]
    assert held["pools/a"].principal_minor == 800_002


def test_after_a_transfer_earlier_receivables_are_paid_to_the_funder_that_earned_them():
    split = FundingSplit.of({"pools/a": 5_000, "bank": 5_000})
    _, held = split_booking(split, {}, Movements(1_000, 100, 0, 0, 0, 0, 0))
    split, _, held = transfer(split, held, "pools/a", "pools/b", 5_000)
    assert "pools/a" not in held and held["pools/b"].income_minor == 50
    lines, held = split_booking(split, held, Movements(0, 0, 100, 0, 0, 0, 0))
    assert {x.funder: x.amount_minor for x in lines if x.movement == "receive"} == {
        "bank": 50, "pools/b": 50}


def test_a_transfer_of_more_than_the_seller_holds_is_refused_by_name():
    split = FundingSplit.of({"pools/a": 8_000, "bank": 2_000})
    with pytest.raises(InvalidArgument) as caught:
        transfer(split, {}, "bank", "pools/a", 2_001)
    assert caught.value.reason == "PARTICIPATION_BPS_INVALID"
    with pytest.raises(InvalidArgument) as caught:
        transfer(split, {}, "bank", "bank", 1)
    assert caught.value.reason == "PARTICIPATION_SAME_FUNDER"
