"""Use cases against the in-memory fake: accounts, transfers, holds, replays and the audit log."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

import pytest

from bank.adapters.clock import FixedClock
from bank.app import unit
from bank.app.accounts import (
    AccountSpec,
    BatchResult,
    ItemResult,
    close_account,
    create_accounts,
)
from bank.app.approvals import approve
from bank.app.queries import entries_after, get_account, get_transfer, trial_balance
from bank.app.transfers import create_transfers, expire_holds
from bank.domain.accounts import AccountStatus, AccountType, OwnerKind, Side, Totals
from bank.domain.entries import PostingLine, TransferKind, TransferSpec, TransferState
from bank.domain.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    InvariantViolation,
    LedgerError,
    NotFound,
    PermissionDenied,
)
from bank.domain.identity import SYSTEM, Principal, Role
from tests.fakes import InMemoryLedger, InMemoryUnitOfWork

D, C = Side.DEBIT, Side.CREDIT
TELLER = Principal("alice-teller", Role.TELLER, "branch:preston")

ACCOUNTS = [
    AccountSpec("cash", "GBP", AccountType.ASSET, "1000", OwnerKind.BANK, "bank"),
    AccountSpec("alice", "GBP", AccountType.LIABILITY, "2000", OwnerKind.MEMBER, "alice",
                debits_must_not_exceed_credits=True),
    AccountSpec("bob", "GBP", AccountType.LIABILITY, "2000", OwnerKind.MEMBER, "bob",
                debits_must_not_exceed_credits=True),
    AccountSpec("shop", "GBP", AccountType.LIABILITY, "2000", OwnerKind.MEMBER, "shop"),
    AccountSpec("eur-cash", "EUR", AccountType.ASSET, "1000", OwnerKind.BANK, "bank"),
    AccountSpec("eur-alice", "EUR", AccountType.LIABILITY, "2000", OwnerKind.MEMBER, "alice"),
]


class Bank:
    """The fake storage, a fixed clock and shorthands for the use cases."""

    def __init__(self) -> None:
        self.uow = InMemoryUnitOfWork()
        self.clock = FixedClock()

    def open(self, request_id: str, specs: list[AccountSpec]) -> BatchResult:
        return create_accounts(self.uow, self.clock, TELLER, request_id, specs)

    def transfer(self, request_id: str, *specs: TransferSpec) -> BatchResult:
        return create_transfers(self.uow, self.clock, TELLER, request_id, list(specs))

    def ok(self, request_id: str, *specs: TransferSpec) -> BatchResult:
        result = self.transfer(request_id, *specs)
        assert [i.error for i in result.items] == [None] * len(specs), result
        return result

    def close(self, request_id: str, account_id: str) -> Any:
        return close_account(self.uow, self.clock, TELLER, request_id, account_id)

    def expire(self, run_id: str) -> BatchResult:
        return expire_holds(self.uow, self.clock, run_id)

    def totals(self, account_id: str) -> Totals:
        return get_account(self.uow, account_id).totals

    def audit_size(self) -> int:
        with self.uow.read() as r:
            return r.head().audit_size

    def entry_count(self) -> int:
        return len(entries_after(self.uow, 0, 1000))

    def snapshot(self) -> tuple[Any, ...]:
        """Everything stored: head, accounts, entries, requests, audit leaves, approvals."""
        s = self.uow.state
        return (s.head, dict(s.accounts), dict(s.entries), dict(s.requests), list(s.audit),
                dict(s.approvals), dict(s.decisions))


def reasons(result: BatchResult) -> list[str | None]:
    return [item.error.reason if item.error else None for item in result.items]


def move(tid: str, debit: str, credit: str, amount: int, currency: str = "GBP",
         **kw: Any) -> TransferSpec:
    return TransferSpec(tid, TransferKind.POSTED, (PostingLine(debit, D, amount, currency),
                                                   PostingLine(credit, C, amount, currency)), **kw)


def hold(tid: str, debit: str, credit: str, amount: int, **kw: Any) -> TransferSpec:
    return TransferSpec(tid, TransferKind.PENDING, move(tid, debit, credit, amount).postings, **kw)


def post(tid: str, pending_id: str, amount: int | None = None) -> TransferSpec:
    lines: tuple[PostingLine, ...] = ()
    if amount is not None:
        lines = (PostingLine("alice", D, amount, "GBP"), PostingLine("shop", C, amount, "GBP"))
    return TransferSpec(tid, TransferKind.POST_PENDING, lines, pending_id=pending_id)


def void(tid: str, pending_id: str) -> TransferSpec:
    return TransferSpec(tid, TransferKind.VOID_PENDING, pending_id=pending_id)


def reverse(tid: str, reverses_id: str) -> TransferSpec:
    return TransferSpec(tid, TransferKind.REVERSAL, reverses_id=reverses_id)


@pytest.fixture
def bank() -> Bank:
    """The accounts above, with 1000 pence on alice's no-overdraft account."""
    b = Bank()
    assert reasons(b.open("open", ACCOUNTS)) == [None] * len(ACCOUNTS)
    b.ok("fund", move("fund", "cash", "alice", 1000))
    return b


