"""Pool storage on SQLite and PostgreSQL: the database refuses to rewrite a pool's history or
to leave a gap in it, even with the application bypassed, and a replay checks what it reads."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from bank.app.accounts import AccountSpec, create_accounts
from bank.app.pool_ports import pool_store
from bank.app.pools import commit_capital, create_pool, load
from bank.domain.accounts import AccountType, OwnerKind
from bank.domain.errors import InvariantViolation
from bank.domain.identity import SYSTEM
from tests.unit.test_pool_terms import terms


@pytest.fixture
def pool(engine, uow, clock):
    create_accounts(uow, clock, SYSTEM, "accounts", [
        AccountSpec("council-preston", "GBP", AccountType.LIABILITY, "2500", OwnerKind.COUNCIL,
                    "council:preston", debits_must_not_exceed_credits=True),
        AccountSpec("bank-capital", "GBP", AccountType.LIABILITY, "2500", OwnerKind.BANK,
                    "bank")])
    create_pool(uow, clock, SYSTEM, "create", terms())
    commit_capital(uow, clock, SYSTEM, "commit-1", "lancs", "preston", "senior", 1_000)
    return engine


def _refused(engine, sql: str) -> None:
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.execute(text(sql))


def test_pool_history_cannot_be_updated_or_deleted(pool):
    for table in ("pools", "pool_events"):
        _refused(pool, f"UPDATE {table} SET pool_id = pool_id")
        _refused(pool, f"DELETE FROM {table}")
    with pool.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM pool_events")).scalar_one() == 1


def test_an_event_that_skips_a_number_is_refused(pool):
    _refused(pool, "INSERT INTO pool_events (pool_id, seq, period_number, kind, payload_json, "
                   "reference, request_id, recorded_ns) VALUES "
                   "('lancs', 3, 1, 'commit', '{}', '', 'x', 1)")


def test_a_period_cannot_close_out_of_order(pool):
    _refused(pool, "INSERT INTO pool_periods (pool_id, period_number, start_date, end_date, "
                   "summary_json, approval_id, closed_ns) VALUES "
                   "('lancs', 2, '2025-01-01', '2025-07-01', '{}', 'none', 1)")


def test_a_replay_refuses_an_event_whose_outcome_no_longer_matches(pool, uow):
    with uow.read() as r:
        event = pool_store(r).pool_events("lancs")[0]
    forged = {**event.payload, "outcome": {"units": 1}}
    with pool.begin() as conn:  # a second pool whose history was forged on the way in
        conn.execute(text("INSERT INTO pools (pool_id, terms_json, created_ns) SELECT 'forged', "
                          "replace(terms_json, '\"lancs\"', '\"forged\"'), created_ns "
                          "FROM pools WHERE pool_id = 'lancs'"))
        conn.execute(text("INSERT INTO pool_events (pool_id, seq, period_number, kind, "
                          "payload_json, reference, request_id, recorded_ns) VALUES "
                          "('forged', 1, 1, 'commit', :p, '', 'x', 1)"),
                     {"p": json.dumps(forged)})
    with uow.read() as r, pytest.raises(InvariantViolation):
        load(pool_store(r), "forged")
