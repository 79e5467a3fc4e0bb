"""Loan participations end to end, on a real server over SQLite and PostgreSQL: a loan funded
80 % by a pool and 20 % by the bank through its whole life (disbursement, accrual at close of
business, repayments, a backdated repayment, charge-off, write-off, recovery), every movement
split on the ledger with the split stored on each line; an approved participation transfer;
concentration limits at approval and at disbursement; bad input that changes nothing."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from sqlalchemy import select

from bank.adapters import tables as t
from bank.app.check import check_ledger
from bank.app.loan_ports import loan_reader
from bank.app.participations import Funding
from bank.app.pool_ports import pool_store
from bank.app.pools import load
from bank.domain.pools.participation import Line, holdings_of, pool_of
from services.generated.peoplesbank.approvals.v1 import approval_service_pb2 as apb
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from services.generated.peoplesbank.lending.v1 import loan_service_pb2 as lpb
from services.generated.peoplesbank.pools.v1 import pool_service_pb2 as ppb
from tests.e2e.conftest import Client
from tests.e2e.loan_support import (
    APPROVER,
    APPROVER_2,
    OFFICER,
    OPERATOR,
    TELLER,
    LoanClient,
    application,
    day,
    gbp,
    member_with_deposit,
    product_request,
)
from tests.e2e.pool_support import approvals, create_pool, pools, seed_councils, subscribe
from tests.e2e.support import minor, refused
from tests.helpers import error_info, field_violations, request_id

POOL = "lancs"
SPLIT = [("pools/lancs", 8_000), ("bank", 2_000)]


def _funding(shares: list[tuple[str, int]]) -> list[lpb.FundingShare]:
    return [lpb.FundingShare(funder=f, bps=b) for f, b in shares]


def _pool_with_capital(uow: Any, clock: Any, channel: grpc.Channel, **limits: int) -> None:
    seed_councils(uow, clock)
    extra: dict[str, Any] = {}
    if limits:
        extra["concentration_limits"] = ppb.ConcentrationLimits(**limits)
    create_pool(channel, pool_id=POOL, **extra)
    for council, pence in (("preston", 1_000_000), ("lancaster", 600_000)):
        subscribe(channel, council, pence, pool_id=POOL)


def _applied(channel: grpc.Channel, loan_id: str = "l1", pence: int = 1_200_000) -> None:
    officer = LoanClient(channel, OFFICER)
    officer.CreateProduct(product_request())
    officer.ApplyForLoan(application(loan_id, pence=pence))


def _approve(channel: grpc.Channel, loan_id: str = "l1",
             shares: list[tuple[str, int]] | None = None, sector: str = "") -> lpb.Loan:
    return LoanClient(channel, APPROVER).DecideLoan(lpb.DecideLoanRequest(
        request_id=request_id(), name=f"loans/{loan_id}",
        decision=lpb.DecideLoanRequest.DECISION_APPROVE, funding=_funding(shares or []),
        sector=sector))


def _disburse(channel: grpc.Channel, loan_id: str = "l1") -> lpb.Loan:
    return LoanClient(channel, TELLER).DisburseLoan(lpb.DisburseLoanRequest(
        request_id=request_id(), name=f"loans/{loan_id}"))


def _cob(channel: grpc.Channel, through: str) -> None:
    request = lpb.RunCloseOfBusinessRequest(request_id=request_id())
    request.business_date.CopyFrom(day(through))
    LoanClient(channel, OPERATOR).RunCloseOfBusiness(request)


def _lines(channel: grpc.Channel, loan_id: str = "l1") -> list[lpb.ParticipationLine]:
    out, token = [], ""
    while True:
        page = LoanClient(channel, TELLER).ListParticipationLines(
            lpb.ListParticipationLinesRequest(name=f"loans/{loan_id}", page_size=7,
                                              page_token=token))
        out += page.lines
        token = page.next_page_token
        if not token:
            return out


def check(uow: Any, channel: grpc.Channel, loan_id: str = "l1") -> dict[str, Any]:
    """Every invariant of a pool-funded loan: the lines fold to the holdings stored on the
    loan; the funders' holdings add up to the loan's booked buckets; each pool's register
    holds exactly its funder's share; the ledger checks out. Returns the holdings."""
    lines = _lines(channel, loan_id)
    assert [x.line_number for x in lines] == list(range(1, len(lines) + 1))
    with uow.read() as r:
        loan = loan_reader(r).get_loan(loan_id)
        booked = loan_reader(r).booked(loan_id)
        assert loan is not None and booked is not None
        funding = Funding.of(loan)
        folded = holdings_of(Line(x.movement, x.funder, x.bps, minor(x.amount)) for x in lines)
        assert folded == funding.holdings
        b, held = booked.buckets, funding.holdings.values()
        assert sum(h.principal_minor for h in held) == b.principal_outstanding_minor
        assert sum(h.income_minor for h in held) == (
            b.interest_receivable_minor + b.fee_receivable_minor + b.penalty_receivable_minor)
        assert sum(h.provisions_minor for h in held) == b.provision_required_minor
        assert sum(h.lost_minor for h in held) == (
            b.written_off_principal_minor + b.written_off_interest_minor
            + b.written_off_fees_minor)
        assert sum(h.recovered_minor for h in held) == b.recovered_minor
        for funder, h in funding.holdings.items():
            pool_id = pool_of(funder)
            if pool_id is None:
                continue
            share = load(pool_store(r), pool_id).register.loan(loan_id)
            assert (share.principal_minor, share.accrued_interest_minor, share.provisions_minor,
                    share.charged_off_minor, share.recovered_minor) == (
                h.principal_minor, h.income_minor, h.provisions_minor, h.lost_minor,
                h.recovered_minor)
    assert check_ledger(uow).problems == []
    return funding.holdings


