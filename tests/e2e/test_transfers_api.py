"""Transfers through the real gRPC server: holds and their lifecycle, linked groups, reversals,
idempotency of transfer ids and request ids, and validation at the edge."""

from __future__ import annotations

import grpc
import pytest
from google.type import date_pb2

from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from tests.e2e.support import (
    OK,
    assert_unchanged,
    balance,
    code,
    feed_now,
    fund,
    get,
    minor,
    ns_of,
    open_accounts,
    open_cash_and,
    post,
    post_ok,
    refused,
    snapshot,
)
from tests.helpers import (
    account,
    error_info,
    field_violations,
    gbp,
    item_reason,
    request_id,
    transfer,
)

FAILED_PRECONDITION = code(grpc.StatusCode.FAILED_PRECONDITION)
ALREADY_EXISTS = code(grpc.StatusCode.ALREADY_EXISTS)
NOT_FOUND = code(grpc.StatusCode.NOT_FOUND)


def hold(transfer_id, debit, credit, pence, **kwargs):
    return transfer(transfer_id, debit, credit, pence, kind="PENDING", **kwargs)


def posting(account_id, side, pence, currency="GBP"):
    amount = gbp(pence) | {"currency_code": currency}
    return pb.Posting(account=f"accounts/{account_id}",
                      side=pb.SIDE_DEBIT if side == "D" else pb.SIDE_CREDIT, amount=amount)


def post_hold(transfer_id, hold_id, *postings):
    return pb.TransferInput(transfer_id=transfer_id, kind=pb.TRANSFER_KIND_POST_PENDING,
                            pending_transfer=f"transfers/{hold_id}", postings=list(postings))


def void(transfer_id, hold_id):
    return pb.TransferInput(transfer_id=transfer_id, kind=pb.TRANSFER_KIND_VOID_PENDING,
                            pending_transfer=f"transfers/{hold_id}")


def reverse(transfer_id, of):
    return pb.TransferInput(transfer_id=transfer_id, kind=pb.TRANSFER_KIND_REVERSAL,
                            reverses_transfer=f"transfers/{of}")


def outcome(result):
    return result.status.code, item_reason(result.status)


def get_transfer(ledger, transfer_id):
    return ledger.GetTransfer(pb.GetTransferRequest(name=f"transfers/{transfer_id}"))


def refused_item(ledger, t, reason, status=FAILED_PRECONDITION):
    """Post one transfer that must be refused with `reason`, and check nothing changed."""
    before = snapshot(ledger)
    result = post(ledger, t).results[0]
    assert outcome(result) == (status, reason)
    assert result.position == 0
    assert_unchanged(ledger, before)


@pytest.fixture
def funded(ledger):
    """cash (asset), alice (no-overdraft deposit, 100.00) and shop (a deposit account)."""
    open_cash_and(ledger, "alice", "shop")
    fund(ledger, "alice", 10_000)
    return ledger


# -- holds ----------------------------------------------------------------------------------------
def test_a_hold_shows_as_pending_and_reduces_the_available_balance(funded):
    post_ok(funded, hold("h1", "alice", "shop", 3_000))
    alice = get(funded, "alice")
    assert (minor(alice.balance), minor(alice.debits_pending), minor(alice.available_balance)) == (
        10_000, 3_000, 7_000)
    shop = get(funded, "shop")
    assert (minor(shop.balance), minor(shop.credits_pending), minor(shop.available_balance)) == (
        0, 3_000, 0)
    h1 = get_transfer(funded, "h1")
    assert (h1.kind, h1.state, h1.resolved_by) == (pb.TRANSFER_KIND_PENDING,
                                                   pb.Transfer.STATE_PENDING, "")
    assert {p.effect for p in h1.postings} == {pb.RecordedPosting.EFFECT_RESERVE}
    # The reservation counts against the no-overdraft limit.
    refused_item(funded, transfer("t-over", "alice", "cash", 7_001), "EXCEEDS_CREDITS")


