"""Reads through the real gRPC server: statements, balances as of a time, the trial balance and
the change feed."""

from __future__ import annotations

import queue
import threading

import grpc
import pytest

from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from tests.e2e.support import (
    balance,
    minor,
    ns_of,
    open_accounts,
    open_cash_and,
    post,
    post_ok,
    refused,
    timestamp,
)
from tests.helpers import account, error_info, field_violations, transfer

SECOND = 10**9


def _statement(ledger, account_id="alice", **kwargs):
    return ledger.ListAccountEntries(pb.ListAccountEntriesRequest(
        account=f"accounts/{account_id}", **kwargs))


def _all_lines(ledger, account_id="alice", page_size=2, **kwargs):
    lines, token, pages = [], "", 0
    while True:
        page = _statement(ledger, account_id, page_size=page_size, page_token=token, **kwargs)
        assert len(page.entries) <= page_size
        lines += page.entries
        pages += 1
        token = page.next_page_token
        if not token:
            return lines, pages


def _record_ns(ledger, transfer_id):
    return ns_of(ledger.GetTransfer(pb.GetTransferRequest(
        name=f"transfers/{transfer_id}")).record_time)


def _pending_post(transfer_id, hold_id, pence):
    t = transfer(transfer_id, "alice", "shop", pence)
    return pb.TransferInput(transfer_id=transfer_id, kind=pb.TRANSFER_KIND_POST_PENDING,
                            pending_transfer=f"transfers/{hold_id}", postings=t.postings)


# -- statements -----------------------------------------------------------------------------------
def test_a_statement_paged_by_two_lists_every_posted_line_once_with_its_running_balance(ledger):
    open_cash_and(ledger, "alice", "shop")
    post_ok(ledger, transfer("t1", "cash", "alice", 1_000), transfer("t2", "alice", "shop", 300))
    post_ok(ledger, transfer("other", "cash", "shop", 999))  # not alice's
    post_ok(ledger, transfer("t3", "cash", "alice", 250),
            transfer("h1", "alice", "shop", 200, kind="PENDING"))  # a hold is not a posted line
    post_ok(ledger, _pending_post("p1", "h1", 150), transfer("t4", "alice", "shop", 100))
    post_ok(ledger, transfer("t5", "cash", "alice", 50))

    lines, pages = _all_lines(ledger)
    assert pages == 3
    assert [(e.transfer, e.side, minor(e.amount), minor(e.balance_after)) for e in lines] == [
        ("transfers/t1", pb.SIDE_CREDIT, 1_000, 1_000),
        ("transfers/t2", pb.SIDE_DEBIT, 300, 700),
        ("transfers/t3", pb.SIDE_CREDIT, 250, 950),
        ("transfers/p1", pb.SIDE_DEBIT, 150, 800),
        ("transfers/t4", pb.SIDE_DEBIT, 100, 700),
        ("transfers/t5", pb.SIDE_CREDIT, 50, 750)]
    positions = [e.position for e in lines]
    assert positions == sorted(set(positions))
    assert minor(lines[-1].balance_after) == balance(ledger, "alice") == 750
    assert all(e.amount.currency_code == e.balance_after.currency_code == "GBP" for e in lines)
    everything = _statement(ledger, page_size=0)  # 0 means the default page size
    assert list(everything.entries) == lines and everything.next_page_token == ""


def test_start_and_end_time_select_lines_by_record_time_start_inclusive_end_exclusive(
        ledger, clock):
    open_cash_and(ledger, "alice")
    for n, pence in enumerate((100, 200, 400), start=1):
        post_ok(ledger, transfer(f"t{n}", "cash", "alice", pence))
        clock.advance(10)
    t1, t2, t3 = (_record_ns(ledger, f"t{n}") for n in (1, 2, 3))
    assert t1 < t2 < t3 and t2 - t1 > 9 * SECOND  # the clock moved between them

    def selected(**kwargs):
        lines, _ = _all_lines(ledger, **kwargs)
        return [(e.transfer[len("transfers/"):], minor(e.balance_after)) for e in lines]

    assert selected(start_time=timestamp(t2), end_time=timestamp(t3)) == [("t2", 300)]
    assert selected(start_time=timestamp(t2)) == [("t2", 300), ("t3", 700)]
    assert selected(start_time=timestamp(t2 + 1)) == [("t3", 700)]
    assert selected(end_time=timestamp(t2)) == [("t1", 100)]
    assert selected(start_time=timestamp(t1), end_time=timestamp(t3 + 1)) == [
        ("t1", 100), ("t2", 300), ("t3", 700)]


