"""Loan participations: a loan's funding split and the lines that split each of its movements
among its funders (the bank and pools), and pool events that carry a pool's part of them.

- loans.funding_json: the funding split proposed at approval, the split in force from the first
  disbursement (changed only by an approved participation transfer, as a new version) and what
  each funder holds of the loan;
- loan_participation_lines: append-only; one row per movement of a booking and funder, with
  the bps in force, the amount and the entry it belongs to;
- pool_events.kind gains 'participation' (a pool's part of loan bookings).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations import guards

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

OLD_KINDS = ("commit", "subscribe", "call", "redeem", "settle", "distribute", "fund", "repay",
             "accrue", "receive", "provide", "release", "charge_off", "recover", "pay_fee",
             "close")
NEW_KINDS = (*OLD_KINDS, "participation")
MOVEMENTS = ("fund", "repay", "write_off_principal", "buy_principal", "sell_principal",
             "accrue", "reverse_receipt", "receive", "reverse_accrual", "write_off_income",
             "buy_income", "sell_income", "provide", "release", "provision_used", "recover", "opening_principal", "opening_income",
             "opening_provisions")


def _kind_check(kinds: tuple[str, ...]) -> str:
    return "kind IN (" + ", ".join(f"'{k}'" for k in kinds) + ")"


def _set_pool_event_kinds(kinds: tuple[str, ...]) -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        op.drop_constraint(op.f("ck_pool_events_kind"), "pool_events", type_="check")
        op.create_check_constraint(op.f("ck_pool_events_kind"), "pool_events", _kind_check(kinds))
        return
    # SQLite cannot alter a CHECK: the table is rebuilt, so its triggers are made again.
    from importlib import import_module

    pools = import_module("migrations.versions.0007_pools")
    guards.drop_append_only(conn, ("pool_events",))
    conn.exec_driver_sql("DROP TRIGGER IF EXISTS pool_events_dense")
    with op.batch_alter_table("pool_events", recreate="always") as batch:
        batch.drop_constraint(op.f("ck_pool_events_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_pool_events_kind"), _kind_check(kinds))
    guards.create_append_only(conn, ("pool_events",))
    conn.execute(sa.text(pools._sqlite_guards()[0]))


def upgrade() -> None:
    op.add_column("loans", sa.Column("funding_json", sa.Text(), nullable=True))
    op.create_table(
        "loan_participation_lines",
        sa.Column("loan_id", sa.String(length=40), nullable=False),
        sa.Column("line_no", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("transfer_id", sa.String(length=128), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("movement", sa.String(length=24), nullable=False),
        sa.Column("funder", sa.String(length=64), nullable=False),
        sa.Column("split_version", sa.Integer(), nullable=False),
        sa.Column("bps", sa.Integer(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("recorded_ns", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount_minor > 0 AND bps >= 0 AND bps <= 10000 AND "
                           "split_version >= 1 AND line_no >= 1",
                           name=op.f("ck_loan_participation_lines_ranges")),
        sa.CheckConstraint("movement IN (" + ", ".join(f"'{m}'" for m in MOVEMENTS) + ")",
                           name=op.f("ck_loan_participation_lines_movement")),
        sa.ForeignKeyConstraint(["loan_id"], ["loans.loan_id"],
                                name=op.f("fk_loan_participation_lines_loan_id_loans")),
        sa.PrimaryKeyConstraint("loan_id", "line_no", name=op.f("pk_loan_participation_lines")),
    )
    op.create_index("ix_loan_participation_lines_funder", "loan_participation_lines",
                    ["funder", "loan_id", "line_no"])
    guards.create_append_only(op.get_bind(), ("loan_participation_lines",))
    _set_pool_event_kinds(NEW_KINDS)


def downgrade() -> None:
    _set_pool_event_kinds(OLD_KINDS)
    guards.drop_append_only(op.get_bind(), ("loan_participation_lines",))
    op.drop_index("ix_loan_participation_lines_funder", table_name="loan_participation_lines")
    op.drop_table("loan_participation_lines")
    with op.batch_alter_table("loans") as batch:
        batch.drop_column("funding_json")
