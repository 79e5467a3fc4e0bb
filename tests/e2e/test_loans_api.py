"""LoanService end to end, on a real server over SQLite and PostgreSQL: products, applications
and two-person decisions, disbursement and repayment entries, refusals that change nothing,
close of business (idempotent, catching up a missed day), and one loan's whole life across
many business dates with the ledger, schedule, arrears, provisions and audit log checked at
every step."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.type import date_pb2, decimal_pb2, money_pb2
from sqlalchemy import select

from bank.adapters import tables as t
from bank.app.audit import sign_checkpoint, verify_audit
from bank.app.check import check_ledger
from services.generated.peoplesbank.approvals.v1 import approval_service_pb2 as apb
from services.generated.peoplesbank.approvals.v1 import approval_service_pb2_grpc as apb_grpc
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from services.generated.peoplesbank.lending.v1 import loan_service_pb2 as lpb
from tests.e2e.conftest import Client
from tests.e2e.loan_support import (
    APPROVER,
    APPROVER_2,
    OFFICER,
    OPERATOR,
    TELLER,
    LoanClient,
    application,
    approved_loan,
    day,
    gbp,
    member_with_deposit,
    product_request,
)
from tests.e2e.support import balance, minor, refused
from tests.helpers import error_info, field_violations, request_id


@pytest.fixture
def officer(channel: grpc.Channel) -> LoanClient:
    return LoanClient(channel, OFFICER)


@pytest.fixture
def approver(channel: grpc.Channel) -> LoanClient:
    return LoanClient(channel, APPROVER)


@pytest.fixture
def teller(channel: grpc.Channel) -> LoanClient:
    return LoanClient(channel, TELLER)


@pytest.fixture
def operator(channel: grpc.Channel) -> LoanClient:
    return LoanClient(channel, OPERATOR)


def _db(engine: Any, skip: tuple[str, ...] = ()) -> dict[str, list[Any]]:
    with engine.connect() as conn:
        return {name: sorted((tuple(r) for r in conn.execute(select(table))), key=repr)
                for name, table in t.metadata.tables.items() if name not in skip}


def _state(engine: Any) -> dict[str, list[Any]]:
    """Everything but the records of requests and the audit log (a refused business request
    is recorded, and audited, as a refusal: it changes nothing else)."""
    return _db(engine, ("audit_log", "ledger_head", "requests"))


def _decide(client: LoanClient, loan_id: str, approve: bool = True,
            amount: int | None = None) -> lpb.Loan:
    request = lpb.DecideLoanRequest(
        request_id=request_id(), name=f"loans/{loan_id}",
        decision=lpb.DecideLoanRequest.DECISION_APPROVE if approve
        else lpb.DecideLoanRequest.DECISION_REJECT)
    if amount is not None:
        request.approved_amount.CopyFrom(gbp(amount))
    return client.DecideLoan(request)


def _cob(operator: LoanClient, through: str | None = None) -> lpb.RunCloseOfBusinessResponse:
    request = lpb.RunCloseOfBusinessRequest(request_id=request_id())
    if through:
        request.business_date.CopyFrom(day(through))
    return operator.RunCloseOfBusiness(request)


def _iso(d: Any) -> str:
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"


# -- products, applications and decisions ---------------------------------------------------------
def test_products_are_versioned_and_an_application_is_decided_by_a_second_person(
        engine, channel, officer, approver):
    member_with_deposit(channel)
    first = officer.CreateProduct(product_request())
    assert (first.name, first.version, first.terms.annual_rate.value) == (
        "loanProducts/sme", 1, "12")
    assert officer.CreateProduct(product_request()).version == 1  # same content: unchanged
    second = officer.CreateProduct(product_request(annual_rate="11.5"))
    assert second.version == 2
    assert officer.GetProduct(lpb.GetProductRequest(name="loanProducts/sme",
                                                    version=1)).terms.annual_rate.value == "12"

    loan = officer.ApplyForLoan(application("l1", pence=1_000_000))
    assert (loan.state, loan.product_version, loan.council_area, loan.applied_by) == (
        lpb.LOAN_STATE_APPLIED, 2, "preston", "lou")
    assert loan.social_value.jobs_safeguarded == 11 and loan.social_value.living_wage_employer

    # The applicant-side maker cannot approve, even holding an approver certificate.
    before = _state(engine)
    error = refused(lambda: _decide(LoanClient(channel, "lou;approver;branch:preston"), "l1"))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error_info(error).reason == "SELF_APPROVAL"
    # More than applied for is refused, naming the field.
    error = refused(lambda: _decide(approver, "l1", amount=1_000_001))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "APPROVED_EXCEEDS_APPLIED"
    assert error_info(error).metadata["field"] == "approved_amount"
    assert _state(engine) == before

    approved = _decide(approver, "l1", amount=900_000)
    assert (approved.state, minor(approved.amount_approved), approved.decided_by) == (
        lpb.LOAN_STATE_APPROVED, 900_000, "amy")
    assert approved.terms.annual_rate.value == "11.5"  # frozen from the version applied under
    officer.CreateProduct(product_request(annual_rate="15"))  # the product moves on...
    got = officer.GetLoan(lpb.GetLoanRequest(name="loans/l1"))
    assert got.terms.annual_rate.value == "11.5"  # ...the loan's terms do not
    error = refused(lambda: _decide(LoanClient(channel, APPROVER_2), "l1"))
    assert error_info(error).reason == "LOAN_ALREADY_DECIDED"

    officer.ApplyForLoan(application("l2", pence=200_000))
    assert _decide(approver, "l2", approve=False).state == lpb.LOAN_STATE_REJECTED


def test_a_member_who_is_not_eligible_cannot_apply(engine, channel, officer):
    member_with_deposit(channel, "pending", verified=False)
    officer.CreateProduct(product_request())
    before = _state(engine)
    error = refused(lambda: officer.ApplyForLoan(application("l1", member="pending")))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "KYC_NOT_VERIFIED"
    error = refused(lambda: officer.ApplyForLoan(application("l1", member="nobody")))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert _state(engine) == before


def test_bad_input_of_every_kind_gets_a_precise_error_and_changes_nothing(
        engine, channel, officer, approver, teller, operator):
    member_with_deposit(channel)
    approved_loan(channel)
    before = _state(engine)
    bad_product = product_request()
    bad_product.product.terms.late_fee.days_overdue = 0
    bad_matrix = product_request()
    bad_matrix.product.terms.provision_matrix.dpd_1_30_bps = 50  # below current_bps (100)
    bad_rate = product_request(annual_rate="12.1234567")
    bad_currency = product_request()
    bad_currency.product.terms.arrangement_fee.CopyFrom(
        money_pb2.Money(currency_code="EUR", units=1))
    no_social = application("l9")
    no_social.loan.ClearField("social_value")
    partial_social = application("l9")
    partial_social.loan.social_value.ClearField("living_wage_employer")
    partial_social.loan.social_value.ownership = lpb.OWNERSHIP_UNSPECIFIED
    too_small = application("l9", pence=99_999)
    future = lpb.RecordRepaymentRequest(request_id=request_id(), name="loans/l1",
                                        amount=gbp(100), repayment_date=day("2026-06-01"))
    cases = [
        (lambda: officer.CreateProduct(bad_product), grpc.StatusCode.INVALID_ARGUMENT,
         ["product.terms.late_fee.days_overdue"]),
        (lambda: officer.CreateProduct(bad_matrix), grpc.StatusCode.INVALID_ARGUMENT,
         ["product.terms.provision_matrix.dpd_1_30_bps"]),
        (lambda: officer.CreateProduct(bad_rate), grpc.StatusCode.INVALID_ARGUMENT,
         ["product.terms.annual_rate"]),
        (lambda: officer.CreateProduct(bad_currency), grpc.StatusCode.INVALID_ARGUMENT,
         ["product.terms.arrangement_fee"]),
        (lambda: officer.ApplyForLoan(no_social), grpc.StatusCode.INVALID_ARGUMENT,
         ["loan.social_value"]),
        (lambda: officer.ApplyForLoan(partial_social), grpc.StatusCode.INVALID_ARGUMENT,
         ["loan.social_value.living_wage_employer", "loan.social_value.ownership"]),
        (lambda: officer.ApplyForLoan(too_small), grpc.StatusCode.INVALID_ARGUMENT,
         ["loan.amount_applied"]),
        (lambda: officer.ApplyForLoan(lpb.ApplyForLoanRequest(request_id="not a uuid?!")),
         grpc.StatusCode.INVALID_ARGUMENT, ["request_id", "loan"]),
        (lambda: teller.RecordRepayment(lpb.RecordRepaymentRequest(
            request_id=request_id(), name="loans/l1",
            amount=money_pb2.Money(currency_code="GBP", units=-1))),
         grpc.StatusCode.INVALID_ARGUMENT, ["amount"]),
        (lambda: teller.RecordRepayment(lpb.RecordRepaymentRequest(
            request_id=request_id(), name="loans/l1",
            amount=money_pb2.Money(currency_code="EUR", units=5))),
         grpc.StatusCode.INVALID_ARGUMENT, ["amount"]),
        (lambda: teller.RecordRepayment(future), grpc.StatusCode.INVALID_ARGUMENT,
         ["repayment_date"]),
        (lambda: teller.RecordRepayment(lpb.RecordRepaymentRequest(
            request_id=request_id(), name="loans/l1", amount=gbp(100),
            repayment_date=date_pb2.Date(year=2026, month=2, day=30))),
         grpc.StatusCode.INVALID_ARGUMENT, ["repayment_date"]),
        (lambda: teller.RecordRepayment(lpb.RecordRepaymentRequest(
            request_id=request_id(), name="loans/l1", amount=gbp(100_000_000))),
         grpc.StatusCode.FAILED_PRECONDITION, []),  # more than the deposit account holds
        (lambda: teller.RecordRepayment(lpb.RecordRepaymentRequest(
            request_id=request_id(), name="loans/nope", amount=gbp(100))),
         grpc.StatusCode.NOT_FOUND, []),
        (lambda: teller.DisburseLoan(lpb.DisburseLoanRequest(
            request_id=request_id(), name="loans/l1")), grpc.StatusCode.FAILED_PRECONDITION, []),
        (lambda: officer.RescheduleLoan(lpb.RescheduleLoanRequest(
            request_id=request_id(), name="loans/l1", instalments=0)),
         grpc.StatusCode.INVALID_ARGUMENT, ["instalments"]),
        (lambda: officer.ListLoans(lpb.ListLoansRequest(page_size=-1)),
         grpc.StatusCode.INVALID_ARGUMENT, ["page_size"]),
        (lambda: operator.RunCloseOfBusiness(lpb.RunCloseOfBusinessRequest(
            request_id=request_id(), business_date=day("2040-01-01"))),
         grpc.StatusCode.INVALID_ARGUMENT, ["business_date"]),
        (lambda: officer.GetPayoffQuote(lpb.GetPayoffQuoteRequest(
            name="loans/l1", quote_date=day("2025-12-31"))),
         grpc.StatusCode.INVALID_ARGUMENT, ["quote_date"]),
    ]
    for number, (call, code, fields) in enumerate(cases):
        error = refused(call)
        assert error.code() is code, (number, error.details())
        if fields:
            assert field_violations(error) == fields, (number, field_violations(error))
    assert error_info(refused(cases[12][0])).reason == "EXCEEDS_CREDITS"
    assert _state(engine) == before


# -- disbursement and repayment -------------------------------------------------------------------
def _ledger_matches(channel: grpc.Channel, loan: lpb.Loan) -> None:
    """The loan's accounts hold exactly the engine's buckets; the bank's lending accounts hold
    this loan's income (it is the only loan); the trial balance balances."""
    ledger = Client(channel, TELLER)
    b = loan.balances
    own = dict(zip(("principal", "interest", "fees", "penalties", "allowance", "overpayment"),
                   (a.removeprefix("accounts/") for a in loan.accounts), strict=True))
    assert balance(ledger, own["principal"]) == minor(b.principal_outstanding)
    assert balance(ledger, own["interest"]) == minor(b.interest_receivable)
    assert balance(ledger, own["fees"]) == minor(b.fee_receivable)
    assert balance(ledger, own["penalties"]) == minor(b.penalty_receivable)
    assert balance(ledger, own["overpayment"]) == minor(b.overpayment)
    assert balance(ledger, own["allowance"]) == -minor(b.provision)  # contra-asset
    for stem, amount in (("interest-income", b.interest_income), ("fee-income", b.fee_income),
                         ("penalty-income", b.penalty_income),
                         ("recovery-income", b.recovered), ("impairment", b.impairment_expense)):
        assert balance(ledger, f"bank-loan-{stem}-gbp") == minor(amount), stem
    trial = ledger.GetTrialBalance(pb.GetTrialBalanceRequest())
    for total in trial.totals:
        assert total.debits_posted == total.credits_posted


