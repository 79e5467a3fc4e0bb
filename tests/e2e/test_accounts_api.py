"""Accounts through the real gRPC server: opening in batches, reading, listing, closing."""

from __future__ import annotations

import base64
import json

import grpc

from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from tests.e2e.support import (
    OK,
    all_accounts,
    assert_unchanged,
    code,
    fund,
    get,
    minor,
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


def _create(ledger, *accounts, rid=None):
    return ledger.CreateAccounts(pb.CreateAccountsRequest(request_id=rid or request_id(),
                                                          accounts=list(accounts)))


def _close(ledger, account_id, rid=None):
    return ledger.CloseAccount(pb.CloseAccountRequest(request_id=rid or request_id(),
                                                      name=f"accounts/{account_id}"))


# -- CreateAccounts -------------------------------------------------------------------------------
def test_a_batch_opens_new_accounts_and_counts_an_identical_existing_one_as_success(ledger):
    open_accounts(ledger, account("alice"))
    before = get(ledger, "alice")
    response = _create(ledger, account("alice"), account("bob", "ASSET", owner=("BANK", "bank")))
    assert [(r.name, r.status.code) for r in response.results] == [
        ("accounts/alice", OK), ("accounts/bob", OK)]
    assert get(ledger, "alice") == before  # not re-created: same create_time, same everything
    bob = get(ledger, "bob")
    assert (bob.name, bob.type, bob.owner_kind, bob.owner_id, bob.state) == (
        "accounts/bob", pb.ACCOUNT_TYPE_ASSET, pb.OWNER_KIND_BANK, "bank", pb.Account.STATE_OPEN)
    assert minor(bob.balance) == minor(bob.available_balance) == 0
    assert bob.balance.currency_code == "GBP"
    assert bob.create_time.seconds > 0


def test_an_existing_id_with_a_different_definition_fails_only_that_item(ledger):
    open_accounts(ledger, account("alice"))
    before = get(ledger, "alice")
    response = _create(ledger, account("carol"), account("alice", "ASSET"))
    first, second = response.results
    assert (first.name, first.status.code) == ("accounts/carol", OK)
    assert second.name == "accounts/alice"
    assert second.status.code == code(grpc.StatusCode.ALREADY_EXISTS)
    assert item_reason(second.status) == "ACCOUNT_ID_REUSED"
    assert get(ledger, "alice") == before
    assert get(ledger, "carol").type == pb.ACCOUNT_TYPE_LIABILITY
    for change in ({"currency": "EUR"}, {"owner": ("MEMBER", "m-2")}, {"no_overdraft": True},
                   {"type_": "EQUITY"}, {"owner": ("POOL", "m-1")}):
        result = _create(ledger, account("alice", **change)).results[0]
        assert (result.status.code, item_reason(result.status)) == (
            code(grpc.StatusCode.ALREADY_EXISTS), "ACCOUNT_ID_REUSED"), change
    assert get(ledger, "alice") == before


def test_the_same_id_twice_in_one_batch_with_different_definitions_fails_the_second(ledger):
    response = _create(ledger, account("dora"), account("dora", "EXPENSE"))
    assert [(r.status.code, item_reason(r.status)) for r in response.results] == [
        (OK, ""), (code(grpc.StatusCode.ALREADY_EXISTS), "ACCOUNT_ID_REUSED")]
    assert get(ledger, "dora").type == pb.ACCOUNT_TYPE_LIABILITY


def test_a_replayed_create_accounts_returns_the_original_results(ledger):
    rid = request_id()
    first = _create(ledger, account("erin"), rid=rid)
    again = _create(ledger, account("erin"), rid=rid)
    assert again == first
    error = refused(lambda: _create(ledger, account("erin", "ASSET"), rid=rid))
    assert error.code() is grpc.StatusCode.ALREADY_EXISTS
    assert error_info(error).reason == "REQUEST_ID_REUSED"
    assert get(ledger, "erin").type == pb.ACCOUNT_TYPE_LIABILITY


def _refused_create(ledger, *accounts, status=grpc.StatusCode.INVALID_ARGUMENT):
    before = snapshot(ledger)
    error = refused(lambda: _create(ledger, *accounts))
    assert error.code() is status
    assert error_info(error).domain == "peoplesbank.coop"
    assert_unchanged(ledger, before)
    return error


def test_an_unknown_currency_names_its_item_and_opens_none_of_the_batch(ledger):
    error = _refused_create(ledger, account("good"), account("bad", currency="XYZ"))
    assert field_violations(error) == ["accounts[1].currency_code"]
    assert all_accounts(ledger) == []


def _untyped(account_id):
    untyped = account(account_id)
    untyped.type = pb.ACCOUNT_TYPE_UNSPECIFIED
    return untyped


def _with(field, value):
    given = account("gina")
    if isinstance(value, dict):
        getattr(given, field).MergeFrom(pb.Account(balance=value).balance)
    else:
        setattr(given, field, value)
    return given


def test_each_malformed_account_is_invalid_argument_naming_the_field(ledger):
    cases = [(account(bad), "accounts[0].account_id")
             for bad in ("has space", "slash/in", "-leading-dash", "x" * 65, "é", "")]
    cases += [(_untyped("frank"), "accounts[0].type")]
    cases += [(_with(field, value), f"accounts[0].{field}") for field, value in (
        ("balance", gbp(100)), ("available_balance", gbp(1)), ("debits_posted", gbp(1)),
        ("name", "accounts/gina"), ("state", pb.Account.STATE_CLOSED))]
    for given, field in cases:
        error = _refused_create(ledger, given)
        assert field_violations(error) == [field], (given, field)
    # Several at once: all reported, in request order.
    error = _refused_create(ledger, account("h 1"), _untyped("h2"),
                            account("h3", currency="ZZZ"))
    assert field_violations(error) == ["accounts[0].account_id", "accounts[1].type",
                                       "accounts[2].currency_code"]
    for request, fields in ((pb.CreateAccountsRequest(request_id=request_id()), ["accounts"]),
                            (pb.CreateAccountsRequest(accounts=[account("ok")]), ["request_id"])):
        error = refused(lambda r=request: ledger.CreateAccounts(r))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(error) == fields
    assert all_accounts(ledger) == []


def test_a_batch_of_more_than_1000_accounts_is_resource_exhausted_and_1000_is_fine(ledger):
    error = _refused_create(ledger, *(account(f"a{i}") for i in range(1_001)),
                            status=grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "accounts" in field_violations(error)
    response = _create(ledger, *(account(f"a{i:04}") for i in range(1_000)))
    assert {r.status.code for r in response.results} == {OK}
    assert len(all_accounts(ledger)) == 1_000
    default = _list(ledger)  # page_size 0 means 100
    assert len(default.accounts) == 100 and default.next_page_token
    assert default.accounts[-1].account_id == "a0099"
    largest = _list(ledger, page_size=5_000)  # coerced down to 1,000: all of them, no more
    assert len(largest.accounts) == 1_000 and largest.next_page_token == ""


# -- GetAccount -----------------------------------------------------------------------------------
def test_an_unknown_account_is_not_found_with_reason_account_not_found(ledger):
    error = refused(lambda: get(ledger, "nobody"))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    info = error_info(error)
    assert (info.reason, info.domain) == ("ACCOUNT_NOT_FOUND", "peoplesbank.coop")
    assert info.metadata["account_id"] == "nobody"


def test_a_malformed_account_name_is_invalid_argument(ledger):
    for name in ("", "alice", "accounts/", "accounts/a b", "transfers/alice",
                 "accounts/alice/extra"):
        error = refused(lambda n=name: ledger.GetAccount(pb.GetAccountRequest(name=n)))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, name
        assert field_violations(error) == ["name"], name


# -- ListAccounts ---------------------------------------------------------------------------------
FIVE = ["e5", "a1", "d4", "b2", "c3"]


def _list(ledger, **kwargs):
    return ledger.ListAccounts(pb.ListAccountsRequest(**kwargs))


def test_paging_by_two_returns_every_account_exactly_once_in_id_order(ledger):
    open_accounts(ledger, *(account(i) for i in FIVE))
    pages, token = [], ""
    while True:
        page = _list(ledger, page_size=2, page_token=token)
        pages.append([a.account_id for a in page.accounts])
        token = page.next_page_token
        if not token:
            break
    assert pages == [["a1", "b2"], ["c3", "d4"], ["e5"]]
    everything = _list(ledger, page_size=1_000_000)  # coerced down, not refused
    assert len(everything.accounts) == 5 and everything.next_page_token == ""
    exact = _list(ledger, page_size=5)  # an exact fit ends without an empty page to follow
    assert len(exact.accounts) == 5 and exact.next_page_token == ""


def test_filters_select_accounts_and_paging_stays_within_them(ledger):
    open_accounts(ledger, account("m1a", owner=("MEMBER", "m-1")),
                  account("m1b", owner=("MEMBER", "m-1"), currency="EUR"),
                  account("m2a", owner=("MEMBER", "m-2")),
                  account("m1c", owner=("MEMBER", "m-1")),
                  account("bank1", "ASSET", owner=("BANK", "bank")))
    ids = [a.account_id for a in all_accounts(ledger, owner_id="m-1")]
    assert ids == ["m1a", "m1b", "m1c"]
    first = _list(ledger, page_size=1, owner_id="m-1", currency_code="GBP")
    second = _list(ledger, page_size=1, owner_id="m-1", currency_code="GBP",
                   page_token=first.next_page_token)
    assert [a.account_id for a in (*first.accounts, *second.accounts)] == ["m1a", "m1c"]
    assert second.next_page_token == ""
    assert [a.account_id for a in all_accounts(ledger, owner_kind=pb.OWNER_KIND_BANK)] == [
        "bank1"]


def test_a_page_token_reused_with_different_filters_is_invalid_argument(ledger):
    open_accounts(ledger, *(account(i) for i in FIVE))
    first = _list(ledger, page_size=2, currency_code="GBP")
    assert first.next_page_token
    for changed in ({"owner_kind": pb.OWNER_KIND_MEMBER}, {"currency_code": "EUR"}, {},
                    {"currency_code": "GBP", "owner_id": "m-1"}):
        error = refused(lambda c=changed: _list(ledger, page_size=2,
                                                page_token=first.next_page_token, **c))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, changed
        assert field_violations(error) == ["page_token"], changed
    same = _list(ledger, page_size=2, currency_code="GBP", page_token=first.next_page_token)
    assert [a.account_id for a in same.accounts] == ["c3", "d4"]


def _forged(body) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def test_a_negative_page_size_or_a_token_not_issued_by_the_service_is_invalid_argument(ledger):
    open_accounts(ledger, account("a1"))
    error = refused(lambda: _list(ledger, page_size=-1))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == ["page_size"]
    for token in ("garbage!", "bm90IGpzb24", _forged([1, 2]), _forged({"q": "x"}), "A" * 600):
        error = refused(lambda t=token: _list(ledger, page_token=t))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, token
        assert field_violations(error) == ["page_token"], token
    for bad_filter, field in (({"owner_kind": 99}, "owner_kind"),
                              ({"currency_code": "XYZ"}, "currency_code"),
                              ({"owner_id": "has space"}, "owner_id")):
        error = refused(lambda f=bad_filter: _list(ledger, **f))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, bad_filter
        assert field_violations(error) == [field], bad_filter


# -- CloseAccount ---------------------------------------------------------------------------------
def test_closing_an_account_with_money_in_it_is_refused_and_its_replay_stays_refused(ledger):
    open_cash_and(ledger, "alice")
    fund(ledger, "alice", 500)
    before = snapshot(ledger)
    rid = request_id()
    error = refused(lambda: _close(ledger, "alice", rid))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "BALANCE_NOT_ZERO"
    assert_unchanged(ledger, before)

    post_ok(ledger, transfer("withdraw", "alice", "cash", 500))
    assert minor(get(ledger, "alice").balance) == 0
    replay = refused(lambda: _close(ledger, "alice", rid))
    assert replay.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(replay).reason == "BALANCE_NOT_ZERO"
    assert get(ledger, "alice").state == pb.Account.STATE_OPEN


def test_closing_an_account_with_a_pending_hold_is_refused(ledger):
    open_cash_and(ledger, "alice", no_overdraft=False)
    post_ok(ledger, transfer("hold", "alice", "cash", 100, kind="PENDING"))
    assert minor(get(ledger, "alice").balance) == 0
    error = refused(lambda: _close(ledger, "alice"))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "BALANCE_NOT_ZERO"
    assert get(ledger, "alice").state == pb.Account.STATE_OPEN


def test_an_account_at_zero_closes_and_then_refuses_transfers(ledger):
    open_cash_and(ledger, "alice")
    fund(ledger, "alice", 300)
    post_ok(ledger, transfer("withdraw", "alice", "cash", 300))
    rid = request_id()
    closed = _close(ledger, "alice", rid)
    assert (closed.name, closed.state) == ("accounts/alice", pb.Account.STATE_CLOSED)
    assert get(ledger, "alice").state == pb.Account.STATE_CLOSED
    assert _close(ledger, "alice", rid) == closed  # a replay returns the original

    before = snapshot(ledger)
    for t in (transfer("in", "cash", "alice", 100), transfer("out", "alice", "cash", 100)):
        result = post(ledger, t).results[0]
        assert result.status.code == code(grpc.StatusCode.FAILED_PRECONDITION)
        assert item_reason(result.status) == "ACCOUNT_CLOSED"
        assert result.position == 0
    assert_unchanged(ledger, before)

    again = refused(lambda: _close(ledger, "alice"))
    assert again.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(again).reason == "ACCOUNT_ALREADY_CLOSED"

    error = refused(lambda: _close(ledger, "ghost"))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert error_info(error).reason == "ACCOUNT_NOT_FOUND"
    error = refused(lambda: ledger.CloseAccount(pb.CloseAccountRequest(request_id="bad id",
                                                                       name="alice")))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == ["request_id", "name"]