def test_statement_requests_that_make_no_sense_are_refused(ledger):
    open_cash_and(ledger, "alice")
    for n in range(3):
        post_ok(ledger, transfer(f"t{n}", "cash", "alice", 100))
    now = _record_ns(ledger, "t0")
    for start, end in ((now, now - 1), (now, now)):
        error = refused(lambda s=start, e=end: _statement(
            ledger, start_time=timestamp(s), end_time=timestamp(e)))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(error) == ["end_time"]
    error = refused(lambda: _statement(ledger, page_size=-1))
    assert (error.code(), field_violations(error)) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                       ["page_size"])
    token = _statement(ledger, page_size=1).next_page_token
    error = refused(lambda: _statement(ledger, page_size=1, page_token=token,
                                       start_time=timestamp(now)))
    assert (error.code(), field_violations(error)) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                       ["page_token"])
    error = refused(lambda: _statement(ledger, "nobody"))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert error_info(error).reason == "ACCOUNT_NOT_FOUND"


# -- balances as of a time ------------------------------------------------------------------------
def _balance(ledger, account_id="alice", as_of_ns=None):
    request = pb.GetAccountBalanceRequest(account=f"accounts/{account_id}")
    if as_of_ns is not None:
        request.as_of_time.CopyFrom(timestamp(as_of_ns))
    return ledger.GetAccountBalance(request)


def test_the_balance_as_of_a_time_between_two_transfers_is_the_earlier_balance(ledger, clock):
    open_cash_and(ledger, "alice", "shop")
    post_ok(ledger, transfer("t1", "cash", "alice", 1_000))
    clock.advance(10)
    post_ok(ledger, transfer("t2", "alice", "shop", 400),
            transfer("h1", "alice", "shop", 100, kind="PENDING"))
    clock.advance(10)
    t1, t2 = _record_ns(ledger, "t1"), _record_ns(ledger, "t2")

    between = _balance(ledger, as_of_ns=t1 + 5 * SECOND)
    assert (minor(between.balance), minor(between.debits_pending),
            minor(between.available_balance)) == (1_000, 0, 1_000)
    assert ns_of(between.as_of_time) == t1 + 5 * SECOND
    assert minor(_balance(ledger, as_of_ns=t1 - 1).balance) == 0
    assert minor(_balance(ledger, as_of_ns=t1).balance) == 1_000  # at the instant: included
    at_t2 = _balance(ledger, as_of_ns=_record_ns(ledger, "h1"))
    assert (minor(at_t2.balance), minor(at_t2.available_balance)) == (600, 500)
    now = _balance(ledger)
    assert (now.account, minor(now.balance), minor(now.debits_pending)) == (
        "accounts/alice", 600, 100)
    assert ns_of(now.as_of_time) == clock.now_ns()
    assert t2 > t1


def test_a_balance_as_of_the_future_or_before_2000_is_invalid_argument(ledger, clock):
    open_cash_and(ledger, "alice")
    for as_of in (clock.now_ns() + SECOND, 0, -5 * SECOND):
        error = refused(lambda a=as_of: _balance(ledger, as_of_ns=a))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, as_of
        assert field_violations(error) == ["as_of_time"], as_of
    assert minor(_balance(ledger, as_of_ns=clock.now_ns()).balance) == 0
    error = refused(lambda: _balance(ledger, "nobody"))
    assert error.code() is grpc.StatusCode.NOT_FOUND


# -- trial balance --------------------------------------------------------------------------------
def _eur(transfer_id, debit, credit, cents, **kwargs):
    t = transfer(transfer_id, debit, credit, cents, **kwargs)
    for p in t.postings:
        p.amount.currency_code = "EUR"
    return t


def test_the_trial_balance_has_equal_debits_and_credits_per_currency(ledger):
    open_accounts(ledger, account("cash", "ASSET", owner=("BANK", "bank")),
                  account("alice"), account("fees", "INCOME", owner=("BANK", "bank")),
                  account("eur-cash", "ASSET", owner=("BANK", "bank"), currency="EUR"),
                  account("eur-alice", currency="EUR"),
                  account("eur-costs", "EXPENSE", owner=("BANK", "bank"), currency="EUR"))
    post_ok(ledger, transfer("g1", "cash", "alice", 10_000), transfer("g2", "alice", "fees", 150),
            _eur("e1", "eur-cash", "eur-alice", 7_000), _eur("e2", "eur-costs", "eur-cash", 25),
            transfer("hold", "alice", "fees", 999, kind="PENDING"))  # holds are not posted
    tb = ledger.GetTrialBalance(pb.GetTrialBalanceRequest())
    rows = {(r.currency_code, r.type): (minor(r.debits_posted), minor(r.credits_posted))
            for r in tb.rows}
    assert rows == {
        ("EUR", pb.ACCOUNT_TYPE_ASSET): (7_000, 25),
        ("EUR", pb.ACCOUNT_TYPE_LIABILITY): (0, 7_000),
        ("EUR", pb.ACCOUNT_TYPE_EXPENSE): (25, 0),
        ("GBP", pb.ACCOUNT_TYPE_ASSET): (10_000, 0),
        ("GBP", pb.ACCOUNT_TYPE_LIABILITY): (150, 10_000),
        ("GBP", pb.ACCOUNT_TYPE_INCOME): (0, 150)}
    totals = [(t.currency_code, minor(t.debits_posted), minor(t.credits_posted),
               t.debits_posted.currency_code) for t in tb.totals]
    assert totals == [("EUR", 7_025, 7_025, "EUR"), ("GBP", 10_150, 10_150, "GBP")]