def test_disbursement_posts_the_principal_to_the_members_deposit_account(channel, teller):
    member_with_deposit(channel, pence=0)
    loan = approved_loan(channel, pence=1_200_000)
    assert loan.state == lpb.LOAN_STATE_ACTIVE
    assert _iso(loan.disbursement_date) == "2026-01-01"
    assert loan.settlement_account == "accounts/coop-deposit"
    ledger = Client(channel, TELLER)
    assert balance(ledger, "coop-deposit") == 1_200_000
    assert balance(ledger, "loan-l1-principal") == 1_200_000
    entry = ledger.GetTransfer(pb.GetTransferRequest(name="transfers/loan:l1:tx:1"))
    # Dr principal / Cr deposit, and the stage 1 provision (1 %) set up in the same entry.
    assert sorted((p.account, p.side, minor(p.amount)) for p in entry.postings) == [
        ("accounts/bank-loan-impairment-gbp", pb.SIDE_DEBIT, 12_000),
        ("accounts/coop-deposit", pb.SIDE_CREDIT, 1_200_000),
        ("accounts/loan-l1-allowance", pb.SIDE_CREDIT, 12_000),
        ("accounts/loan-l1-principal", pb.SIDE_DEBIT, 1_200_000)]
    assert len(loan.schedule) == 12 and len(loan.schedule_versions) == 1
    assert sum(minor(i.principal) for i in loan.schedule) == 1_200_000
    _ledger_matches(channel, loan)
    # A replay of the disbursement returns the original and posts nothing more.
    again = refused(lambda: teller.DisburseLoan(lpb.DisburseLoanRequest(
        request_id=request_id(), name="loans/l1")))
    assert error_info(again).reason == "LOAN_NOT_APPROVED"