# -- accounts -------------------------------------------------------------------------------------

def test_opened_accounts_start_open_and_at_zero():
    b = Bank()
    b.open("r1", ACCOUNTS[:2])
    account = get_account(b.uow, "alice")
    assert account.status is AccountStatus.OPEN and account.totals == Totals()
    assert account.debits_must_not_exceed_credits and account.created_ns == b.clock.now


def test_opening_an_existing_account_with_the_same_definition_succeeds_and_adds_nothing(bank):
    before = bank.uow.state.accounts["alice"]
    assert reasons(bank.open("again", [ACCOUNTS[1]])) == [None]
    assert bank.uow.state.accounts["alice"] is before


def test_opening_an_existing_account_id_with_a_different_definition_is_refused(bank):
    other = AccountSpec("alice", "EUR", AccountType.LIABILITY, "2000", OwnerKind.MEMBER, "alice")
    result = bank.open("again", [ACCOUNTS[3], other])
    assert reasons(result) == [None, "ACCOUNT_ID_REUSED"]
    assert isinstance(result.items[1].error, AlreadyExists)
    assert get_account(bank.uow, "alice").currency == "GBP"


def test_an_account_id_twice_in_one_batch_with_different_definitions_fails_the_second():
    b = Bank()
    twin = AccountSpec("cash", "EUR", AccountType.ASSET, "1000", OwnerKind.BANK, "bank")
    assert reasons(b.open("r1", [ACCOUNTS[0], ACCOUNTS[0], twin])) == [
        None, None, "ACCOUNT_ID_REUSED"]


def test_an_account_with_a_zero_balance_and_no_holds_can_be_closed(bank):
    assert bank.close("c1", "bob").account_id == "bob"
    assert get_account(bank.uow, "bob").status is AccountStatus.CLOSED


def test_an_account_with_a_balance_cannot_be_closed(bank):
    with pytest.raises(FailedPrecondition) as caught:
        bank.close("c1", "alice")
    assert caught.value.reason == "BALANCE_NOT_ZERO"
    assert get_account(bank.uow, "alice").status is AccountStatus.OPEN


def test_an_account_with_a_pending_hold_cannot_be_closed(bank):
    bank.ok("h", hold("h1", "cash", "bob", 5))
    with pytest.raises(FailedPrecondition) as caught:
        bank.close("c1", "bob")
    assert caught.value.reason == "BALANCE_NOT_ZERO"


def test_an_account_spent_back_to_zero_can_be_closed(bank):
    bank.ok("spend", move("spend", "alice", "cash", 1000))
    bank.close("c1", "alice")
    assert get_account(bank.uow, "alice").totals == Totals(1000, 1000, 0, 0)


def test_a_closed_account_cannot_be_closed_again_or_receive_postings(bank):
    bank.close("c1", "bob")
    with pytest.raises(FailedPrecondition) as caught:
        bank.close("c2", "bob")
    assert caught.value.reason == "ACCOUNT_ALREADY_CLOSED"
    assert reasons(bank.transfer("t", move("t1", "alice", "bob", 1))) == ["ACCOUNT_CLOSED"]


def test_closing_an_unknown_account_is_not_found(bank):
    with pytest.raises(NotFound) as caught:
        bank.close("c1", "nobody")
    assert caught.value.reason == "ACCOUNT_NOT_FOUND"


# -- transfers ------------------------------------------------------------------------------------

def test_a_transfer_that_would_overdraw_a_no_overdraft_account_is_refused_and_changes_nothing(
        bank):
    before = bank.snapshot()
    result = bank.transfer("t", move("t1", "alice", "shop", 1001))
    assert reasons(result) == ["EXCEEDS_CREDITS"]
    after = bank.snapshot()
    assert after[1:3] == before[1:3]  # accounts and entries
    assert after[0].next_seq == before[0].next_seq


