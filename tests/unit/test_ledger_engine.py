"""The posting engine `BatchPosting`, in memory: totals, holds, reversals, linked groups."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from bank.domain.accounts import Account, AccountStatus, AccountType, OwnerKind, Side, Totals
from bank.domain.entries import (
    Effect,
    JournalEntry,
    PostingLine,
    TransferKind,
    TransferSpec,
    validate_specs,
)
from bank.domain.errors import AlreadyExists, FailedPrecondition, NotFound
from bank.domain.ledger import BatchPosting, ItemOutcome
from bank.domain.limits import TOTAL_MINOR_MAX

D, C = Side.DEBIT, Side.CREDIT
SECOND = 1_000_000_000
NOW = 1_767_225_600 * SECOND
TODAY = date(2026, 1, 1)


def account(account_id: str, account_type: AccountType = AccountType.LIABILITY,
            currency: str = "GBP", **kw) -> Account:
    return Account(account_id, currency, account_type, "2000", OwnerKind.MEMBER, account_id, **kw)


class Book:
    """A `LedgerView` over dicts that keeps what each applied batch produced."""

    def __init__(self, *accounts: Account) -> None:
        self.accounts = {a.account_id: a for a in accounts}
        self.entries: dict[str, JournalEntry] = {}
        self.resolutions: dict[str, JournalEntry] = {}
        self.reversals: dict[str, JournalEntry] = {}
        self.next_seq = 1
        self.last_recorded_ns = 0
        self.now_ns = NOW

    def account(self, account_id: str) -> Account | None:
        return self.accounts.get(account_id)

    def entry(self, transfer_id: str) -> JournalEntry | None:
        return self.entries.get(transfer_id)

    def resolution(self, pending_id: str) -> JournalEntry | None:
        return self.resolutions.get(pending_id)

    def reversal(self, transfer_id: str) -> JournalEntry | None:
        return self.reversals.get(transfer_id)

    def engine(self) -> BatchPosting:
        return BatchPosting(self, next_seq=self.next_seq, last_recorded_ns=self.last_recorded_ns,
                            now_ns=self.now_ns, business_date=TODAY, request_id="req")

    def commit(self, engine: BatchPosting) -> None:
        for e in engine.new_entries:
            self.entries[e.transfer_id] = e
            if e.pending_id:
                self.resolutions[e.pending_id] = e
            if e.reverses_id:
                self.reversals[e.reverses_id] = e
        for a in engine.touched_accounts:
            self.accounts[a.account_id] = a
        self.next_seq = engine.next_seq
        self.last_recorded_ns = engine.last_recorded_ns

    def apply(self, *specs: TransferSpec) -> list[ItemOutcome]:
        validate_specs(list(specs))
        engine = self.engine()
        outcomes = engine.apply_all(list(specs))
        self.commit(engine)
        return outcomes

    def one(self, spec: TransferSpec) -> ItemOutcome:
        [outcome] = self.apply(spec)
        return outcome

    def ok(self, spec: TransferSpec) -> JournalEntry:
        outcome = self.one(spec)
        assert outcome.error is None, outcome.error
        assert outcome.entry is not None
        return outcome.entry

    def refused(self, spec: TransferSpec) -> str:
        """Apply `spec`, expect a refusal that changed nothing; return its reason."""
        before = (dict(self.accounts), dict(self.entries), self.next_seq)
        outcome = self.one(spec)
        assert outcome.error is not None and outcome.entry is None
        assert (dict(self.accounts), dict(self.entries), self.next_seq) == before
        return outcome.error.reason

    def totals(self, account_id: str) -> Totals:
        return self.accounts[account_id].totals


def lines(*triples: tuple[str, Side, int], currency: str = "GBP") -> tuple[PostingLine, ...]:
    return tuple(PostingLine(a, s, n, currency) for a, s, n in triples)


def move(tid: str, debit: str, credit: str, amount: int, **kw) -> TransferSpec:
    return TransferSpec(tid, TransferKind.POSTED, lines((debit, D, amount), (credit, C, amount)),
                        **kw)


def hold(tid: str, debit: str, credit: str, amount: int, **kw) -> TransferSpec:
    return TransferSpec(tid, TransferKind.PENDING, lines((debit, D, amount), (credit, C, amount)),
                        **kw)


def post(tid: str, pending_id: str, *postings: PostingLine) -> TransferSpec:
    return TransferSpec(tid, TransferKind.POST_PENDING, tuple(postings), pending_id=pending_id)


def void(tid: str, pending_id: str) -> TransferSpec:
    return TransferSpec(tid, TransferKind.VOID_PENDING, pending_id=pending_id)


def reverse(tid: str, reverses_id: str) -> TransferSpec:
    return TransferSpec(tid, TransferKind.REVERSAL, reverses_id=reverses_id)


@pytest.fixture
def book() -> Book:
    """cash (bank asset), alice and bob (no-overdraft deposits, alice funded with 1000), shop,
    a EUR deposit, and a loan that may never go into credit."""
    b = Book(
        account("cash", AccountType.ASSET),
        account("alice", debits_must_not_exceed_credits=True),
        account("bob", debits_must_not_exceed_credits=True),
        account("shop"),
        account("euro", currency="EUR"),
        account("loan", AccountType.ASSET, credits_must_not_exceed_debits=True),
    )
    b.ok(move("fund", "cash", "alice", 1000))
    return b


# -- posted transfers -----------------------------------------------------------------------------

def test_a_posted_transfer_moves_posted_totals_and_records_totals_after_each_line(book):
    entry = book.ok(move("t1", "alice", "shop", 300))
    assert book.totals("alice") == Totals(debits_posted=300, credits_posted=1000)
    assert book.totals("shop") == Totals(credits_posted=300)
    assert [p.totals_after for p in entry.postings] == [book.totals("alice"), book.totals("shop")]
    assert {p.effect for p in entry.postings} == {Effect.POST}
    assert book.totals("alice").available(Side.CREDIT) == 700


def test_entries_get_dense_positions_and_strictly_increasing_recorded_times(book):
    book.last_recorded_ns = NOW + 50  # the head is ahead of the clock
    a, b = book.apply(move("t1", "alice", "shop", 1), move("t2", "alice", "shop", 1))
    assert (a.entry.seq, b.entry.seq) == (2, 3)
    assert NOW + 50 < a.entry.recorded_ns < b.entry.recorded_ns
    assert book.next_seq == 4 and book.last_recorded_ns == b.entry.recorded_ns


def test_an_entry_takes_the_business_date_unless_given_an_effective_date(book):
    assert book.ok(move("t1", "alice", "shop", 1)).effective_date == TODAY
    dated = book.ok(move("t2", "alice", "shop", 1, effective_date=date(2025, 12, 31)))
    assert dated.effective_date == date(2025, 12, 31)


def test_a_transfer_that_would_overdraw_a_no_overdraft_account_is_refused_and_changes_nothing(
        book):
    assert book.refused(move("t1", "alice", "shop", 1001)) == "EXCEEDS_CREDITS"
    assert book.refused(move("t2", "bob", "shop", 1)) == "EXCEEDS_CREDITS"


def test_a_no_overdraft_account_can_be_spent_down_to_exactly_zero(book):
    book.ok(move("t1", "alice", "shop", 1000))
    assert book.accounts["alice"].is_zero()


def test_an_account_that_must_not_go_into_credit_refuses_credits_beyond_its_debits(book):
    book.ok(move("lend", "loan", "bob", 500))
    assert book.refused(move("repay", "shop", "loan", 501)) == "EXCEEDS_DEBITS"
    book.ok(move("repay", "shop", "loan", 500))


def test_a_posting_to_an_unknown_account_is_not_found(book):
    outcome = book.one(move("t1", "alice", "nobody", 1))
    assert isinstance(outcome.error, NotFound) and outcome.error.reason == "ACCOUNT_NOT_FOUND"
    assert outcome.error.metadata == {"account_id": "nobody"}


@pytest.mark.parametrize("status", [AccountStatus.CLOSED, AccountStatus.FROZEN])
def test_an_account_that_is_not_open_refuses_postings(book, status):
    book.accounts["shop"] = replace(book.accounts["shop"], status=status)
    assert book.refused(move("t1", "alice", "shop", 1)) == f"ACCOUNT_{status.name}"


def test_a_posting_in_a_currency_other_than_the_account_s_is_refused(book):
    spec = TransferSpec("t1", TransferKind.POSTED,
                        lines(("euro", D, 5), ("shop", C, 5), currency="EUR"))
    assert book.refused(spec) == "CURRENCY_MISMATCH"


def test_a_running_total_that_would_leave_int64_is_refused(book):
    book.accounts["shop"] = book.accounts["shop"].with_totals(
        Totals(debits_posted=TOTAL_MINOR_MAX - 10, credits_posted=TOTAL_MINOR_MAX - 10))
    assert book.refused(move("t1", "cash", "shop", 11)) == "OVERFLOWS_TOTALS"
    book.ok(move("t2", "cash", "shop", 10))


def test_an_identical_transfer_replays_its_entry_and_records_nothing_new(book):
    first = book.ok(move("t1", "alice", "shop", 5))
    before = (dict(book.accounts), book.next_seq)
    again = book.one(move("t1", "alice", "shop", 5))
    assert again.replayed and again.error is None and again.entry == first
    assert (dict(book.accounts), book.next_seq) == before


def test_a_transfer_id_reused_with_different_content_is_refused_as_already_existing(book):
    book.ok(move("t1", "alice", "shop", 5))
    outcome = book.one(move("t1", "alice", "shop", 6))
    assert isinstance(outcome.error, AlreadyExists)
    assert outcome.error.reason == "TRANSFER_ID_REUSED"


def test_a_transfer_id_reused_within_one_batch_with_different_content_is_refused(book):
    a, b = book.apply(move("t1", "alice", "shop", 5), move("t1", "alice", "shop", 6))
    assert a.error is None and b.error.reason == "TRANSFER_ID_REUSED"


# -- two-phase transfers --------------------------------------------------------------------------

def test_a_hold_reserves_pending_totals_only_and_reduces_what_is_available(book):
    entry = book.ok(hold("h1", "alice", "shop", 400))
    assert book.totals("alice") == Totals(credits_posted=1000, debits_pending=400)
    assert book.totals("shop") == Totals(credits_pending=400)
    assert {p.effect for p in entry.postings} == {Effect.RESERVE}
    assert book.totals("alice").available(Side.CREDIT) == 600
    assert book.refused(move("t1", "alice", "shop", 601)) == "EXCEEDS_CREDITS"
    assert book.refused(hold("h2", "alice", "shop", 601)) == "EXCEEDS_CREDITS"


def test_posting_a_hold_in_full_moves_its_amount_to_posted_and_releases_it(book):
    book.ok(hold("h1", "alice", "shop", 400))
    entry = book.ok(post("p1", "h1"))
    assert book.totals("alice") == Totals(debits_posted=400, credits_posted=1000)
    assert book.totals("shop") == Totals(credits_posted=400)
    # The reservation is released before the amount is posted.
    assert [(p.account_id, p.side, p.amount, p.effect) for p in entry.postings] == [
        ("alice", D, 400, Effect.RELEASE), ("shop", C, 400, Effect.RELEASE),
        ("alice", D, 400, Effect.POST), ("shop", C, 400, Effect.POST)]
    assert entry.pending_id == "h1"


def test_posting_a_hold_for_less_posts_that_amount_and_releases_the_whole_hold(book):
    book.ok(hold("h1", "alice", "shop", 400))
    book.ok(post("p1", "h1", *lines(("alice", D, 150), ("shop", C, 150))))
    assert book.totals("alice") == Totals(debits_posted=150, credits_posted=1000)
    assert book.totals("shop") == Totals(credits_posted=150)


def test_posting_more_than_was_held_is_refused(book):
    book.ok(hold("h1", "alice", "shop", 400))
    assert book.refused(post("p1", "h1", *lines(("alice", D, 401), ("shop", C, 401)))) == (
        "EXCEEDS_PENDING_AMOUNT")


def test_posting_a_hold_to_an_account_it_did_not_hold_is_refused(book):
    book.ok(hold("h1", "alice", "shop", 400))
    assert book.refused(post("p1", "h1", *lines(("alice", D, 100), ("cash", C, 100)))) == (
        "POSTING_NOT_IN_PENDING_TRANSFER")


def test_voiding_a_hold_releases_it_and_posts_nothing(book):
    book.ok(hold("h1", "alice", "shop", 400))
    entry = book.ok(void("v1", "h1"))
    assert book.totals("alice") == Totals(credits_posted=1000)
    assert book.totals("shop") == Totals()
    assert {p.effect for p in entry.postings} == {Effect.RELEASE}


@pytest.mark.parametrize(("first", "reason"), [
    (post("p1", "h1"), "PENDING_TRANSFER_ALREADY_POSTED"),
    (void("p1", "h1"), "PENDING_TRANSFER_ALREADY_VOIDED"),
])
@pytest.mark.parametrize("second", [post("p2", "h1"), void("p2", "h1")])
def test_a_hold_can_be_resolved_only_once(book, first, reason, second):
    book.ok(hold("h1", "alice", "shop", 100))
    book.ok(first)
    assert book.refused(second) == reason


def test_a_hold_posted_within_the_same_batch_cannot_be_posted_again_in_it(book):
    h, p1, p2 = book.apply(hold("h1", "alice", "shop", 100), post("p1", "h1"), post("p2", "h1"))
    assert h.error is None and p1.error is None
    assert p2.error.reason == "PENDING_TRANSFER_ALREADY_POSTED"


def test_posting_a_hold_after_its_timeout_is_refused_as_expired(book):
    book.ok(hold("h1", "alice", "shop", 100, timeout_seconds=60))
    book.now_ns += 60 * SECOND
    assert book.refused(post("p1", "h1")) == "PENDING_TRANSFER_EXPIRED"
    assert book.refused(void("v1", "h1")) == "PENDING_TRANSFER_EXPIRED"


def test_a_hold_can_be_posted_until_just_before_its_timeout(book):
    entry = book.ok(hold("h1", "alice", "shop", 100, timeout_seconds=60))
    assert entry.expires_ns == NOW + 60 * SECOND
    book.now_ns += 60 * SECOND - 1
    book.ok(void("v1", "h1"))


def test_a_hold_without_timeout_never_expires(book):
    assert book.ok(hold("h1", "alice", "shop", 100)).expires_ns == 0
    book.now_ns += 10**6 * SECOND
    book.ok(void("v1", "h1"))


def test_expiring_a_hold_releases_it_and_it_cannot_be_posted_afterwards(book):
    pending = book.ok(hold("h1", "alice", "shop", 100, timeout_seconds=60))
    book.now_ns += 61 * SECOND
    engine = book.engine()
    outcome = engine.apply_expiry(0, pending, "expire:2")
    book.commit(engine)
    assert outcome.error is None and outcome.entry.kind is TransferKind.EXPIRE_PENDING
    assert book.totals("alice") == Totals(credits_posted=1000)
    assert book.refused(post("p1", "h1")) == "PENDING_TRANSFER_EXPIRED"


def test_a_hold_that_has_not_timed_out_cannot_be_expired(book):
    pending = book.ok(hold("h1", "alice", "shop", 100, timeout_seconds=60))
    outcome = book.engine().apply_expiry(0, pending, "expire:2")
    assert outcome.error.reason == "PENDING_TRANSFER_NOT_EXPIRED"


def test_posting_something_that_is_not_a_hold_is_refused(book):
    assert book.refused(post("p1", "fund")) == "NOT_A_PENDING_TRANSFER"


def test_posting_an_unknown_hold_is_not_found(book):
    outcome = book.one(void("v1", "nope"))
    assert isinstance(outcome.error, NotFound)
    assert outcome.error.reason == "PENDING_TRANSFER_NOT_FOUND"


def test_a_hold_of_all_the_funds_of_a_no_overdraft_account_can_be_posted_in_full(book):
    book.ok(hold("h1", "alice", "shop", 1000))
    book.ok(post("p1", "h1"))
    assert book.totals("alice") == Totals(debits_posted=1000, credits_posted=1000)


def test_a_hold_of_most_of_the_funds_of_a_no_overdraft_account_can_be_posted_for_less(book):
    book.ok(hold("h1", "alice", "shop", 800))
    book.ok(post("p1", "h1", *lines(("alice", D, 700), ("shop", C, 700))))
    assert book.totals("alice") == Totals(debits_posted=700, credits_posted=1000)


def test_posting_a_hold_counts_its_amount_once_not_as_both_pending_and_posted(book):
    book.ok(hold("h1", "alice", "shop", 600))
    book.ok(hold("h2", "alice", "shop", 400))  # all 1000 now reserved
    book.ok(post("p1", "h1"))
    book.ok(post("p2", "h2", *lines(("alice", D, 1), ("shop", C, 1))))
    assert book.totals("alice") == Totals(debits_posted=601, credits_posted=1000)


def test_a_hold_against_an_account_that_must_not_go_into_credit_can_be_posted_in_full(book):
    book.ok(move("lend", "loan", "shop", 500))
    book.ok(hold("repay", "shop", "loan", 500))
    book.ok(post("p1", "repay"))
    assert book.totals("loan") == Totals(debits_posted=500, credits_posted=500)


# -- reversals ------------------------------------------------------------------------------------

def test_a_reversal_posts_the_mirror_image_of_the_original(book):
    original = book.ok(move("t1", "alice", "shop", 300))
    entry = book.ok(reverse("r1", "t1"))
    assert [(p.account_id, p.side, p.amount) for p in entry.postings] == [
        (p.account_id, p.side.flipped(), p.amount) for p in original.postings]
    assert entry.reverses_id == "t1"
    assert book.totals("alice") == Totals(debits_posted=300, credits_posted=1300)
    assert book.totals("alice").balance(Side.CREDIT) == 1000


def test_reversing_a_transfer_twice_is_refused(book):
    book.ok(move("t1", "alice", "shop", 300))
    book.ok(reverse("r1", "t1"))
    assert book.refused(reverse("r2", "t1")) == "TRANSFER_ALREADY_REVERSED"


def test_reversing_a_pending_transfer_is_refused(book):
    book.ok(hold("h1", "alice", "shop", 300))
    assert book.refused(reverse("r1", "h1")) == "TRANSFER_NOT_REVERSIBLE"


def test_reversing_a_void_or_a_reversal_is_refused(book):
    book.ok(hold("h1", "alice", "shop", 300))
    book.ok(void("v1", "h1"))
    book.ok(reverse("r1", "fund"))
    assert book.refused(reverse("r2", "v1")) == "TRANSFER_NOT_REVERSIBLE"
    assert book.refused(reverse("r3", "r1")) == "TRANSFER_NOT_REVERSIBLE"


def test_a_posted_hold_can_be_reversed_and_only_its_posted_lines_are_mirrored(book):
    book.ok(hold("h1", "alice", "shop", 300))
    book.ok(post("p1", "h1", *lines(("alice", D, 200), ("shop", C, 200))))
    entry = book.ok(reverse("r1", "p1"))
    assert [(p.account_id, p.side, p.amount, p.effect) for p in entry.postings] == [
        ("alice", C, 200, Effect.POST), ("shop", D, 200, Effect.POST)]


def test_reversing_an_unknown_transfer_is_not_found(book):
    outcome = book.one(reverse("r1", "nope"))
    assert isinstance(outcome.error, NotFound) and outcome.error.reason == "TRANSFER_NOT_FOUND"


def test_a_reversal_that_would_overdraw_a_no_overdraft_account_is_refused(book):
    book.ok(move("t1", "alice", "shop", 1000))
    assert book.refused(reverse("r1", "fund")) == "EXCEEDS_CREDITS"


# -- linked groups --------------------------------------------------------------------------------

def test_a_linked_group_with_one_bad_transfer_changes_nothing(book):
    before = dict(book.accounts)
    outcomes = book.apply(
        move("a", "alice", "shop", 100, linked=True),
        move("b", "alice", "shop", 5000, linked=True),
        move("c", "alice", "shop", 100))
    assert [o.error.reason for o in outcomes] == [
        "LINKED_TRANSFER_FAILED", "EXCEEDS_CREDITS", "LINKED_TRANSFER_FAILED"]
    assert all(o.entry is None for o in outcomes)
    assert all(isinstance(o.error, FailedPrecondition) for o in outcomes)
    assert outcomes[0].error.metadata == {"failed_transfer": "b"}
    assert book.accounts == before and set(book.entries) == {"fund"} and book.next_seq == 2


def test_a_failed_linked_group_does_not_affect_the_transfers_around_it(book):
    outcomes = book.apply(
        move("before", "alice", "shop", 1),
        hold("h", "alice", "shop", 5, linked=True),
        move("bad", "bob", "shop", 1),
        move("after", "alice", "shop", 1))
    assert [o.error.reason if o.error else None for o in outcomes] == [
        None, "LINKED_TRANSFER_FAILED", "EXCEEDS_CREDITS", None]
    assert (outcomes[0].entry.seq, outcomes[3].entry.seq) == (2, 3)
    assert outcomes[3].entry.recorded_ns == outcomes[0].entry.recorded_ns + 1
    assert book.totals("alice") == Totals(debits_posted=2, credits_posted=1000)


def test_a_linked_group_that_succeeds_applies_every_transfer(book):
    outcomes = book.apply(move("a", "alice", "bob", 600, linked=True),
                          move("b", "bob", "shop", 600))
    assert [o.error for o in outcomes] == [None, None]
    assert book.totals("bob") == Totals(debits_posted=600, credits_posted=600)