def test_a_repayment_pays_penalties_fees_interest_then_principal(channel, teller, operator):
    member_with_deposit(channel)
    approved_loan(channel)
    _cob(operator, "2026-02-10")  # instalment 1 (due 1 Feb) missed: a £10 late fee on 6 Feb
    loan = teller.GetLoan(lpb.GetLoanRequest(name="loans/l1"))
    first = loan.schedule[0]
    assert (loan.days_past_due, loan.arrears_bucket, minor(first.penalties)) == (9, "1-30",
                                                                               1_000)
    interest, principal = minor(first.interest), minor(first.principal)
    # £10 penalty + the interest + £1 of principal.
    paid = teller.RecordRepayment(lpb.RecordRepaymentRequest(
        request_id=request_id(), name="loans/l1", amount=gbp(1_000 + interest + 100)))
    line = paid.loan.schedule[0]
    assert minor(line.unpaid) == principal - 100
    b = paid.loan.balances
    assert (minor(b.penalty_receivable), minor(b.principal_outstanding)) == (0, 1_200_000 - 100)
    entry = Client(channel, TELLER).GetTransfer(pb.GetTransferRequest(
        name=paid.transfer))
    credits = {p.account.removeprefix("accounts/"): minor(p.amount) for p in entry.postings
               if p.side == pb.SIDE_CREDIT}
    assert credits["loan-l1-penalties"] == 1_000 and credits["loan-l1-principal"] == 100
    # The entry brings the loan to the end of the business date (11 February), so it also
    # carries that day's accrual, netted on the interest receivable account.
    before, after = loan.balances, paid.loan.balances
    accrued_today = minor(after.interest_income) - minor(before.interest_income)
    assert 0 < accrued_today < interest
    assert credits["loan-l1-interest"] == interest - accrued_today
    assert minor(after.interest_receivable) == (minor(before.interest_receivable) - interest
                                                + accrued_today)
    _ledger_matches(channel, paid.loan)
    # Paying the rest of the instalment brings the loan current; an overpayment is held.
    rest = teller.RecordRepayment(lpb.RecordRepaymentRequest(
        request_id=request_id(), name="loans/l1", amount=gbp(principal - 100 + 5_000)))
    assert (rest.loan.days_past_due, minor(rest.loan.balances.overpayment)) == (0, 5_000)
    _ledger_matches(channel, rest.loan)
    quote = teller.GetPayoffQuote(lpb.GetPayoffQuoteRequest(name="loans/l1"))
    b = rest.loan.balances
    assert minor(quote.amount) == (minor(b.principal_outstanding) + minor(b.interest_receivable)
                                   - 5_000)