def test_results_carry_the_position_and_time_of_each_recorded_entry(bank):
    result = bank.ok("t", move("t1", "alice", "shop", 1), move("t2", "alice", "shop", 1))
    [e1, e2] = entries_after(bank.uow, 1, 10)
    assert [(i.position, i.recorded_ns) for i in result.items] == [
        (e1.seq, e1.recorded_ns), (e2.seq, e2.recorded_ns)]
    assert (e1.seq, e2.seq) == (2, 3) and e1.request_id == "t"


def test_a_malformed_batch_is_refused_before_anything_is_recorded_or_audited(bank):
    before = bank.snapshot()
    with pytest.raises(InvalidArgument):
        bank.transfer("bad", move("t1", "alice", "shop", 0))
    assert bank.snapshot() == before
    bank.ok("bad", move("t1", "alice", "shop", 1))  # the request id was not used up


def test_the_trial_balance_is_zero_per_currency(bank):
    bank.ok("e", move("e1", "eur-cash", "eur-alice", 70, "EUR"))
    rows = trial_balance(bank.uow)
    for currency in ("GBP", "EUR"):
        mine = [r for r in rows if r.currency == currency]
        assert sum(r.debits_posted for r in mine) == sum(r.credits_posted for r in mine) > 0


def test_a_linked_group_with_one_bad_item_changes_nothing_and_fails_the_others(bank):
    before = bank.snapshot()
    result = bank.transfer("t", move("a", "alice", "shop", 10, linked=True),
                           move("b", "bob", "shop", 10, linked=True),
                           move("c", "alice", "bob", 10))
    assert reasons(result) == ["LINKED_TRANSFER_FAILED", "EXCEEDS_CREDITS",
                               "LINKED_TRANSFER_FAILED"]
    assert bank.snapshot()[1:3] == before[1:3]


def test_a_transfer_id_reused_with_different_content_is_an_item_error(bank):
    bank.ok("t", move("t1", "alice", "shop", 10))
    before = bank.snapshot()[1:3]
    result = bank.transfer("t-again", move("t1", "alice", "shop", 11))
    assert reasons(result) == ["TRANSFER_ID_REUSED"]
    assert isinstance(result.items[0].error, AlreadyExists)
    assert bank.snapshot()[1:3] == before


def test_a_transfer_resent_under_a_new_request_id_is_not_applied_twice(bank):
    first = bank.ok("t", move("t1", "alice", "shop", 10))
    again = bank.ok("t-again", move("t1", "alice", "shop", 10))
    assert again.items[0].position == first.items[0].position
    assert bank.totals("alice").debits_posted == 10 and bank.entry_count() == 2


# -- two-phase ------------------------------------------------------------------------------------

def test_a_hold_posted_in_full_becomes_posted(bank):
    bank.ok("h", hold("h1", "alice", "shop", 400))
    bank.ok("p", post("p1", "h1"))
    assert bank.totals("alice") == Totals(debits_posted=400, credits_posted=1000)
    view = get_transfer(bank.uow, "h1")
    assert view.state is TransferState.PENDING_POSTED and view.resolved_by == "p1"


def test_a_hold_posted_for_less_releases_the_whole_hold(bank):
    bank.ok("h", hold("h1", "alice", "shop", 400))
    bank.ok("p", post("p1", "h1", 250))
    assert bank.totals("alice") == Totals(debits_posted=250, credits_posted=1000)
    assert bank.totals("shop") == Totals(credits_posted=250)


def test_posting_more_than_a_hold_is_refused(bank):
    bank.ok("h", hold("h1", "alice", "shop", 400))
    assert reasons(bank.transfer("p", post("p1", "h1", 401))) == ["EXCEEDS_PENDING_AMOUNT"]
    assert get_transfer(bank.uow, "h1").state is TransferState.PENDING


def test_a_voided_hold_releases_its_funds(bank):
    bank.ok("h", hold("h1", "alice", "shop", 400))
    bank.ok("v", void("v1", "h1"))
    assert bank.totals("alice") == Totals(credits_posted=1000)
    assert get_transfer(bank.uow, "h1").state is TransferState.PENDING_VOIDED


