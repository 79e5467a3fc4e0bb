"""LoanService: protos in, use cases called, protos out. No lending rules live here.

Every field is validated at the edge, all broken rules of a request reported together and
named by their path (`loan.social_value.ownership`, `product.terms.late_fee.per_loan_cap`);
the rules of terms are `bank.domain.lending.LoanTerms`' own, with its field names mapped to
the request's.
"""

from __future__ import annotations

import json
import re
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

import grpc
from google.type import date_pb2

from bank.app import cob as cob_cases
from bank.app import loan_reports as reports
from bank.app import loans as cases
from bank.app.loan_ports import LoanFilter, LoanRecord, LoanStatus, Ownership, SocialValue
from bank.app.loan_reports import BucketLine
from bank.app.participations import Funding, check_sector, check_transfer_parties, parse_funding
from bank.app.ports import Clock, UnitOfWork
from bank.domain.errors import InvalidArgument, ViolationCollector
from bank.domain.lending import (
    Amortisation,
    Component,
    DayCount,
    Frequency,
    LateFeeRule,
    LoanProduct,
    LoanTerms,
    ProvisionMatrix,
    RoundingMode,
    terms_from_json,
)
from bank.domain.lending.product import DEFAULT_ALLOCATION_ORDER
from bank.domain.limits import DESCRIPTION_LENGTH_MAX
from bank.domain.members import is_member_id
from bank.domain.pools.split import BPS_TOTAL, FundingSplit
from bank.domain.postcodes import COUNCIL_AREAS
from services import convert as cv
from services.auth import current_principal
from services.errors import guarded
from services.generated.peoplesbank.lending.v1 import loan_service_pb2 as pb
from services.generated.peoplesbank.lending.v1 import loan_service_pb2_grpc as pb_grpc
from services.ledger import remaining

PRODUCTS = "loanProducts"
_PRODUCT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

AMORTISATIONS = {Amortisation.EQUAL_INSTALMENTS: pb.AMORTISATION_EQUAL_INSTALMENTS,
                 Amortisation.EQUAL_PRINCIPAL: pb.AMORTISATION_EQUAL_PRINCIPAL,
                 Amortisation.INTEREST_ONLY_BULLET: pb.AMORTISATION_INTEREST_ONLY_BULLET}
FREQUENCIES = {Frequency.WEEKLY: pb.FREQUENCY_WEEKLY,
               Frequency.FORTNIGHTLY: pb.FREQUENCY_FORTNIGHTLY,
               Frequency.MONTHLY: pb.FREQUENCY_MONTHLY, Frequency.QUARTERLY: pb.FREQUENCY_QUARTERLY}
DAY_COUNTS = {DayCount.ACT_365F: pb.DAY_COUNT_ACT_365F,
              DayCount.THIRTY_360: pb.DAY_COUNT_THIRTY_360, DayCount.ACT_360: pb.DAY_COUNT_ACT_360}
ROUNDINGS = {RoundingMode(m): pb.RoundingMode.Value(f"ROUNDING_MODE_{m}") for m in RoundingMode}
COMPONENTS = {Component(c): pb.Component.Value(f"COMPONENT_{c}") for c in Component}
OWNERSHIPS = {Ownership.COOPERATIVE: pb.OWNERSHIP_COOPERATIVE,
              Ownership.EMPLOYEE_OWNED: pb.OWNERSHIP_EMPLOYEE_OWNED,
              Ownership.OTHER: pb.OWNERSHIP_OTHER}
STATES = {LoanStatus(s): pb.LoanState.Value(f"LOAN_STATE_{s}") for s in LoanStatus}


def _inverse(table: Any) -> dict[int, Any]:
    return {v: k for k, v in table.items()}


_AMORTISATION_IN = _inverse(AMORTISATIONS)
_FREQUENCY_IN = _inverse(FREQUENCIES)
_DAY_COUNT_IN = _inverse(DAY_COUNTS)
_ROUNDING_IN = _inverse(ROUNDINGS)
_COMPONENT_IN = _inverse(COMPONENTS)
_OWNERSHIP_IN = _inverse(OWNERSHIPS)
_STATE_IN = _inverse(STATES)
_LOAN_OUTPUT_ONLY = ("name", "product_version", "amount_approved", "council_area", "state",
                     "terms", "applied_by", "decided_by", "decision_note", "disbursement_date",
                     "settlement_account", "accounts", "forborne", "days_past_due",
                     "arrears_bucket", "stage", "arrears", "booked_date", "balances",
                     "schedule", "schedule_versions", "arrears_history", "create_time",
                     "update_time", "funding", "funding_version", "proposed_funding", "sector",
                     "holdings")