# -- close of business ----------------------------------------------------------------------------
def test_close_of_business_twice_for_a_date_changes_nothing_and_a_missed_day_is_caught_up(
        engine, channel, operator, officer):
    member_with_deposit(channel)
    approved_loan(channel)
    sent = lpb.RunCloseOfBusinessRequest(request_id=request_id())  # no date: today
    first = operator.RunCloseOfBusiness(sent)
    # Disbursed today: nothing has accrued yet, so the day is recorded and nothing posted.
    assert (_iso(first.first_closed_date), first.days, first.loans, first.entries) == (
        "2026-01-01", 1, 1, 0)
    everything = _db(engine)
    # The same request resent (a client that timed out) after the business date moved on
    # gets its own result and closes no further day.
    resent = operator.RunCloseOfBusiness(sent)
    assert (_iso(resent.first_closed_date), resent.days, resent.loans) == ("2026-01-01", 1, 1)
    assert _db(engine) == everything
    again = _cob(operator, "2026-01-01")
    assert again.already_closed and again.days == 0
    assert _db(engine) == everything  # not even an audit leaf: nothing was written
    assert _iso(operator.GetBusinessDate(lpb.GetBusinessDateRequest()).business_date) == (
        "2026-01-02")
    # Missed days: closing through 5 January closes 2, 3, 4 and 5 January one by one.
    caught = _cob(operator, "2026-01-05")
    assert (_iso(caught.first_closed_date), _iso(caught.last_closed_date), caught.days) == (
        "2026-01-02", "2026-01-05", 4)
    assert _iso(caught.business_date) == "2026-01-06"
    loan = officer.GetLoan(lpb.GetLoanRequest(name="loans/l1"))
    assert [_iso(d.business_date) for d in loan.arrears_history] == [
        f"2026-01-0{n}" for n in range(1, 6)]
    daily = [e for e in Client(channel, TELLER).ListAccountEntries(
        pb.ListAccountEntriesRequest(account="accounts/loan-l1-interest")).entries]
    assert len(daily) == 4  # one accrual per day from 2 to 5 January (none on the 1st)
    assert _iso(operator.GetBusinessDate(lpb.GetBusinessDateRequest()).last_closed_date) == (
        "2026-01-05")
    _ledger_matches(channel, loan)


