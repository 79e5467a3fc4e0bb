"""The lending book: loan products (versioned), loans, schedule versions, loan transactions,
the amounts booked to the ledger per loan and bucket, arrears history, close-of-business runs
and the logical business date.

Guards (triggers, both databases), on top of the CHECK constraints:

- loan_products, loan_schedules, loan_transactions: append-only (history);
- loans: never deleted; member, product, currency, amount applied, social-value data,
  applicant and application time never change, and the terms frozen at approval never change
  once set;
- loan_balances, loan_arrears, cob_runs, business_date: never deleted (the business date and
  the booked amounts move forward by UPDATE).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations import guards

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

STATUSES = ("APPLIED", "APPROVED", "REJECTED", "ACTIVE", "CHARGED_OFF", "WRITTEN_OFF", "CLOSED")
OWNERSHIPS = ("cooperative", "employee_owned", "other")
KINDS = ("disbursement", "repayment", "forbearance", "charge_off", "write_off", "recovery",
         "fee", "waiver", "refund", "payoff")
BUCKETS = (
    "principal_outstanding_minor", "interest_receivable_minor", "fee_receivable_minor",
    "penalty_receivable_minor", "impairment_expense_minor", "cash_minor",
    "overpayment_liability_minor", "provision_required_minor", "interest_income_minor",
    "fee_income_minor", "penalty_income_minor", "recovered_minor",
    "written_off_principal_minor", "written_off_interest_minor", "written_off_fees_minor")
LOAN_ACCOUNTS = ("principal_account_id", "interest_account_id", "fee_account_id",
                 "penalty_account_id", "allowance_account_id", "overpayment_account_id")
APPEND_ONLY = ("loan_products", "loan_schedules", "loan_transactions")
NO_DELETE = ("loans", "loan_balances", "loan_arrears", "cob_runs", "business_date")


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


# {ne} is the dialect's null-safe "differs" operator.
_LOAN_CHANGE = """
    NEW.loan_id {ne} OLD.loan_id OR NEW.member_id {ne} OLD.member_id
    OR NEW.product_id {ne} OLD.product_id OR NEW.product_version {ne} OLD.product_version
    OR NEW.currency {ne} OLD.currency OR NEW.amount_applied_minor {ne} OLD.amount_applied_minor
    OR NEW.purpose {ne} OLD.purpose OR NEW.jobs_created {ne} OLD.jobs_created
    OR NEW.jobs_safeguarded {ne} OLD.jobs_safeguarded
    OR NEW.living_wage_employer {ne} OLD.living_wage_employer
    OR NEW.ownership {ne} OLD.ownership OR NEW.council_area {ne} OLD.council_area
    OR NEW.applied_by {ne} OLD.applied_by OR NEW.applied_ns {ne} OLD.applied_ns
    OR (OLD.terms_json IS NOT NULL AND NEW.terms_json {ne} OLD.terms_json)
