"""Reports on the loan book, from the loans' booked figures (as of the last close of business
or the last transaction booked): the loan book with portfolio at risk by arrears bucket, the
arrears ageing, provisions by bucket and IFRS 9 stage, and social value by council area.

Every report may be restricted to one council area (a council integration sees only its own).
Amounts are per currency; loans are read in pages of `REPORT_PAGE_LOANS`, so a report over a
large book never holds more than its totals.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date

from bank.app.loan_book import business_date
from bank.app.loan_ports import BookRow, LoanStatus, Ownership, loan_reader
from bank.app.ports import Clock, UnitOfWork

REPORT_PAGE_LOANS = 2_000
BUCKETS = ("CURRENT", "1-30", "31-60", "61-90", "90+")
STAGES = (1, 2, 3)
ON_BOOK = (LoanStatus.ACTIVE.value, LoanStatus.CHARGED_OFF.value)


@dataclass
class BucketLine:
    """One arrears bucket (or IFRS 9 stage) of one currency."""

    key: str
    currency: str
    loans: int = 0
    principal_minor: int = 0
    arrears_minor: int = 0  # due and unpaid
    exposure_minor: int = 0  # principal + interest + fees and penalties receivable
    provision_minor: int = 0


@dataclass
class BookReport:
    business_date: date
    council_area: str | None
    # per currency: loans and principal by status
    by_status: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    buckets: list[BucketLine] = field(default_factory=list)
    stages: list[BucketLine] = field(default_factory=list)
    written_off_minor: dict[str, int] = field(default_factory=dict)
    recovered_minor: dict[str, int] = field(default_factory=dict)

    def portfolio_at_risk_bps(self, currency: str, from_bucket: str = "1-30") -> int:
        """Principal in `from_bucket` or worse, in basis points of principal on book (rounded
        down)."""
        lines = [b for b in self.buckets if b.currency == currency]
        total = sum(b.principal_minor for b in lines)
        at_risk = sum(b.principal_minor for b in lines
                      if BUCKETS.index(b.key) >= BUCKETS.index(from_bucket))
        return at_risk * 10_000 // total if total else 0


def _rows(uow: UnitOfWork, council_area: str | None) -> Iterator[BookRow]:
    after = ""
    while True:
        with uow.read() as r:
            rows = loan_reader(r).book_rows(council_area, after, REPORT_PAGE_LOANS)
        yield from rows
        if len(rows) < REPORT_PAGE_LOANS:
            return
        after = rows[-1].loan_id


def loan_book(uow: UnitOfWork, clock: Clock, council_area: str | None = None) -> BookReport:
    """Loan book, portfolio at risk and arrears ageing by bucket, provisions by bucket and
    stage: loans on book are those ACTIVE or CHARGED_OFF."""
    with uow.read() as r:
        today = business_date(loan_reader(r), clock)
    report = BookReport(today, council_area)
    status: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    buckets: dict[tuple[str, str], BucketLine] = {}
    stages: dict[tuple[str, str], BucketLine] = {}
    for row in _rows(uow, council_area):
        line = status[(row.currency, row.status)]
        line[0] += 1
        line[1] += row.principal_minor
        report.written_off_minor[row.currency] = (report.written_off_minor.get(row.currency, 0)
                                                  + row.written_off_minor)
        report.recovered_minor[row.currency] = (report.recovered_minor.get(row.currency, 0)
                                                + row.recovered_minor)
        if row.status not in ON_BOOK:
            continue
        bucket = "90+" if row.status == LoanStatus.CHARGED_OFF.value and (
            row.arrears_bucket == "CURRENT") else row.arrears_bucket
        for table, key in ((buckets, bucket), (stages, str(row.stage))):
            acc = table.setdefault((row.currency, key), BucketLine(key, row.currency))
            acc.loans += 1
            acc.principal_minor += row.principal_minor
            acc.arrears_minor += row.arrears_minor
            acc.exposure_minor += row.principal_minor + row.interest_minor + row.fees_minor
            acc.provision_minor += row.provision_minor
    report.by_status = {k: (v[0], v[1]) for k, v in sorted(status.items())}
    currencies = sorted({c for c, _ in status})
    report.buckets = [buckets.get((c, b)) or BucketLine(b, c) for c in currencies
                      for b in BUCKETS]
    report.stages = [stages.get((c, str(s))) or BucketLine(str(s), c) for c in currencies
                     for s in STAGES]
    return report


@dataclass
class SocialValueLine:
    council_area: str
    currency: str
    loans: int = 0
    approved_minor: int = 0
    disbursed_minor: int = 0
    jobs_created: int = 0
    jobs_safeguarded: int = 0
    living_wage_employers: int = 0
    cooperatives: int = 0
    employee_owned: int = 0


def social_value(uow: UnitOfWork, council_area: str | None = None) -> list[SocialValueLine]:
    """Totals by council area (and currency) over every approved loan (disbursed or not; a
    rejected application counts nowhere)."""
    with uow.read() as r:
        rows = loan_reader(r).social_value_rows(council_area)
    lines: dict[tuple[str, str], SocialValueLine] = {}
    for loan, disbursed in rows:
        line = lines.setdefault((loan.council_area, loan.currency),
                                SocialValueLine(loan.council_area, loan.currency))
        s = loan.social
        line.loans += 1
        line.approved_minor += loan.amount_approved_minor or 0
        line.disbursed_minor += disbursed
        line.jobs_created += s.jobs_created
        line.jobs_safeguarded += s.jobs_safeguarded
        line.living_wage_employers += int(s.living_wage_employer)
        line.cooperatives += int(s.ownership is Ownership.COOPERATIVE)
        line.employee_owned += int(s.ownership is Ownership.EMPLOYEE_OWNED)
    return [lines[k] for k in sorted(lines)]