# -- the whole life of a loan ---------------------------------------------------------------------
class Life:
    """One loan followed through its life, checked at every step."""

    def __init__(self, engine: Any, uow: Any, clock: Any, keys: Any, channel: grpc.Channel):
        self.engine, self.uow, self.clock, self.keys = engine, uow, clock, keys
        self.channel = channel
        self.officer = LoanClient(channel, OFFICER)
        self.teller = LoanClient(channel, TELLER)
        self.operator = LoanClient(channel, OPERATOR)
        self.approver = LoanClient(channel, APPROVER)

    def loan(self) -> lpb.Loan:
        loan: lpb.Loan = self.officer.GetLoan(lpb.GetLoanRequest(name="loans/l1"))
        return loan

    def check(self) -> lpb.Loan:
        """Ledger = engine buckets, trial balance balanced, ledger self-check and audit log
        verify; the arrears history is one row per closed day with its bucket."""
        loan = self.loan()
        _ledger_matches(self.channel, loan)
        assert check_ledger(self.uow).ok
        report = verify_audit(self.uow, self.keys.verifiers())
        assert report.ok, report.problems
        for row in loan.arrears_history:
            assert row.bucket == _bucket(row.days_past_due) or loan.state in (
                lpb.LOAN_STATE_CHARGED_OFF, lpb.LOAN_STATE_WRITTEN_OFF)
        return loan

    def close_through(self, iso: str) -> None:
        _cob(self.operator, iso)

    def history(self) -> dict[str, tuple[int, str, int]]:
        return {_iso(d.business_date): (d.days_past_due, d.bucket, d.stage)
                for d in self.loan().arrears_history}


def _bucket(dpd: int) -> str:
    for limit, name in ((0, "CURRENT"), (30, "1-30"), (60, "31-60"), (90, "61-90")):
        if dpd <= limit:
            return name
    return "90+"


