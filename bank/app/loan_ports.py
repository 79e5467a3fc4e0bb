"""Ports of the lending book: the records it stores and what it needs from storage.

Kept apart from `bank.app.ports` so the lending book can grow without touching the ledger's
ports; `bank.adapters.sql_loans.SqlLoanStore` implements them, mixed into the SQL ledger, so
`loan_store(ctx.tx)` is the same transaction as the ledger's.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Protocol, cast

from bank.app.ports import LedgerReader
from bank.domain.lending import LedgerBuckets


class LoanStatus(enum.StrEnum):
    APPLIED = "APPLIED"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    ACTIVE = "ACTIVE"
    CHARGED_OFF = "CHARGED_OFF"
    WRITTEN_OFF = "WRITTEN_OFF"
    CLOSED = "CLOSED"


# Disbursed loans whose figures the engine keeps (close of business replays these).
SERVICED = (LoanStatus.ACTIVE, LoanStatus.CHARGED_OFF, LoanStatus.WRITTEN_OFF,
            LoanStatus.CLOSED)


class Ownership(enum.StrEnum):
    COOPERATIVE = "cooperative"
    EMPLOYEE_OWNED = "employee_owned"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class ProductRecord:
    product_id: str
    version: int
    name: str
    terms_json: str
    principal_min_minor: int
    principal_max_minor: int
    created_by: str
    created_ns: int


@dataclass(frozen=True, slots=True)
class SocialValue:
    jobs_created: int
    jobs_safeguarded: int
    living_wage_employer: bool
    ownership: Ownership


@dataclass(frozen=True, slots=True)
class LoanAccounts:
    """The loan's own ledger accounts (balance-sheet buckets); see `bank.app.loans`."""

    principal: str
    interest: str
    fee: str
    penalty: str
    allowance: str
    overpayment: str


@dataclass(frozen=True, slots=True)
class LoanRecord:
    loan_id: str
    member_id: str
    product_id: str
    product_version: int
    currency: str
    status: LoanStatus
    amount_applied_minor: int
    amount_approved_minor: int | None
    purpose: str
    social: SocialValue
    council_area: str
    terms_json: str | None
    applied_by: str
    applied_ns: int
    decided_by: str | None
    decided_ns: int | None
    decision_note: str
    disbursed_on: date | None
    settlement_account_id: str | None
    accounts: LoanAccounts | None
    forborne: bool
    days_past_due: int
    arrears_bucket: str
    stage: int
    arrears_minor: int
    updated_ns: int
    funding_json: str | None = None  # bank.app.participations.Funding, once a split is set


@dataclass(frozen=True, slots=True)
class ParticipationLine:
    """One funder's part of one movement of a loan (`bank.domain.pools.participation.Line`),
    as stored: numbered per loan, with the entry it belongs to and the split version."""

    loan_id: str
    line_no: int
    transfer_id: str
    business_date: date
    movement: str
    funder: str
    split_version: int
    bps: int
    amount_minor: int
    recorded_ns: int


@dataclass(frozen=True, slots=True)
class StoredLoanTransaction:
    loan_id: str
    transaction_id: str
    business_date: date
    kind: str
    amount_minor: int | None
    payload_json: str
    request_id: str
    recorded_ns: int


@dataclass(frozen=True, slots=True)
class Booked:
    """What the ledger holds for a loan, bucket by bucket, as of `booked_through`."""

    booked_through: date
    buckets: LedgerBuckets


@dataclass(frozen=True, slots=True)
class ArrearsDay:
    business_date: date
    days_past_due: int
    bucket: str
    stage: int
    provision_minor: int


@dataclass(frozen=True, slots=True)
class ScheduleVersion:
    version: int
    effective_from: date
    schedule_json: str
    created_ns: int


@dataclass(frozen=True, slots=True)
class CobRun:
    business_date: date
    status: str  # running | completed
    chunks: int
    loans: int
    entries: int
    started_by: str
    started_ns: int
    completed_ns: int | None


@dataclass(frozen=True, slots=True)
class LoanFilter:
    member_id: str | None = None
    status: str | None = None
    council_area: str | None = None


@dataclass(frozen=True, slots=True)
class BookRow:
    """One loan's figures for the portfolio reports (from the loan row and its booked buckets)."""

    loan_id: str
    currency: str
    status: str
    council_area: str
    days_past_due: int
    arrears_bucket: str
    stage: int
    arrears_minor: int
    principal_minor: int
    interest_minor: int
    fees_minor: int  # fees and penalties receivable
    provision_minor: int
    written_off_minor: int
    recovered_minor: int


class LoanReader(Protocol):
    def get_product(self, product_id: str, version: int | None = None
                    ) -> ProductRecord | None: ...

    def get_loan(self, loan_id: str) -> LoanRecord | None: ...

    def list_loans(self, after_id: str, limit: int, flt: LoanFilter) -> list[LoanRecord]: ...

    def loan_transactions(self, loan_id: str) -> list[StoredLoanTransaction]: ...

    def loan_schedules(self, loan_id: str) -> list[ScheduleVersion]: ...

    def booked(self, loan_id: str) -> Booked | None: ...

    def arrears_history(self, loan_id: str, limit: int) -> list[ArrearsDay]:
        """The most recent `limit` days, oldest first."""
        ...

    def stored_business_date(self) -> date | None: ...

    def cob_run(self, business_date: date) -> CobRun | None: ...

    def loans_to_close(self, business_date: date, after_id: str, limit: int) -> list[str]:
        """Ids of the loans close of business services (ACTIVE or CHARGED_OFF: written-off and
        closed loans no longer move with time), by id after `after_id`."""
        ...

    def book_rows(self, council_area: str | None, after_id: str, limit: int
                  ) -> list[BookRow]: ...

    def social_value_rows(self, council_area: str | None
                          ) -> list[tuple[LoanRecord, int]]:
        """Every decided-and-approved loan (status past APPROVED) with its amount disbursed."""
        ...

    def participation_lines(self, loan_id: str, after_line: int, limit: int
                            ) -> list[ParticipationLine]:
        """A loan's participation lines in order, after line `after_line`."""
        ...


class LoanWriter(LoanReader, Protocol):
    def insert_product(self, product: ProductRecord) -> None: ...

    def insert_loan(self, loan: LoanRecord) -> None: ...

    def insert_participation_lines(self, lines: Sequence[ParticipationLine]) -> None: ...

    def save_loan(self, loan: LoanRecord) -> None:
        """Store the mutable fields of a loan (status, decision, disbursement, accounts,
        forborne flag, terms once, and the cached servicing figures)."""
        ...

    def insert_loan_transaction(self, transaction: StoredLoanTransaction) -> None: ...

    def insert_schedule(self, loan_id: str, schedule: ScheduleVersion) -> None: ...

    def save_booked(self, loan_id: str, booked: Booked, at_ns: int) -> None: ...

    def save_arrears(self, loan_id: str, days: Sequence[ArrearsDay], at_ns: int) -> None:
        """Insert or replace the arrears history rows of these dates."""
        ...

    def save_business_date(self, business_date: date, at_ns: int) -> None: ...

    def save_cob_run(self, run: CobRun) -> None: ...


def loan_reader(tx: LedgerReader) -> LoanReader:
    """The lending book's view of a ledger transaction (the SQL ledger implements both)."""
    return cast(LoanReader, tx)


def loan_writer(tx: LedgerReader) -> LoanWriter:
    return cast(LoanWriter, tx)