def test_posting_a_hold_for_less_posts_that_amount_and_releases_all_of_it(funded):
    post_ok(funded, hold("h1", "alice", "shop", 3_000))
    post_ok(funded, post_hold("p1", "h1", posting("alice", "D", 2_000),
                              posting("shop", "C", 2_000)))
    alice = get(funded, "alice")
    assert (minor(alice.balance), minor(alice.debits_pending), minor(alice.available_balance)) == (
        8_000, 0, 8_000)
    shop = get(funded, "shop")
    assert (minor(shop.balance), minor(shop.credits_pending)) == (2_000, 0)
    h1 = get_transfer(funded, "h1")
    assert (h1.state, h1.resolved_by) == (pb.Transfer.STATE_PENDING_POSTED, "transfers/p1")
    p1 = get_transfer(funded, "p1")
    assert (p1.kind, p1.pending_transfer, p1.state) == (
        pb.TRANSFER_KIND_POST_PENDING, "transfers/h1", pb.Transfer.STATE_POSTED)
    assert sorted((p.account, p.effect, minor(p.amount)) for p in p1.postings) == sorted([
        ("accounts/alice", pb.RecordedPosting.EFFECT_POST, 2_000),
        ("accounts/shop", pb.RecordedPosting.EFFECT_POST, 2_000),
        ("accounts/alice", pb.RecordedPosting.EFFECT_RELEASE, 3_000),
        ("accounts/shop", pb.RecordedPosting.EFFECT_RELEASE, 3_000)])
    # Reversing the posting of a hold mirrors what was posted, not the release.
    post_ok(funded, reverse("r1", "p1"))
    r1 = get_transfer(funded, "r1")
    assert sorted((p.account, p.side, minor(p.amount)) for p in r1.postings) == [
        ("accounts/alice", pb.SIDE_CREDIT, 2_000), ("accounts/shop", pb.SIDE_DEBIT, 2_000)]
    assert (balance(funded, "alice"), balance(funded, "shop")) == (10_000, 0)


def test_posting_more_than_was_held_or_something_that_is_not_a_hold_is_refused(funded):
    post_ok(funded, hold("h1", "alice", "shop", 3_000))
    refused_item(funded, post_hold("p1", "h1", posting("alice", "D", 3_001),
                                   posting("shop", "C", 3_001)), "EXCEEDS_PENDING_AMOUNT")
    refused_item(funded, post_hold("p1", "h1", posting("cash", "D", 10),
                                   posting("shop", "C", 10)), "POSTING_NOT_IN_PENDING_TRANSFER")
    assert get_transfer(funded, "h1").state == pb.Transfer.STATE_PENDING
    post_ok(funded, transfer("t1", "alice", "shop", 100))
    refused_item(funded, post_hold("p1", "t1"), "NOT_A_PENDING_TRANSFER")
    refused_item(funded, post_hold("p1", "nope"), "PENDING_TRANSFER_NOT_FOUND", NOT_FOUND)


# Regression: the balance limit was once checked line by line, counting a hold being posted
# twice (posted and still pending), so most of a no-overdraft account could not be posted.
def test_a_hold_of_most_of_the_funds_can_be_posted_in_full_or_for_less(funded):
    post_ok(funded, hold("h1", "alice", "shop", 8_000))
    post_ok(funded, post_hold("p1", "h1"))
    assert balance(funded, "alice") == 2_000
    post_ok(funded, hold("h2", "alice", "shop", 1_800))
    post_ok(funded, post_hold("p2", "h2", posting("alice", "D", 1_000),
                              posting("shop", "C", 1_000)))
    alice = get(funded, "alice")
    assert (minor(alice.balance), minor(alice.available_balance)) == (1_000, 1_000)