def test_posting_a_hold_twice_is_refused(bank):
    bank.ok("h", hold("h1", "alice", "shop", 400))
    bank.ok("p", post("p1", "h1"))
    assert reasons(bank.transfer("p2", post("p2", "h1"))) == ["PENDING_TRANSFER_ALREADY_POSTED"]


def test_posting_a_hold_after_its_timeout_is_refused_as_expired(bank):
    bank.ok("h", hold("h1", "alice", "shop", 400, timeout_seconds=60),
            hold("h2", "alice", "shop", 100, timeout_seconds=60))
    expires_ns = get_transfer(bank.uow, "h1").entry.expires_ns
    assert get_transfer(bank.uow, "h2").entry.expires_ns == expires_ns
    bank.clock.now = expires_ns - 1
    bank.ok("p2", post("p2", "h2"))  # one nanosecond before its timeout
    bank.clock.now = expires_ns
    assert reasons(bank.transfer("p1", post("p1", "h1"))) == ["PENDING_TRANSFER_EXPIRED"]
    assert get_transfer(bank.uow, "h1").state is TransferState.PENDING  # until the sweep


def test_expire_holds_releases_expired_holds_only(bank):
    bank.ok("h", hold("short", "alice", "shop", 100, timeout_seconds=60),
            hold("long", "alice", "shop", 200, timeout_seconds=3600),
            hold("forever", "alice", "shop", 300),
            hold("done", "alice", "shop", 50, timeout_seconds=60),
            hold("short2", "alice", "shop", 10, timeout_seconds=30))
    bank.ok("p", post("p-done", "done"))
    bank.clock.advance(61)
    result = bank.expire("sweep-1")
    seqs = [get_transfer(bank.uow, tid).entry.seq for tid in ("short", "short2")]
    assert [(i.entity_id, i.error) for i in result.items] == [
        (f"expire:{seq}", None) for seq in seqs]
    for tid in ("short", "short2"):
        assert get_transfer(bank.uow, tid).state is TransferState.PENDING_EXPIRED
    for tid in ("long", "forever"):
        assert get_transfer(bank.uow, tid).state is TransferState.PENDING
    assert bank.totals("alice") == Totals(debits_posted=50, credits_posted=1000,
                                          debits_pending=500)
    assert bank.expire("sweep-2").items == ()  # nothing left to expire
    assert reasons(bank.transfer("p2", post("p2", "short"))) == ["PENDING_TRANSFER_EXPIRED"]


def test_every_expiry_sweep_is_audited_even_when_nothing_expires(bank):
    before = bank.audit_size()
    bank.expire("sweep-1")
    bank.expire("sweep-2")
    bank.expire("sweep-2")  # a replay of the same run
    assert bank.audit_size() == before + 2


# -- reversals ------------------------------------------------------------------------------------

def test_a_reversal_restores_the_balances(bank):
    before = {a: bank.totals(a).balance(Side.CREDIT) for a in ("alice", "shop")}
    bank.ok("t", move("t1", "alice", "shop", 300))
    bank.ok("r", reverse("r1", "t1"))
    assert {a: bank.totals(a).balance(Side.CREDIT) for a in ("alice", "shop")} == before
    assert get_transfer(bank.uow, "t1").reversed_by == "r1"


def test_reversing_twice_or_reversing_a_hold_is_refused(bank):
    bank.ok("t", move("t1", "alice", "shop", 300), hold("h1", "alice", "shop", 5))
    bank.ok("r", reverse("r1", "t1"))
    assert reasons(bank.transfer("r2", reverse("r2", "t1"), reverse("r3", "h1"))) == [
        "TRANSFER_ALREADY_REVERSED", "TRANSFER_NOT_REVERSIBLE"]


# -- idempotency ----------------------------------------------------------------------------------

def test_replaying_a_request_returns_the_identical_result_and_changes_nothing(bank):
    first = bank.ok("t", move("t1", "alice", "shop", 10), hold("h1", "alice", "shop", 20))
    before, entries = bank.snapshot(), bank.entry_count()
    bank.clock.advance(5)
    again = bank.ok("t", move("t1", "alice", "shop", 10), hold("h1", "alice", "shop", 20))
    assert again.to_json() == first.to_json()
    assert bank.snapshot() == before and bank.entry_count() == entries


def test_replaying_an_account_opening_returns_the_identical_result_and_changes_nothing(bank):
    before = bank.snapshot()
    again = bank.open("open", ACCOUNTS)
    assert reasons(again) == [None] * len(ACCOUNTS)
    assert bank.snapshot() == before


