"""SQL storage of the lending book (mixed into `bank.adapters.sql.SqlLedger`, so it shares
the ledger's connection and transaction). Upserts are an UPDATE then, if no row was there, an
INSERT: portable, and safe because every writer holds the ledger head lock."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.engine import Row

from bank.adapters import tables as t
from bank.app.loan_ports import (
    ArrearsDay,
    Booked,
    BookRow,
    CobRun,
    LoanAccounts,
    LoanFilter,
    LoanRecord,
    LoanStatus,
    Ownership,
    ParticipationLine,
    ProductRecord,
    ScheduleVersion,
    SocialValue,
    StoredLoanTransaction,
)
from bank.domain.invariants import ensure
from bank.domain.lending import LedgerBuckets

_L = t.loans.c


def _product(row: Row[Any]) -> ProductRecord:
    m = row._mapping
    return ProductRecord(m["product_id"], m["version"], m["name"], m["terms_json"],
                         m["principal_min_minor"], m["principal_max_minor"], m["created_by"],
                         m["created_ns"])


def _loan(row: Row[Any]) -> LoanRecord:
    m = row._mapping
    accounts = (LoanAccounts(*(m[name] for name in t.LOAN_ACCOUNT_COLUMNS))
                if m["principal_account_id"] is not None else None)
    return LoanRecord(
        loan_id=m["loan_id"], member_id=m["member_id"], product_id=m["product_id"],
        product_version=m["product_version"], currency=m["currency"],
        status=LoanStatus(m["status"]), amount_applied_minor=m["amount_applied_minor"],
        amount_approved_minor=m["amount_approved_minor"], purpose=m["purpose"],
        social=SocialValue(m["jobs_created"], m["jobs_safeguarded"],
                           bool(m["living_wage_employer"]), Ownership(m["ownership"])),
        council_area=m["council_area"], terms_json=m["terms_json"], applied_by=m["applied_by"],
        applied_ns=m["applied_ns"], decided_by=m["decided_by"], decided_ns=m["decided_ns"],
        decision_note=m["decision_note"], disbursed_on=m["disbursed_on"],
        settlement_account_id=m["settlement_account_id"], accounts=accounts,
        forborne=bool(m["forborne"]), days_past_due=m["days_past_due"],
        arrears_bucket=m["arrears_bucket"], stage=m["stage"], arrears_minor=m["arrears_minor"],
        updated_ns=m["updated_ns"], funding_json=m["funding_json"])


def _mutable(loan: LoanRecord) -> dict[str, Any]:
    accounts = loan.accounts
    values: dict[str, Any] = {
        "status": loan.status.value, "amount_approved_minor": loan.amount_approved_minor,
        "terms_json": loan.terms_json, "decided_by": loan.decided_by,
        "decided_ns": loan.decided_ns, "decision_note": loan.decision_note,
        "disbursed_on": loan.disbursed_on, "settlement_account_id": loan.settlement_account_id,
        "forborne": loan.forborne, "days_past_due": loan.days_past_due,
        "arrears_bucket": loan.arrears_bucket, "stage": loan.stage,
        "arrears_minor": loan.arrears_minor, "updated_ns": loan.updated_ns,
        "funding_json": loan.funding_json}
    for name, value in zip(t.LOAN_ACCOUNT_COLUMNS, (
            accounts.principal, accounts.interest, accounts.fee, accounts.penalty,
            accounts.allowance, accounts.overpayment) if accounts else (None,) * 6, strict=True):
        values[name] = value
    return values


def _buckets(row: Row[Any]) -> LedgerBuckets:
    m = row._mapping
    return LedgerBuckets(**{name: m[name] for name in t.LOAN_BUCKET_COLUMNS})


class SqlLoanStore:
    """Lending-book reads and writes over the ledger's connection and transaction."""

    conn: Connection
    is_postgres: bool

    # -- reads ----------------------------------------------------------------------------------
    def get_product(self, product_id: str, version: int | None = None) -> ProductRecord | None:
        c = t.loan_products.c
        query = select(t.loan_products).where(c.product_id == product_id)
        if version is not None:
            query = query.where(c.version == version)
        row = self.conn.execute(query.order_by(c.version.desc()).limit(1)).one_or_none()
        return _product(row) if row is not None else None

    def get_loan(self, loan_id: str) -> LoanRecord | None:
        row = self.conn.execute(select(t.loans).where(_L.loan_id == loan_id)).one_or_none()
        return _loan(row) if row is not None else None

    def list_loans(self, after_id: str, limit: int, flt: LoanFilter) -> list[LoanRecord]:
        query = select(t.loans).where(_L.loan_id > after_id)
        if flt.member_id is not None:
            query = query.where(_L.member_id == flt.member_id)
        if flt.status is not None:
            query = query.where(_L.status == flt.status)
        if flt.council_area is not None:
            query = query.where(_L.council_area == flt.council_area)
        return [_loan(r) for r in self.conn.execute(query.order_by(_L.loan_id).limit(limit))]

    def loan_transactions(self, loan_id: str) -> list[StoredLoanTransaction]:
        c = t.loan_transactions.c
        rows = self.conn.execute(select(t.loan_transactions).where(c.loan_id == loan_id)
                                 .order_by(c.business_date, c.recorded_ns, c.transaction_id))
        return [StoredLoanTransaction(r.loan_id, r.transaction_id, r.business_date, r.kind,
                                      r.amount_minor, r.payload_json, r.request_id,
                                      r.recorded_ns) for r in rows]

    def loan_schedules(self, loan_id: str) -> list[ScheduleVersion]:
        c = t.loan_schedules.c
        rows = self.conn.execute(select(t.loan_schedules).where(c.loan_id == loan_id)
                                 .order_by(c.version))
        return [ScheduleVersion(r.version, r.effective_from, r.schedule_json, r.created_ns)
                for r in rows]

    def booked(self, loan_id: str) -> Booked | None:
        row = self.conn.execute(select(t.loan_balances).where(
            t.loan_balances.c.loan_id == loan_id)).one_or_none()
        return Booked(row.booked_through, _buckets(row)) if row is not None else None

    def arrears_history(self, loan_id: str, limit: int) -> list[ArrearsDay]:
        c = t.loan_arrears.c
        rows = self.conn.execute(select(t.loan_arrears).where(c.loan_id == loan_id)
                                 .order_by(c.business_date.desc()).limit(limit)).all()
        return [ArrearsDay(r.business_date, r.days_past_due, r.bucket, r.stage,
                           r.provision_minor) for r in reversed(rows)]

    def stored_business_date(self) -> date | None:
        value: date | None = self.conn.execute(select(t.business_date.c.business_date).where(
            t.business_date.c.id == 1)).scalar_one_or_none()
        return value

    def cob_run(self, business_date: date) -> CobRun | None:
        row = self.conn.execute(select(t.cob_runs).where(
            t.cob_runs.c.business_date == business_date)).one_or_none()
        if row is None:
            return None
        return CobRun(row.business_date, row.status, row.chunks, row.loans, row.entries,
                      row.started_by, row.started_ns, row.completed_ns)

    def loans_to_close(self, business_date: date, after_id: str, limit: int) -> list[str]:
        b = t.loan_balances.c
        serviced = _L.status.in_((LoanStatus.ACTIVE.value, LoanStatus.CHARGED_OFF.value))
        query = (select(_L.loan_id).select_from(t.loans.join(t.loan_balances,
                                                              b.loan_id == _L.loan_id))
                 .where(_L.loan_id > after_id, serviced, b.booked_through <= business_date)
                 .order_by(_L.loan_id).limit(limit))
        return list(self.conn.execute(query).scalars())

    def book_rows(self, council_area: str | None, after_id: str, limit: int) -> list[BookRow]:
        b = t.loan_balances.c
        query = (select(t.loans, t.loan_balances).select_from(
            t.loans.join(t.loan_balances, b.loan_id == _L.loan_id))
            .where(_L.loan_id > after_id))
        if council_area is not None:
            query = query.where(_L.council_area == council_area)
        rows = self.conn.execute(query.order_by(_L.loan_id).limit(limit))
        out = []
        for r in rows:
            m = r._mapping
            out.append(BookRow(
                m["loan_id"], m["currency"], m["status"], m["council_area"], m["days_past_due"],
                m["arrears_bucket"], m["stage"], m["arrears_minor"],
                m["principal_outstanding_minor"], m["interest_receivable_minor"],
                m["fee_receivable_minor"] + m["penalty_receivable_minor"],
                m["provision_required_minor"],
                m["written_off_principal_minor"] + m["written_off_interest_minor"]
                + m["written_off_fees_minor"], m["recovered_minor"]))
        return out

    def social_value_rows(self, council_area: str | None) -> list[tuple[LoanRecord, int]]:
        c = t.loan_transactions.c
        disbursed = (select(c.loan_id, func.sum(c.amount_minor).label("amount"))
                     .where(c.kind == "disbursement").group_by(c.loan_id).subquery())
        query = (select(t.loans, disbursed.c.amount).select_from(
            t.loans.outerjoin(disbursed, disbursed.c.loan_id == _L.loan_id))
            .where(_L.status.not_in((LoanStatus.APPLIED.value, LoanStatus.REJECTED.value))))
        if council_area is not None:
            query = query.where(_L.council_area == council_area)
        return [(_loan(r), int(r.amount or 0)) for r in self.conn.execute(
            query.order_by(_L.loan_id))]

    # -- writes ---------------------------------------------------------------------------------
    def insert_product(self, product: ProductRecord) -> None:
        self.conn.execute(insert(t.loan_products).values(
            product_id=product.product_id, version=product.version, name=product.name,
            terms_json=product.terms_json, principal_min_minor=product.principal_min_minor,
            principal_max_minor=product.principal_max_minor, created_by=product.created_by,
            created_ns=product.created_ns))

    def insert_loan(self, loan: LoanRecord) -> None:
        s = loan.social
        self.conn.execute(insert(t.loans).values(
            loan_id=loan.loan_id, member_id=loan.member_id, product_id=loan.product_id,
            product_version=loan.product_version, currency=loan.currency,
            amount_applied_minor=loan.amount_applied_minor, purpose=loan.purpose,
            jobs_created=s.jobs_created, jobs_safeguarded=s.jobs_safeguarded,
            living_wage_employer=s.living_wage_employer, ownership=s.ownership.value,
            council_area=loan.council_area, applied_by=loan.applied_by,
            applied_ns=loan.applied_ns, **_mutable(loan)))

    def save_loan(self, loan: LoanRecord) -> None:
        result = self.conn.execute(update(t.loans).where(_L.loan_id == loan.loan_id)
                                   .values(**_mutable(loan)))
        ensure(result.rowcount == 1, f"loan {loan.loan_id} to update is missing")

    def insert_participation_lines(self, lines: Sequence[ParticipationLine]) -> None:
        if lines:
            self.conn.execute(insert(t.loan_participation_lines), [
                {"loan_id": x.loan_id, "line_no": x.line_no, "transfer_id": x.transfer_id,
                 "business_date": x.business_date, "movement": x.movement, "funder": x.funder,
                 "split_version": x.split_version, "bps": x.bps,
                 "amount_minor": x.amount_minor, "recorded_ns": x.recorded_ns}
                for x in lines])

    def participation_lines(self, loan_id: str, after_line: int, limit: int
                            ) -> list[ParticipationLine]:
        c = t.loan_participation_lines.c
        rows = self.conn.execute(
            select(t.loan_participation_lines)
            .where(c.loan_id == loan_id, c.line_no > after_line)
            .order_by(c.line_no).limit(limit)).all()
        return [ParticipationLine(**row._mapping) for row in rows]

    def insert_loan_transaction(self, transaction: StoredLoanTransaction) -> None:
        x = transaction
        self.conn.execute(insert(t.loan_transactions).values(
            loan_id=x.loan_id, transaction_id=x.transaction_id, business_date=x.business_date,
            kind=x.kind, amount_minor=x.amount_minor, payload_json=x.payload_json,
            request_id=x.request_id, recorded_ns=x.recorded_ns))

    def insert_schedule(self, loan_id: str, schedule: ScheduleVersion) -> None:
        self.conn.execute(insert(t.loan_schedules).values(
            loan_id=loan_id, version=schedule.version, effective_from=schedule.effective_from,
            schedule_json=schedule.schedule_json, created_ns=schedule.created_ns))

    def save_booked(self, loan_id: str, booked: Booked, at_ns: int) -> None:
        values = {name: getattr(booked.buckets, name) for name in t.LOAN_BUCKET_COLUMNS}
        values.update(booked_through=booked.booked_through, updated_ns=at_ns)
        result = self.conn.execute(update(t.loan_balances).where(
            t.loan_balances.c.loan_id == loan_id).values(**values))
        if result.rowcount == 0:
            self.conn.execute(insert(t.loan_balances).values(loan_id=loan_id, **values))

    def save_arrears(self, loan_id: str, days: Sequence[ArrearsDay], at_ns: int) -> None:
        c = t.loan_arrears.c
        for day in days:
            values = {"days_past_due": day.days_past_due, "bucket": day.bucket,
                      "stage": day.stage, "provision_minor": day.provision_minor,
                      "recorded_ns": at_ns}
            result = self.conn.execute(update(t.loan_arrears).where(
                c.loan_id == loan_id, c.business_date == day.business_date).values(**values))
            if result.rowcount == 0:
                self.conn.execute(insert(t.loan_arrears).values(
                    loan_id=loan_id, business_date=day.business_date, **values))

    def save_business_date(self, business_date: date, at_ns: int) -> None:
        c = t.business_date.c
        result = self.conn.execute(update(t.business_date).where(c.id == 1).values(
            business_date=business_date, updated_ns=at_ns))
        if result.rowcount == 0:
            self.conn.execute(insert(t.business_date).values(
                id=1, business_date=business_date, updated_ns=at_ns))

    def save_cob_run(self, run: CobRun) -> None:
        values = {"status": run.status, "chunks": run.chunks, "loans": run.loans,
                  "entries": run.entries, "completed_ns": run.completed_ns}
        result = self.conn.execute(update(t.cob_runs).where(
            t.cob_runs.c.business_date == run.business_date).values(**values))
        if result.rowcount == 0:
            self.conn.execute(insert(t.cob_runs).values(
                business_date=run.business_date, started_by=run.started_by,
                started_ns=run.started_ns, **values))
