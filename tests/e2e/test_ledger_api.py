"""The ledger through a real gRPC server: the happy path and the basic refusals."""

from __future__ import annotations

import grpc
import pytest

from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from tests.helpers import account, error_info, field_violations, item_reason, request_id, transfer


def _open(ledger, *accounts):
    response = ledger.CreateAccounts(pb.CreateAccountsRequest(request_id=request_id(),
                                                              accounts=list(accounts)))
    assert [r.status.code for r in response.results] == [0] * len(accounts)


def test_a_deposit_moves_money_and_shows_on_the_statement(ledger):
    _open(ledger, account("cash", "ASSET", owner=("BANK", "bank")),
          account("alice", no_overdraft=True))
    response = ledger.CreateTransfers(pb.CreateTransfersRequest(
        request_id=request_id(), transfers=[transfer("t1", "cash", "alice", 12_345)]))
    assert response.results[0].status.code == 0
    assert response.results[0].position == 1
    alice = ledger.GetAccount(pb.GetAccountRequest(name="accounts/alice"))
    assert (alice.balance.units, alice.balance.nanos) == (123, 450_000_000)
    page = ledger.ListAccountEntries(pb.ListAccountEntriesRequest(account="accounts/alice"))
    assert [e.transfer for e in page.entries] == ["transfers/t1"]
    assert page.entries[0].balance_after.units == 123


def test_an_overdraft_is_refused_per_item_and_changes_nothing(ledger):
    _open(ledger, account("cash", "ASSET", owner=("BANK", "bank")),
          account("bob", no_overdraft=True))
    before = ledger.GetAccount(pb.GetAccountRequest(name="accounts/bob"))
    response = ledger.CreateTransfers(pb.CreateTransfersRequest(
        request_id=request_id(), transfers=[transfer("t1", "bob", "cash", 1)]))
    assert response.results[0].status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert item_reason(response.results[0].status) == "EXCEEDS_CREDITS"
    assert ledger.GetAccount(pb.GetAccountRequest(name="accounts/bob")) == before


def test_a_malformed_amount_is_invalid_argument_naming_the_field(ledger):
    _open(ledger, account("cash", "ASSET", owner=("BANK", "bank")), account("carol"))
    bad = transfer("t1", "cash", "carol", 100)
    bad.postings[0].amount.nanos = 1  # finer than a penny
    with pytest.raises(grpc.RpcError) as caught:
        ledger.CreateTransfers(pb.CreateTransfersRequest(request_id=request_id(),
                                                         transfers=[bad]))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "transfers[0].postings[0].amount.nanos" in field_violations(caught.value)
    trial = ledger.GetTrialBalance(pb.GetTrialBalanceRequest())
    assert all(t.debits_posted.units == 0 for t in trial.totals)


def test_a_replayed_request_returns_the_original_and_a_changed_one_is_refused(ledger):
    _open(ledger, account("cash", "ASSET", owner=("BANK", "bank")), account("dan"))
    rid = request_id()
    first = ledger.CreateTransfers(pb.CreateTransfersRequest(
        request_id=rid, transfers=[transfer("t1", "cash", "dan", 500)]))
    again = ledger.CreateTransfers(pb.CreateTransfersRequest(
        request_id=rid, transfers=[transfer("t1", "cash", "dan", 500)]))
    assert again == first
    dan = ledger.GetAccount(pb.GetAccountRequest(name="accounts/dan"))
    assert dan.balance.units == 5
    with pytest.raises(grpc.RpcError) as caught:
        ledger.CreateTransfers(pb.CreateTransfersRequest(
            request_id=rid, transfers=[transfer("t1", "cash", "dan", 600)]))
    assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert error_info(caught.value).reason == "REQUEST_ID_REUSED"


def test_a_caller_without_identity_is_unauthenticated(channel):
    stub = __import__("services.generated.peoplesbank.ledger.v1.ledger_service_pb2_grpc",
                      fromlist=["x"]).LedgerServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetTrialBalance(pb.GetTrialBalanceRequest(), timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_another_principal_cannot_replay_someone_elses_request_id(ledger, as_role):
    _open(ledger, account("cash", "ASSET", owner=("BANK", "bank")), account("fay"))
    rid = request_id()
    request = pb.CreateTransfersRequest(request_id=rid,
                                        transfers=[transfer("t1", "cash", "fay", 500)])
    ledger.CreateTransfers(request)
    with pytest.raises(grpc.RpcError) as caught:
        as_role("teller", "branch:lancaster").CreateTransfers(request)
    assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert error_info(caught.value).reason == "REQUEST_ID_REUSED"