def test_reusing_a_request_id_for_different_content_is_refused_and_changes_nothing(bank):
    before = bank.snapshot()
    with pytest.raises(AlreadyExists) as caught:
        bank.transfer("fund", move("fund", "cash", "alice", 999))
    assert caught.value.reason == "REQUEST_ID_REUSED"
    assert caught.value.metadata["request_id"] == "fund"
    assert bank.snapshot() == before


def test_reusing_a_request_id_for_another_method_is_refused(bank):
    with pytest.raises(AlreadyExists) as caught:
        bank.close("fund", "bob")
    assert caught.value.reason == "REQUEST_ID_REUSED"
    assert get_account(bank.uow, "bob").status is AccountStatus.OPEN


def test_a_transfer_refused_for_insufficient_funds_stays_refused_when_replayed_after_funding(
        bank):
    first = bank.transfer("pay", move("pay", "bob", "shop", 50))
    assert reasons(first) == ["EXCEEDS_CREDITS"]
    bank.ok("fund-bob", move("fund-bob", "cash", "bob", 100))
    before = bank.snapshot()
    again = bank.transfer("pay", move("pay", "bob", "shop", 50))
    assert again.to_json() == first.to_json()
    assert bank.snapshot() == before
    assert bank.totals("bob") == Totals(credits_posted=100)


def test_a_refused_close_stays_refused_when_replayed_after_the_balance_is_zero(bank):
    with pytest.raises(FailedPrecondition) as first:
        bank.close("close-alice", "alice")
    bank.ok("spend", move("spend", "alice", "cash", 1000))
    with pytest.raises(FailedPrecondition) as again:
        bank.close("close-alice", "alice")
    assert again.value.to_record() == first.value.to_record()
    assert get_account(bank.uow, "alice").status is AccountStatus.OPEN


def test_a_replayed_close_succeeds_again_without_changing_anything(bank):
    bank.close("c", "bob")
    before = bank.snapshot()
    assert bank.close("c", "bob").account_id == "bob"
    assert bank.snapshot() == before


def test_a_write_that_fails_half_way_leaves_no_trace(bank, monkeypatch):
    def broken(self, request):
        raise InvariantViolation("storage bug")

    monkeypatch.setattr(InMemoryLedger, "save_request", broken)
    before = bank.snapshot()
    spec = AccountSpec("new", "GBP", AccountType.ASSET, "1", OwnerKind.BANK, "bank")
    with pytest.raises(InvariantViolation):
        bank.open("r", [spec])
    with pytest.raises(InvariantViolation):
        bank.transfer("t", move("t1", "alice", "shop", 5))
    assert bank.snapshot() == before


def test_a_concurrency_conflict_is_retried_and_applied_once(bank, monkeypatch):
    real_write = bank.uow.write
    calls = []

    def flaky_write(timeout_s=None):
        calls.append(timeout_s)
        if len(calls) == 1:
            raise Aborted("CONCURRENCY_CONFLICT", "try again")
        return real_write(timeout_s)

    monkeypatch.setattr(bank.uow, "write", flaky_write)
    monkeypatch.setattr(unit, "RETRY_BACKOFF_S", 0.0)
    before = bank.audit_size()
    bank.ok("t", move("t1", "alice", "shop", 10))
    assert len(calls) == 2 and bank.audit_size() == before + 1
    assert bank.totals("alice").debits_posted == 10


# -- audit ----------------------------------------------------------------------------------------

def test_every_mutating_request_adds_exactly_one_audit_leaf_even_when_it_fails(bank):
    steps = [
        lambda: bank.open("a1", ACCOUNTS[:1]),
        lambda: bank.transfer("t1", move("t1", "alice", "shop", 1)),
        lambda: bank.transfer("t2", move("t2", "bob", "shop", 1)),  # item refused
        lambda: bank.transfer("t3", move("t3", "alice", "nobody", 1)),  # item not found
        lambda: bank.close("c1", "alice"),  # refused: balance not zero
        lambda: bank.close("c2", "nobody"),  # refused: not found
        lambda: bank.close("c3", "bob"),
        lambda: bank.expire("x1"),
    ]
    for step in steps:
        before = bank.audit_size()
        with contextlib.suppress(FailedPrecondition, NotFound):
            step()
        assert bank.audit_size() == before + 1
        assert len(bank.uow.state.audit) == bank.audit_size()