# -- the change feed ------------------------------------------------------------------------------
class Watcher:
    """Reads a WatchEntries stream in a thread, handing each message to the test."""

    def __init__(self, ledger, after=0, page_size=0, timeout=20):
        self.page_size = page_size
        self.call = ledger.WatchEntries(pb.WatchEntriesRequest(after_position=after,
                                                               page_size=page_size),
                                        timeout=timeout)
        self.messages: queue.Queue = queue.Queue()
        self.error: grpc.RpcError | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for message in self.call:
                self.messages.put(message)
        except grpc.RpcError as error:
            self.error = error
        finally:
            self.messages.put(None)

    def positions_until(self, last, timeout=10.0):
        """Positions (with transfer names) received until `last` has been seen."""
        seen = []
        while not seen or seen[-1][0] < last:
            message = self.messages.get(timeout=timeout)
            assert message is not None, f"the stream ended early: {self.error}"
            assert message.last_position == message.transfers[-1].position
            assert len(message.transfers) <= (self.page_size or 500)
            seen += [(t.position, t.name) for t in message.transfers]
        return seen

    def stop(self):
        self.call.cancel()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()
        assert self.error is not None and self.error.code() is grpc.StatusCode.CANCELLED


def test_the_change_feed_delivers_every_transfer_once_in_order_and_resumes_after_a_position(
        ledger):
    open_cash_and(ledger, "alice", "shop")
    post_ok(ledger, transfer("t1", "cash", "alice", 500), transfer("t2", "cash", "shop", 500))
    watcher = Watcher(ledger, after=0)
    try:
        assert watcher.positions_until(2) == [(1, "transfers/t1"), (2, "transfers/t2")]
        # Transfers recorded while the stream waits arrive live; refused ones never appear.
        post_ok(ledger, transfer("t3", "alice", "shop", 100))
        post(ledger, transfer("bad", "alice", "shop", 10**6),
             transfer("t4", "shop", "alice", 50), transfer("t5", "cash", "alice", 1))
        post(ledger, transfer("g1", "cash", "alice", 1, linked=True),
             transfer("g2", "alice", "shop", 10**6))
        post_ok(ledger, transfer("t6", "cash", "shop", 7), transfer("t7", "cash", "shop", 8))
        live = watcher.positions_until(6)
    finally:
        watcher.stop()
    assert live == [(3, "transfers/t3"), (4, "transfers/t4"), (5, "transfers/t5"),
                    (6, "transfers/t6"), (7, "transfers/t7")][:len(live)]
    assert [p for p, _ in live] == list(range(3, 3 + len(live)))

    for k in (0, 2, 5, 6):
        resumed = Watcher(ledger, after=k, page_size=2)
        try:
            assert [p for p, _ in resumed.positions_until(7)] == list(range(k + 1, 8))
        finally:
            resumed.stop()


def test_a_watch_with_a_deadline_ends_with_deadline_exceeded_after_what_exists(ledger):
    open_cash_and(ledger, "alice")
    post_ok(ledger, transfer("t1", "cash", "alice", 500))
    call = ledger.WatchEntries(pb.WatchEntriesRequest(), timeout=1.0)
    received = []
    with pytest.raises(grpc.RpcError) as caught:
        for message in call:
            received += [t.position for t in message.transfers]
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert received == [1]


def test_a_watch_with_a_bad_page_size_or_position_is_invalid_argument(ledger):
    for request, field in ((pb.WatchEntriesRequest(page_size=1_001), "page_size"),
                           (pb.WatchEntriesRequest(page_size=-1), "page_size"),
                           (pb.WatchEntriesRequest(after_position=-1), "after_position")):
        error = refused(lambda r=request: list(ledger.WatchEntries(r, timeout=5)))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, request
        assert field_violations(error) == [field], request