# LoanTerms field names -> the request's (money fields lose "_minor").
_TERM_FIELDS = {"annual_rate_percent": "annual_rate", "arrangement_fee_minor": "arrangement_fee",
                "arrears_tolerance_minor": "arrears_tolerance",
                "late_fee.amount_minor": "late_fee.amount",
                "late_fee.per_instalment_cap_minor": "late_fee.per_instalment_cap",
                "late_fee.per_loan_cap_minor": "late_fee.per_loan_cap"}


# -- in -------------------------------------------------------------------------------------------
def _money(m: Any, field: str, currency: str | None, v: ViolationCollector,
           required: bool = False, positive: bool = False) -> int:
    """Minor units of a Money field in `currency` (0 when unset and not required)."""
    if not m.currency_code and not m.units and not m.nanos:
        if required:
            v.add(field, "is required")
        return 0
    parsed = cv.money_in(m, field, v)
    if parsed is None:
        return 0
    code, minor = parsed
    if currency is not None and code != currency:
        v.add(field, f"must be in {currency}")
        return 0
    if minor < 0 or (positive and minor == 0):
        v.add(field, "must be greater than zero" if positive else "must not be negative")
        return 0
    return minor


def _date(d: date_pb2.Date, field: str, v: ViolationCollector) -> date | None:
    try:
        return date(d.year, d.month, d.day)
    except ValueError:
        v.add(field, "must be a full, valid calendar date (year, month and day)")
        return None


def _rate(value: str, field: str, v: ViolationCollector) -> Decimal | None:
    try:
        rate = Decimal(value)
    except InvalidOperation:
        v.add(field, "must be a decimal percent such as 9.4822")
        return None
    if not rate.is_finite():
        v.add(field, "must be a decimal percent such as 9.4822")
        return None
    return rate


def terms_in(t: pb.LoanTerms, path: str, currency: str, v: ViolationCollector
             ) -> LoanTerms | None:
    before = len(v.violations)
    amortisation = _AMORTISATION_IN.get(t.amortisation)
    if amortisation is None:
        v.add(f"{path}.amortisation", "is required: EQUAL_INSTALMENTS, EQUAL_PRINCIPAL or "
              "INTEREST_ONLY_BULLET")
    frequency = _FREQUENCY_IN.get(t.frequency)
    if frequency is None:
        v.add(f"{path}.frequency", "is required: WEEKLY, FORTNIGHTLY, MONTHLY or QUARTERLY")
    rate = None
    if t.HasField("annual_rate"):
        rate = _rate(t.annual_rate.value, f"{path}.annual_rate", v)
    else:
        v.add(f"{path}.annual_rate", "is required")
    day_count = (DayCount.ACT_365F if t.day_count == pb.DAY_COUNT_UNSPECIFIED
                 else _DAY_COUNT_IN.get(t.day_count))
    if day_count is None:
        v.add(f"{path}.day_count", "is not a known day count")
    rounding = (RoundingMode.HALF_EVEN if t.rounding == pb.ROUNDING_MODE_UNSPECIFIED
                else _ROUNDING_IN.get(t.rounding))
    if rounding is None:
        v.add(f"{path}.rounding", "is not a known rounding mode")
    order = tuple(_COMPONENT_IN.get(c) for c in t.allocation_order) or DEFAULT_ALLOCATION_ORDER
    if None in order:
        v.add(f"{path}.allocation_order", "names an unknown component")
    late = None
    if t.HasField("late_fee"):
        f, fp = t.late_fee, f"{path}.late_fee"
        late = LateFeeRule(_money(f.amount, f"{fp}.amount", currency, v, True, True),
                           f.days_overdue,
                           _money(f.per_instalment_cap, f"{fp}.per_instalment_cap", currency, v,
                                  True),
                           _money(f.per_loan_cap, f"{fp}.per_loan_cap", currency, v, True),
                           f.repeat_every_days)
    if not t.HasField("provision_matrix"):
        v.add(f"{path}.provision_matrix", "is required")
    fee = _money(t.arrangement_fee, f"{path}.arrangement_fee", currency, v)
    tolerance = _money(t.arrears_tolerance, f"{path}.arrears_tolerance", currency, v)
    if len(v.violations) > before or amortisation is None or frequency is None:
        return None
    m = t.provision_matrix
    try:
        return LoanTerms(
            amortisation, frequency, rate or Decimal(0), t.instalments,
            ProvisionMatrix(m.current_bps, m.dpd_1_30_bps, m.dpd_31_60_bps, m.dpd_61_90_bps,
                            m.dpd_over_90_bps),
            day_count or DayCount.ACT_365F, rounding or RoundingMode.HALF_EVEN,
            tuple(c for c in order if c is not None), currency, fee, late,
            t.grace_principal_instalments, tolerance)
    except InvalidArgument as error:
        for violation in error.violations:
            name = _TERM_FIELDS.get(violation.field, violation.field)
            v.add(f"{path}.{name}", violation.description)
        return None


