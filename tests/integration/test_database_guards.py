"""The database itself refuses what would corrupt the ledger, even with the application bypassed.

Every test runs on SQLite and on PostgreSQL (through the `engine` fixture), sets up a small
ledger through the use cases, then tries a forbidden change with raw SQL and checks that it is
refused and that the rows involved are exactly as they were.
"""

from __future__ import annotations

import threading
from datetime import date
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from bank.app.accounts import AccountSpec, close_account, create_accounts
from bank.app.approvals import reject
from bank.app.transfers import create_transfers
from bank.domain.accounts import AccountType, OwnerKind, Side
from bank.domain.entries import PostingLine, TransferKind, TransferSpec
from bank.domain.identity import SYSTEM, Principal, Role

D, C = Side.DEBIT, Side.CREDIT


def _lines(debit: str, credit: str, amount: int) -> tuple[PostingLine, ...]:
    return (PostingLine(debit, D, amount, "GBP"), PostingLine(credit, C, amount, "GBP"))


@pytest.fixture
def ledger(engine, uow, clock) -> Engine:
    """cash (asset), alice (no overdraft, 1000 in, a 100 hold out), shop, spare (never used),
    gone (closed), and loan (may not go into credit). Entry positions 1 and 2 exist, and one
    rejected approval."""
    specs = [
        AccountSpec("cash", "GBP", AccountType.ASSET, "1000", OwnerKind.BANK, "bank"),
        AccountSpec("alice", "GBP", AccountType.LIABILITY, "2000", OwnerKind.MEMBER, "alice",
                    debits_must_not_exceed_credits=True),
        AccountSpec("shop", "GBP", AccountType.LIABILITY, "2000", OwnerKind.MEMBER, "shop"),
        AccountSpec("spare", "GBP", AccountType.LIABILITY, "2000", OwnerKind.MEMBER, "spare"),
        AccountSpec("gone", "GBP", AccountType.LIABILITY, "2000", OwnerKind.MEMBER, "gone"),
        AccountSpec("loan", "GBP", AccountType.ASSET, "1200", OwnerKind.MEMBER, "loan",
                    credits_must_not_exceed_debits=True),
    ]
    assert all(i.error is None for i in create_accounts(uow, clock, SYSTEM, "a", specs).items)
    result = create_transfers(uow, clock, SYSTEM, "t", [
        TransferSpec("fund", TransferKind.POSTED, _lines("cash", "alice", 1000)),
        TransferSpec("hold", TransferKind.PENDING, _lines("alice", "shop", 100)),
    ])
    assert all(i.error is None for i in result.items)
    close_account(uow, clock, SYSTEM, "c", "gone")
    # A large transfer made by a teller waits for an approver, who rejects it.
    maker = Principal("tess", Role.TELLER, "branch:preston")
    large = create_transfers(uow, clock, maker, "big", [
        TransferSpec("big", TransferKind.POSTED, _lines("cash", "shop", 10**8))])
    assert large.approval_id
    reject(uow, clock, Principal("abe", Role.APPROVER), "no", large.approval_id, "too big")
    return engine


