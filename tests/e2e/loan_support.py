"""Shared steps for the lending tests: LoanService clients per role, products, applications,
and a member with money on deposit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.type import date_pb2, money_pb2

from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from services.generated.peoplesbank.lending.v1 import loan_service_pb2 as lpb
from services.generated.peoplesbank.lending.v1 import loan_service_pb2_grpc as lpb_grpc
from services.generated.peoplesbank.members.v1 import member_service_pb2 as mpb
from tests.e2e.member_support import MemberClient, onboard_request
from tests.helpers import account, request_id, transfer

TELLER = "tess;teller;branch:preston"
OFFICER = "lou;loan_officer;branch:preston"
APPROVER = "amy;approver;branch:preston"
APPROVER_2 = "abe;approver;branch:lancaster"
OPERATOR = "ops;operator;"


@dataclass
class LoanClient:
    """A LoanService stub that calls as one development principal."""

    channel: grpc.Channel
    principal: str = OFFICER

    def __getattr__(self, method: str) -> Any:
        call = getattr(lpb_grpc.LoanServiceStub(self.channel), method)

        def invoke(request: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", 60)
            kwargs.setdefault("metadata", [("x-bank-principal", self.principal)])
            return call(request, **kwargs)

        return invoke


def gbp(pence: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="GBP", units=pence // 100, nanos=pence % 100 * 10**7)


def day(iso: str) -> date_pb2.Date:
    y, m, d = (int(x) for x in iso.split("-"))
    return date_pb2.Date(year=y, month=m, day=d)


def terms(**changes: Any) -> lpb.LoanTerms:
    message = lpb.LoanTerms(
        amortisation=lpb.AMORTISATION_EQUAL_INSTALMENTS, frequency=lpb.FREQUENCY_MONTHLY,
        instalments=12, day_count=lpb.DAY_COUNT_ACT_365F,
        late_fee=lpb.LateFeeRule(amount=gbp(1_000), days_overdue=5, per_instalment_cap=gbp(2_500),
                                 per_loan_cap=gbp(6_000), repeat_every_days=10),
        provision_matrix=lpb.ProvisionMatrix(current_bps=100, dpd_1_30_bps=500,
                                             dpd_31_60_bps=2_000, dpd_61_90_bps=5_000,
                                             dpd_over_90_bps=10_000))
    message.annual_rate.value = "12"
    for key, value in changes.items():
        if isinstance(value, lpb.LateFeeRule | lpb.ProvisionMatrix | money_pb2.Money):
            getattr(message, key).CopyFrom(value)
        elif key == "annual_rate":
            message.annual_rate.value = value
        else:
            setattr(message, key, value)
    return message


def product_request(product_id: str = "sme", name: str = "SME growth loan",
                    low: int = 100_000, high: int = 5_000_000, rid: str | None = None,
                    **term_changes: Any) -> lpb.CreateProductRequest:
    return lpb.CreateProductRequest(request_id=rid or request_id(), product=lpb.Product(
        product_id=product_id, display_name=name, terms=terms(**term_changes),
        principal_min=gbp(low), principal_max=gbp(high)))


def application(loan_id: str, member: str = "coop", pence: int = 1_200_000,
                product: str = "sme", rid: str | None = None,
                ownership: int = lpb.OWNERSHIP_COOPERATIVE) -> lpb.ApplyForLoanRequest:
    return lpb.ApplyForLoanRequest(request_id=rid or request_id(), loan=lpb.Loan(
        loan_id=loan_id, member=f"members/{member}", product=f"loanProducts/{product}",
        amount_applied=gbp(pence), purpose="New ovens for the bakery co-operative",
        social_value=lpb.SocialValue(jobs_created=4, jobs_safeguarded=11,
                                     living_wage_employer=True, ownership=ownership)))


def member_with_deposit(channel: grpc.Channel, member_id: str = "coop",
                        pence: int = 5_000_000, verified: bool = True,
                        postcode: str = "PR1 2HE") -> None:
    """A verified co-operative in Preston with `pence` on its deposit account (from `cash`)."""
    members = MemberClient(channel)
    members.OnboardMember(onboard_request(member_id, "COOPERATIVE", postcode=postcode))
    if verified:
        members.UpdateKycStatus(mpb.UpdateKycStatusRequest(
            request_id=request_id(), name=f"members/{member_id}",
            kyc_status=mpb.KYC_STATUS_VERIFIED))
    from tests.e2e.conftest import Client

    ledger = Client(channel, TELLER)
    ledger.CreateAccounts(pb.CreateAccountsRequest(request_id=request_id(), accounts=[
        account("cash", "ASSET", owner=("BANK", "bank"))]))
    if pence:
        ledger.CreateTransfers(pb.CreateTransfersRequest(request_id=request_id(), transfers=[
            transfer(f"fund-{member_id}", "cash", f"{member_id}-deposit", pence)]))


def approved_loan(channel: grpc.Channel, loan_id: str = "l1", pence: int = 1_200_000,
                  disburse: bool = True, **term_changes: Any) -> lpb.Loan:
    """A product, an application by the loan officer, approval by the credit committee, and
    (unless told) the disbursement to the member's deposit account."""
    officer, approver = LoanClient(channel, OFFICER), LoanClient(channel, APPROVER)
    officer.CreateProduct(product_request(**term_changes))
    officer.ApplyForLoan(application(loan_id, pence=pence))
    loan: lpb.Loan = approver.DecideLoan(lpb.DecideLoanRequest(
        request_id=request_id(), name=f"loans/{loan_id}",
        decision=lpb.DecideLoanRequest.DECISION_APPROVE))
    if disburse:
        loan = LoanClient(channel, TELLER).DisburseLoan(lpb.DisburseLoanRequest(
            request_id=request_id(), name=f"loans/{loan_id}"))
    return loan