def product_in(request: pb.CreateProductRequest, v: ViolationCollector) -> LoanProduct | None:
    if not request.HasField("product"):
        v.add("product", "is required")
        return None
    p = request.product
    before = len(v.violations)
    if not _PRODUCT_ID.fullmatch(p.product_id):
        v.add("product.product_id", "must be 1-64 characters of [A-Za-z0-9_.-], starting with "
              "a letter or digit")
    if p.name or p.version or p.HasField("create_time"):
        v.add("product", "name, version and create_time are output only and must not be set")
    display = cv.text_in(p.display_name, "product.display_name", cases.PRODUCT_NAME_LENGTH_MAX,
                         v)
    if not display:
        v.add("product.display_name", "is required")
    low = _money(p.principal_min, "product.principal_min", None, v, True, True)
    currency = p.principal_min.currency_code
    high = _money(p.principal_max, "product.principal_max", currency, v, True, True)
    if low and high and high < low:
        v.add("product.principal_max", "must be at least principal_min")
    terms = None
    if p.HasField("terms"):
        terms = terms_in(p.terms, "product.terms", currency, v)
    else:
        v.add("product.terms", "is required")
    if len(v.violations) > before or terms is None:
        return None
    return LoanProduct(p.product_id, display, terms, low, high)


def _name(value: str, collection: str, field: str, v: ViolationCollector) -> str:
    prefix = f"{collection}/"
    if not value:
        v.add(field, "is required")
        return ""
    ident = value[len(prefix):]
    valid = {"loans": cases.is_loan_id(ident), "members": is_member_id(ident),
             PRODUCTS: bool(_PRODUCT_ID.fullmatch(ident))}[collection]
    if not value.startswith(prefix) or not valid:
        v.add(field, f"must be {collection}/{{id}} with a valid id")
        return ""
    return ident


def _account(value: str, field: str, v: ViolationCollector) -> str | None:
    return cv.parse_name(value, "accounts", field, v) or None if value else None


def application_in(request: pb.ApplyForLoanRequest, v: ViolationCollector
                   ) -> cases.LoanApplication | None:
    if not request.HasField("loan"):
        v.add("loan", "is required")
        return None
    loan, before = request.loan, len(v.violations)
    if not cases.is_loan_id(loan.loan_id):
        v.add("loan.loan_id", "must be 1-40 characters of [A-Za-z0-9_.-], starting with a "
              "letter or digit")
    member_id = _name(loan.member, "members", "loan.member", v)
    product_id = _name(loan.product, PRODUCTS, "loan.product", v)
    amount = _money(loan.amount_applied, "loan.amount_applied", None, v, True, True)
    purpose = cv.text_in(loan.purpose, "loan.purpose", cases.PURPOSE_LENGTH_MAX, v)
    if not loan.purpose.strip():
        v.add("loan.purpose", "is required")
    present = {d.name for d, _ in loan.ListFields()}
    for name in _LOAN_OUTPUT_ONLY:
        if name in present:
            v.add(f"loan.{name}", "is output only and must not be set")
    social = None
    if not loan.HasField("social_value"):
        v.add("loan.social_value", "is required")
    else:
        s, sp = loan.social_value, "loan.social_value"
        for name in ("jobs_created", "jobs_safeguarded"):
            if not 0 <= getattr(s, name) <= cases.JOBS_MAX:
                v.add(f"{sp}.{name}", f"must be within 0 and {cases.JOBS_MAX}")
        if not s.HasField("living_wage_employer"):
            v.add(f"{sp}.living_wage_employer", "is required (true or false)")
        ownership = _OWNERSHIP_IN.get(s.ownership)
        if ownership is None:
            v.add(f"{sp}.ownership", "is required: COOPERATIVE, EMPLOYEE_OWNED or OTHER")
        else:
            social = SocialValue(s.jobs_created, s.jobs_safeguarded, s.living_wage_employer,
                                 ownership)
    if len(v.violations) > before or social is None:
        return None
    return cases.LoanApplication(loan.loan_id, member_id, product_id, amount,
                                 loan.amount_applied.currency_code, purpose, social)


def _area(value: str, v: ViolationCollector) -> str | None:
    if value and value not in COUNCIL_AREAS:
        v.add("council_area", "is not a council area of the bank's region: one of "
              + ", ".join(COUNCIL_AREAS))
    return value or None


# -- out ------------------------------------------------------------------------------------------
def _m(minor: int, currency: str) -> Any:
    return cv.money_out(minor, currency)