def test_the_whole_life_of_a_loan(engine, uow, clock, keys, channel):
    member_with_deposit(channel, pence=2_000_000)
    approved_loan(channel, pence=1_200_000)
    sign_checkpoint(uow, clock, keys.ensure())
    life = Life(engine, uow, clock, keys, channel)
    loan = life.check()
    instalment = minor(loan.schedule[0].principal) + minor(loan.schedule[0].interest)

    # January: daily accrual, current, stage 1 with the 1 % provision.
    life.close_through("2026-01-31")
    loan = life.check()
    assert (loan.days_past_due, loan.stage, loan.arrears_bucket) == (0, 1, "CURRENT")
    receivable = minor(loan.balances.interest_receivable)
    assert receivable == minor(loan.balances.interest_income)  # accrued, none paid yet
    assert 0 < receivable < minor(loan.schedule[0].interest)  # 30 of the period's 31 days
    assert minor(loan.balances.provision) > 0

    # 1 February: instalment 1 paid on its due date.
    paid = life.teller.RecordRepayment(lpb.RecordRepaymentRequest(
        request_id=request_id(), name="loans/l1", amount=gbp(instalment)))
    assert minor(paid.loan.schedule[0].unpaid) == 0
    life.check()

    # Instalment 2 (1 March) is missed: late fees every 10 days from day 5, capped at £25 on
    # the instalment; by 31 March it is 30 days past due (1-30), on 1 April 31 (31-60).
    life.close_through("2026-03-31")
    loan = life.check()
    assert (loan.days_past_due, loan.arrears_bucket, loan.stage) == (30, "1-30", 1)
    assert minor(loan.schedule[1].penalties) == 2_500  # 10 + 10 + 5: cut to the cap
    life.close_through("2026-04-01")
    loan = life.check()
    assert (loan.days_past_due, loan.arrears_bucket, loan.stage) == (31, "31-60", 2)
    history = life.history()
    assert history["2026-03-01"] == (0, "CURRENT", 1)
    assert history["2026-03-02"] == (1, "1-30", 1)
    assert history["2026-03-31"] == (30, "1-30", 1)
    assert history["2026-04-01"] == (31, "31-60", 2)
    provision_31_60 = minor(loan.balances.provision)
    exposure = (minor(loan.balances.principal_outstanding)
                + minor(loan.balances.interest_receivable) + minor(loan.balances.fee_receivable)
                + minor(loan.balances.penalty_receivable))
    assert provision_31_60 == round(exposure * 0.20)
    penalties_before = minor(loan.balances.penalty_income)

    # 2 April: the borrower shows the instalment was in fact paid on 1 March (a backdated
    # repayment). The loan is replayed: no arrears in March, the late fees fall away, and the
    # ledger gets only the difference; the arrears history is recomputed from 1 March.
    backdated = life.teller.RecordRepayment(lpb.RecordRepaymentRequest(
        request_id=request_id(), name="loans/l1", amount=gbp(instalment),
        repayment_date=day("2026-03-01")))
    loan = life.check()
    assert minor(loan.balances.penalty_income) == penalties_before - 2_500
    assert minor(loan.schedule[1].unpaid) == 0
    history = life.history()
    assert all(history[f"2026-03-{n:02d}"] == (0, "CURRENT", 1) for n in range(1, 32))
    assert history["2026-04-01"] == (0, "CURRENT", 1)
    entry = Client(channel, TELLER).GetTransfer(pb.GetTransferRequest(name=backdated.transfer))
    assert {p.account for p in entry.postings} >= {"accounts/coop-deposit",
                                                   "accounts/loan-l1-penalties"}

    # Nothing more is paid: by 15 May instalment 3 (1 April) is 44 days past due.
    life.close_through("2026-05-15")
    loan = life.check()
    assert (loan.days_past_due, loan.arrears_bucket, loan.stage) == (44, "31-60", 2)
    assert minor(loan.balances.penalty_income) <= 6_000  # the per-loan cap

    # 16 May: forbearance, 24 instalments at 6 %: a new schedule version; stage 2 (forborne).
    life.officer.RescheduleLoan(lpb.RescheduleLoanRequest(
        request_id=request_id(), name="loans/l1", instalments=24,
        annual_rate=decimal_pb2.Decimal(value="6")))
    loan = life.check()
    assert loan.forborne and loan.stage == 2 and len(loan.schedule_versions) == 2
    assert _iso(loan.schedule_versions[1].effective_date) == "2026-05-16"
    assert loan.schedule_versions[1].instalments == 24
    assert loan.terms.annual_rate.value == "12"  # the approved terms are never changed

    # Nothing is paid under the new schedule either; charge-off on 1 July stops accrual.
    life.close_through("2026-06-30")
    loan = life.check()
    assert loan.days_past_due > 0 and loan.stage == 2
    life.approver.ChargeOffLoan(lpb.ChargeOffLoanRequest(request_id=request_id(),
                                                          name="loans/l1"))
    loan = life.check()
    assert (loan.state, loan.stage) == (lpb.LOAN_STATE_CHARGED_OFF, 3)
    interest_at_charge_off = minor(loan.balances.interest_receivable)
    life.close_through("2026-07-10")
    loan = life.check()
    assert minor(loan.balances.interest_receivable) == interest_at_charge_off
    exposure = (minor(loan.balances.principal_outstanding) + interest_at_charge_off
                + minor(loan.balances.fee_receivable) + minor(loan.balances.penalty_receivable))
    assert minor(loan.balances.provision) == exposure  # the 90+ rate: 100 %

    # Write-off is maker-checker: the loan officer asks, a second approver approves.
    asked = life.officer.WriteOffLoan(lpb.WriteOffLoanRequest(request_id=request_id(),
                                                                name="loans/l1"))
    assert asked.loan.state == lpb.LOAN_STATE_CHARGED_OFF
    approvals = apb_grpc.ApprovalServiceStub(channel)
    approvals.ApproveOperation(apb.ApproveOperationRequest(
        request_id=request_id(), name=asked.approval),
        metadata=[("x-bank-principal", APPROVER)], timeout=30)
    loan = life.check()
    assert loan.state == lpb.LOAN_STATE_WRITTEN_OFF
    assert minor(loan.balances.principal_outstanding) == 0 == minor(loan.balances.provision)
    written_off = minor(loan.balances.written_off)
    assert written_off == exposure

    # A recovery after the write-off: Dr the deposit account / Cr recovery income.
    life.teller.RecordRecovery(lpb.RecordRecoveryRequest(
        request_id=request_id(), name="loans/l1", amount=gbp(50_000)))
    loan = life.check()
    assert minor(loan.balances.recovered) == 50_000
    error = refused(lambda: life.teller.RecordRecovery(lpb.RecordRecoveryRequest(
        request_id=request_id(), name="loans/l1", amount=gbp(written_off))))
    assert error_info(error).reason == "RECOVERY_EXCEEDS_WRITE_OFF"

    # The reports see it, and close of business leaves a written-off loan alone.
    assert _cob(life.operator).entries == 0
    book = life.officer.GetLoanBookReport(lpb.LoanReportRequest())
    assert [(s.state, s.loans) for s in book.currencies[0].by_state] == [
        (lpb.LOAN_STATE_WRITTEN_OFF, 1)]
    assert minor(book.currencies[0].recovered) == 50_000
    social = LoanClient(channel, "preston-backoffice;council;council:preston"
                        ).GetSocialValueReport(lpb.LoanReportRequest(council_area="preston"))
    assert [(a.council_area, a.loans, a.jobs_created, a.cooperatives) for a in social.areas] == [
        ("preston", 1, 4, 1)]
    life.check()


