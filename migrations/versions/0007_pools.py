"""Lending pools: terms, events, closed periods and participants' statements.

Guards (triggers, both databases), on top of the CHECK constraints:

- pools, pool_events, pool_periods, pool_statements: append-only (a pool's terms never change,
  its events are history, and a closed period and its statements never change);
- pool_events are numbered densely per pool (the next event of a pool is its last plus one),
  and pool_periods close in order (period n + 1 only after period n).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations import guards

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

KINDS = ("commit", "subscribe", "call", "redeem", "settle", "distribute", "fund", "repay",
         "accrue", "receive", "provide", "release", "charge_off", "recover", "pay_fee", "close")
TABLES = ("pools", "pool_events", "pool_periods", "pool_statements")

_EVENT_GAP = ("NEW.seq <> 1 + COALESCE((SELECT MAX(seq) FROM pool_events "
              "WHERE pool_id = NEW.pool_id), 0)")
_PERIOD_GAP = ("NEW.period_number <> 1 + COALESCE((SELECT MAX(period_number) FROM pool_periods "
               "WHERE pool_id = NEW.pool_id), 0)")


def _create_tables() -> None:
    op.create_table(
        "pools",
        sa.Column("pool_id", sa.String(length=20), nullable=False),
        sa.Column("terms_json", sa.Text(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("pool_id", name=op.f("pk_pools")),
    )
    op.create_table(
        "pool_events",
        sa.Column("pool_id", sa.String(length=20), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("period_number", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("payload_json", sa.Text(), nullable=False),
        sa.Column("reference", sa.String(length=256), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("recorded_ns", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("seq >= 1 AND period_number >= 1", name=op.f("ck_pool_events_positive")),
        sa.CheckConstraint("kind IN (" + ", ".join(f"'{k}'" for k in KINDS) + ")",
                           name=op.f("ck_pool_events_kind")),
        sa.ForeignKeyConstraint(["pool_id"], ["pools.pool_id"],
                                name=op.f("fk_pool_events_pool_id_pools")),
        sa.PrimaryKeyConstraint("pool_id", "seq", name=op.f("pk_pool_events")),
    )
    op.create_table(
        "pool_periods",
        sa.Column("pool_id", sa.String(length=20), nullable=False),
        sa.Column("period_number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=False),
        sa.Column("summary_json", sa.Text(), nullable=False),
        sa.Column("approval_id", sa.String(length=64), nullable=False),
        sa.Column("closed_ns", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("period_number >= 1 AND end_date > start_date",
                           name=op.f("ck_pool_periods_dates")),
        sa.ForeignKeyConstraint(["approval_id"], ["approvals.approval_id"],
                                name=op.f("fk_pool_periods_approval_id_approvals")),
        sa.ForeignKeyConstraint(["pool_id"], ["pools.pool_id"],
                                name=op.f("fk_pool_periods_pool_id_pools")),
        sa.PrimaryKeyConstraint("pool_id", "period_number", name=op.f("pk_pool_periods")),
    )
    op.create_table(
        "pool_statements",
        sa.Column("pool_id", sa.String(length=20), nullable=False),
        sa.Column("period_number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("participant_id", sa.String(length=20), nullable=False),
        sa.Column("class_id", sa.String(length=12), nullable=False),
        sa.Column("closing_units_micro", sa.BigInteger(), nullable=False),
        sa.Column("closing_capital_minor", sa.BigInteger(), nullable=False),
        sa.Column("statement_json", sa.Text(), nullable=False),
        sa.Column("closed_ns", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("closing_units_micro >= 0",
                           name=op.f("ck_pool_statements_units_non_negative")),
        sa.ForeignKeyConstraint(["pool_id", "period_number"],
                                ["pool_periods.pool_id", "pool_periods.period_number"],
                                name=op.f("fk_pool_statements_pool_id_pool_periods")),
        sa.PrimaryKeyConstraint("pool_id", "period_number", "participant_id", "class_id",
                                name=op.f("pk_pool_statements")),
    )
    op.create_index("ix_pool_statements_participant", "pool_statements",
                    ["participant_id", "pool_id", "period_number"])


def _sqlite_guards() -> list[str]:
    return [
        f"CREATE TRIGGER pool_events_dense BEFORE INSERT ON pool_events WHEN {_EVENT_GAP} "
        "BEGIN SELECT RAISE(ABORT, 'pool events are numbered densely per pool'); END",
        f"CREATE TRIGGER pool_periods_in_order BEFORE INSERT ON pool_periods WHEN {_PERIOD_GAP} "
        "BEGIN SELECT RAISE(ABORT, 'pool periods close in order'); END",
    ]


def _pg_guards() -> list[str]:
    out = []
    for table, name, condition, message in (
            ("pool_events", "bank_pool_events_dense", _EVENT_GAP, "are numbered densely"),
            ("pool_periods", "bank_pool_periods_in_order", _PERIOD_GAP, "close in order")):
        out.append(f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF {condition} THEN
            RAISE EXCEPTION '{table} of pool % {message}', NEW.pool_id
              USING ERRCODE = 'check_violation';
          END IF;
          RETURN NEW;
        END $$""")
        trigger = "pool_events_dense" if table == "pool_events" else "pool_periods_in_order"
        out.append(f"CREATE TRIGGER {trigger} BEFORE INSERT ON {table} "
                   f"FOR EACH ROW EXECUTE FUNCTION {name}()")
    return out


def upgrade() -> None:
    _create_tables()
    conn = op.get_bind()
    guards.create_append_only(conn, TABLES)
    for statement in _pg_guards() if conn.dialect.name == "postgresql" else _sqlite_guards():
        conn.execute(sa.text(statement))


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        for name in ("bank_pool_events_dense", "bank_pool_periods_in_order"):
            conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {name}() CASCADE")
    else:
        for name in ("pool_events_dense", "pool_periods_in_order"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
    guards.drop_append_only(conn, TABLES)
    op.drop_index("ix_pool_statements_participant", table_name="pool_statements")
    for table in reversed(TABLES):
        op.drop_table(table)