def test_voiding_a_hold_releases_it_and_it_cannot_be_posted_afterwards(funded):
    post_ok(funded, hold("h1", "alice", "shop", 3_000))
    post_ok(funded, void("v1", "h1"))
    alice = get(funded, "alice")
    assert (minor(alice.balance), minor(alice.debits_pending), minor(alice.available_balance)) == (
        10_000, 0, 10_000)
    assert minor(get(funded, "shop").credits_pending) == 0
    h1 = get_transfer(funded, "h1")
    assert (h1.state, h1.resolved_by) == (pb.Transfer.STATE_PENDING_VOIDED, "transfers/v1")
    refused_item(funded, post_hold("p1", "h1"), "PENDING_TRANSFER_ALREADY_VOIDED")


def test_a_hold_posted_twice_is_refused_the_second_time(funded):
    post_ok(funded, hold("h1", "alice", "shop", 3_000))
    post_ok(funded, post_hold("p1", "h1"))
    assert balance(funded, "alice") == 7_000
    refused_item(funded, post_hold("p2", "h1"), "PENDING_TRANSFER_ALREADY_POSTED")
    refused_item(funded, void("v1", "h1"), "PENDING_TRANSFER_ALREADY_POSTED")
    assert get_transfer(funded, "h1").resolved_by == "transfers/p1"


def test_a_hold_past_its_timeout_cannot_be_posted_but_one_just_before_it_can(funded, clock):
    post_ok(funded, hold("h1", "alice", "shop", 1_000, timeout_seconds=60),
            hold("h2", "alice", "shop", 1_000, timeout_seconds=60))
    for h in (get_transfer(funded, "h1"), get_transfer(funded, "h2")):  # about a minute on
        assert 59 * 10**9 < ns_of(h.expire_time) - ns_of(h.record_time) <= 60 * 10**9
    clock.advance(59)
    post_ok(funded, post_hold("p1", "h1"))
    clock.advance(2)
    refused_item(funded, post_hold("p2", "h2"), "PENDING_TRANSFER_EXPIRED")
    refused_item(funded, void("v2", "h2"), "PENDING_TRANSFER_EXPIRED")
    assert balance(funded, "alice") == 9_000


# -- linked groups and batches --------------------------------------------------------------------
def test_a_linked_group_whose_third_transfer_overdraws_applies_none_of_it(funded):
    group = [transfer("g1", "cash", "alice", 100, linked=True),
             transfer("g2", "alice", "shop", 5_000, linked=True),
             transfer("g3", "alice", "shop", 6_000)]  # 10,100 - 5,000 < 6,000
    before = snapshot(funded)
    results = post(funded, *group).results
    assert [outcome(r) for r in results] == [
        (FAILED_PRECONDITION, "LINKED_TRANSFER_FAILED"),
        (FAILED_PRECONDITION, "LINKED_TRANSFER_FAILED"),
        (FAILED_PRECONDITION, "EXCEEDS_CREDITS")]
    assert [r.position for r in results] == [0, 0, 0]
    assert_unchanged(funded, before)
    for transfer_id in ("g1", "g2", "g3"):
        missing = refused(lambda t=transfer_id: get_transfer(funded, t))
        assert missing.code() is grpc.StatusCode.NOT_FOUND


def test_a_failed_linked_group_leaves_no_gap_for_the_transfers_after_it(funded):
    last = feed_now(funded, wait_s=10)[-1]
    results = post(funded, transfer("g1", "cash", "alice", 100, linked=True),
                   transfer("g2", "alice", "shop", 99_999),
                   transfer("solo", "cash", "shop", 50)).results
    assert [outcome(r)[1] for r in results] == ["LINKED_TRANSFER_FAILED", "EXCEEDS_CREDITS", ""]
    assert results[2].position == last + 1
    assert feed_now(funded, after=last, wait_s=10) == [last + 1]
    assert (balance(funded, "alice"), balance(funded, "shop")) == (10_000, 50)


