"""SQLAlchemy Core table definitions: the target metadata of the Alembic migrations.

CHECK constraints here are the first database-level guard; triggers (append-only history,
balanced entries, account rules) are created by the migrations in `migrations/versions`.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

from bank.domain.pools import participation

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

ledger_head = Table(
    "ledger_head", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("next_seq", BigInteger, nullable=False),
    Column("last_recorded_ns", BigInteger, nullable=False),
    Column("audit_size", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
    CheckConstraint("next_seq >= 1 AND audit_size >= 0 AND last_recorded_ns >= 0",
                    name="non_negative"),
)

accounts = Table(
    "accounts", metadata,
    Column("account_id", String(64), primary_key=True),
    Column("currency", String(3), nullable=False),
    Column("account_type", String(16), nullable=False),
    Column("code", String(32), nullable=False),
    Column("owner_kind", String(16), nullable=False),
    Column("owner_id", String(128), nullable=False),
    Column("status", String(8), nullable=False),
    Column("debits_must_not_exceed_credits", Boolean, nullable=False),
    Column("credits_must_not_exceed_debits", Boolean, nullable=False),
    Column("debits_posted", BigInteger, nullable=False),
    Column("credits_posted", BigInteger, nullable=False),
    Column("debits_pending", BigInteger, nullable=False),
    Column("credits_pending", BigInteger, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("closed_ns", BigInteger, nullable=True),
    CheckConstraint("debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0 "
                    "AND credits_pending >= 0", name="totals_non_negative"),
    CheckConstraint("NOT debits_must_not_exceed_credits OR "
                    "debits_posted + debits_pending <= credits_posted", name="no_overdraft"),
    CheckConstraint("NOT credits_must_not_exceed_debits OR "
                    "credits_posted + credits_pending <= debits_posted", name="no_excess_credit"),
    CheckConstraint("NOT (debits_must_not_exceed_credits AND credits_must_not_exceed_debits)",
                    name="one_limit_flag"),
    CheckConstraint("status IN ('open', 'frozen', 'closed')", name="status"),
    CheckConstraint("account_type IN ('asset', 'liability', 'equity', 'income', 'expense')",
                    name="account_type"),
    CheckConstraint("owner_kind IN ('bank', 'member', 'council', 'pool')", name="owner_kind"),
    CheckConstraint("status <> 'closed' OR (debits_posted = credits_posted AND "
                    "debits_pending = 0 AND credits_pending = 0)", name="closed_at_zero"),
)
Index("ix_accounts_owner", accounts.c.owner_kind, accounts.c.owner_id, accounts.c.account_id)

entries = Table(
    "entries", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("transfer_id", String(64), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("recorded_ns", BigInteger, nullable=False, unique=True),
    Column("effective_date", Date, nullable=False),
    Column("pending_id", String(64), ForeignKey("entries.transfer_id"), nullable=True,
           unique=True),
    Column("reverses_id", String(64), ForeignKey("entries.transfer_id"), nullable=True,
           unique=True),
    Column("expires_ns", BigInteger, nullable=False),
    Column("description", String(256), nullable=False),
    Column("metadata_json", Text, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("posting_count", SmallInteger, nullable=False),
    CheckConstraint("kind IN ('posted', 'pending', 'post_pending', 'void_pending', "
                    "'expire_pending', 'reversal')", name="kind"),
    CheckConstraint("posting_count >= 2", name="two_postings"),
    CheckConstraint("(pending_id IS NOT NULL) = (kind IN ('post_pending', 'void_pending', "
                    "'expire_pending'))", name="pending_ref"),
    CheckConstraint("(reverses_id IS NOT NULL) = (kind = 'reversal')", name="reversal_ref"),
    CheckConstraint("expires_ns >= 0", name="expires_non_negative"),
)
Index("ix_entries_expiry", entries.c.expires_ns, entries.c.kind)

postings = Table(
    "postings", metadata,
    # Postings are inserted before their entry; the entry's insert trigger checks the balance,
    # and this deferred key checks at commit that no posting is left without its entry.
    Column("entry_seq", BigInteger,
           ForeignKey("entries.seq", deferrable=True, initially="DEFERRED"), primary_key=True),
    Column("idx", SmallInteger, primary_key=True, autoincrement=False),
    Column("account_id", String(64), ForeignKey("accounts.account_id"), nullable=False),
    Column("side", String(1), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("effect", String(8), nullable=False),
    Column("recorded_ns", BigInteger, nullable=False),
    Column("debits_posted_after", BigInteger, nullable=False),
    Column("credits_posted_after", BigInteger, nullable=False),
    Column("debits_pending_after", BigInteger, nullable=False),
    Column("credits_pending_after", BigInteger, nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("side IN ('D', 'C')", name="side"),
    CheckConstraint("effect IN ('post', 'reserve', 'release')", name="effect"),
    CheckConstraint("debits_posted_after >= 0 AND credits_posted_after >= 0 AND "
                    "debits_pending_after >= 0 AND credits_pending_after >= 0",
                    name="totals_after_non_negative"),
)
# Statements: an account's posted lines in order. Balance as of a time: the account's last line
# of each effect up to the last position recorded by then (migration 0010 dropped the index on
# (account_id, recorded_ns) that this replaced: one index less to write for every posting).
Index("ix_postings_statement", postings.c.account_id, postings.c.effect, postings.c.entry_seq,
      postings.c.idx)

requests = Table(
    "requests", metadata,
    Column("request_id", String(64), primary_key=True),
    Column("method", String(64), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("outcome_json", Text, nullable=False),
    Column("recorded_ns", BigInteger, nullable=False),
)

audit_log = Table(
    "audit_log", metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("recorded_ns", BigInteger, nullable=False),
    Column("leaf", LargeBinary, nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    CheckConstraint("idx >= 0", name="index_non_negative"),
)

approvals = Table(
    "approvals", metadata,
    Column("approval_id", String(64), primary_key=True),
    Column("operation", String(64), nullable=False),
    Column("payload_json", Text, nullable=False),
    Column("payload_sha256", String(64), nullable=False),
    Column("maker_subject", String(128), nullable=False),
    Column("maker_role", String(16), nullable=False),
    Column("maker_scope", String(128), nullable=False),
    Column("maker_request_id", String(64), nullable=False),
    Column("reason", String(256), nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("expires_ns", BigInteger, nullable=False),
    CheckConstraint("expires_ns > created_ns", name="expires_after_creation"),
)
Index("ix_approvals_created", approvals.c.created_ns)

approval_decisions = Table(
    "approval_decisions", metadata,
    # One decision per approval, ever: the primary key is what makes "runs once" hold.
    Column("approval_id", String(64), ForeignKey("approvals.approval_id"), primary_key=True),
    Column("approved", Boolean, nullable=False),
    Column("checker_subject", String(128), nullable=False),
    Column("checker_role", String(16), nullable=False),
    Column("checker_scope", String(128), nullable=False),
    Column("decided_ns", BigInteger, nullable=False),
    Column("note", String(256), nullable=False),
    Column("outcome_json", Text, nullable=False),
)

checkpoints = Table(
    "checkpoints", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("tree_size", BigInteger, nullable=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("note", Text, nullable=False),  # the signed checkpoint, C2SP signed-note text
    Column("key_name", String(64), nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    CheckConstraint("tree_size >= 0 AND seq >= 1", name="non_negative"),
)

# Members (migration 0005). Personal data is only ever stored encrypted (`personal_data`,
# AES-256-GCM under the member's data key); everything else here is not personal. Erasure
# NULLs the member's wrapped data key and stamps `erased_ns`; nothing is ever deleted.
connected_groups = Table(
    "connected_groups", metadata,
    Column("group_id", String(64), primary_key=True),
    Column("created_ns", BigInteger, nullable=False),
)

MEMBER_LEGAL_FORMS = ("individual", "sole_trader", "partnership", "company", "cooperative",
                      "community_benefit_society", "cic", "charity", "council")
members = Table(
    "members", metadata,
    Column("member_id", String(48), primary_key=True),
    Column("legal_form", String(32), nullable=False),
    Column("council_area", String(32), nullable=False),
    Column("kyc_status", String(16), nullable=False),
    Column("share_account_id", String(64), ForeignKey("accounts.account_id"), nullable=False,
           unique=True),
    Column("deposit_account_id", String(64), ForeignKey("accounts.account_id"), nullable=True,
           unique=True),
    Column("connected_group_id", String(64), ForeignKey("connected_groups.group_id"),
           nullable=True),
    Column("personal_data", LargeBinary, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
    Column("erased_ns", BigInteger, nullable=True),
    CheckConstraint("legal_form IN (" + ", ".join(f"'{f}'" for f in MEMBER_LEGAL_FORMS) + ")",
                    name="legal_form"),
    CheckConstraint("kyc_status IN ('pending', 'verified', 'rejected', 'expired')",
                    name="kyc_status"),
    CheckConstraint("updated_ns >= created_ns AND (erased_ns IS NULL OR erased_ns >= created_ns)",
                    name="times"),
)
Index("ix_members_council_area", members.c.council_area, members.c.member_id)
Index("ix_members_connected_group", members.c.connected_group_id, members.c.member_id)

member_keys = Table(
    "member_keys", metadata,
    Column("member_id", String(48), ForeignKey("members.member_id"), primary_key=True),
    Column("master_key_id", String(16), nullable=False),
    Column("wrapped_key", LargeBinary, nullable=True),  # NULL once destroyed (erasure)
    Column("created_ns", BigInteger, nullable=False),
    Column("destroyed_ns", BigInteger, nullable=True),
    CheckConstraint("(wrapped_key IS NULL) = (destroyed_ns IS NOT NULL)", name="destroyed"),
)

# The lending book (migration 0006). Products, schedule versions and loan transactions are
# history (append-only); a loan row carries its lifecycle state and a cache of its latest
# servicing figures; `loan_balances` holds what has been booked to the ledger per bucket, so a
# posting is always (the engine's new state) - (booked). Arrears history is derived data: a
# backdated transaction recomputes it from its date. `business_date` is one row.
LOAN_STATUSES = ("APPLIED", "APPROVED", "REJECTED", "ACTIVE", "CHARGED_OFF", "WRITTEN_OFF",
                 "CLOSED")
LOAN_OWNERSHIPS = ("cooperative", "employee_owned", "other")
LOAN_TRANSACTION_KINDS = ("disbursement", "repayment", "forbearance", "charge_off", "write_off",
                          "recovery", "fee", "waiver", "refund", "payoff")
LOAN_BUCKET_COLUMNS = (
    "principal_outstanding_minor", "interest_receivable_minor", "fee_receivable_minor",
    "penalty_receivable_minor", "impairment_expense_minor", "cash_minor",
    "overpayment_liability_minor", "provision_required_minor", "interest_income_minor",
    "fee_income_minor", "penalty_income_minor", "recovered_minor",
    "written_off_principal_minor", "written_off_interest_minor", "written_off_fees_minor")
LOAN_ACCOUNT_COLUMNS = ("principal_account_id", "interest_account_id", "fee_account_id",
                        "penalty_account_id", "allowance_account_id", "overpayment_account_id")

loan_products = Table(
    "loan_products", metadata,
    Column("product_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("terms_json", Text, nullable=False),
    Column("principal_min_minor", BigInteger, nullable=False),
    Column("principal_max_minor", BigInteger, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    CheckConstraint("version >= 1", name="version_positive"),
    CheckConstraint("principal_min_minor >= 1 AND principal_max_minor >= principal_min_minor",
                    name="principal_range"),
)

loans = Table(
    "loans", metadata,
    Column("loan_id", String(40), primary_key=True),
    Column("member_id", String(48), ForeignKey("members.member_id"), nullable=False),
    Column("product_id", String(64), nullable=False),
    Column("product_version", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("amount_applied_minor", BigInteger, nullable=False),
    Column("amount_approved_minor", BigInteger, nullable=True),
    Column("purpose", String(500), nullable=False),
    Column("jobs_created", Integer, nullable=False),
    Column("jobs_safeguarded", Integer, nullable=False),
    Column("living_wage_employer", Boolean, nullable=False),
    Column("ownership", String(16), nullable=False),
    Column("council_area", String(32), nullable=False),
    Column("terms_json", Text, nullable=True),  # frozen at approval, never changed after
    Column("applied_by", String(128), nullable=False),
    Column("applied_ns", BigInteger, nullable=False),
    Column("decided_by", String(128), nullable=True),
    Column("decided_ns", BigInteger, nullable=True),
    Column("decision_note", String(256), nullable=False),
    Column("disbursed_on", Date, nullable=True),
    Column("settlement_account_id", String(64), ForeignKey("accounts.account_id"),
           nullable=True),
    *(Column(name, String(64), ForeignKey("accounts.account_id"), nullable=True)
      for name in LOAN_ACCOUNT_COLUMNS),
    Column("forborne", Boolean, nullable=False),
    Column("days_past_due", Integer, nullable=False),
    Column("arrears_bucket", String(8), nullable=False),
    Column("stage", SmallInteger, nullable=False),
    Column("arrears_minor", BigInteger, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
    Column("funding_json", Text, nullable=True),  # migration 0008: the funding split
    CheckConstraint("status IN (" + ", ".join(f"'{s}'" for s in LOAN_STATUSES) + ")",
                    name="status"),
    CheckConstraint("ownership IN (" + ", ".join(f"'{o}'" for o in LOAN_OWNERSHIPS) + ")",
                    name="ownership"),
    CheckConstraint("amount_applied_minor > 0 AND (amount_approved_minor IS NULL OR "
                    "(amount_approved_minor > 0 AND amount_approved_minor <= "
                    "amount_applied_minor))", name="amounts"),
    CheckConstraint("jobs_created >= 0 AND jobs_safeguarded >= 0", name="jobs"),
    CheckConstraint("status IN ('APPLIED', 'REJECTED') OR (terms_json IS NOT NULL AND "
                    "amount_approved_minor IS NOT NULL AND decided_by IS NOT NULL)",
                    name="approved_terms"),
    CheckConstraint("decided_by IS NULL OR decided_by <> applied_by", name="two_people"),
    CheckConstraint("status IN ('APPLIED', 'APPROVED', 'REJECTED') OR "
                    "(disbursed_on IS NOT NULL AND principal_account_id IS NOT NULL)",
                    name="disbursed"),
    CheckConstraint("days_past_due >= 0 AND stage BETWEEN 0 AND 3 AND arrears_minor >= 0",
                    name="arrears"),
)
Index("ix_loans_member", loans.c.member_id, loans.c.loan_id)
Index("ix_loans_status", loans.c.status, loans.c.loan_id)
Index("ix_loans_council_area", loans.c.council_area, loans.c.loan_id)

loan_schedules = Table(
    "loan_schedules", metadata,
    Column("loan_id", String(40), ForeignKey("loans.loan_id"), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("effective_from", Date, nullable=False),
    Column("schedule_json", Text, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    CheckConstraint("version >= 1", name="version_positive"),
)

loan_transactions = Table(
    "loan_transactions", metadata,
    Column("loan_id", String(40), ForeignKey("loans.loan_id"), primary_key=True),
    Column("transaction_id", String(64), primary_key=True),
    Column("business_date", Date, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("amount_minor", BigInteger, nullable=True),
    Column("payload_json", Text, nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("recorded_ns", BigInteger, nullable=False),
    CheckConstraint("kind IN (" + ", ".join(f"'{k}'" for k in LOAN_TRANSACTION_KINDS) + ")",
                    name="kind"),
    CheckConstraint("amount_minor IS NULL OR amount_minor > 0", name="amount_positive"),
)
Index("ix_loan_transactions_date", loan_transactions.c.loan_id,
      loan_transactions.c.business_date)

loan_balances = Table(
    "loan_balances", metadata,
    Column("loan_id", String(40), ForeignKey("loans.loan_id"), primary_key=True),
    Column("booked_through", Date, nullable=False),
    *(Column(name, BigInteger, nullable=False) for name in LOAN_BUCKET_COLUMNS),
    Column("updated_ns", BigInteger, nullable=False),
)

loan_arrears = Table(
    "loan_arrears", metadata,
    Column("loan_id", String(40), ForeignKey("loans.loan_id"), primary_key=True),
    Column("business_date", Date, primary_key=True),
    Column("days_past_due", Integer, nullable=False),
    Column("bucket", String(8), nullable=False),
    Column("stage", SmallInteger, nullable=False),
    Column("provision_minor", BigInteger, nullable=False),
    Column("recorded_ns", BigInteger, nullable=False),
    CheckConstraint("days_past_due >= 0 AND stage BETWEEN 1 AND 3 AND provision_minor >= 0",
                    name="values"),
)

cob_runs = Table(
    "cob_runs", metadata,
    Column("business_date", Date, primary_key=True),
    Column("status", String(12), nullable=False),
    Column("chunks", Integer, nullable=False),
    Column("loans", Integer, nullable=False),
    Column("entries", Integer, nullable=False),
    Column("started_by", String(128), nullable=False),
    Column("started_ns", BigInteger, nullable=False),
    Column("completed_ns", BigInteger, nullable=True),
    CheckConstraint("status IN ('running', 'completed')", name="status"),
    CheckConstraint("(status = 'completed') = (completed_ns IS NOT NULL)", name="completed"),
)

business_date = Table(
    "business_date", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("business_date", Date, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)

# Lending pools (migration 0007), event-sourced: a pool is its terms (never changed) and its
# events, numbered 1, 2, ... per pool; closed periods and their statements are history too.
POOL_EVENT_KINDS = ("commit", "subscribe", "call", "redeem", "settle", "distribute", "fund",
                    "repay", "accrue", "receive", "provide", "release", "charge_off", "recover",
                    "pay_fee", "close", "participation")
pools = Table(
    "pools", metadata,
    Column("pool_id", String(20), primary_key=True),
    Column("terms_json", Text, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
)

pool_events = Table(
    "pool_events", metadata,
    Column("pool_id", String(20), ForeignKey("pools.pool_id"), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("period_number", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("payload_json", Text, nullable=False),
    Column("reference", String(256), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("recorded_ns", BigInteger, nullable=False),
    CheckConstraint("seq >= 1 AND period_number >= 1", name="positive"),
    CheckConstraint("kind IN (" + ", ".join(f"'{k}'" for k in POOL_EVENT_KINDS) + ")",
                    name="kind"),
)

pool_periods = Table(
    "pool_periods", metadata,
    Column("pool_id", String(20), ForeignKey("pools.pool_id"), primary_key=True),
    Column("period_number", Integer, primary_key=True, autoincrement=False),
    Column("start_date", Date, nullable=False),
    Column("end_date", Date, nullable=False),
    Column("summary_json", Text, nullable=False),
    Column("approval_id", String(64), ForeignKey("approvals.approval_id"), nullable=False),
    Column("closed_ns", BigInteger, nullable=False),
    CheckConstraint("period_number >= 1 AND end_date > start_date", name="dates"),
)

pool_statements = Table(
    "pool_statements", metadata,
    Column("pool_id", String(20), primary_key=True),
    Column("period_number", Integer, primary_key=True, autoincrement=False),
    Column("participant_id", String(20), primary_key=True),
    Column("class_id", String(12), primary_key=True),
    Column("closing_units_micro", BigInteger, nullable=False),
    Column("closing_capital_minor", BigInteger, nullable=False),
    Column("statement_json", Text, nullable=False),
    Column("closed_ns", BigInteger, nullable=False),
    ForeignKeyConstraint(["pool_id", "period_number"],
                         ["pool_periods.pool_id", "pool_periods.period_number"]),
    CheckConstraint("closing_units_micro >= 0", name="units_non_negative"),
)
Index("ix_pool_statements_participant", pool_statements.c.participant_id,
      pool_statements.c.pool_id, pool_statements.c.period_number)
POOL_TABLES = ("pools", "pool_events", "pool_periods", "pool_statements")

# Loan participations (migration 0008): each movement of a pool-funded loan, split by funder.
PARTICIPATION_MOVEMENTS = participation.MOVEMENTS
loan_participation_lines = Table(
    "loan_participation_lines", metadata,
    Column("loan_id", String(40), ForeignKey("loans.loan_id"), primary_key=True),
    Column("line_no", BigInteger, primary_key=True, autoincrement=False),
    Column("transfer_id", String(128), nullable=False),
    Column("business_date", Date, nullable=False),
    Column("movement", String(24), nullable=False),
    Column("funder", String(64), nullable=False),
    Column("split_version", Integer, nullable=False),
    Column("bps", Integer, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("recorded_ns", BigInteger, nullable=False),
    CheckConstraint("amount_minor > 0 AND bps >= 0 AND bps <= 10000 AND "
                    "split_version >= 1 AND line_no >= 1", name="ranges"),
    CheckConstraint("movement IN (" + ", ".join(f"'{m}'" for m in PARTICIPATION_MOVEMENTS)
                    + ")", name="movement"),
)
Index("ix_loan_participation_lines_funder", loan_participation_lines.c.funder,
      loan_participation_lines.c.loan_id, loan_participation_lines.c.line_no)

# Tables whose rows are history: never updated, never deleted (triggers enforce it).
APPEND_ONLY = ("entries", "postings", "requests", "audit_log", "approvals", "approval_decisions",
               "checkpoints", "connected_groups", "loan_products", "loan_schedules",
               "loan_transactions", *POOL_TABLES, "loan_participation_lines")