def terms_out(terms: LoanTerms) -> pb.LoanTerms:
    c = terms.currency
    message = pb.LoanTerms(
        amortisation=AMORTISATIONS[terms.amortisation], frequency=FREQUENCIES[terms.frequency],
        instalments=terms.instalments, day_count=DAY_COUNTS[terms.day_count],
        rounding=ROUNDINGS[terms.rounding],
        allocation_order=[COMPONENTS[x] for x in terms.allocation_order],
        arrangement_fee=_m(terms.arrangement_fee_minor, c),
        grace_principal_instalments=terms.grace_principal_instalments,
        arrears_tolerance=_m(terms.arrears_tolerance_minor, c),
        provision_matrix=pb.ProvisionMatrix(**{
            name: getattr(terms.provision_matrix, name) for name in (
                "current_bps", "dpd_1_30_bps", "dpd_31_60_bps", "dpd_61_90_bps",
                "dpd_over_90_bps")}))
    message.annual_rate.value = str(terms.annual_rate_percent)
    if terms.late_fee is not None:
        f = terms.late_fee
        message.late_fee.CopyFrom(pb.LateFeeRule(
            amount=_m(f.amount_minor, c), days_overdue=f.days_overdue,
            per_instalment_cap=_m(f.per_instalment_cap_minor, c),
            per_loan_cap=_m(f.per_loan_cap_minor, c), repeat_every_days=f.repeat_every_days))
    return message


def product_out(record: Any) -> pb.Product:
    terms = terms_from_json(json.loads(record.terms_json))
    return pb.Product(
        name=f"{PRODUCTS}/{record.product_id}", product_id=record.product_id,
        version=record.version, display_name=record.name, terms=terms_out(terms),
        principal_min=_m(record.principal_min_minor, terms.currency),
        principal_max=_m(record.principal_max_minor, terms.currency),
        create_time=cv.timestamp_out(record.created_ns))


def loan_out(loan: LoanRecord) -> pb.Loan:
    c = loan.currency
    s = loan.social
    message = pb.Loan(
        name=f"loans/{loan.loan_id}", loan_id=loan.loan_id, member=f"members/{loan.member_id}",
        product=f"{PRODUCTS}/{loan.product_id}", product_version=loan.product_version,
        amount_applied=_m(loan.amount_applied_minor, c), purpose=loan.purpose,
        social_value=pb.SocialValue(jobs_created=s.jobs_created,
                                    jobs_safeguarded=s.jobs_safeguarded,
                                    living_wage_employer=s.living_wage_employer,
                                    ownership=OWNERSHIPS[s.ownership]),
        council_area=loan.council_area, state=STATES[loan.status], applied_by=loan.applied_by,
        decided_by=loan.decided_by or "", decision_note=loan.decision_note,
        settlement_account=f"accounts/{loan.settlement_account_id}"
        if loan.settlement_account_id else "", forborne=loan.forborne,
        days_past_due=loan.days_past_due, arrears_bucket=loan.arrears_bucket, stage=loan.stage,
        arrears=_m(loan.arrears_minor, c), create_time=cv.timestamp_out(loan.applied_ns),
        update_time=cv.timestamp_out(loan.updated_ns))
    if loan.amount_approved_minor is not None:
        message.amount_approved.CopyFrom(_m(loan.amount_approved_minor, c))
    if loan.terms_json is not None:
        message.terms.CopyFrom(terms_out(terms_from_json(json.loads(loan.terms_json))))
    if loan.disbursed_on is not None:
        message.disbursement_date.CopyFrom(cv.date_out(loan.disbursed_on))
    if loan.accounts is not None:
        a = loan.accounts
        message.accounts.extend(f"accounts/{x}" for x in (
            a.principal, a.interest, a.fee, a.penalty, a.allowance, a.overpayment))
    _funding_out(loan, message)
    return message


def _funding_out(loan: LoanRecord, message: pb.Loan) -> None:
    funding = Funding.of(loan)
    c = loan.currency
    if funding.split is not None:
        message.funding.extend(pb.FundingShare(funder=f, bps=b)
                               for f, b in funding.split.shares_bps)
    if funding.proposed is not None:
        message.proposed_funding.extend(pb.FundingShare(funder=f, bps=b)
                                        for f, b in funding.proposed.shares_bps)
    message.funding_version = funding.version
    message.sector = funding.sector
    shares = dict(funding.split.shares_bps) if funding.split else {}
    for funder, held in sorted(funding.holdings.items()):
        message.holdings.append(pb.FunderHolding(
            funder=funder, bps=shares.get(funder, 0), principal=_m(held.principal_minor, c),
            receivables=_m(held.income_minor, c), provisions=_m(held.provisions_minor, c),
            written_off=_m(held.lost_minor, c), recovered=_m(held.recovered_minor, c)))


def funding_in(shares: Any, field: str, v: ViolationCollector) -> FundingSplit | None:
    """A funding split from repeated FundingShare; violations are collected."""
    try:
        return parse_funding([(x.funder, x.bps) for x in shares], field)
    except InvalidArgument as error:
        for violation in error.violations or ():
            v.add(violation.field, violation.description)
        if not error.violations:
            v.add(field, error.message)
        return None


def sector_in(value: str, v: ViolationCollector) -> str:
    try:
        return check_sector(value)
    except InvalidArgument as error:
        v.add("sector", error.violations[0].description if error.violations else error.message)
        return ""