def test_a_batch_gives_one_result_per_transfer_in_order_with_dense_positions(funded):
    open_accounts(funded, account("eur-cash", "ASSET", owner=("BANK", "bank"), currency="EUR"))
    eur_to_gbp_account = pb.TransferInput(transfer_id="e", kind=pb.TRANSFER_KIND_POSTED,
                                          postings=[posting("eur-cash", "D", 100, "EUR"),
                                                    posting("shop", "C", 100, "EUR")])
    last = feed_now(funded, wait_s=10)[-1]
    results = post(funded, transfer("a", "cash", "shop", 1),
                   transfer("b", "alice", "shop", 1_000_000),
                   transfer("c", "cash", "nobody", 1),
                   eur_to_gbp_account,
                   transfer("d", "cash", "shop", 2)).results
    assert [(r.name, *outcome(r), r.position) for r in results] == [
        ("transfers/a", OK, "", last + 1),
        ("transfers/b", FAILED_PRECONDITION, "EXCEEDS_CREDITS", 0),
        ("transfers/c", NOT_FOUND, "ACCOUNT_NOT_FOUND", 0),
        ("transfers/e", FAILED_PRECONDITION, "CURRENCY_MISMATCH", 0),
        ("transfers/d", OK, "", last + 2)]
    assert feed_now(funded, after=last, wait_s=10) == [last + 1, last + 2]
    assert balance(funded, "shop") == 3


# -- reversals ------------------------------------------------------------------------------------
def test_a_reversal_posts_the_mirror_image_and_a_second_one_is_refused(funded):
    post_ok(funded, transfer("t1", "alice", "shop", 700))
    post_ok(funded, reverse("r1", "t1"))
    t1, r1 = get_transfer(funded, "t1"), get_transfer(funded, "r1")
    assert (r1.kind, r1.reverses_transfer, t1.reversed_by) == (
        pb.TRANSFER_KIND_REVERSAL, "transfers/t1", "transfers/r1")
    flip = {pb.SIDE_DEBIT: pb.SIDE_CREDIT, pb.SIDE_CREDIT: pb.SIDE_DEBIT}
    assert sorted((p.account, p.side, minor(p.amount)) for p in r1.postings) == sorted(
        (p.account, flip[p.side], minor(p.amount)) for p in t1.postings)
    assert (balance(funded, "alice"), balance(funded, "shop")) == (10_000, 0)
    refused_item(funded, reverse("r2", "t1"), "TRANSFER_ALREADY_REVERSED")
    # A transfer and its reversal in one request: the reversal sees the transfer.
    post_ok(funded, transfer("t5", "alice", "shop", 500), reverse("r5", "t5"))
    assert (balance(funded, "alice"), balance(funded, "shop")) == (10_000, 0)
    assert get_transfer(funded, "t5").reversed_by == "transfers/r5"
    post_ok(funded, hold("h1", "alice", "shop", 100))
    refused_item(funded, reverse("r3", "h1"), "TRANSFER_NOT_REVERSIBLE")
    refused_item(funded, reverse("r4", "nope"), "TRANSFER_NOT_FOUND", NOT_FOUND)


# -- idempotency ----------------------------------------------------------------------------------
def test_the_same_transfer_again_in_a_new_request_succeeds_and_records_nothing(funded):
    first = post_ok(funded, transfer("t1", "alice", "shop", 250, description="rent",
                                     metadata={"ref": "42"})).results[0]
    before = snapshot(funded)
    again = post(funded, transfer("t1", "alice", "shop", 250, description="rent",
                                  metadata={"ref": "42"})).results[0]
    assert (again.name, again.status.code, again.position) == ("transfers/t1", OK,
                                                               first.position)
    assert_unchanged(funded, before)
    assert balance(funded, "shop") == 250
    # Twice in one request: recorded once, both items answer with its position.
    twice = post(funded, transfer("t2", "alice", "shop", 5), transfer("t2", "alice", "shop", 5))
    assert [(r.status.code, r.position) for r in twice.results] == [
        (OK, first.position + 1), (OK, first.position + 1)]
    assert feed_now(funded, after=first.position, wait_s=10) == [
        first.position + 1]
    assert balance(funded, "shop") == 255