def rows(engine: Engine, table: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2"))]


def refused(engine: Engine, sql: str, *, match: str = "", **params: Any) -> None:
    """`sql` must fail in its own transaction, leaving every table as it was."""
    tables = ("accounts", "entries", "postings", "requests", "audit_log", "ledger_head",
              "approvals", "approval_decisions")
    before = {table: rows(engine, table) for table in tables}
    with pytest.raises(DBAPIError) as caught, engine.begin() as conn:
        conn.execute(text(sql), params)
    assert match.lower() in str(caught.value.orig).lower()
    assert {table: rows(engine, table) for table in tables} == before


# -- history is append-only -----------------------------------------------------------------------

HISTORY_CHANGES = {
    ("entries", "UPDATE"): "UPDATE entries SET description = 'edited' WHERE seq = 1",
    ("entries", "DELETE"): "DELETE FROM entries WHERE seq = 2",
    ("postings", "UPDATE"): "UPDATE postings SET amount = amount + 1 WHERE entry_seq = 1",
    ("postings", "DELETE"): "DELETE FROM postings WHERE entry_seq = 1",
    ("audit_log", "UPDATE"): "UPDATE audit_log SET recorded_ns = 0",
    ("audit_log", "DELETE"): "DELETE FROM audit_log WHERE idx = 2",
    ("requests", "UPDATE"): "UPDATE requests SET outcome_json = '{}' WHERE request_id = 't'",
    ("requests", "DELETE"): "DELETE FROM requests",
    ("approvals", "UPDATE"): "UPDATE approvals SET expires_ns = expires_ns + 1",
    ("approvals", "DELETE"): "DELETE FROM approvals",
    ("approval_decisions", "UPDATE"): "UPDATE approval_decisions SET approved = true",
    ("approval_decisions", "DELETE"): "DELETE FROM approval_decisions",
}


@pytest.mark.parametrize(("table", "op"), list(HISTORY_CHANGES))
def test_history_rows_cannot_be_updated_or_deleted(ledger, table, op):
    assert rows(ledger, table)
    refused(ledger, HISTORY_CHANGES[(table, op)], match="append-only")


def test_even_a_no_op_update_of_history_is_refused(ledger):
    refused(ledger, "UPDATE entries SET seq = seq", match="append-only")


# -- entries balance ------------------------------------------------------------------------------

POSTING_SQL = """
    INSERT INTO postings (entry_seq, idx, account_id, side, amount, currency, effect,
        recorded_ns, debits_posted_after, credits_posted_after, debits_pending_after,
        credits_pending_after)
    VALUES (3, {idx}, '{account}', '{side}', {amount}, '{currency}', '{effect}', 9, 0, 0, 0, 0)
"""
ENTRY_SQL = """
    INSERT INTO entries (seq, transfer_id, kind, recorded_ns, effective_date, pending_id,
        reverses_id, expires_ns, description, metadata_json, fingerprint, request_id,
        posting_count)
    VALUES (3, 'by-hand', 'posted', :ns, :day, NULL, NULL, 0, '', '[]', 'f', 'r', {count})
"""


def hand_entry(postings: list[tuple[Any, ...]], count: int | None = None) -> str:
    """One statement block: postings for position 3, then their entry (as the adapter does).

    A posting is (account, side, amount, effect[, currency]), in GBP unless a currency is given.
    """
    values = [POSTING_SQL.format(idx=i, account=p[0], side=p[1], amount=p[2], effect=p[3],
                                 currency=p[4] if len(p) > 4 else "GBP")
              for i, p in enumerate(postings)]
    return ";".join([*values, ENTRY_SQL.format(count=len(postings) if count is None else count)])


def run_block(engine: Engine, block: str) -> None:
    with engine.begin() as conn:
        for statement in block.split(";"):
            conn.execute(text(statement), {"ns": 10**19 // 2, "day": date(2026, 1, 1)})


def test_a_balanced_entry_written_by_hand_is_accepted(ledger):
    """The control for the refusals below: the hand-written rows are otherwise valid."""
    run_block(ledger, hand_entry([("cash", "D", 5, "post"), ("shop", "C", 5, "post")]))
    assert [r[0] for r in rows(ledger, "entries")] == [1, 2, 3]


@pytest.mark.parametrize("postings", [
    pytest.param([("cash", "D", 5, "post"), ("shop", "C", 4, "post")], id="amounts"),
    pytest.param([("cash", "D", 5, "post"), ("shop", "C", 5, "reserve")], id="effects"),
    pytest.param([("cash", "D", 5, "post"), ("alice", "D", 5, "post")], id="one-sided"),
    pytest.param([("cash", "D", 5, "post", "GBP"), ("shop", "C", 5, "post", "EUR")],
                 id="currencies"),
])
def test_an_entry_whose_postings_do_not_balance_is_refused(ledger, postings):
    before = {table: rows(ledger, table) for table in ("entries", "postings")}
    with pytest.raises(DBAPIError) as caught:
        run_block(ledger, hand_entry(postings))
    assert "balance" in str(caught.value.orig)
    assert {table: rows(ledger, table) for table in ("entries", "postings")} == before


def test_an_entry_whose_posting_count_does_not_match_its_postings_is_refused(ledger):
    with pytest.raises(DBAPIError):
        run_block(ledger, hand_entry([("cash", "D", 5, "post"), ("shop", "C", 5, "post"),
                                      ("cash", "D", 1, "post"), ("shop", "C", 1, "post")],
                                     count=2))
    assert [r[0] for r in rows(ledger, "entries")] == [1, 2]


def test_a_posting_cannot_be_added_to_an_entry_already_recorded(ledger):
    block = hand_entry([("cash", "D", 999, "post")])
    refused(ledger, block.split(";")[0].replace("VALUES (3, 0,", "VALUES (1, 2,"),
            match="postings of a recorded entry are closed")


def test_one_unbalanced_entry_among_many_inserted_at_once_refuses_them_all(ledger):
    """The adapter writes a batch's entries with one statement (COPY on PostgreSQL, where the
    guard checks the whole statement at once): entry 4 does not balance, so neither 3 nor 4
    is recorded."""
    statements = [POSTING_SQL.format(idx=i, account=a, side=s, amount=n, effect="post",
                                     currency="GBP").replace("VALUES (3,", f"VALUES ({seq},")
                  for seq, i, a, s, n in [(3, 0, "cash", "D", 5), (3, 1, "shop", "C", 5),
                                          (4, 0, "cash", "D", 5), (4, 1, "shop", "C", 4)]]
    statements.append(ENTRY_SQL.format(count=2).replace(
        "VALUES (3, 'by-hand', 'posted', :ns,",
        "VALUES (3, 'by-hand', 'posted', :ns, :day, NULL, NULL, 0, '', '[]', 'f', 'r', 2), "
        "(4, 'by-hand-2', 'posted', :ns + 1,"))
    before = {table: rows(ledger, table) for table in ("entries", "postings")}
    with pytest.raises(DBAPIError) as caught:
        run_block(ledger, ";".join(statements))
    assert "balance" in str(caught.value.orig)
    assert {table: rows(ledger, table) for table in ("entries", "postings")} == before


def test_postings_inserted_at_once_are_refused_whole_if_one_joins_a_recorded_entry(ledger):
    block = hand_entry([("cash", "D", 999, "post"), ("shop", "C", 999, "post")])
    first, second = block.split(";")[:2]
    joins_entry_1 = second.replace("VALUES (3, 1,", "VALUES (1, 2,")
    values = joins_entry_1[joins_entry_1.index("VALUES") + len("VALUES"):]
    refused(ledger, f"{first}, {values}", match="postings of a recorded entry are closed")


def test_a_posting_cannot_join_an_entry_another_transaction_is_recording(ledger):
    """Two hand-written transactions: the first records entry 3 (balanced) and has not
    committed; the second adds a posting to position 3. The guards take the ledger head (as
    every writer does), so the second waits for the first, then sees entry 3 and is refused:
    the entry stays balanced. (SQLite has one writer at a time: the second could not start.)"""
    if ledger.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers itself")
    block = hand_entry([("cash", "D", 5, "post"), ("shop", "C", 5, "post")])
    late_posting = block.split(";")[0].replace("VALUES (3, 0,", "VALUES (3, 2,")
    outcome: dict[str, BaseException | None] = {}

    def second() -> None:
        try:
            with ledger.begin() as conn:
                conn.execute(text(late_posting))
            outcome["error"] = None
        except DBAPIError as error:
            outcome["error"] = error

    with ledger.begin() as conn:
        for statement in block.split(";"):
            conn.execute(text(statement), {"ns": 10**19 // 2, "day": date(2026, 1, 1)})
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(timeout=1.0)
        assert thread.is_alive(), "the second transaction should wait for the first"
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert outcome["error"] is not None
    assert "postings of a recorded entry are closed" in str(outcome["error"])
    assert [r[1] for r in rows(ledger, "postings") if r[0] == 3] == [0, 1]


@pytest.mark.parametrize("amount", [0, -5])
def test_a_posting_amount_must_be_positive(ledger, amount):
    block = hand_entry([("cash", "D", amount, "post"), ("shop", "C", amount, "post")])
    refused(ledger, block.split(";")[0], match="amount_positive")


# -- account rules --------------------------------------------------------------------------------

def test_an_update_that_would_overdraw_a_no_overdraft_account_is_refused(ledger):
    refused(ledger, "UPDATE accounts SET debits_posted = 901 WHERE account_id = 'alice'",
            match="no_overdraft")


def test_an_update_that_would_overdraw_through_pending_debits_is_refused(ledger):
    refused(ledger, "UPDATE accounts SET debits_pending = 1001 WHERE account_id = 'alice'",
            match="no_overdraft")


def test_an_update_that_would_put_an_account_into_forbidden_credit_is_refused(ledger):
    refused(ledger, "UPDATE accounts SET credits_posted = 1 WHERE account_id = 'loan'",
            match="no_excess_credit")


@pytest.mark.parametrize(("account", "column"), [("cash", "debits_posted"),
                                                 ("alice", "credits_posted")])
def test_posted_totals_never_decrease(ledger, account, column):
    refused(ledger, f"UPDATE accounts SET {column} = {column} - 1 WHERE account_id = '{account}'",
            match="account")


def test_pending_totals_may_decrease_when_a_hold_is_released_by_the_application(ledger):
    query = "SELECT debits_pending FROM accounts WHERE account_id = 'alice'"
    with ledger.begin() as conn:
        assert conn.execute(text(query)).scalar_one() == 100
        conn.execute(text("UPDATE accounts SET debits_pending = 0 WHERE account_id = 'alice'"))
        assert conn.execute(text(query)).scalar_one() == 0


@pytest.mark.parametrize("change", ["currency = 'EUR'", "account_type = 'asset'",
                                    "owner_id = 'mallory'", "code = '9999'",
                                    "debits_must_not_exceed_credits = false"])
def test_an_account_s_identity_cannot_change(ledger, change):
    refused(ledger, f"UPDATE accounts SET {change} WHERE account_id = 'alice'")


def test_a_closed_account_cannot_be_reopened(ledger):
    refused(ledger, "UPDATE accounts SET status = 'open' WHERE account_id = 'gone'",
            match="account")


def test_an_account_cannot_be_closed_with_a_balance(ledger):
    refused(ledger, "UPDATE accounts SET status = 'closed' WHERE account_id = 'alice'",
            match="closed_at_zero")


def test_an_account_cannot_be_deleted_even_if_never_used(ledger):
    refused(ledger, "DELETE FROM accounts WHERE account_id = 'spare'")


# -- the ledger head ------------------------------------------------------------------------------

@pytest.mark.parametrize("column", ["next_seq", "audit_size", "last_recorded_ns"])
def test_the_ledger_head_never_moves_backwards(ledger, column):
    head = rows(ledger, "ledger_head")[0]
    assert head[1] >= 3 and head[3] >= 3  # positions and audit leaves were used
    refused(ledger, f"UPDATE ledger_head SET {column} = {column} - 1",
            match="never moves backwards")


def test_the_ledger_head_cannot_be_deleted(ledger):
    refused(ledger, "DELETE FROM ledger_head")


def test_there_is_only_one_ledger_head(ledger):
    refused(ledger, "INSERT INTO ledger_head (id, next_seq, last_recorded_ns, audit_size) "
                    "VALUES (2, 100, 100, 100)")