"""


def _sqlite_guards() -> list[str]:
    out = [f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} BEGIN "
           f"SELECT RAISE(ABORT, '{table} rows are never deleted'); END" for table in NO_DELETE]
    out.append(f"CREATE TRIGGER loans_guard BEFORE UPDATE ON loans WHEN "
               f"{_LOAN_CHANGE.format(ne='IS NOT')} BEGIN "
               f"SELECT RAISE(ABORT, 'loan update changes what never changes'); END")
    return out


def _pg_guards() -> list[str]:
    out = [f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
           f"FOR EACH ROW EXECUTE FUNCTION bank_refuse()" for table in NO_DELETE]
    out.append(f"""CREATE FUNCTION bank_loan_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF {_LOAN_CHANGE.format(ne='IS DISTINCT FROM')} THEN
            RAISE EXCEPTION 'loan % update changes what never changes', OLD.loan_id
              USING ERRCODE = 'check_violation';
          END IF;
          RETURN NEW;
        END $$""")
    out.append("CREATE TRIGGER loans_guard BEFORE UPDATE ON loans "
               "FOR EACH ROW EXECUTE FUNCTION bank_loan_guard()")
    return out


def _fk(column: str, table: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [target],
                                   name=op.f(f"fk_{table}_{column}_{target.split('.')[0]}"))


def _loans() -> None:
    op.create_table(
        "loans",
        sa.Column("loan_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=48), nullable=False),
        sa.Column("product_id", sa.String(length=64), nullable=False),
        sa.Column("product_version", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("amount_applied_minor", sa.BigInteger(), nullable=False),
        sa.Column("amount_approved_minor", sa.BigInteger(), nullable=True),
        sa.Column("purpose", sa.String(length=500), nullable=False),
        sa.Column("jobs_created", sa.Integer(), nullable=False),
        sa.Column("jobs_safeguarded", sa.Integer(), nullable=False),
        sa.Column("living_wage_employer", sa.Boolean(), nullable=False),
        sa.Column("ownership", sa.String(length=16), nullable=False),
        sa.Column("council_area", sa.String(length=32), nullable=False),
        sa.Column("terms_json", sa.Text(), nullable=True),
        sa.Column("applied_by", sa.String(length=128), nullable=False),
        sa.Column("applied_ns", sa.BigInteger(), nullable=False),
        sa.Column("decided_by", sa.String(length=128), nullable=True),
        sa.Column("decided_ns", sa.BigInteger(), nullable=True),
        sa.Column("decision_note", sa.String(length=256), nullable=False),
        sa.Column("disbursed_on", sa.Date(), nullable=True),
        sa.Column("settlement_account_id", sa.String(length=64), nullable=True),
        *(sa.Column(name, sa.String(length=64), nullable=True) for name in LOAN_ACCOUNTS),
        sa.Column("forborne", sa.Boolean(), nullable=False),
        sa.Column("days_past_due", sa.Integer(), nullable=False),
        sa.Column("arrears_bucket", sa.String(length=8), nullable=False),
        sa.Column("stage", sa.SmallInteger(), nullable=False),
        sa.Column("arrears_minor", sa.BigInteger(), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(f"status IN {_in(STATUSES)}", name=op.f("ck_loans_status")),
        sa.CheckConstraint(f"ownership IN {_in(OWNERSHIPS)}", name=op.f("ck_loans_ownership")),
        sa.CheckConstraint("amount_applied_minor > 0 AND (amount_approved_minor IS NULL OR "
                           "(amount_approved_minor > 0 AND amount_approved_minor <= "
                           "amount_applied_minor))", name=op.f("ck_loans_amounts")),
        sa.CheckConstraint("jobs_created >= 0 AND jobs_safeguarded >= 0",
                           name=op.f("ck_loans_jobs")),
        sa.CheckConstraint("status IN ('APPLIED', 'REJECTED') OR (terms_json IS NOT NULL AND "
                           "amount_approved_minor IS NOT NULL AND decided_by IS NOT NULL)",
                           name=op.f("ck_loans_approved_terms")),
        sa.CheckConstraint("decided_by IS NULL OR decided_by <> applied_by",
                           name=op.f("ck_loans_two_people")),
        sa.CheckConstraint("status IN ('APPLIED', 'APPROVED', 'REJECTED') OR "
                           "(disbursed_on IS NOT NULL AND principal_account_id IS NOT NULL)",
                           name=op.f("ck_loans_disbursed")),
        sa.CheckConstraint("days_past_due >= 0 AND stage BETWEEN 0 AND 3 AND "
                           "arrears_minor >= 0", name=op.f("ck_loans_arrears")),
        _fk("member_id", "loans", "members.member_id"),
        _fk("settlement_account_id", "loans", "accounts.account_id"),
        *(_fk(name, "loans", "accounts.account_id") for name in LOAN_ACCOUNTS),
        sa.PrimaryKeyConstraint("loan_id", name=op.f("pk_loans")),
    )
    op.create_index("ix_loans_member", "loans", ["member_id", "loan_id"])
    op.create_index("ix_loans_status", "loans", ["status", "loan_id"])
    op.create_index("ix_loans_council_area", "loans", ["council_area", "loan_id"])


def _history() -> None:
    op.create_table(
        "loan_schedules",
        sa.Column("loan_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("schedule_json", sa.Text(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("version >= 1", name=op.f("ck_loan_schedules_version_positive")),
        _fk("loan_id", "loan_schedules", "loans.loan_id"),
        sa.PrimaryKeyConstraint("loan_id", "version", name=op.f("pk_loan_schedules")),
    )
    op.create_table(
        "loan_transactions",
        sa.Column("loan_id", sa.String(length=40), nullable=False),
        sa.Column("transaction_id", sa.String(length=64), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("payload_json", sa.Text(), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("recorded_ns", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(f"kind IN {_in(KINDS)}", name=op.f("ck_loan_transactions_kind")),
        sa.CheckConstraint("amount_minor IS NULL OR amount_minor > 0",
                           name=op.f("ck_loan_transactions_amount_positive")),
        _fk("loan_id", "loan_transactions", "loans.loan_id"),
        sa.PrimaryKeyConstraint("loan_id", "transaction_id", name=op.f("pk_loan_transactions")),
    )
    op.create_index("ix_loan_transactions_date", "loan_transactions",
                    ["loan_id", "business_date"])
    op.create_table(
        "loan_balances",
        sa.Column("loan_id", sa.String(length=40), nullable=False),
        sa.Column("booked_through", sa.Date(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in BUCKETS),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
        _fk("loan_id", "loan_balances", "loans.loan_id"),
        sa.PrimaryKeyConstraint("loan_id", name=op.f("pk_loan_balances")),
    )
    op.create_table(
        "loan_arrears",
        sa.Column("loan_id", sa.String(length=40), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("days_past_due", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.String(length=8), nullable=False),
        sa.Column("stage", sa.SmallInteger(), nullable=False),
        sa.Column("provision_minor", sa.BigInteger(), nullable=False),
        sa.Column("recorded_ns", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("days_past_due >= 0 AND stage BETWEEN 1 AND 3 AND "
                           "provision_minor >= 0", name=op.f("ck_loan_arrears_values")),
        _fk("loan_id", "loan_arrears", "loans.loan_id"),
        sa.PrimaryKeyConstraint("loan_id", "business_date", name=op.f("pk_loan_arrears")),
    )


def _operations() -> None:
    op.create_table(
        "cob_runs",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("loans", sa.Integer(), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("started_by", sa.String(length=128), nullable=False),
        sa.Column("started_ns", sa.BigInteger(), nullable=False),
        sa.Column("completed_ns", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("status IN ('running', 'completed')", name=op.f("ck_cob_runs_status")),
        sa.CheckConstraint("(status = 'completed') = (completed_ns IS NOT NULL)",
                           name=op.f("ck_cob_runs_completed")),
        sa.PrimaryKeyConstraint("business_date", name=op.f("pk_cob_runs")),
    )
    op.create_table(
        "business_date",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_business_date_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_business_date")),
    )


def upgrade() -> None:
    op.create_table(
        "loan_products",
        sa.Column("product_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("terms_json", sa.Text(), nullable=False),
        sa.Column("principal_min_minor", sa.BigInteger(), nullable=False),
        sa.Column("principal_max_minor", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("version >= 1", name=op.f("ck_loan_products_version_positive")),
        sa.CheckConstraint("principal_min_minor >= 1 AND principal_max_minor >= "
                           "principal_min_minor", name=op.f("ck_loan_products_principal_range")),
        sa.PrimaryKeyConstraint("product_id", "version", name=op.f("pk_loan_products")),
    )
    _loans()
    _history()
    _operations()
    conn = op.get_bind()
    guards.create_append_only(conn, APPEND_ONLY)
    statements = _pg_guards() if conn.dialect.name == "postgresql" else _sqlite_guards()
    for statement in statements:
        conn.execute(sa.text(statement))


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("DROP FUNCTION IF EXISTS bank_loan_guard() CASCADE")
        for table in NO_DELETE:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_delete ON {table}")
    else:
        for name in (*(f"{table}_no_delete" for table in NO_DELETE), "loans_guard"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
    guards.drop_append_only(conn, APPEND_ONLY)
    for table in ("business_date", "cob_runs", "loan_arrears", "loan_balances"):
        op.drop_table(table)
    op.drop_index("ix_loan_transactions_date", table_name="loan_transactions")
    op.drop_table("loan_transactions")
    op.drop_table("loan_schedules")
    for index in ("ix_loans_council_area", "ix_loans_status", "ix_loans_member"):
        op.drop_index(index, table_name="loans")
    op.drop_table("loans")
    op.drop_table("loan_products")