def view_out(view: cases.LoanView) -> pb.Loan:
    message = loan_out(view.loan)
    c = view.loan.currency
    if view.booked is not None and view.state is not None:
        b, state = view.booked.buckets, view.state
        message.booked_date.CopyFrom(cv.date_out(view.booked.booked_through))
        message.balances.CopyFrom(pb.LoanBalances(
            principal_outstanding=_m(b.principal_outstanding_minor, c),
            interest_receivable=_m(b.interest_receivable_minor, c),
            fee_receivable=_m(b.fee_receivable_minor, c),
            penalty_receivable=_m(b.penalty_receivable_minor, c),
            overpayment=_m(b.overpayment_liability_minor, c),
            provision=_m(b.provision_required_minor, c),
            interest_income=_m(b.interest_income_minor, c), fee_income=_m(b.fee_income_minor, c),
            penalty_income=_m(b.penalty_income_minor, c),
            impairment_expense=_m(b.impairment_expense_minor, c),
            recovered=_m(b.recovered_minor, c),
            written_off=_m(b.written_off_principal_minor + b.written_off_interest_minor
                           + b.written_off_fees_minor, c), cash=_m(b.cash_minor, c)))
        for line in state.instalments:
            charged = dict(line.charged)
            message.schedule.append(pb.Instalment(
                number=line.number, due_date=cv.date_out(line.due_date),
                period_start_date=cv.date_out(line.period_start),
                period_end_date=cv.date_out(line.period_end),
                principal=_m(charged[Component.PRINCIPAL], c),
                interest=_m(charged[Component.INTEREST], c), fees=_m(charged[Component.FEE], c),
                penalties=_m(charged[Component.PENALTY], c),
                paid=_m(sum(x for _, x in line.paid), c),
                unpaid=_m(sum(line.unpaid(x) for x in Component), c)))
    for version in view.schedules:
        data = json.loads(version.schedule_json)
        lines = data["instalments"]
        message.schedule_versions.append(pb.ScheduleVersion(
            version=version.version, effective_date=cv.date_out(version.effective_from),
            principal=_m(data["principal_minor"], c), instalments=len(lines),
            first_due_date=cv.date_out(date.fromisoformat(lines[0][1])),
            last_due_date=cv.date_out(date.fromisoformat(lines[-1][1]))))
    for day in view.arrears:
        message.arrears_history.append(pb.ArrearsDay(
            business_date=cv.date_out(day.business_date), days_past_due=day.days_past_due,
            bucket=day.bucket, stage=day.stage, provision=_m(day.provision_minor, c)))
    return message


def _bucket_out(line: BucketLine) -> pb.BucketTotals:
    c = line.currency
    return pb.BucketTotals(key=line.key, loans=line.loans, principal=_m(line.principal_minor, c),
                           arrears=_m(line.arrears_minor, c),
                           exposure=_m(line.exposure_minor, c),
                           provision=_m(line.provision_minor, c))


def _currencies(report: reports.BookReport) -> list[str]:
    return sorted({c for c, _ in report.by_status})


def _line_entry(transfer_id: str) -> str:
    """`transfers/{id}` for a loan's own entry; `participation/{loan}/{version}` for a
    participation transfer (the pools' entries carry it as metadata `loan_entry`)."""
    loan_id, marker, version = transfer_id.removeprefix("loan:").rpartition(":participation:")
    return f"participation/{loan_id}/{version}" if marker else f"transfers/{transfer_id}"