def test_the_same_transfer_id_with_other_content_is_transfer_id_reused(funded):
    post_ok(funded, transfer("t1", "alice", "shop", 250, description="rent"))
    for other in (transfer("t1", "alice", "shop", 251, description="rent"),
                  transfer("t1", "alice", "shop", 250, description="Rent"),
                  transfer("t1", "alice", "cash", 250, description="rent"),
                  transfer("t1", "alice", "shop", 250, description="rent", metadata={"a": "b"}),
                  hold("t1", "alice", "shop", 250, description="rent")):
        refused_item(funded, other, "TRANSFER_ID_REUSED", ALREADY_EXISTS)


def test_a_late_retry_of_a_request_refused_for_insufficient_funds_stays_refused(funded):
    open_cash_and_bob = account("bob", no_overdraft=True)
    open_accounts(funded, open_cash_and_bob)
    rid = request_id()
    first = post(funded, transfer("t1", "bob", "shop", 500), rid=rid)
    assert outcome(first.results[0]) == (FAILED_PRECONDITION, "EXCEEDS_CREDITS")
    fund(funded, "bob", 1_000)
    before = snapshot(funded)
    retry = post(funded, transfer("t1", "bob", "shop", 500), rid=rid)
    assert retry == first
    assert_unchanged(funded, before)
    assert balance(funded, "bob") == 1_000
    # The transfer itself was never recorded, so a new request may make it now.
    post_ok(funded, transfer("t1", "bob", "shop", 500))
    assert balance(funded, "bob") == 500
    # The request id itself stays bound to its first content.
    before = snapshot(funded)
    error = refused(lambda: post(funded, transfer("t2", "bob", "shop", 1), rid=rid))
    assert error.code() is grpc.StatusCode.ALREADY_EXISTS
    assert error_info(error).reason == "REQUEST_ID_REUSED"
    assert_unchanged(funded, before)


# -- validation at the edge -----------------------------------------------------------------------
def _with_amount(units, nanos=0, currency="GBP", both=True):
    t = transfer("bad", "cash", "shop", 100)
    for p in t.postings if both else t.postings[:1]:
        p.amount.currency_code, p.amount.units, p.amount.nanos = currency, units, nanos
    return t


def _edited(**changes):
    t = transfer("bad", "cash", "shop", 100, kind=changes.pop("kind", "POSTED"))
    for name, value in changes.items():
        if name == "effective_date":
            t.effective_date.CopyFrom(value)
        elif name == "metadata":
            t.metadata.update(value)
        elif name == "postings":
            del t.postings[:]
            t.postings.extend(value)
        else:
            setattr(t, name, value)
    return t


INVALID = [
    ("unbalanced", _edited(postings=[posting("cash", "D", 100), posting("shop", "C", 90)]),
     ["postings"]),
    # Too few postings, and so also unbalanced: both reported on the same field.
    ("one posting", _edited(postings=[posting("cash", "D", 100)]), ["postings", "postings"]),
    ("unknown currency", _with_amount(1, currency="XYZ", both=False),
     ["postings[0].amount.currency_code"]),
    ("mixed signs", _with_amount(1, -500_000_000, both=False), ["postings[0].amount.nanos"]),
    ("finer than a penny", _with_amount(1, 1, both=False), ["postings[0].amount.nanos"]),
    ("negative amount", _with_amount(-1), ["postings[0].amount", "postings[1].amount"]),
    ("zero amount", _with_amount(0), ["postings[0].amount", "postings[1].amount"]),
    ("over 10^15 minor units", _with_amount(10**13, 10_000_000),
     ["postings[0].amount", "postings[1].amount"]),
    ("negative timeout", _edited(kind="PENDING", timeout_seconds=-1), ["timeout_seconds"]),
    ("timeout over 90 days", _edited(kind="PENDING", timeout_seconds=7_776_001),
     ["timeout_seconds"]),
    ("timeout on a posted transfer", _edited(timeout_seconds=5), ["timeout_seconds"]),
    ("17 metadata keys", _edited(metadata={f"k{i}": "v" for i in range(17)}), ["metadata"]),
    ("257-character description", _edited(description="x" * 257), ["description"]),
    ("control character in the description", _edited(description="a\nb"), ["description"]),
    ("month 13", _edited(effective_date=date_pb2.Date(year=2026, month=13, day=1)),
     ["effective_date"]),
    ("more than 366 days ahead", _edited(effective_date=date_pb2.Date(year=2027, month=1, day=3)),
     ["effective_date"]),
    ("more than 3,660 days back",
     _edited(effective_date=date_pb2.Date(year=2015, month=12, day=24)), ["effective_date"]),
    ("no kind", _edited(kind="UNSPECIFIED"), ["kind"]),
    ("malformed transfer id", _edited(transfer_id="has space"), ["transfer_id"]),
    ("malformed account", _edited(postings=[pb.Posting(account="cash", side=pb.SIDE_DEBIT,
                                                       amount=gbp(1)),
                                            posting("shop", "C", 1)]),
     ["postings[0].account"]),
    ("debit and credit of one account", _edited(postings=[
        posting("shop", "D", 2), posting("cash", "C", 1), posting("shop", "C", 1)]),
     ["postings[2].account"]),
]


