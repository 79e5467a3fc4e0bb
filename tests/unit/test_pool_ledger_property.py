"""The pool's ledger, property-tested: after any sequence of pool events (contributions,
loans funded by hand and through participations, repayments, accruals, receipts, provisions,
losses, recoveries, distributions, redemptions, fees, closes), every entry `event_entries`
makes balances; the pool's accounts, summed from the entries alone, equal the register to the
penny (cash, loans, interest, provisions, fees payable, each capital account), and the bank
owes the pool exactly cash + loans + interest. This is the check `bank.app.pools.reconcile`
makes against the database after every command, here over arbitrary histories."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bank.app.pool_ledger import capital_account, event_entries, pool_account
from bank.app.pools import apply_event
from bank.domain.accounts import Side
from bank.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from bank.domain.pools import PoolRegister, UnitClass
from bank.domain.pools.split import BPS_TOTAL
from bank.domain.pools.terms import Participant, ParticipantKind, PoolTerms

COUNCILS = ("preston", "lancaster", "burnley")
TERMS = PoolTerms(
    pool_id="lancs", display_name="Lancashire", currency="GBP",
    unit_classes=(UnitClass("junior", 0), UnitClass("senior", 1)),
    participants=tuple(Participant(c, ParticipantKind.COUNCIL, f"council-{c}")
                       for c in COUNCILS),
    dealing_dates=(date(2025, 1, 1), date(2025, 7, 1)), servicing_fee_bps_per_year=50)
KINDS = ("subscribe", "subscribe", "redeem", "distribute", "fund", "repay", "accrue", "receive",
         "provide", "release", "charge_off", "recover", "pay_fee", "close", "participation")
MOVES = ("fund", "accrue", "receive", "reverse_accrual", "reverse_receipt", "repay", "provide",
         "release", "write_off", "recover")

events = st.lists(st.tuples(
    st.sampled_from(KINDS), st.sampled_from(COUNCILS), st.sampled_from(("junior", "senior")),
    st.sampled_from(("loan-a", "loan-b", "on-book-1")), st.integers(1, BPS_TOTAL),
    st.integers(1, 3_000_000), st.lists(st.sampled_from(MOVES), min_size=1, max_size=6)),
    min_size=5, max_size=50)


def part(balance: int, bps: int) -> int:
    return max(1, balance * bps // BPS_TOTAL)


def args_for(register: PoolRegister, event: tuple[Any, ...]) -> tuple[str, dict[str, Any]]:
    kind, council, class_id, loan, bps, pence, moves = event
    v = register.valuation()
    share = register.loan(loan) if loan in register.loan_ids else None
    if kind == "subscribe":
        return kind, {"participant": council, "class": class_id, "amount": pence}
    if kind == "redeem":
        held = register.holding(_position(council, class_id)).units_micro
        return kind, {"participant": council, "class": class_id, "units": part(held, bps)}
    if kind in ("distribute", "fund"):
        key = "class" if kind == "distribute" else "loan"
        return kind, {key: class_id if kind == "distribute" else loan,
                      "amount": part(v.cash_minor, bps)}
    if kind == "pay_fee":
        return kind, {"amount": part(v.fees_payable_minor, bps)}
    if kind == "close":
        return kind, {"days": bps % 200}
    if kind == "participation":
        return kind, {"items": [{"loan": loan, "entry": f"loan:{loan}:tx:1", "split":
                                 f"pools/lancs:{bps}", "flows": flows(share, moves, bps, pence)}]}
    principal = share.principal_minor if share else 0
    interest = share.accrued_interest_minor if share else 0
    provisions = share.provisions_minor if share else 0
    amounts = {"repay": part(principal, bps), "accrue": pence // 100 + 1,
               "receive": part(interest, bps), "provide": part(principal, bps),
               "release": part(provisions, bps), "recover": pence}
    if kind == "charge_off":
        return kind, {"loan": loan, "principal": part(principal, bps),
                      "interest": interest if bps % 2 else 0}
    return kind, {"loan": loan, "amount": amounts[kind]}


def flows(share: Any, moves: list[str], bps: int, pence: int) -> list[list[Any]]:
    """A participation item's flows in `split_booking`'s order of kinds (a write-off as its
    principal, its income and the provision it uses), amounts within what the pool holds as
    the item goes along."""
    principal = share.principal_minor if share else 0
    interest = share.accrued_interest_minor if share else 0
    provisions = share.provisions_minor if share else 0
    out: list[list[Any]] = []
    for move in moves:
        amount = {"fund": pence, "accrue": pence // 100 + 1,
                  "reverse_receipt": pence // 1000 + 1, "recover": pence,
                  "receive": part(interest, bps) if interest else 0,
                  "reverse_accrual": part(interest, bps) if interest else 0,
                  "repay": part(principal, bps) if principal else 0,
                  "provide": min(part(principal, bps), principal + interest - provisions),
                  "release": part(provisions, bps) if provisions else 0}.get(move, 0)
        if move == "write_off" and principal + interest:
            out += [["write_off_principal", bps, principal], ["write_off_income", bps, interest],
                    ["provision_used", bps, min(provisions, principal + interest)]]
            provisions -= min(provisions, principal + interest)
            principal = interest = 0
        elif amount > 0:
            out.append([move, bps, amount])
            principal += {"fund": amount, "repay": -amount}.get(move, 0)
            interest += {"accrue": amount, "reverse_receipt": amount, "receive": -amount,
                         "reverse_accrual": -amount}.get(move, 0)
            provisions += {"provide": amount, "release": -amount}.get(move, 0)
    return [f for f in out if f[2] > 0] or [["fund", bps, pence]]


def _position(council: str, class_id: str) -> Any:
    from bank.domain.pools import Position

    return Position(council, class_id)


@settings(max_examples=200, deadline=None)
@given(events)
def test_the_pool_ledger_balances_and_matches_the_register_after_any_history(sequence):
    register = PoolRegister(TERMS.agreement())
    ledger: dict[str, int] = {}  # account -> debits - credits
    seq = 0
    for event in [("subscribe", "preston", "senior", "loan-a", 1, 5_000_000, ["fund"]),
                  *sequence]:
        kind, args = args_for(register, event)
        before, saved = register.valuation(), copy.deepcopy(register)
        try:
            outcome = apply_event(register, kind, args)
        except (FailedPrecondition, NotFound, InvalidArgument):
            if kind == "participation":  # refused part-way: the command discards the pool
                register = saved
            assert register.valuation() == before  # a refused event changes nothing
            continue
        seq += 1
        for spec in event_entries(TERMS, seq, register.period_number, kind, args, outcome, ""):
            debits = sum(p.amount for p in spec.postings if p.side is Side.DEBIT)
            assert debits == sum(p.amount for p in spec.postings if p.side is Side.CREDIT)
            for p in spec.postings:
                ledger[p.account_id] = ledger.get(p.account_id, 0) + (
                    p.amount if p.side is Side.DEBIT else -p.amount)
        check(register, ledger)


def check(register: PoolRegister, ledger: dict[str, int]) -> None:
    v = register.valuation()

    def debit(name: str) -> int:
        return ledger.get(pool_account("lancs", name), 0)

    assert sum(ledger.values()) == 0
    assert (debit("cash"), debit("loans"), debit("interest")) == (
        v.cash_minor, v.loan_principal_minor, v.accrued_interest_minor)
    assert debit("provisions") == -v.provisions_minor
    assert -debit("fees") == v.fees_payable_minor
    assert -debit("due") == v.cash_minor + v.loan_principal_minor + v.accrued_interest_minor
    for holding in v.holdings:
        account = capital_account("lancs", holding.position.participant_id,
                                  holding.position.class_id)
        assert -ledger.get(account, 0) == holding.capital_minor
