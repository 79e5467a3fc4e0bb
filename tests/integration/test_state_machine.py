"""A Hypothesis state machine drives the use cases against the real SQL adapter.

Each example starts from a fresh, migrated database (a SQLite file, or a new PostgreSQL
database) because history is append-only and cannot be reset. Rules open and close accounts,
post transfers and linked batches, place holds (with and without timeouts), post them in full or
for less, void them, move the clock and sweep expired holds, reverse transfers, resend earlier
requests and misuse request and transfer ids. A small model predicts each outcome; after every
step the invariants of the ledger are checked by reading everything back:

* the trial balance is zero per currency;
* every account's totals are the sum of its postings by effect and side, and every posting's
  `totals_after` is the running sum at that point;
* no no-overdraft account has debits_posted + debits_pending > credits_posted;
* history never changes: every entry seen before reads back identical, positions are dense
  1..N, recorded times strictly increase, and the ledger holds exactly the transfers the model
  saw recorded;
* the audit log has exactly one leaf per mutating request that was not a replay.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text

from bank.adapters.clock import FixedClock
from bank.adapters.migrate import upgrade
from bank.adapters.sql import SqlUnitOfWork, make_engine
from bank.app.accounts import AccountSpec, BatchResult, close_account, create_accounts
from bank.app.queries import trial_balance
from bank.app.transfers import create_transfers, expire_holds
from bank.domain.accounts import Account, AccountType, OwnerKind, Side, Totals
from bank.domain.entries import Effect, JournalEntry, PostingLine, TransferKind, TransferSpec
from bank.domain.errors import AlreadyExists, FailedPrecondition, NotFound
from bank.domain.identity import Principal, Role
from tests.conftest import BACKENDS, PgDatabases

TELLER = Principal("teller", Role.TELLER, "branch:preston")
CURRENCIES = ("GBP", "EUR")
D, C = Side.DEBIT, Side.CREDIT
NewDatabase = Callable[[], tuple[str, Callable[[], None]]]
Outcome = tuple[str, Any]  # ("ok", result JSON) or ("error", error record)


@dataclass
class Xfer:
    """What the model knows of a recorded transfer."""

    kind: TransferKind
    debit: str = ""
    credit: str = ""
    amount: int = 0  # posted amount (posted, post_pending) or held amount (pending)
    seq: int = 0
    expires_ns: int = 0
    resolved_by: TransferKind | None = None  # holds only
    reversed: bool = False


@dataclass
class Sent:
    """A request as first sent: resending `send` must give back exactly `outcome`."""

    request_id: str
    send: Callable[[], Any]
    outcome: Outcome


RESOLVED_REASON = {TransferKind.POST_PENDING: "PENDING_TRANSFER_ALREADY_POSTED",
                   TransferKind.VOID_PENDING: "PENDING_TRANSFER_ALREADY_VOIDED",
                   TransferKind.EXPIRE_PENDING: "PENDING_TRANSFER_EXPIRED"}


class LedgerMachine(RuleBasedStateMachine):
    new_database: NewDatabase  # set per backend by the test

    def __init__(self) -> None:
        super().__init__()
        url, self.drop_database = type(self).new_database()
        self.engine = make_engine(url)
        upgrade(self.engine)
        self.uow = SqlUnitOfWork(self.engine)
        self.clock = FixedClock()
        self.ids = itertools.count(1)
        self.specs: dict[str, AccountSpec] = {}
        self.closed: set[str] = set()
        self.transfers: dict[str, Xfer] = {}
        self.sent: list[Sent] = []
        self.audited = 0  # mutating requests that were not replays
        self.seen: dict[int, JournalEntry] = {}

    def teardown(self) -> None:
        self.engine.dispose()
        self.drop_database()

    # -- helpers --------------------------------------------------------------------------------
    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids)}"

    def send(self, request_id: str, send: Callable[[], Any]) -> Outcome:
        """Send a new mutating request once; remember it and its outcome for replays."""
        try:
            outcome: Outcome = ("ok", send().to_json())
        except (FailedPrecondition, NotFound, AlreadyExists) as error:
            outcome = ("error", error.to_record())
        self.audited += 1
        self.sent.append(Sent(request_id, send, outcome))
        return outcome

    def transfer(self, *specs: TransferSpec) -> BatchResult:
        request_id = self.fresh("req-")
        outcome = self.send(request_id, lambda: create_transfers(
            self.uow, self.clock, TELLER, request_id, list(specs)))
        assert outcome[0] == "ok", outcome
        return BatchResult.from_json(outcome[1])

    def accounts(self) -> dict[str, Account]:
        with self.uow.read() as r:
            return {a.account_id: a for a in r.iter_accounts()}

    def now_ns(self) -> int:
        """The time the next request will be recorded at (the clock, or just after the head)."""
        with self.uow.read() as r:
            return max(self.clock.now_ns(), r.head().last_recorded_ns + 1)

    def state(self) -> tuple[Any, ...]:
        with self.uow.read() as r:
            return r.head(), list(r.iter_accounts()), r.entries_after(0, 10**6)

    def draw_pair(self, data: st.DataObject, from_cash: bool = True) -> tuple[str, str, str]:
        """Two different accounts; of one currency, except now and then. If `from_cash`, half
        the time the bank's cash is debited, so that money flows to members."""
        currency = data.draw(st.sampled_from(CURRENCIES), label="currency")
        mixed = data.draw(st.sampled_from([False] * 9 + [True]), label="mixed")
        pool = sorted(a for a, s in self.specs.items() if mixed or s.currency == currency)
        debit = (f"cash-{currency}" if from_cash and data.draw(st.booleans(), label="from cash")
                 else data.draw(st.sampled_from(pool), label="debit"))
        credit = data.draw(st.sampled_from([a for a in pool if a != debit]), label="credit")
        return debit, credit, self.specs[debit].currency

    def expect_lines(self, lines: list[tuple[str, Side, int]], currency: str,
                     reserved: dict[str, int] | None = None) -> str | None:
        """The engine's verdict on posting or reserving `lines` (one side per account), with
        `reserved` debits already held earlier in the same batch."""
        accounts = self.accounts()
        reserved = reserved or {}
        for account_id, _, _ in lines:
            if account_id in self.closed:
                return "ACCOUNT_CLOSED"
            if accounts[account_id].currency != currency:
                return "CURRENCY_MISMATCH"
        for account_id, side, amount in lines:
            a = accounts[account_id]
            t = a.totals
            if side is D and a.debits_must_not_exceed_credits and (
                    t.debits_posted + t.debits_pending + reserved.get(account_id, 0) + amount
                    > t.credits_posted):
                return "EXCEEDS_CREDITS"
        return None

    @staticmethod
    def reason(result: BatchResult, index: int = 0) -> str | None:
        error = result.items[index].error
        return error.reason if error else None

    def holds(self, open_only: bool = False) -> list[str]:
        return sorted(i for i, x in self.transfers.items() if x.kind is TransferKind.PENDING
                      and not (open_only and x.resolved_by))

    # -- accounts -------------------------------------------------------------------------------
    @initialize()
    def open_the_bank(self) -> None:
        """Per currency: the bank's cash, a no-overdraft member funded with 500 and a member
        without limit."""
        specs = []
        for c in CURRENCIES:
            specs += [
                AccountSpec(f"cash-{c}", c, AccountType.ASSET, "1000", OwnerKind.BANK, "bank"),
                AccountSpec(f"saver-{c}", c, AccountType.LIABILITY, "2000", OwnerKind.MEMBER,
                            "saver", debits_must_not_exceed_credits=True),
                AccountSpec(f"shop-{c}", c, AccountType.LIABILITY, "2000", OwnerKind.MEMBER,
                            "shop"),
            ]
        self.open_accounts_request(specs, [None] * len(specs))
        for c in CURRENCIES:
            tid = self.fresh("t-")
            result = self.transfer(TransferSpec(tid, TransferKind.POSTED, (
                PostingLine(f"cash-{c}", D, 500, c), PostingLine(f"saver-{c}", C, 500, c))))
            assert self.reason(result) is None
            self.transfers[tid] = Xfer(TransferKind.POSTED, f"cash-{c}", f"saver-{c}", 500,
                                       result.items[0].position)

    def open_accounts_request(self, specs: list[AccountSpec], expected: list[str | None]) -> None:
        request_id = self.fresh("req-")
        outcome = self.send(request_id, lambda: create_accounts(
            self.uow, self.clock, TELLER, request_id, specs))
        result = BatchResult.from_json(outcome[1])
        assert [self.reason(result, i) for i in range(len(specs))] == expected
        for spec, reason in zip(specs, expected, strict=True):
            if reason is None:
                self.specs.setdefault(spec.account_id, spec)

    @rule(data=st.data(), currency=st.sampled_from(CURRENCIES), no_overdraft=st.booleans(),
          again=st.booleans())
    def open_accounts(self, data: st.DataObject, currency: str, no_overdraft: bool,
                      again: bool) -> None:
        account_id = self.fresh("acct-")
        specs = [AccountSpec(account_id, currency, AccountType.LIABILITY, "2000",
                             OwnerKind.MEMBER, account_id,
                             debits_must_not_exceed_credits=no_overdraft)]
        expected: list[str | None] = [None]
        if again:  # an existing id: identical is fine, different is refused
            old = self.specs[data.draw(st.sampled_from(sorted(self.specs)), label="existing")]
            same = data.draw(st.booleans(), label="same")
            specs.append(old if same else AccountSpec(
                old.account_id, old.currency, old.account_type, "9999", old.owner_kind,
                old.owner_id))
            expected.append(None if same else "ACCOUNT_ID_REUSED")
        self.open_accounts_request(specs, expected)

    @rule(data=st.data())
    def close_account(self, data: st.DataObject) -> None:
        """Any account but the bank's cash (which keeps each currency going)."""
        account_id = data.draw(st.sampled_from(
            sorted(a for a in self.specs if not a.startswith("cash-"))), label="account")
        account = self.accounts()[account_id]
        expected = ("ACCOUNT_ALREADY_CLOSED" if account_id in self.closed
                    else None if account.is_zero() else "BALANCE_NOT_ZERO")
        request_id = self.fresh("req-")
        outcome = self.send(request_id, lambda: close_account(
            self.uow, self.clock, TELLER, request_id, account_id))
        assert (outcome[1]["reason"] if outcome[0] == "error" else None) == expected
        if expected is None:
            self.closed.add(account_id)

    # -- transfers ------------------------------------------------------------------------------
    @rule(data=st.data(), amount=st.integers(1, 400))
    def post_transfer(self, data: st.DataObject, amount: int) -> None:
        debit, credit, currency = self.draw_pair(data)
        expected = self.expect_lines([(debit, D, amount), (credit, C, amount)], currency)
        tid = self.fresh("t-")
        result = self.transfer(TransferSpec(tid, TransferKind.POSTED, (
            PostingLine(debit, D, amount, currency), PostingLine(credit, C, amount, currency))))
        assert self.reason(result) == expected
        if expected is None:
            self.transfers[tid] = Xfer(TransferKind.POSTED, debit, credit, amount,
                                       result.items[0].position)

    @rule(data=st.data(), size=st.integers(2, 3))
    def post_linked_batch(self, data: st.DataObject, size: int) -> None:
        specs, plans = [], []
        for i in range(size):
            debit, credit, currency = self.draw_pair(data)
            amount = data.draw(st.integers(1, 400), label="amount")
            tid = self.fresh("t-")
            plans.append((tid, debit, credit, amount))
            specs.append(TransferSpec(tid, TransferKind.POSTED, (
                PostingLine(debit, D, amount, currency),
                PostingLine(credit, C, amount, currency)), linked=i < size - 1))
        result = self.transfer(*specs)
        reasons = [self.reason(result, i) for i in range(size)]
        failed = [r for r in reasons if r not in (None, "LINKED_TRANSFER_FAILED")]
        if failed:  # all or nothing: one named failure, every other one linked
            assert len(failed) == 1 and reasons.count("LINKED_TRANSFER_FAILED") == size - 1
            assert all(item.position == 0 for item in result.items)
            return
        assert reasons == [None] * size
        for (tid, debit, credit, amount), item in zip(plans, result.items, strict=True):
            self.transfers[tid] = Xfer(TransferKind.POSTED, debit, credit, amount, item.position)

    @rule(data=st.data(), count=st.integers(1, 2))
    def place_holds(self, data: st.DataObject, count: int) -> None:
        """One or two holds in one request (not linked), with and without timeouts."""
        now = self.now_ns()
        reserved: dict[str, int] = defaultdict(int)
        specs, plans = [], []
        for _ in range(count):
            debit, credit, currency = self.draw_pair(data, from_cash=False)
            amount = data.draw(st.integers(1, 400), label="amount")
            timeout = data.draw(st.sampled_from([30, 120, 0]), label="timeout")
            expected = self.expect_lines([(debit, D, amount), (credit, C, amount)], currency,
                                         reserved)
            if expected is None:
                reserved[debit] += amount
            tid = self.fresh("h-")
            plans.append((tid, debit, credit, amount, timeout, expected))
            specs.append(TransferSpec(tid, TransferKind.PENDING, (
                PostingLine(debit, D, amount, currency),
                PostingLine(credit, C, amount, currency)), timeout_seconds=timeout))
        result = self.transfer(*specs)
        for (tid, debit, credit, amount, timeout, expected), item in zip(
                plans, result.items, strict=True):
            assert (item.error.reason if item.error else None) == expected
            if expected is None:
                self.transfers[tid] = Xfer(TransferKind.PENDING, debit, credit, amount,
                                           item.position, now + timeout * 10**9 if timeout else 0)

    def expect_resolution(self, hold: Xfer) -> str | None:
        if hold.resolved_by is not None:
            return RESOLVED_REASON[hold.resolved_by]
        if hold.expires_ns and hold.expires_ns <= self.now_ns():
            return "PENDING_TRANSFER_EXPIRED"
        return None

    @precondition(lambda self: self.holds())
    @rule(data=st.data(), how=st.sampled_from(["full", "less", "more"]),
          wait=st.sampled_from([0, 31, 130]))
    def post_hold(self, data: st.DataObject, how: str, wait: int) -> None:
        self.clock.advance(wait)  # time passes; the hold may time out meanwhile
        hold_id = data.draw(st.sampled_from(self.holds()), label="hold")
        hold = self.transfers[hold_id]
        amount = hold.amount + (how == "more")
        if how == "less":
            amount = data.draw(st.integers(1, hold.amount), label="less")
        expected = self.expect_resolution(hold) or (
            "EXCEEDS_PENDING_AMOUNT" if amount > hold.amount else None)
        currency = self.specs[hold.debit].currency
        lines = () if how == "full" else (PostingLine(hold.debit, D, amount, currency),
                                          PostingLine(hold.credit, C, amount, currency))
        tid = self.fresh("p-")
        result = self.transfer(TransferSpec(tid, TransferKind.POST_PENDING, lines,
                                            pending_id=hold_id))
        assert self.reason(result) == expected
        if expected is None:
            hold.resolved_by = TransferKind.POST_PENDING
            self.transfers[tid] = Xfer(TransferKind.POST_PENDING, hold.debit, hold.credit,
                                       amount, result.items[0].position)

    @precondition(lambda self: self.holds())
    @rule(data=st.data(), wait=st.sampled_from([0, 31, 130]))
    def void_hold(self, data: st.DataObject, wait: int) -> None:
        self.clock.advance(wait)
        hold_id = data.draw(st.sampled_from(self.holds()), label="hold")
        hold = self.transfers[hold_id]
        expected = self.expect_resolution(hold)
        tid = self.fresh("v-")
        result = self.transfer(TransferSpec(tid, TransferKind.VOID_PENDING, pending_id=hold_id))
        assert self.reason(result) == expected
        if expected is None:
            hold.resolved_by = TransferKind.VOID_PENDING
            self.transfers[tid] = Xfer(TransferKind.VOID_PENDING, seq=result.items[0].position)

    @precondition(lambda self: any(self.transfers[h].expires_ns for h in self.holds(True)))
    @rule(seconds=st.sampled_from([31, 90, 1, 29, 30, 200]))
    def advance_clock_and_expire_holds(self, seconds: int) -> None:
        self.clock.advance(seconds)
        now = self.now_ns()
        due = {f"expire:{x.seq}": i for i, x in self.transfers.items()
               if x.kind is TransferKind.PENDING and not x.resolved_by
               and x.expires_ns and x.expires_ns <= now}
        run_id = self.fresh("sweep-")
        outcome = self.send(run_id, lambda: expire_holds(self.uow, self.clock, run_id))
        result = BatchResult.from_json(outcome[1])
        assert {item.entity_id for item in result.items} == set(due)
        assert all(item.error is None for item in result.items)
        for item in result.items:
            self.transfers[due[item.entity_id]].resolved_by = TransferKind.EXPIRE_PENDING
            self.transfers[item.entity_id] = Xfer(TransferKind.EXPIRE_PENDING, seq=item.position)

    @precondition(lambda self: self.transfers)
    @rule(data=st.data())
    def reverse_transfer(self, data: st.DataObject) -> None:
        original_id = data.draw(st.sampled_from(sorted(self.transfers)), label="original")
        original = self.transfers[original_id]
        if original.kind not in (TransferKind.POSTED, TransferKind.POST_PENDING):
            expected: str | None = "TRANSFER_NOT_REVERSIBLE"
        elif original.reversed:
            expected = "TRANSFER_ALREADY_REVERSED"
        else:
            expected = self.expect_lines(
                [(original.debit, C, original.amount), (original.credit, D, original.amount)],
                self.specs[original.debit].currency)
        tid = self.fresh("r-")
        result = self.transfer(TransferSpec(tid, TransferKind.REVERSAL, reverses_id=original_id))
        assert self.reason(result) == expected
        if expected is None:
            original.reversed = True
            self.transfers[tid] = Xfer(TransferKind.REVERSAL, original.credit, original.debit,
                                       original.amount, result.items[0].position)

    @precondition(lambda self: self.transfers)
    @rule(data=st.data())
    def reuse_a_transfer_id_for_different_content(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(sorted(self.transfers)), label="transfer")
        lines = (PostingLine("cash-GBP", D, 1, "GBP"), PostingLine("cash-EUR", C, 1, "GBP"))
        before = self.state()[1:]
        result = self.transfer(TransferSpec(tid, TransferKind.POSTED, lines,
                                            description="not the original"))
        assert self.reason(result) == "TRANSFER_ID_REUSED"
        assert self.state()[1:] == before

    # -- replays --------------------------------------------------------------------------------
    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def resend_an_earlier_request(self, data: st.DataObject) -> None:
        sent = data.draw(st.sampled_from(self.sent), label="request")
        before = self.state()
        try:
            outcome: Outcome = ("ok", sent.send().to_json())
        except (FailedPrecondition, NotFound, AlreadyExists) as error:
            outcome = ("error", error.to_record())
        assert outcome == sent.outcome
        assert self.state() == before

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def reuse_a_request_id_for_different_content(self, data: st.DataObject) -> None:
        sent = data.draw(st.sampled_from(self.sent), label="request")
        before = self.state()
        spec = TransferSpec(self.fresh("t-"), TransferKind.POSTED, (
            PostingLine("cash-GBP", D, 1, "GBP"), PostingLine("cash-EUR", C, 1, "GBP")))
        with pytest.raises(AlreadyExists) as caught:
            create_transfers(self.uow, self.clock, TELLER, sent.request_id, [spec])
        assert caught.value.reason == "REQUEST_ID_REUSED"
        assert self.state() == before

    # -- invariants -----------------------------------------------------------------------------
    @invariant()
    def the_ledger_is_consistent(self) -> None:
        rows = trial_balance(self.uow)  # raises InvariantViolation if a currency is off
        net: dict[str, int] = defaultdict(int)
        for row in rows:
            net[row.currency] += row.debits_posted - row.credits_posted
        assert all(v == 0 for v in net.values()), net

        with self.uow.read() as r:
            head = r.head()
            accounts = {a.account_id: a for a in r.iter_accounts()}
            postings = list(r.iter_postings())
            entries = r.entries_after(0, 10**6)
        with self.engine.connect() as conn:
            leaves = conn.execute(text("SELECT COUNT(*), COALESCE(MAX(idx), -1) "
                                       "FROM audit_log")).one()

        # Totals are the sums of postings; each posting carries the running totals.
        sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for p in postings:
            s = sums[p.account_id]
            column = (0 if p.side is D else 1) + (0 if p.effect is Effect.POST else 2)
            s[column] += -p.amount if p.effect is Effect.RELEASE else p.amount
            assert Totals(*s) == p.totals_after, p
        assert set(sums) <= set(accounts)
        for account_id, a in accounts.items():
            assert a.totals == Totals(*sums[account_id]), account_id
            t = a.totals
            if a.debits_must_not_exceed_credits:
                assert t.debits_posted + t.debits_pending <= t.credits_posted, account_id
            assert (a.status.value == "closed") == (account_id in self.closed)
            if account_id in self.closed:
                assert a.is_zero()
        assert set(accounts) == set(self.specs)

        # History: dense positions, increasing times, nothing seen before has changed.
        assert [e.seq for e in entries] == list(range(1, head.next_seq))
        assert all(a.recorded_ns < b.recorded_ns for a, b in itertools.pairwise(entries))
        assert sum(len(e.postings) for e in entries) == len(postings)
        for e in entries:
            assert self.seen.setdefault(e.seq, e) == e, f"entry {e.seq} changed"
        assert {e.transfer_id for e in entries} == set(self.transfers)
        assert {e.seq for e in entries if e.transfer_id in self.transfers} == {
            x.seq for x in self.transfers.values()}

        # One audit leaf per mutating request that was not a replay.
        assert head.audit_size == self.audited == leaves[0] == leaves[1] + 1


def _sqlite_databases(directory: Path) -> NewDatabase:
    counter = itertools.count()

    def new() -> tuple[str, Callable[[], None]]:
        return f"sqlite:///{directory / f'ledger-{next(counter)}.db'}", lambda: None

    return new


def _pg_databases(databases: PgDatabases) -> NewDatabase:
    def new() -> tuple[str, Callable[[], None]]:
        url = databases.create()
        name = url.rpartition("/")[2]

        def drop() -> None:
            with databases.admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

        return url, drop

    return new


EXAMPLES = {"sqlite": 25, "postgresql": 10}


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_ledger_keeps_its_invariants_under_any_sequence_of_requests(
        backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if backend == "sqlite":
        new_database = _sqlite_databases(tmp_path)
    else:
        new_database = _pg_databases(request.getfixturevalue("pg_databases"))
    machine = type(f"LedgerMachine_{backend}", (LedgerMachine,),
                   {"new_database": staticmethod(new_database)})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=EXAMPLES[backend], stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
