"""Balance-as-of and statement windows find their postings by entry position (migration 0010
dropped the index on recorded times): held to the plain definition, on both databases.

The plain definition: an account's totals as of T are the totals after its last posting
whose entry was recorded at or before T; a statement window [from, to) holds the posted lines
of entries recorded in it.
"""

from __future__ import annotations

import random

from sqlalchemy import text

from bank.app.accounts import AccountSpec, create_accounts
from bank.app.check import check_ledger
from bank.app.transfers import create_transfers
from bank.domain.accounts import AccountType, OwnerKind, Side, Totals
from bank.domain.entries import Effect, PostingLine, TransferKind, TransferSpec
from bank.domain.identity import SYSTEM

ACCOUNTS = ("cash", "a", "b", "c")


def _lines(debit: str, credit: str, amount: int) -> tuple[PostingLine, ...]:
    return (PostingLine(debit, Side.DEBIT, amount, "GBP"),
            PostingLine(credit, Side.CREDIT, amount, "GBP"))


def _history(uow, clock) -> None:
    """Posts, holds, holds posted for less and holds voided, over four accounts, with the
    clock moving between requests (several entries share a request, so a recorded time)."""
    create_accounts(uow, clock, SYSTEM, "accounts", [
        AccountSpec(account_id, "GBP", AccountType.ASSET if account_id == "cash"
                    else AccountType.LIABILITY, "1000", OwnerKind.BANK, "bank")
        for account_id in ACCOUNTS])
    rng = random.Random(7)
    holds: list[str] = []
    for n in range(40):
        debit, credit = rng.sample(ACCOUNTS, 2)
        choice = rng.random()
        if choice < 0.5 or not holds:
            specs = [TransferSpec(f"p{n}", TransferKind.POSTED, _lines(debit, credit, n + 1)),
                     TransferSpec(f"h{n}", TransferKind.PENDING, _lines(debit, credit, 50))]
            holds.append(f"h{n}")
        elif choice < 0.8:
            held = holds.pop(0)
            specs = [TransferSpec(f"pp{n}", TransferKind.POST_PENDING, pending_id=held)]
        else:
            specs = [TransferSpec(f"v{n}", TransferKind.VOID_PENDING, pending_id=holds.pop(0))]
        result = create_transfers(uow, clock, SYSTEM, f"r{n}", specs)
        assert all(item.error is None for item in result.items)
        clock.advance(rng.choice([0, 1, 5]))


def test_balance_as_of_every_instant_is_the_last_posting_recorded_by_then(uow, clock):
    _history(uow, clock)
    with uow.read() as r:
        entries = r.entries_after(0, 10_000)
        times = sorted({e.recorded_ns + d for e in entries for d in (-1, 0, 1)})
        for account_id in ACCOUNTS:
            for at in times:
                lines = [p for e in entries if e.recorded_ns <= at for p in e.postings
                         if p.account_id == account_id]
                expected = lines[-1].totals_after if lines else Totals()
                assert r.totals_as_of(account_id, at) == expected, (account_id, at)
    assert {p.effect for e in entries for p in e.postings} == set(Effect)


def test_a_statement_window_holds_the_posted_lines_recorded_in_it(uow, clock):
    _history(uow, clock)
    with uow.read() as r:
        entries = r.entries_after(0, 10_000)
        times = sorted({e.recorded_ns + d for e in entries for d in (-1, 0, 1)})
        rng = random.Random(3)
        for _ in range(60):
            start, end = sorted(rng.sample(times, 2))
            for account_id in ACCOUNTS:
                got = [(p.entry_seq, p.index) for p, _ in r.statement(
                    account_id, -1, -1, 10_000, start, end)]
                expected = [(p.entry_seq, p.index) for e in entries
                            if start <= e.recorded_ns < end for p in e.postings
                            if p.account_id == account_id and p.effect is Effect.POST]
                assert got == expected, (account_id, start, end)
            only_start = [(p.entry_seq, p.index) for p, _ in r.statement(
                "a", -1, -1, 10_000, start, None)]
            assert only_start == [(p.entry_seq, p.index) for e in entries
                                  if start <= e.recorded_ns for p in e.postings
                                  if p.account_id == "a" and p.effect is Effect.POST]


def test_the_ledger_check_names_an_entry_recorded_before_the_one_before_it(engine, uow, clock):
    _history(uow, clock)
    assert check_ledger(uow).ok
    with engine.begin() as conn:  # what only tampering or a bug could do: drop the guards
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE entries DISABLE TRIGGER USER"))
            conn.execute(text("UPDATE entries SET recorded_ns = 1 WHERE seq = 5"))
            conn.execute(text("ALTER TABLE entries ENABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER entries_no_update"))
            conn.execute(text("UPDATE entries SET recorded_ns = 1 WHERE seq = 5"))
    report = check_ledger(uow)
    assert report.problems == ["entry 5 is not recorded after the entry before it"]
