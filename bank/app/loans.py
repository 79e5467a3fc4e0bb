"""Use cases of the lending book: products, applications, decisions, and servicing a loan
(disbursement, repayment, payoff, forbearance, charge-off, write-off, recovery), with reads.

Every mutation runs through `run_command` (one transaction, one audit leaf, idempotent by
request id); every money movement is the difference between the engine's new state and what is
booked, posted by `bank.app.loan_book` through the transfer engine in the same transaction.

Decisions are two-person: a loan is applied for by a teller or loan officer (the maker, stored
on the loan) and decided only by an approver (credit committee) who is not that maker
(PERMISSION_DENIED SELF_APPROVAL; the database refuses it too, CHECK `two_people`). A write-off
is maker-checker through `bank.app.approvals`: `request_write_off` stores an approval, and a
different approver's ApproveOperation runs `execute_write_off`.

Dates. Loan transactions are dated on or before the business date (`bank.app.loan_book
.business_date`) and at most `BACKDATE_DAYS_MAX` days before it; a backdated one is replayed
with the rest in date order, and the ledger gets the difference.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

from bank.app.loan_book import (
    Booking,
    book,
    business_date,
    check_cash_account,
    loan_terms,
    open_accounts,
    to_engine,
)
from bank.app.loan_ports import (
    ArrearsDay,
    Booked,
    LoanFilter,
    LoanRecord,
    LoanStatus,
    LoanWriter,
    ParticipationLine,
    ProductRecord,
    ScheduleVersion,
    SocialValue,
    StoredLoanTransaction,
    loan_reader,
    loan_writer,
)
from bank.app.paging import (
    decode_token,
    encode_token,
    page_size,
    position_int,
    position_str,
)
from bank.app.participations import (
    PARTICIPATION_TRANSFER_OPERATION,
    Funding,
    check_funding,
    execute_participation_transfer,
    fix_at_disbursement,
    plan_transfer,
    propose,
)
from bank.app.ports import Clock, Head, LedgerReader, UnitOfWork
from bank.app.queries import Page
from bank.app.unit import Command, Context, request_approval, run_command
from bank.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    invalid,
)
from bank.domain.identity import Principal, Role
from bank.domain.invariants import ensure
from bank.domain.lending import (
    LoanProduct,
    LoanState,
    LoanTerms,
    RepaymentSchedule,
    replay,
    terms_from_json,
)
from bank.domain.members import Member, ensure_eligible
from bank.domain.pools.split import FundingSplit

LOAN_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}"
BACKDATE_DAYS_MAX = 366
QUOTE_DAYS_AHEAD_MAX = 366
PURPOSE_LENGTH_MAX = 500
PRODUCT_NAME_LENGTH_MAX = 200
JOBS_MAX = 1_000_000
ARREARS_SHOWN_MAX = 1_000
WRITE_OFF_OPERATION = "WriteOffLoan"
_LOAN_ID = re.compile(LOAN_ID_PATTERN)


def is_loan_id(value: str) -> bool:
    return bool(_LOAN_ID.fullmatch(value))


@dataclass(frozen=True, slots=True)
class LoanRef:
    loan_id: str
    transfer_id: str = ""  # the entry this command posted, if any

    def to_json(self) -> dict[str, Any]:
        return {"loan_id": self.loan_id, "transfer_id": self.transfer_id}

    @staticmethod
    def from_json(data: dict[str, Any]) -> LoanRef:
        return LoanRef(data["loan_id"], data["transfer_id"])


@dataclass(frozen=True, slots=True)
class ProductRef:
    product_id: str
    version: int

    def to_json(self) -> dict[str, Any]:
        return {"product_id": self.product_id, "version": self.version}

    @staticmethod
    def from_json(data: dict[str, Any]) -> ProductRef:
        return ProductRef(data["product_id"], data["version"])


@dataclass(frozen=True, slots=True)
class WriteOffRequest:
    loan_id: str
    approval_id: str

    def to_json(self) -> dict[str, Any]:
        return {"loan_id": self.loan_id, "approval_id": self.approval_id}

    @staticmethod
    def from_json(data: dict[str, Any]) -> WriteOffRequest:
        return WriteOffRequest(data["loan_id"], data["approval_id"])


def _loan_not_found(loan_id: str) -> NotFound:
    return NotFound("LOAN_NOT_FOUND", f"no loan {loan_id!r}", metadata={"loan": f"loans/{loan_id}"})


def _loan(tx: LedgerReader, loan_id: str) -> LoanRecord:
    loan = loan_reader(tx).get_loan(loan_id)
    if loan is None:
        raise _loan_not_found(loan_id)
    return loan


def _member(tx: LedgerReader, member_id: str) -> Member:
    member = tx.get_member(member_id)
    if member is None:
        raise NotFound("MEMBER_NOT_FOUND", f"no member {member_id!r}",
                       metadata={"member": f"members/{member_id}"})
    return member


def _status_is(loan: LoanRecord, allowed: tuple[LoanStatus, ...], reason: str) -> None:
    if loan.status not in allowed:
        raise FailedPrecondition(reason, f"loan {loan.loan_id!r} is {loan.status.value}; this "
                                 f"needs {' or '.join(s.value for s in allowed)}",
                                 metadata={"loan": f"loans/{loan.loan_id}"})


def _product_not_found(product_id: str) -> NotFound:
    return NotFound("PRODUCT_NOT_FOUND", f"no loan product {product_id!r}",
                    metadata={"product": f"loanProducts/{product_id}"})


def product_of(record: ProductRecord) -> LoanProduct:
    return LoanProduct(record.product_id, record.name,
                       terms_from_json(json.loads(record.terms_json)),
                       record.principal_min_minor, record.principal_max_minor)


# -- products -------------------------------------------------------------------------------------
def create_product(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                   product: LoanProduct, timeout_s: float | None = None) -> ProductRef:
    """A new version of a loan product (version 1 the first time). The same content as the
    latest version changes nothing and returns it. Loans keep the version they applied under."""
    terms_json = json.dumps(product.terms.to_json(), sort_keys=True, separators=(",", ":"))
    command = Command("CreateLoanProduct", request_id, principal, {
        "product_id": product.code, "name": product.name, "terms": product.terms.to_json(),
        "min": product.principal_minor_min, "max": product.principal_minor_max})

    def handler(ctx: Context) -> tuple[ProductRef, Head]:
        store = loan_writer(ctx.tx)
        latest = store.get_product(product.code)
        if latest is not None and (latest.name, latest.terms_json, latest.principal_min_minor,
                                   latest.principal_max_minor) == (
                product.name, terms_json, product.principal_minor_min,
                product.principal_minor_max):
            return ProductRef(latest.product_id, latest.version), ctx.head
        version = latest.version + 1 if latest is not None else 1
        store.insert_product(ProductRecord(product.code, version, product.name, terms_json,
                                           product.principal_minor_min,
                                           product.principal_minor_max,
                                           principal.subject, ctx.now_ns))
        ctx.effects.append(["loan_product", product.code, version, terms_json])
        return ProductRef(product.code, version), ctx.head

    return run_command(uow, clock, command, handler, ProductRef.from_json, timeout_s)


def get_product(uow: UnitOfWork, product_id: str, version: int | None = None) -> ProductRecord:
    """Raises `NotFound` PRODUCT_NOT_FOUND."""
    with uow.read() as r:
        record = loan_reader(r).get_product(product_id, version)
    if record is None:
        raise _product_not_found(product_id)
    return record


# -- application and decision ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LoanApplication:
    """Validated at the edge (ids, lengths, ranges); stored rules are checked here."""

    loan_id: str
    member_id: str
    product_id: str
    amount_minor: int
    currency: str
    purpose: str
    social: SocialValue

    def body(self) -> dict[str, Any]:
        s = self.social
        return {"loan_id": self.loan_id, "member_id": self.member_id,
                "product_id": self.product_id, "amount": self.amount_minor,
                "currency": self.currency, "purpose": self.purpose,
                "social": [s.jobs_created, s.jobs_safeguarded, s.living_wage_employer,
                           s.ownership.value]}


def apply_for_loan(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                   application: LoanApplication, timeout_s: float | None = None) -> LoanRef:
    """Record an application (APPLIED) under the product's latest version.

    Raises `NotFound` MEMBER_NOT_FOUND or PRODUCT_NOT_FOUND; `FailedPrecondition` from the
    member eligibility rule (MEMBER_ERASED, OUTSIDE_REGION, KYC_NOT_VERIFIED) or
    CURRENCY_MISMATCH; `InvalidArgument` PRINCIPAL_OUT_OF_RANGE naming `loan.amount_applied`;
    `AlreadyExists` LOAN_ID_REUSED. The same loan id with the same application is a success.
    """
    a = application
    command = Command("ApplyForLoan", request_id, principal, a.body())

    def handler(ctx: Context) -> tuple[LoanRef, Head]:
        store = loan_writer(ctx.tx)
        existing = store.get_loan(a.loan_id)
        if existing is not None:
            if (existing.member_id, existing.product_id, existing.amount_applied_minor,
                    existing.currency, existing.purpose, existing.social) == (
                    a.member_id, a.product_id, a.amount_minor, a.currency, a.purpose, a.social):
                return LoanRef(a.loan_id), ctx.head
            raise AlreadyExists("LOAN_ID_REUSED", f"loan {a.loan_id!r} already exists with a "
                                "different application", metadata={"loan": f"loans/{a.loan_id}"})
        member = _member(ctx.tx, a.member_id)
        ensure_eligible(member)
        record = store.get_product(a.product_id)
        if record is None:
            raise _product_not_found(a.product_id)
        product = product_of(record)
        if product.terms.currency != a.currency:
            raise FailedPrecondition("CURRENCY_MISMATCH", f"product {a.product_id!r} lends in "
                                     f"{product.terms.currency}, not {a.currency}",
                                     metadata={"field": "loan.amount_applied"})
        product.check_principal(a.amount_minor, "loan.amount_applied")
        loan = LoanRecord(
            a.loan_id, a.member_id, record.product_id, record.version, a.currency,
            LoanStatus.APPLIED, a.amount_minor, None, a.purpose, a.social, member.council_area,
            None, principal.subject, ctx.now_ns, None, None, "", None, None, None, False, 0,
            "CURRENT", 0, 0, ctx.now_ns)
        store.insert_loan(loan)
        ctx.effects.append(["loan_application", a.loan_id, a.member_id, record.product_id,
                            record.version, a.amount_minor, a.currency])
        return LoanRef(a.loan_id), ctx.head

    return run_command(uow, clock, command, handler, LoanRef.from_json, timeout_s)


def decide_loan(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                loan_id: str, approve: bool, approved_minor: int | None, note: str,
                timeout_s: float | None = None, funding: FundingSplit | None = None,
                sector: str = "") -> LoanRef:
    """Approve (freezing the product version's terms onto the loan) or reject an application.

    Checks, in order: NOT_FOUND LOAN_NOT_FOUND; PERMISSION_DENIED ROLE_NOT_ALLOWED (not an
    approver) or SELF_APPROVAL (the applicant-side maker); FAILED_PRECONDITION
    LOAN_ALREADY_DECIDED; on approval APPROVED_EXCEEDS_APPLIED, the member eligibility rule
    again, and `InvalidArgument` PRINCIPAL_OUT_OF_RANGE for an amount the product does not lend.
    A proposed funding split (and the borrower's sector) is checked against the pools'
    concentration limits for the amount approved (`bank.app.participations.check_funding`).
    """
    body: dict[str, Any] = {"loan_id": loan_id, "approve": approve, "amount": approved_minor,
                            "note": note}
    if funding is not None or sector:
        body["funding"] = [list(x) for x in funding.shares_bps] if funding else None
        body["sector"] = sector
    command = Command("DecideLoan", request_id, principal, body)

    def handler(ctx: Context) -> tuple[LoanRef, Head]:
        store = loan_writer(ctx.tx)
        loan = _loan(ctx.tx, loan_id)
        metadata = {"loan": f"loans/{loan_id}"}
        if principal.role is not Role.APPROVER:
            raise PermissionDenied("ROLE_NOT_ALLOWED", "only a credit-committee approver "
                                   "decides a loan", metadata=metadata)
        if principal.subject == loan.applied_by:
            raise PermissionDenied("SELF_APPROVAL", "the maker of an application cannot "
                                   "decide it", metadata=metadata)
        _status_is(loan, (LoanStatus.APPLIED,), "LOAN_ALREADY_DECIDED")
        decided = replace(loan, decided_by=principal.subject, decided_ns=ctx.now_ns,
                          decision_note=note, updated_ns=ctx.now_ns)
        if not approve:
            store.save_loan(replace(decided, status=LoanStatus.REJECTED))
            ctx.effects.append(["loan_decision", loan_id, False])
            return LoanRef(loan_id), ctx.head
        amount = loan.amount_applied_minor if approved_minor is None else approved_minor
        if amount > loan.amount_applied_minor:
            raise FailedPrecondition(
                "APPROVED_EXCEEDS_APPLIED", f"approved_amount {amount} is more than the "
                f"{loan.amount_applied_minor} applied for", metadata={
                    "field": "approved_amount", **metadata})
        ensure_eligible(_member(ctx.tx, loan.member_id))
        record = store.get_product(loan.product_id, loan.product_version)
        ensure(record is not None, f"loan {loan_id} names a missing product version")
        assert record is not None
        product_of(record).check_principal(amount, "approved_amount")
        if funding is not None:
            check_funding(ctx.tx, loan, funding, amount, sector)
        store.save_loan(propose(replace(decided, status=LoanStatus.APPROVED,
                                        amount_approved_minor=amount,
                                        terms_json=record.terms_json), funding, sector))
        ctx.effects.append(["loan_decision", loan_id, True, amount, record.terms_json,
                            body.get("funding"), sector])
        return LoanRef(loan_id), ctx.head

    return run_command(uow, clock, command, handler, LoanRef.from_json, timeout_s)


# -- servicing ------------------------------------------------------------------------------------
def _transaction(loan: LoanRecord, store: LoanWriter, ctx: Context, transaction_id: str,
                 on: date, kind: str, amount: int | None,
                 payload: dict[str, Any] | None = None) -> tuple[StoredLoanTransaction, str]:
    """The stored transaction and the transfer id of its entry (`loan:<id>:tx:<n>`)."""
    existing = store.loan_transactions(loan.loan_id)
    if any(x.transaction_id == transaction_id for x in existing):
        raise AlreadyExists("LOAN_TRANSACTION_EXISTS", f"loan {loan.loan_id!r} already has a "
                            f"transaction {transaction_id!r}",
                            metadata={"loan": f"loans/{loan.loan_id}"})
    stored = StoredLoanTransaction(
        loan.loan_id, transaction_id, on, kind, amount,
        json.dumps(payload or {}, sort_keys=True, separators=(",", ":")),
        ctx.command.request_id, ctx.now_ns)
    return stored, f"loan:{loan.loan_id}:tx:{len(existing) + 1}"


def _check_date(on: date, today: date, loan: LoanRecord, field: str) -> None:
    if on > today:
        raise invalid(field, f"must not be after the business date {today.isoformat()}")
    if on < today - timedelta(days=BACKDATE_DAYS_MAX):
        raise invalid(field, f"must be at most {BACKDATE_DAYS_MAX} days before the business date")
    if loan.disbursed_on is not None and on < loan.disbursed_on:
        raise invalid(field, f"must not be before the disbursement on "
                      f"{loan.disbursed_on.isoformat()}")


def _cash_account(tx: LedgerReader, loan: LoanRecord, given: str | None, field: str) -> str:
    if given:
        return given
    member = _member(tx, loan.member_id)
    if member.deposit_account_id is None:
        raise FailedPrecondition("NO_DEPOSIT_ACCOUNT", f"member {member.member_id!r} has no "
                                 f"deposit account: name one in {field}",
                                 metadata={"field": field})
    return member.deposit_account_id


def schedule_json(schedule: RepaymentSchedule) -> str:
    return json.dumps({
        "principal_minor": schedule.principal_minor, "starts_on": schedule.starts_on.isoformat(),
        "instalments": [[i.number, i.due_date.isoformat(), i.period_start.isoformat(),
                         i.period_end.isoformat(), i.principal_minor, i.interest_minor,
                         i.fee_minor] for i in schedule.instalments]},
        sort_keys=True, separators=(",", ":"))


def disburse_loan(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                  loan_id: str, to_account: str | None, first_due_on: date | None,
                  timeout_s: float | None = None) -> LoanRef:
    """Pay out an approved loan on the business date: open its accounts, post Dr loan
    principal / Cr the member's deposit account (or `to_account`), and store schedule
    version 1. Raises NOT_FOUND, FAILED_PRECONDITION LOAN_NOT_APPROVED, the eligibility rule,
    NO_DEPOSIT_ACCOUNT, ACCOUNT_NOT_OPEN, CURRENCY_MISMATCH; `InvalidArgument` naming
    `first_due_date` when it is not within a year after the business date.

    The funding split approved at `DecideLoan` is fixed here (none: the bank alone); each
    pool's part is checked against its reserve and limits again and paid from its cash
    (`bank.app.participations.check_funding`; INSUFFICIENT_POOL_CASH)."""
    command = Command("DisburseLoan", request_id, principal, {
        "loan_id": loan_id, "to": to_account,
        "first_due_on": first_due_on.isoformat() if first_due_on else None})

    def handler(ctx: Context) -> tuple[LoanRef, Head]:
        store = loan_writer(ctx.tx)
        loan = _loan(ctx.tx, loan_id)
        _status_is(loan, (LoanStatus.APPROVED,), "LOAN_NOT_APPROVED")
        today = business_date(store, clock)
        if first_due_on is not None and not (
                today < first_due_on <= today + timedelta(days=366)):
            raise invalid("first_due_date", "must be after the business date and at most 366 "
                          "days after it")
        ensure_eligible(_member(ctx.tx, loan.member_id))
        cash = _cash_account(ctx.tx, loan, to_account, "to_account")
        check_cash_account(ctx, cash, loan.currency, "to_account")
        assert loan.amount_approved_minor is not None
        loan = fix_at_disbursement(ctx.tx, loan, today)  # before anything is written
        accounts = open_accounts(ctx, loan)
        loan = replace(loan, accounts=accounts, disbursed_on=today, settlement_account_id=cash,
                       status=LoanStatus.ACTIVE)
        payload = {"first_due_on": first_due_on.isoformat() if first_due_on else None}
        stored, transfer_id = _transaction(loan, store, ctx, "disbursement", today,
                                           "disbursement", loan.amount_approved_minor, payload)
        planned, head = book(ctx, clock, store, loan, Booking(
            today, transfer_id, f"Loan {loan_id} disbursed", stored, cash))
        store.insert_schedule(loan_id, ScheduleVersion(1, today, schedule_json(
            planned.state.schedules[0]), ctx.now_ns))
        ctx.effects.append(["loan_schedule", loan_id, 1])
        return LoanRef(loan_id, transfer_id), head

    return run_command(uow, clock, command, handler, LoanRef.from_json, timeout_s)


def record_repayment(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                     loan_id: str, amount_minor: int, on: date | None,
                     from_account: str | None, payoff: bool = False,
                     timeout_s: float | None = None) -> LoanRef:
    """Cash from the borrower on `on` (default the business date; earlier is a backdated
    repayment, replayed in date order), allocated by the loan's order; the rest is held as an
    overpayment (a liability). With `payoff`, an early settlement that must cover the quote
    (FAILED_PRECONDITION PAYOFF_SHORT). Posts Dr `from_account` (default the member's deposit
    account) / Cr the buckets paid. Raises LOAN_NOT_ACTIVE, EXCEEDS_CREDITS (not enough on the
    paying account), and `InvalidArgument` naming `repayment_date`."""
    command = Command("RecordRepayment", request_id, principal, {
        "loan_id": loan_id, "amount": amount_minor, "on": on.isoformat() if on else None,
        "from": from_account, "payoff": payoff})

    def handler(ctx: Context) -> tuple[LoanRef, Head]:
        store = loan_writer(ctx.tx)
        loan = _loan(ctx.tx, loan_id)
        _status_is(loan, (LoanStatus.ACTIVE, LoanStatus.CHARGED_OFF), "LOAN_NOT_ACTIVE")
        today = business_date(store, clock)
        day = on or today
        _check_date(day, today, loan, "repayment_date")
        if amount_minor <= 0:
            raise invalid("amount", "must be greater than zero")
        cash = _cash_account(ctx.tx, loan, from_account, "from_account")
        check_cash_account(ctx, cash, loan.currency, "from_account")
        kind = "payoff" if payoff else "repayment"
        stored, transfer_id = _transaction(loan, store, ctx, request_id, day, kind,
                                           amount_minor)
        _, head = book(ctx, clock, store, loan, Booking(
            day, transfer_id, f"Loan {loan_id} {kind} of {day.isoformat()}", stored, cash))
        return LoanRef(loan_id, transfer_id), head

    return run_command(uow, clock, command, handler, LoanRef.from_json, timeout_s)


def current_terms(store: LoanWriter | Any, loan: LoanRecord) -> LoanTerms:
    """The terms in force: the last forbearance's, or those frozen at approval."""
    terms = loan_terms(loan)
    for stored in store.loan_transactions(loan.loan_id):
        if stored.kind == "forbearance":
            terms = terms_from_json(json.loads(stored.payload_json)["terms"])
    return terms


@dataclass(frozen=True, slots=True)
class Reschedule:
    """What a forbearance changes; None keeps the terms in force."""

    instalments: int
    annual_rate_percent: Any = None  # Decimal
    grace_principal_instalments: int | None = None
    first_due_on: date | None = None


def reschedule_loan(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                    loan_id: str, change: Reschedule, timeout_s: float | None = None) -> LoanRef:
    """Forbearance on the business date: all unpaid principal rescheduled under the changed
    terms (a new schedule version); the loan is flagged forborne (IFRS 9 stage 2 at least).
    Raises LOAN_NOT_ACTIVE, NOTHING_TO_RESCHEDULE, or `InvalidArgument` naming the term."""
    command = Command("RescheduleLoan", request_id, principal, {
        "loan_id": loan_id, "instalments": change.instalments,
        "rate": str(change.annual_rate_percent) if change.annual_rate_percent is not None
        else None, "grace": change.grace_principal_instalments,
        "first_due_on": change.first_due_on.isoformat() if change.first_due_on else None})

    def handler(ctx: Context) -> tuple[LoanRef, Head]:
        store = loan_writer(ctx.tx)
        loan = _loan(ctx.tx, loan_id)
        _status_is(loan, (LoanStatus.ACTIVE,), "LOAN_NOT_ACTIVE")
        today = business_date(store, clock)
        if change.first_due_on is not None and not (
                today < change.first_due_on <= today + timedelta(days=366)):
            raise invalid("first_due_date", "must be after the business date and at most 366 "
                          "days after it")
        terms = _changed_terms(current_terms(store, loan), change)
        count = sum(1 for x in store.loan_transactions(loan_id) if x.kind == "forbearance")
        payload = {"terms": terms.to_json(), "first_due_on": change.first_due_on.isoformat()
                   if change.first_due_on else None}
        stored, transfer_id = _transaction(loan, store, ctx, f"forbearance-{count + 1}",
                                           today, "forbearance", None, payload)
        planned, head = book(ctx, clock, store, loan, Booking(
            today, transfer_id, f"Loan {loan_id} rescheduled (forbearance)", stored))
        version = len(store.loan_schedules(loan_id)) + 1
        store.insert_schedule(loan_id, ScheduleVersion(version, today, schedule_json(
            planned.state.schedules[-1]), ctx.now_ns))
        ctx.effects.append(["loan_schedule", loan_id, version])
        return LoanRef(loan_id, transfer_id if planned.spec else ""), head

    return run_command(uow, clock, command, handler, LoanRef.from_json, timeout_s)


def _changed_terms(terms: LoanTerms, change: Reschedule) -> LoanTerms:
    from bank.domain.errors import InvalidArgument

    try:
        return replace(terms, instalments=change.instalments,
                       annual_rate_percent=(terms.annual_rate_percent
                                            if change.annual_rate_percent is None
                                            else change.annual_rate_percent),
                       grace_principal_instalments=(
                           0 if change.grace_principal_instalments is None
                           else change.grace_principal_instalments))
    except InvalidArgument as error:  # name the request's fields, not the terms'
        names = {"annual_rate_percent": "annual_rate"}
        path = error.violations[0].field if error.violations else "instalments"
        raise invalid(names.get(path, path), error.violations[0].description
                      if error.violations else error.message) from None


def _simple_event(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                  method: str, loan_id: str, kind: str, allowed: tuple[LoanStatus, ...],
                  reason: str, amount_minor: int | None = None, on: date | None = None,
                  cash_account: str | None = None, field: str = "",
                  timeout_s: float | None = None) -> LoanRef:
    command = Command(method, request_id, principal, {
        "loan_id": loan_id, "amount": amount_minor, "on": on.isoformat() if on else None,
        "cash": cash_account})

    def handler(ctx: Context) -> tuple[LoanRef, Head]:
        return _event(ctx, clock, loan_id, kind, allowed, reason, amount_minor, on,
                      cash_account, field)

    return run_command(uow, clock, command, handler, LoanRef.from_json, timeout_s)


def _event(ctx: Context, clock: Clock, loan_id: str, kind: str, allowed: tuple[LoanStatus, ...],
           reason: str, amount_minor: int | None, on: date | None, cash_account: str | None,
           field: str) -> tuple[LoanRef, Head]:
    store = loan_writer(ctx.tx)
    loan = _loan(ctx.tx, loan_id)
    _status_is(loan, allowed, reason)
    today = business_date(store, clock)
    day = on or today
    _check_date(day, today, loan, f"{kind}_date")
    cash = None
    if amount_minor is not None:
        cash = _cash_account(ctx.tx, loan, cash_account, field)
        check_cash_account(ctx, cash, loan.currency, field)
    transaction_id = ctx.command.request_id if amount_minor is not None else kind.replace(
        "_", "-")
    stored, transfer_id = _transaction(loan, store, ctx, transaction_id, day, kind,
                                       amount_minor)
    planned, head = book(ctx, clock, store, loan, Booking(
        day, transfer_id, f"Loan {loan_id} {kind.replace('_', ' ')}", stored, cash))
    return LoanRef(loan_id, transfer_id if planned.spec else ""), head


def charge_off_loan(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                    loan_id: str, timeout_s: float | None = None) -> LoanRef:
    """Non-accrual from the business date (stage 3, provision at the 90+ rate). Raises
    LOAN_NOT_ACTIVE."""
    return _simple_event(uow, clock, principal, request_id, "ChargeOffLoan", loan_id,
                         "charge_off", (LoanStatus.ACTIVE,), "LOAN_NOT_ACTIVE",
                         timeout_s=timeout_s)


def record_recovery(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                    loan_id: str, amount_minor: int, from_account: str | None,
                    timeout_s: float | None = None) -> LoanRef:
    """Cash recovered after a write-off: Dr `from_account` (default the member's deposit
    account) / Cr recovery income. Raises LOAN_NOT_WRITTEN_OFF, RECOVERY_EXCEEDS_WRITE_OFF."""
    return _simple_event(uow, clock, principal, request_id, "RecordRecovery", loan_id,
                         "recovery", (LoanStatus.WRITTEN_OFF,), "LOAN_NOT_WRITTEN_OFF",
                         amount_minor, None, from_account, "from_account", timeout_s)


def request_write_off(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                      loan_id: str, timeout_s: float | None = None) -> WriteOffRequest:
    """Ask for a write-off: stored as an approval that a different approver must approve
    (ApproveOperation then runs `execute_write_off`). Raises LOAN_NOT_FOUND, and
    LOAN_NOT_CHARGED_OFF unless the loan is ACTIVE or CHARGED_OFF."""
    command = Command(WRITE_OFF_OPERATION, request_id, principal, {"loan_id": loan_id})

    def handler(ctx: Context) -> tuple[WriteOffRequest, Head]:
        loan = _loan(ctx.tx, loan_id)
        _status_is(loan, (LoanStatus.ACTIVE, LoanStatus.CHARGED_OFF), "LOAN_NOT_CHARGED_OFF")
        approval_id = request_approval(ctx, {"loan_id": loan_id}, f"{WRITE_OFF_OPERATION} "
                                       f"writes off everything receivable on loans/{loan_id}: "
                                       "it needs a second approver")
        return WriteOffRequest(loan_id, approval_id), ctx.head

    return run_command(uow, clock, command, handler, WriteOffRequest.from_json, timeout_s)


def execute_write_off(ctx: Context, clock: Clock, payload: dict[str, Any]
                      ) -> tuple[dict[str, Any], Head]:
    """Run an approved write-off inside the approval's transaction, on the business date:
    principal and receivables are written off against the loss allowance (Dr impairment
    expense / Cr the receivables, the allowance released). Raises LOAN_NOT_CHARGED_OFF."""
    ref, head = _event(ctx, clock, payload["loan_id"], "write_off",
                       (LoanStatus.ACTIVE, LoanStatus.CHARGED_OFF), "LOAN_NOT_CHARGED_OFF",
                       None, None, None, "")
    return ref.to_json(), head


# -- participations -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ParticipationTransferRequest:
    loan_id: str
    approval_id: str

    def to_json(self) -> dict[str, Any]:
        return {"loan_id": self.loan_id, "approval_id": self.approval_id}

    @staticmethod
    def from_json(data: dict[str, Any]) -> ParticipationTransferRequest:
        return ParticipationTransferRequest(data["loan_id"], data["approval_id"])


def request_participation_transfer(uow: UnitOfWork, clock: Clock, principal: Principal,
                                   request_id: str, loan_id: str, seller: str, buyer: str,
                                   bps: int, timeout_s: float | None = None
                                   ) -> ParticipationTransferRequest:
    """Ask to move `bps` of a loan's funding split from `seller` to `buyer`: stored as an
    approval that a different approver must approve (ApproveOperation then runs
    `execute_participation_transfer_approved`). Checked now and again when approved
    (`bank.app.participations.plan_transfer`)."""
    payload = {"loan_id": loan_id, "from": seller, "to": buyer, "bps": bps}
    command = Command(PARTICIPATION_TRANSFER_OPERATION, request_id, principal, payload)

    def handler(ctx: Context) -> tuple[ParticipationTransferRequest, Head]:
        plan_transfer(ctx.tx, _loan(ctx.tx, loan_id), seller, buyer, bps)  # refuse early
        approval_id = request_approval(ctx, payload, f"{PARTICIPATION_TRANSFER_OPERATION} "
                                       f"moves {bps} bps of loans/{loan_id} from {seller} to "
                                       f"{buyer}: it needs a second approver")
        return ParticipationTransferRequest(loan_id, approval_id), ctx.head

    return run_command(uow, clock, command, handler, ParticipationTransferRequest.from_json,
                       timeout_s)


def execute_participation_transfer_approved(ctx: Context, clock: Clock,
                                            payload: dict[str, Any]
                                            ) -> tuple[dict[str, Any], Head]:
    """Run an approved participation transfer in the approval's transaction, on the business
    date (`bank.app.participations.execute_participation_transfer`)."""
    store = loan_writer(ctx.tx)
    loan = _loan(ctx.tx, payload["loan_id"])
    changed, head = execute_participation_transfer(
        ctx, clock, loan, payload["from"], payload["to"], payload["bps"],
        business_date(store, clock))
    store.save_loan(replace(changed, updated_ns=ctx.now_ns))
    version = Funding.of(changed).version
    ctx.effects.append(["loan_funding", loan.loan_id, version])
    return {"loan_id": loan.loan_id, "funding_version": version}, head


def participation_lines(uow: UnitOfWork, loan_id: str, size: int, token: str
                        ) -> tuple[Page[ParticipationLine], str]:
    """A loan's participation lines in order, and its currency; raises `NotFound`
    LOAN_NOT_FOUND and `InvalidArgument` for a bad size or token."""
    query = {"m": "participation", "loan": loan_id}
    limit = page_size(size)
    after_line = position_int(decode_token(token, query)) or 0
    with uow.read() as r:
        currency = _loan(r, loan_id).currency
        rows = loan_reader(r).participation_lines(loan_id, after_line, limit + 1)
    more = len(rows) > limit
    items = rows[:limit]
    return Page(items, encode_token(query, items[-1].line_no) if more else ""), currency


# -- reads ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LoanView:
    loan: LoanRecord
    state: LoanState | None  # as booked (None until disbursed)
    booked: Booked | None
    schedules: list[ScheduleVersion]
    arrears: list[ArrearsDay]
    business_date: date


def get_loan(uow: UnitOfWork, clock: Clock, loan_id: str) -> LoanView:
    """The loan with its state as booked, its schedule versions and its arrears history."""
    with uow.read() as r:
        store = loan_reader(r)
        loan = _loan(r, loan_id)
        booked = store.booked(loan_id)
        state = None
        if booked is not None:
            state = replay(loan_terms(loan), [to_engine(x) for x in
                                              store.loan_transactions(loan_id)],
                           booked.booked_through)
        return LoanView(loan, state, booked, store.loan_schedules(loan_id),
                        store.arrears_history(loan_id, ARREARS_SHOWN_MAX),
                        business_date(store, clock))


def list_loans(uow: UnitOfWork, flt: LoanFilter, size: int, token: str) -> Page[LoanRecord]:
    """Loans in id order, filtered; raises `InvalidArgument` for a bad size or token."""
    query = {"m": "loans", "member": flt.member_id, "status": flt.status,
             "area": flt.council_area}
    limit = page_size(size)
    after = position_str(decode_token(token, query))
    with uow.read() as r:
        rows = loan_reader(r).list_loans(after, limit + 1, flt)
    more = len(rows) > limit
    items = rows[:limit]
    return Page(items, encode_token(query, items[-1].loan_id) if more else "")


def payoff_quote(uow: UnitOfWork, clock: Clock, loan_id: str, on: date | None
                 ) -> tuple[LoanState, date]:
    """The loan replayed to `on` (default the business date, at most `QUOTE_DAYS_AHEAD_MAX`
    days ahead, never before it): `state.payoff_quote_minor` settles it that day."""
    with uow.read() as r:
        store = loan_reader(r)
        loan = _loan(r, loan_id)
        today = business_date(store, clock)
        day = on or today
        if not today <= day <= today + timedelta(days=QUOTE_DAYS_AHEAD_MAX):
            raise invalid("quote_date", f"must be from the business date {today.isoformat()} "
                          f"to {QUOTE_DAYS_AHEAD_MAX} days after it")
        if loan.status not in (LoanStatus.ACTIVE, LoanStatus.CHARGED_OFF):
            raise FailedPrecondition("LOAN_NOT_ACTIVE", f"loan {loan_id!r} is "
                                     f"{loan.status.value}: there is nothing to pay off",
                                     metadata={"loan": f"loans/{loan_id}"})
        transactions = [to_engine(x) for x in store.loan_transactions(loan_id)]
        return replay(loan_terms(loan), transactions, day), day