def _by_movement(lines: list[lpb.ParticipationLine], entry: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for x in lines:
        if x.entry == entry:
            out.setdefault(x.movement, {})[x.funder] = minor(x.amount)
    return out


def _entry(channel: grpc.Channel, name: str) -> pb.Transfer:
    return Client(channel, TELLER).GetTransfer(pb.GetTransferRequest(name=name))


def test_a_pool_funded_loan_splits_every_movement_for_its_whole_life(uow, clock, channel):
    _pool_with_capital(uow, clock, channel)
    member_with_deposit(channel, pence=2_000_000)
    _applied(channel)
    approved = _approve(channel, shares=SPLIT, sector="food-manufacturing")
    assert [(f.funder, f.bps) for f in approved.proposed_funding] == sorted(SPLIT)
    assert not approved.funding

    loan = _disburse(channel)
    assert [(f.funder, f.bps) for f in loan.funding] == sorted(SPLIT)
    assert loan.funding_version == 1 and loan.sector == "food-manufacturing"
    held = check(uow, channel)
    assert (held["pools/lancs"].principal_minor, held["bank"].principal_minor) == (
        960_000, 240_000)
    lines = _lines(channel)
    disbursement = lines[0].entry
    assert _by_movement(lines, disbursement)["fund"] == {"bank": 240_000, "pools/lancs": 960_000}
    assert {(x.funder, x.bps, x.split_version) for x in lines} == {
        ("bank", 2_000, 1), ("pools/lancs", 8_000, 1)}
    entry = _entry(channel, disbursement)
    assert dict(entry.metadata)["funding"] == "bank:2000,pools/lancs:8000"
    pool = pools(channel).GetPool(ppb.GetPoolRequest(name=f"pools/{POOL}"))
    assert minor(pool.valuation.loan_principal) == 960_000
    assert minor(pool.valuation.cash) == 1_600_000 - 960_000

    # A month of accrual at close of business: 80 % of each day's interest is the pool's.
    _cob(channel, "2026-01-31")
    held = check(uow, channel)
    total = held["pools/lancs"].income_minor + held["bank"].income_minor
    assert total > 0 and abs(held["pools/lancs"].income_minor - total * 0.8) <= 31

    # The first instalment, paid on its due date: principal and interest back to each funder.
    view = LoanClient(channel, TELLER).GetLoan(lpb.GetLoanRequest(name="loans/l1"))
    instalment = minor(view.schedule[0].principal) + minor(view.schedule[0].interest)
    paid = LoanClient(channel, TELLER).RecordRepayment(lpb.RecordRepaymentRequest(
        request_id=request_id(), name="loans/l1", amount=gbp(instalment)))
    moved = _by_movement(_lines(channel), paid.transfer)
    assert sum(moved["repay"].values()) == minor(view.schedule[0].principal)
    # Interest received goes to both funders, each within a penny a day of its 80/20 share.
    received = moved["receive"]
    assert set(received) == {"bank", "pools/lancs"}
    assert abs(received["pools/lancs"] - sum(received.values()) * 0.8) <= 31
    check(uow, channel)

    # Missed instalments, then a backdated repayment: the replay moves lines both ways.
    _cob(channel, "2026-04-01")
    check(uow, channel)
    LoanClient(channel, TELLER).RecordRepayment(lpb.RecordRepaymentRequest(
        request_id=request_id(), name="loans/l1", amount=gbp(instalment),
        repayment_date=day("2026-03-01")))
    check(uow, channel)

    # Charge-off on 1 July, write-off (two people), a recovery back to who bore the loss.
    _cob(channel, "2026-06-30")
    LoanClient(channel, APPROVER).ChargeOffLoan(lpb.ChargeOffLoanRequest(
        request_id=request_id(), name="loans/l1"))
    _cob(channel, "2026-07-10")
    before = check(uow, channel)
    assert before["pools/lancs"].provisions_minor > 0
    asked = LoanClient(channel, OFFICER).WriteOffLoan(lpb.WriteOffLoanRequest(
        request_id=request_id(), name="loans/l1"))
    approvals(channel, APPROVER_2).ApproveOperation(apb.ApproveOperationRequest(
        request_id=request_id(), name=asked.approval))
    held = check(uow, channel)
    # Each funder loses exactly what it held (its provision used first).
    assert {f: h.lost_minor for f, h in held.items()} == {
        f: h.exposure_minor for f, h in before.items()}
    assert held["pools/lancs"].principal_minor == 0 == held["pools/lancs"].provisions_minor
    lines = _lines(channel)
    used = _by_movement(lines, lines[-1].entry)["provision_used"]
    assert used == {f: min(h.provisions_minor, h.exposure_minor) for f, h in before.items()}
    LoanClient(channel, TELLER).RecordRecovery(lpb.RecordRecoveryRequest(
        request_id=request_id(), name="loans/l1", amount=gbp(50_000)))
    held = check(uow, channel)
    assert (held["pools/lancs"].recovered_minor, held["bank"].recovered_minor) == (
        40_000, 10_000)
    pool = pools(channel).GetPool(ppb.GetPoolRequest(name=f"pools/{POOL}"))
    assert minor(pool.valuation.loan_principal) == 0


def test_a_participation_transfer_is_approved_by_a_second_person_and_moves_the_share_at_par(
        uow, clock, channel):
    _pool_with_capital(uow, clock, channel)
    member_with_deposit(channel, pence=2_000_000)
    _applied(channel)
    _approve(channel)  # no split: the bank alone
    loan = _disburse(channel)
    assert not loan.funding and not loan.holdings
    _cob(channel, "2026-01-20")
    officer = LoanClient(channel, OFFICER)
    asked = officer.TransferParticipation(lpb.TransferParticipationRequest(
        request_id=request_id(), name="loans/l1", from_funder="bank",
        to_funder="pools/lancs", bps=7_500))
    assert asked.approval.startswith("approvals/") and not asked.loan.funding
    with uow.read() as r:
        assert loan_reader(r).participation_lines("l1", 0, 10) == []
    # The maker cannot approve it: a different approver must.
    error = refused(lambda: approvals(channel, OFFICER).ApproveOperation(
        apb.ApproveOperationRequest(request_id=request_id(), name=asked.approval)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    approvals(channel, APPROVER_2).ApproveOperation(apb.ApproveOperationRequest(
        request_id=request_id(), name=asked.approval))
    loan = LoanClient(channel, TELLER).GetLoan(lpb.GetLoanRequest(name="loans/l1"))
    assert [(f.funder, f.bps) for f in loan.funding] == [("bank", 2_500), ("pools/lancs", 7_500)]
    assert loan.funding_version == 1
    held = check(uow, channel)
    principal = minor(loan.balances.principal_outstanding)
    receivable = minor(loan.balances.interest_receivable)
    assert held["pools/lancs"].principal_minor == principal * 3 // 4 + (principal * 3 % 4 >= 2)
    assert held["pools/lancs"].income_minor + held["bank"].income_minor == receivable
    moved = _by_movement(_lines(channel), "participation/l1/1")
    assert moved["buy_principal"]["pools/lancs"] == moved["sell_principal"]["bank"]
    # Later movements follow the new split (version 1: the transfer gave this loan its first).
    _cob(channel, "2026-01-31")
    check(uow, channel)
    accrued = [x for x in _lines(channel) if x.movement == "accrue"]
    assert accrued and {(x.funder, x.bps, x.split_version) for x in accrued} == {
        ("bank", 2_500, 1), ("pools/lancs", 7_500, 1)}
    # Too many bps is refused, and nothing is asked.
    error = refused(lambda: officer.TransferParticipation(lpb.TransferParticipationRequest(
        request_id=request_id(), name="loans/l1", from_funder="pools/lancs",
        to_funder="bank", bps=7_501)))
    assert error_info(error).reason == "PARTICIPATION_BPS_INVALID"


def _state(engine: Any) -> dict[str, list[Any]]:
    skip = ("audit_log", "ledger_head", "requests")
    with engine.connect() as conn:
        return {name: sorted((tuple(r) for r in conn.execute(select(table))), key=repr)
                for name, table in t.metadata.tables.items() if name not in skip}


def test_concentration_limits_are_checked_at_approval_and_at_disbursement(
        engine, uow, clock, channel):
    # Single borrower limit: 10 % of the pool's £16,000 net assets = £1,600; the pool's part
    # of a £12,000 loan at 80 % is £9,600.
    _pool_with_capital(uow, clock, channel, single_borrower_bps=1_000)
    member_with_deposit(channel, pence=2_000_000)
    _applied(channel)
    LoanClient(channel, OFFICER).ApplyForLoan(application("l2", pence=1_200_000))
    before = _state(engine)
    error = refused(lambda: _approve(channel, shares=SPLIT))
    info = error_info(error)
    assert (error.code(), info.reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                           "CONCENTRATION_LIMIT_EXCEEDED")
    assert info.metadata["limit"] == "single_borrower" and info.metadata["pool"] == "pools/lancs"
    assert _state(engine) == before
    # Two loans to the same borrower, each within the limit when approved (£1,200 and £600);
    # once the first is paid out, the second would take the borrower to £1,800.
    _approve(channel, "l1", shares=[("pools/lancs", 1_000), ("bank", 9_000)])
    _approve(channel, "l2", shares=[("pools/lancs", 500), ("bank", 9_500)])
    _disburse(channel, "l1")
    before = _state(engine)
    error = refused(lambda: _disburse(channel, "l2"))
    assert error_info(error).reason == "CONCENTRATION_LIMIT_EXCEEDED"
    assert error_info(error).metadata["exposure_minor"] == "180000"
    assert _state(engine) == before
    check(uow, channel)


def test_a_pool_with_a_sector_limit_needs_the_borrowers_sector(engine, uow, clock, channel):
    _pool_with_capital(uow, clock, channel, sector_bps=9_000)
    member_with_deposit(channel, pence=2_000_000)
    _applied(channel)
    before = _state(engine)
    error = refused(lambda: _approve(channel, shares=SPLIT))
    assert (error_info(error).reason, error_info(error).metadata["limit"]) == (
        "SECTOR_REQUIRED", "sector")
    assert _state(engine) == before
    loan = _approve(channel, shares=SPLIT, sector="bakery")
    assert loan.sector == "bakery"
    _disburse(channel)
    check(uow, channel)


def test_a_loan_cannot_share_its_id_with_a_loan_a_pool_holds_by_hand(
        engine, uow, clock, channel):
    _pool_with_capital(uow, clock, channel)
    pools(channel, OFFICER).RecordLoanEvent(ppb.RecordLoanEventRequest(
        request_id=request_id(), pool=f"pools/{POOL}", loan="loans/l1",
        kind=ppb.LOAN_EVENT_KIND_FUND, amount=gbp(100_000)))
    member_with_deposit(channel, pence=2_000_000)
    _applied(channel)
    before = _state(engine)
    error = refused(lambda: _approve(channel, shares=SPLIT))
    assert error_info(error).reason == "LOAN_ID_TAKEN_IN_POOL"
    assert _state(engine) == before


def test_a_pool_without_the_cash_refuses_the_disbursement_and_nothing_changes(
        engine, uow, clock, channel):
    _pool_with_capital(uow, clock, channel)
    member_with_deposit(channel, pence=2_000_000)
    _applied(channel, pence=2_000_000)
    _approve(channel, shares=[("pools/lancs", 9_000), ("bank", 1_000)])
    before = _state(engine)
    error = refused(lambda: _disburse(channel))
    assert (error.code(), error_info(error).reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                                        "INSUFFICIENT_POOL_CASH")
    assert error_info(error).metadata["pool"] == "pools/lancs"
    assert _state(engine) == before


@pytest.mark.parametrize(("shares", "field", "reason"), [
    ([("pools/lancs", 8_000), ("bank", 1_000)], "funding", "SPLIT_NOT_10000_BPS"),
    ([("pools/LANCS", 8_000), ("bank", 2_000)], "funding[0].funder", "FUNDER_INVALID"),
    ([("council:preston", 10_000)], "funding[0].funder", "FUNDER_INVALID"),
    ([("bank", 5_000), ("bank", 5_000)], "funding[1].funder", "FUNDER_REPEATED"),
    ([("pools/lancs", 0), ("bank", 10_000)], "funding['pools/lancs']", "SPLIT_SHARE_INVALID"),
])
def test_a_malformed_split_is_refused_by_name_and_changes_nothing(
        engine, uow, clock, channel, shares, field, reason):
    _pool_with_capital(uow, clock, channel)
    member_with_deposit(channel, pence=2_000_000)
    _applied(channel)
    before = _state(engine)
    error = refused(lambda: _approve(channel, shares=shares))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(error)
    assert _state(engine) == before


def test_an_unknown_pool_or_a_bad_sector_is_refused_and_changes_nothing(
        engine, uow, clock, channel):
    _pool_with_capital(uow, clock, channel)
    member_with_deposit(channel, pence=2_000_000)
    _applied(channel)
    before = _state(engine)
    error = refused(lambda: _approve(channel, shares=[("pools/nowhere", 10_000)]))
    assert (error.code(), error_info(error).reason) == (grpc.StatusCode.NOT_FOUND,
                                                        "POOL_NOT_FOUND")
    error = refused(lambda: _approve(channel, shares=SPLIT, sector="Food & Drink"))
    assert field_violations(error) == ["sector"]
    assert _state(engine) == before


def test_the_pool_cannot_record_its_own_events_for_a_loan_on_the_book(
        engine, uow, clock, channel):
    _pool_with_capital(uow, clock, channel)
    member_with_deposit(channel, pence=2_000_000)
    _applied(channel)
    _approve(channel, shares=SPLIT)
    _disburse(channel)
    before = _state(engine)
    error = refused(lambda: pools(channel, OFFICER).RecordLoanEvent(ppb.RecordLoanEventRequest(
        request_id=request_id(), pool=f"pools/{POOL}", loan="loans/l1",
        kind=ppb.LOAN_EVENT_KIND_ACCRUE_INTEREST, amount=gbp(100))))
    assert error_info(error).reason == "LOAN_ON_BOOK"
    assert _state(engine) == before


def test_a_pool_below_its_first_loss_reserve_target_lends_nothing_more(
        engine, uow, clock, channel):
    seed_councils(uow, clock)
    create_pool(channel, pool_id=POOL, classes=(("junior", 0), ("senior", 1)),
                reserve_target_bps=1_000)
    subscribe(channel, "preston", 1_500_000, pool_id=POOL, unit_class="senior")
    member_with_deposit(channel, pence=2_000_000)
    _applied(channel)
    before = _state(engine)
    error = refused(lambda: _approve(channel, shares=SPLIT))
    info = error_info(error)
    assert (info.reason, info.metadata["limit"], info.metadata["limit_minor"]) == (
        "RESERVE_BELOW_TARGET", "reserve_target", "150000")
    assert _state(engine) == before
    subscribe(channel, "lancaster", 200_000, pool_id=POOL, unit_class="junior")
    _approve(channel, shares=SPLIT)
    loan = _disburse(channel)
    assert loan.funding_version == 1
    check(uow, channel)