def test_replays_and_conflicting_replays_add_no_audit_leaf(bank):
    bank.transfer("t", move("t1", "bob", "shop", 1))
    with pytest.raises(FailedPrecondition):
        bank.close("c", "alice")
    before = bank.audit_size()
    bank.transfer("t", move("t1", "bob", "shop", 1))
    with pytest.raises(FailedPrecondition):
        bank.close("c", "alice")
    with pytest.raises(AlreadyExists):
        bank.transfer("t", move("t1", "bob", "shop", 2))
    with pytest.raises(InvalidArgument):
        bank.transfer("t9", move("t9", "bob", "shop", -2))
    assert bank.audit_size() == before


def test_an_audit_leaf_records_who_did_what_and_the_outcome_without_the_content(bank):
    with pytest.raises(FailedPrecondition):
        bank.close("c", "alice")
    leaves = bank.uow.state.audit
    assert [leaf.index for leaf in leaves] == list(range(len(leaves)))
    leaf = leaves[-1]
    assert leaf.leaf_hash == hashlib.sha256(b"\x00" + leaf.leaf).digest()
    record = json.loads(leaf.leaf)
    assert record["index"] == leaf.index and record["time_ns"] == leaf.recorded_ns
    assert record["principal"] == TELLER.as_record()
    assert (record["method"], record["request_id"], record["outcome"]) == (
        "CloseAccount", "c", "error")
    assert "alice" not in leaf.leaf.decode().replace("alice-teller", "")
    assert json.loads(leaves[1].leaf)["outcome"] == "ok"  # the funding transfer


def test_the_system_principal_is_recorded_for_expiry_sweeps(bank):
    bank.expire("sweep")
    record = json.loads(bank.uow.state.audit[-1].leaf)
    assert record["principal"] == SYSTEM.as_record() and record["method"] == "ExpireHolds"


def test_a_stored_error_is_rebuilt_with_its_kind_reason_and_metadata():
    error = NotFound("ACCOUNT_NOT_FOUND", "no account 'x'", metadata={"account_id": "x"})
    rebuilt = LedgerError.from_record(json.loads(json.dumps(error.to_record())))
    assert type(rebuilt) is NotFound and rebuilt.to_record() == error.to_record()


# -- maker-checker (through the fake's approval storage) ------------------------------------------

def test_a_large_transfer_waits_for_a_second_approver_and_changes_no_balance(bank):
    before = bank.snapshot()
    result = bank.transfer("big", move("big", "cash", "shop", 10**7))
    assert reasons(result) == ["APPROVAL_REQUIRED"] and result.approval_id
    assert bank.snapshot()[1:3] == before[1:3]
    assert bank.audit_size() == before[0].audit_size + 1


def test_an_approved_transfer_runs_once_and_the_maker_cannot_approve_it(bank):
    approval_id = bank.transfer("big", move("big", "cash", "shop", 10**7)).approval_id
    with pytest.raises(PermissionDenied):
        approve(bank.uow, bank.clock, Principal(TELLER.subject, Role.APPROVER), "a0",
                approval_id)
    approver = Principal("abe", Role.APPROVER)
    approve(bank.uow, bank.clock, approver, "a1", approval_id)
    assert bank.totals("shop").credits_posted == 10**7
    with pytest.raises(FailedPrecondition) as caught:
        approve(bank.uow, bank.clock, approver, "a2", approval_id)
    assert caught.value.reason == "APPROVAL_ALREADY_DECIDED"
    assert bank.totals("shop").credits_posted == 10**7


@pytest.mark.parametrize("message", ["plain", "caf\u00e9 \u2013 \u00a3", "quote \" and \\u00e9",
                                     "tab\tnewline\ncontrol\x01"])
def test_a_batch_outcome_hash_from_its_text_is_the_canonical_hash(message: str) -> None:
    """The group commit hashes a stored outcome from its JSON text; it must be exactly the
    canonical hash of the parsed outcome, whatever the text holds."""
    error = FailedPrecondition("EXCEEDS_CREDITS", message, metadata={"account_id": message})
    result = BatchResult((ItemResult(0, "t-1", None, 1, 1_000),
                          ItemResult(1, message, error, 2, 1_001)), "")
    outcome_json = unit.outcome_of(result, None)
    assert unit.batch_outcome_sha256(outcome_json) == unit.canonical_hash(
        json.loads(outcome_json))