class LoanServicer(pb_grpc.LoanServiceServicer):
    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self.uow = uow
        self.clock = clock

    def _loan(self, loan_id: str) -> pb.Loan:
        return view_out(cases.get_loan(self.uow, self.clock, loan_id))

    def _loan_name(self, request: Any, v: ViolationCollector) -> str:
        cv.request_id(request.request_id, v)
        return _name(request.name, "loans", "name", v)

    @guarded
    def CreateProduct(self, request: pb.CreateProductRequest,
                      context: grpc.ServicerContext) -> pb.Product:
        v = ViolationCollector()
        cv.request_id(request.request_id, v)
        product = product_in(request, v)
        v.raise_if_any()
        assert product is not None
        ref = cases.create_product(self.uow, self.clock, current_principal(),
                                   request.request_id, product, remaining(context))
        return product_out(cases.get_product(self.uow, ref.product_id, ref.version))

    @guarded
    def GetProduct(self, request: pb.GetProductRequest,
                   context: grpc.ServicerContext) -> pb.Product:
        v = ViolationCollector()
        product_id = _name(request.name, PRODUCTS, "name", v)
        if request.version < 0:
            v.add("version", "must not be negative")
        v.raise_if_any()
        return product_out(cases.get_product(self.uow, product_id, request.version or None))

    @guarded
    def ApplyForLoan(self, request: pb.ApplyForLoanRequest,
                     context: grpc.ServicerContext) -> pb.Loan:
        v = ViolationCollector()
        cv.request_id(request.request_id, v)
        application = application_in(request, v)
        v.raise_if_any()
        assert application is not None
        ref = cases.apply_for_loan(self.uow, self.clock, current_principal(),
                                   request.request_id, application, remaining(context))
        return self._loan(ref.loan_id)

    @guarded
    def DecideLoan(self, request: pb.DecideLoanRequest,
                   context: grpc.ServicerContext) -> pb.Loan:
        v = ViolationCollector()
        loan_id = self._loan_name(request, v)
        if request.decision not in (pb.DecideLoanRequest.DECISION_APPROVE,
                                    pb.DecideLoanRequest.DECISION_REJECT):
            v.add("decision", "is required: APPROVE or REJECT")
        approve = request.decision == pb.DecideLoanRequest.DECISION_APPROVE
        amount = None
        if request.HasField("approved_amount"):
            if not approve:
                v.add("approved_amount", "is only allowed with APPROVE")
            amount = _money(request.approved_amount, "approved_amount", None, v, True, True)
        note = cv.text_in(request.note, "note", DESCRIPTION_LENGTH_MAX, v)
        funding = funding_in(request.funding, "funding", v)
        sector = sector_in(request.sector, v)
        if (funding is not None or sector) and not approve:
            v.add("funding" if funding is not None else "sector", "is only allowed with APPROVE")
        v.raise_if_any()
        cases.decide_loan(self.uow, self.clock, current_principal(), request.request_id,
                          loan_id, approve, amount, note, remaining(context), funding, sector)
        return self._loan(loan_id)

    @guarded
    def DisburseLoan(self, request: pb.DisburseLoanRequest,
                     context: grpc.ServicerContext) -> pb.Loan:
        v = ViolationCollector()
        loan_id = self._loan_name(request, v)
        to = _account(request.to_account, "to_account", v)
        first = (_date(request.first_due_date, "first_due_date", v)
                 if request.HasField("first_due_date") else None)
        v.raise_if_any()
        cases.disburse_loan(self.uow, self.clock, current_principal(), request.request_id,
                            loan_id, to, first, remaining(context))
        return self._loan(loan_id)

    @guarded
    def RecordRepayment(self, request: pb.RecordRepaymentRequest,
                        context: grpc.ServicerContext) -> pb.RecordRepaymentResponse:
        v = ViolationCollector()
        loan_id = self._loan_name(request, v)
        amount = _money(request.amount, "amount", None, v, True, True)
        on = (_date(request.repayment_date, "repayment_date", v)
              if request.HasField("repayment_date") else None)
        source = _account(request.from_account, "from_account", v)
        v.raise_if_any()
        self._check_currency(loan_id, request.amount.currency_code, "amount")
        ref = cases.record_repayment(self.uow, self.clock, current_principal(),
                                     request.request_id, loan_id, amount, on, source,
                                     request.payoff, remaining(context))
        return pb.RecordRepaymentResponse(loan=self._loan(loan_id),
                                          transfer=f"transfers/{ref.transfer_id}")

    def _check_currency(self, loan_id: str, currency: str, field: str) -> None:
        loan = cases.get_loan(self.uow, self.clock, loan_id).loan
        if loan.currency != currency:
            v = ViolationCollector()
            v.add(field, f"must be in the loan's currency {loan.currency}")
            v.raise_if_any()

    @guarded
    def GetLoan(self, request: pb.GetLoanRequest, context: grpc.ServicerContext) -> pb.Loan:
        v = ViolationCollector()
        loan_id = _name(request.name, "loans", "name", v)
        v.raise_if_any()
        return self._loan(loan_id)

    @guarded
    def ListLoans(self, request: pb.ListLoansRequest,
                  context: grpc.ServicerContext) -> pb.ListLoansResponse:
        v = ViolationCollector()
        member = _name(request.member, "members", "member", v) if request.member else None
        status = _STATE_IN.get(request.state) if request.state else None
        if request.state and status is None:
            v.add("state", "is not a known loan state")
        area = _area(request.council_area, v)
        v.raise_if_any()
        page = cases.list_loans(self.uow, LoanFilter(member, status.value if status else None,
                                                     area), request.page_size,
                                request.page_token)
        return pb.ListLoansResponse(loans=[loan_out(x) for x in page.items],
                                    next_page_token=page.next_page_token)

    @guarded
    def GetPayoffQuote(self, request: pb.GetPayoffQuoteRequest,
                       context: grpc.ServicerContext) -> pb.PayoffQuote:
        v = ViolationCollector()
        loan_id = _name(request.name, "loans", "name", v)
        on = (_date(request.quote_date, "quote_date", v)
              if request.HasField("quote_date") else None)
        v.raise_if_any()
        state, day = cases.payoff_quote(self.uow, self.clock, loan_id, on)
        c = state.terms.currency
        return pb.PayoffQuote(
            loan=f"loans/{loan_id}", quote_date=cv.date_out(day),
            amount=_m(max(state.payoff_quote_minor, 0), c),
            principal=_m(state.principal_outstanding_minor, c),
            interest=_m(state.interest_receivable_minor, c),
            fees=_m(state.fee_receivable_minor, c),
            penalties=_m(state.penalty_receivable_minor, c),
            overpayment=_m(state.overpayment_minor, c))

    @guarded
    def RescheduleLoan(self, request: pb.RescheduleLoanRequest,
                       context: grpc.ServicerContext) -> pb.Loan:
        v = ViolationCollector()
        loan_id = self._loan_name(request, v)
        if not 1 <= request.instalments <= 1_200:
            v.add("instalments", "must be within 1 and 1200")
        rate = (_rate(request.annual_rate.value, "annual_rate", v)
                if request.HasField("annual_rate") else None)
        if request.grace_principal_instalments < 0:
            v.add("grace_principal_instalments", "must not be negative")
        first = (_date(request.first_due_date, "first_due_date", v)
                 if request.HasField("first_due_date") else None)
        v.raise_if_any()
        cases.reschedule_loan(self.uow, self.clock, current_principal(), request.request_id,
                              loan_id, cases.Reschedule(
                                  request.instalments, rate,
                                  request.grace_principal_instalments, first),
                              remaining(context))
        return self._loan(loan_id)

    @guarded
    def ChargeOffLoan(self, request: pb.ChargeOffLoanRequest,
                      context: grpc.ServicerContext) -> pb.Loan:
        v = ViolationCollector()
        loan_id = self._loan_name(request, v)
        v.raise_if_any()
        cases.charge_off_loan(self.uow, self.clock, current_principal(), request.request_id,
                              loan_id, remaining(context))
        return self._loan(loan_id)

    @guarded
    def WriteOffLoan(self, request: pb.WriteOffLoanRequest,
                     context: grpc.ServicerContext) -> pb.WriteOffLoanResponse:
        v = ViolationCollector()
        loan_id = self._loan_name(request, v)
        v.raise_if_any()
        result = cases.request_write_off(self.uow, self.clock, current_principal(),
                                         request.request_id, loan_id, remaining(context))
        return pb.WriteOffLoanResponse(approval=f"approvals/{result.approval_id}",
                                       loan=self._loan(loan_id))

    @guarded
    def TransferParticipation(self, request: pb.TransferParticipationRequest,
                              context: grpc.ServicerContext
                              ) -> pb.TransferParticipationResponse:
        v = ViolationCollector()
        loan_id = self._loan_name(request, v)
        try:
            check_transfer_parties(request.from_funder, request.to_funder)
        except InvalidArgument as error:
            for violation in error.violations:
                v.add(violation.field, violation.description)
        if request.from_funder == request.to_funder:
            v.add("to_funder", "must differ from from_funder")
        if not 1 <= request.bps <= BPS_TOTAL:
            v.add("bps", f"must be from 1 to {BPS_TOTAL}")
        v.raise_if_any()
        result = cases.request_participation_transfer(
            self.uow, self.clock, current_principal(), request.request_id, loan_id,
            request.from_funder, request.to_funder, request.bps, remaining(context))
        return pb.TransferParticipationResponse(approval=f"approvals/{result.approval_id}",
                                                loan=self._loan(loan_id))

    @guarded
    def ListParticipationLines(self, request: pb.ListParticipationLinesRequest,
                               context: grpc.ServicerContext
                               ) -> pb.ListParticipationLinesResponse:
        v = ViolationCollector()
        loan_id = _name(request.name, "loans", "name", v)
        v.raise_if_any()
        page, currency = cases.participation_lines(self.uow, loan_id, request.page_size,
                                                   request.page_token)
        return pb.ListParticipationLinesResponse(lines=[pb.ParticipationLine(
            line_number=x.line_no, entry=_line_entry(x.transfer_id),
            business_date=cv.date_out(x.business_date), movement=x.movement, funder=x.funder,
            split_version=x.split_version, bps=x.bps, amount=_m(x.amount_minor, currency))
            for x in page.items], next_page_token=page.next_page_token)

    @guarded
    def RecordRecovery(self, request: pb.RecordRecoveryRequest,
                       context: grpc.ServicerContext) -> pb.Loan:
        v = ViolationCollector()
        loan_id = self._loan_name(request, v)
        amount = _money(request.amount, "amount", None, v, True, True)
        source = _account(request.from_account, "from_account", v)
        v.raise_if_any()
        self._check_currency(loan_id, request.amount.currency_code, "amount")
        cases.record_recovery(self.uow, self.clock, current_principal(), request.request_id,
                              loan_id, amount, source, remaining(context))
        return self._loan(loan_id)

    @guarded
    def RunCloseOfBusiness(self, request: pb.RunCloseOfBusinessRequest,
                           context: grpc.ServicerContext) -> pb.RunCloseOfBusinessResponse:
        v = ViolationCollector()
        cv.request_id(request.request_id, v)
        through = (_date(request.business_date, "business_date", v)
                   if request.HasField("business_date") else None)
        v.raise_if_any()
        summary = cob_cases.run_close_of_business(self.uow, self.clock, current_principal(),
                                                  request.request_id, through)
        response = pb.RunCloseOfBusinessResponse(
            days=summary.days, loans=summary.loans, entries=summary.entries,
            business_date=cv.date_out(summary.business_date),
            already_closed=summary.already_closed)
        if summary.first_date is not None and summary.last_date is not None:
            response.first_closed_date.CopyFrom(cv.date_out(summary.first_date))
            response.last_closed_date.CopyFrom(cv.date_out(summary.last_date))
        return response

    @guarded
    def GetBusinessDate(self, request: pb.GetBusinessDateRequest,
                        context: grpc.ServicerContext) -> pb.BusinessDate:
        today, run = cob_cases.get_business_date(self.uow, self.clock)
        message = pb.BusinessDate(business_date=cv.date_out(today))
        if run is not None and run.completed_ns is not None:
            message.last_closed_date.CopyFrom(cv.date_out(run.business_date))
            message.last_run_loans = run.loans
            message.last_run_entries = run.entries
            message.last_run_complete_time.CopyFrom(cv.timestamp_out(run.completed_ns))
        return message

    def _book(self, request: pb.LoanReportRequest) -> reports.BookReport:
        v = ViolationCollector()
        area = _area(request.council_area, v)
        v.raise_if_any()
        return reports.loan_book(self.uow, self.clock, area)

    @guarded
    def GetLoanBookReport(self, request: pb.LoanReportRequest,
                          context: grpc.ServicerContext) -> pb.LoanBookReport:
        report = self._book(request)
        message = pb.LoanBookReport(business_date=cv.date_out(report.business_date),
                                    council_area=request.council_area)
        for c in _currencies(report):
            book = pb.CurrencyBook(
                currency_code=c,
                portfolio_at_risk_1_bps=report.portfolio_at_risk_bps(c, "1-30"),
                portfolio_at_risk_30_bps=report.portfolio_at_risk_bps(c, "31-60"),
                written_off=_m(report.written_off_minor.get(c, 0), c),
                recovered=_m(report.recovered_minor.get(c, 0), c))
            for (currency, status), (count, principal) in report.by_status.items():
                if currency == c:
                    book.by_state.append(pb.StatusTotals(
                        state=STATES[LoanStatus(status)], loans=count,
                        principal_outstanding=_m(principal, c)))
            book.by_bucket.extend(_bucket_out(b) for b in report.buckets if b.currency == c)
            book.by_stage.extend(_bucket_out(b) for b in report.stages if b.currency == c)
            message.currencies.append(book)
        return message

    @guarded
    def GetArrearsReport(self, request: pb.LoanReportRequest,
                         context: grpc.ServicerContext) -> pb.ArrearsReport:
        report = self._book(request)
        return pb.ArrearsReport(
            business_date=cv.date_out(report.business_date), council_area=request.council_area,
            currencies=[pb.CurrencyBuckets(currency_code=c, buckets=[
                _bucket_out(b) for b in report.buckets if b.currency == c])
                for c in _currencies(report)])

    @guarded
    def GetProvisionReport(self, request: pb.LoanReportRequest,
                           context: grpc.ServicerContext) -> pb.ProvisionReport:
        report = self._book(request)
        message = pb.ProvisionReport(business_date=cv.date_out(report.business_date),
                                     council_area=request.council_area)
        for c in _currencies(report):
            lines = [b for b in report.buckets if b.currency == c]
            message.currencies.append(pb.CurrencyProvisions(
                currency_code=c, by_bucket=[_bucket_out(b) for b in lines],
                by_stage=[_bucket_out(b) for b in report.stages if b.currency == c],
                provision=_m(sum(b.provision_minor for b in lines), c),
                exposure=_m(sum(b.exposure_minor for b in lines), c)))
        return message

    @guarded
    def GetSocialValueReport(self, request: pb.LoanReportRequest,
                             context: grpc.ServicerContext) -> pb.SocialValueReport:
        v = ViolationCollector()
        area = _area(request.council_area, v)
        v.raise_if_any()
        lines = reports.social_value(self.uow, area)
        return pb.SocialValueReport(council_area=request.council_area, areas=[
            pb.SocialValueTotals(
                council_area=x.council_area, currency_code=x.currency, loans=x.loans,
                approved=_m(x.approved_minor, x.currency),
                disbursed=_m(x.disbursed_minor, x.currency), jobs_created=x.jobs_created,
                jobs_safeguarded=x.jobs_safeguarded,
                living_wage_employers=x.living_wage_employers, cooperatives=x.cooperatives,
                employee_owned=x.employee_owned) for x in lines])