def test_each_malformed_transfer_is_invalid_argument_naming_the_precise_field(funded):
    before = snapshot(funded)
    for name, bad, fields in INVALID:
        good = transfer("good", "cash", "shop", 100)
        error = refused(lambda b=bad, g=good: post(funded, g, b))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, name
        assert field_violations(error) == [f"transfers[1].{f}" for f in fields], name
        assert error_info(error).domain == "peoplesbank.coop", name
    for request, fields in (
            (pb.CreateTransfersRequest(request_id=request_id()), ["transfers"]),
            (pb.CreateTransfersRequest(transfers=[transfer("t", "cash", "shop", 1)]),
             ["request_id"])):
        error = refused(lambda r=request: funded.CreateTransfers(r))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(error) == fields
    # Rules across a transfer or the request: the references a kind needs, and links.
    missing_hold = pb.TransferInput(transfer_id="p1", kind=pb.TRANSFER_KIND_POST_PENDING)
    missing_original = pb.TransferInput(transfer_id="r1", kind=pb.TRANSFER_KIND_REVERSAL)
    error = refused(lambda: post(funded, missing_hold, missing_original))
    assert field_violations(error) == ["transfers[0].pending_transfer",
                                       "transfers[1].reverses_transfer"]
    error = refused(lambda: post(funded, transfer("t1", "cash", "shop", 1, linked=True)))
    assert field_violations(error) == ["transfers[0].linked"]
    assert_unchanged(funded, before)


def test_the_largest_allowed_values_are_accepted(funded):
    post_ok(funded, _edited(transfer_id="x" * 64, description="d" * 256,
                            metadata={f"k{i}": "v" for i in range(16)}),
            _edited(transfer_id="h", kind="PENDING", timeout_seconds=7_776_000),
            _edited(transfer_id="back", effective_date=date_pb2.Date(year=2015, month=12,
                                                                     day=25)),
            _edited(transfer_id="ahead", effective_date=date_pb2.Date(year=2027, month=1,
                                                                      day=2)))
    dates = [get_transfer(funded, t).effective_date for t in ("h", "back", "ahead")]
    assert [(d.year, d.month, d.day) for d in dates] == [  # the clock's business date: 2026-01-01
        (2026, 1, 1), (2015, 12, 25), (2027, 1, 2)]
    # 10^15 minor units is valid; an amount that large waits for a second approver.
    big = post(funded, _edited(transfer_id="big", postings=[posting("cash", "D", 10**15),
                                                            posting("shop", "C", 10**15)]))
    assert outcome(big.results[0]) == (FAILED_PRECONDITION, "APPROVAL_REQUIRED")
    assert big.approval.startswith("approvals/")


def test_a_batch_of_8001_transfers_is_resource_exhausted(funded):
    before = snapshot(funded)
    batch = [transfer(f"t{i}", "cash", "shop", 1) for i in range(8_001)]
    error = refused(lambda: post(funded, *batch))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "transfers" in field_violations(error)
    assert_unchanged(funded, before)