def test_reports_show_portfolio_at_risk_and_councils_see_only_their_own_area(
        channel, officer, operator):
    member_with_deposit(channel)
    approved_loan(channel)
    _cob(operator, "2026-02-15")  # instalment 1 is 14 days past due
    book = officer.GetLoanBookReport(lpb.LoanReportRequest())
    currency = book.currencies[0]
    assert [(b.key, b.loans) for b in currency.by_bucket] == [
        ("CURRENT", 0), ("1-30", 1), ("31-60", 0), ("61-90", 0), ("90+", 0)]
    assert currency.portfolio_at_risk_1_bps == 10_000 and currency.portfolio_at_risk_30_bps == 0
    ageing = officer.GetArrearsReport(lpb.LoanReportRequest(council_area="preston"))
    assert minor(ageing.currencies[0].buckets[1].arrears) > 0
    provisions = officer.GetProvisionReport(lpb.LoanReportRequest())
    assert minor(provisions.currencies[0].provision) == minor(
        currency.by_bucket[1].provision)
    lancaster = LoanClient(channel, "lancaster-backoffice;council;council:lancaster")
    error = refused(lambda: lancaster.GetLoanBookReport(lpb.LoanReportRequest(
        council_area="preston")))
    assert error_info(error).reason == "OUT_OF_SCOPE"
    own = lancaster.GetLoanBookReport(lpb.LoanReportRequest(council_area="lancaster"))
    assert list(own.currencies) == []
