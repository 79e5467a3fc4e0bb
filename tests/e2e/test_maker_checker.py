"""Maker-checker: large transfers wait for a second, different approver; approval runs the
command exactly as made, once; rejection and expiry stop it for good."""

from __future__ import annotations

import threading

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from bank.app.approvals import approve
from bank.app.transfers import create_transfers
from bank.domain.accounts import Side
from bank.domain.entries import PostingLine, TransferKind, TransferSpec
from bank.domain.errors import PermissionDenied
from bank.domain.identity import Principal, Role
from services.generated.peoplesbank.approvals.v1 import approval_service_pb2 as apb
from services.generated.peoplesbank.approvals.v1 import approval_service_pb2_grpc as apb_grpc
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from tests.helpers import account, error_info, item_reason, request_id, transfer

LARGE = 15_000_000  # 150,000.00 GBP: over the 100,000.00 approval threshold


def _approvals(channel, principal):
    stub = apb_grpc.ApprovalServiceStub(channel)

    class Caller:
        def __getattr__(self, name):
            return lambda req: getattr(stub, name)(
                req, timeout=10, metadata=[("x-bank-principal", principal)])
    return Caller()


@pytest.fixture
def funded(ledger):
    ledger.CreateAccounts(pb.CreateAccountsRequest(request_id=request_id(), accounts=[
        account("cash", "ASSET", owner=("BANK", "bank")), account("coop", no_overdraft=True)]))


def _large(ledger, transfer_id="big-1"):
    return ledger.CreateTransfers(pb.CreateTransfersRequest(
        request_id=request_id(), transfers=[transfer(transfer_id, "cash", "coop", LARGE)]))


def _balance(ledger, name="coop"):
    return ledger.GetAccount(pb.GetAccountRequest(name=f"accounts/{name}")).balance.units


def test_a_large_transfer_waits_for_approval_and_moves_nothing(ledger, funded):
    response = _large(ledger)
    assert response.approval.startswith("approvals/apr-")
    assert [item_reason(r.status) for r in response.results] == ["APPROVAL_REQUIRED"]
    assert _balance(ledger) == 0
    with pytest.raises(grpc.RpcError) as caught:
        ledger.GetTransfer(pb.GetTransferRequest(name="transfers/big-1"))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def test_a_second_approver_runs_it_exactly_as_made_and_only_once(ledger, funded, channel):
    name = _large(ledger).approval
    checker = _approvals(channel, "amy;approver;branch:preston")
    rid = request_id()
    approved = checker.ApproveOperation(apb.ApproveOperationRequest(request_id=rid, name=name))
    assert approved.state == apb.Approval.STATE_EXECUTED
    assert approved.checker.subject == "amy"
    assert [r.status.code for r in approved.transfers_result.results] == [0]
    assert _balance(ledger) == LARGE // 100
    executed = ledger.GetTransfer(pb.GetTransferRequest(name="transfers/big-1"))
    assert [(p.account, p.amount.units) for p in executed.postings] == [
        ("accounts/cash", LARGE // 100), ("accounts/coop", LARGE // 100)]
    replay = checker.ApproveOperation(apb.ApproveOperationRequest(request_id=rid, name=name))
    assert replay.state == apb.Approval.STATE_EXECUTED
    with pytest.raises(grpc.RpcError) as caught:
        _approvals(channel, "abe;approver").ApproveOperation(
            apb.ApproveOperationRequest(request_id=request_id(), name=name))
    assert error_info(caught.value).reason == "APPROVAL_ALREADY_DECIDED"
    assert _balance(ledger) == LARGE // 100


def test_a_rejected_operation_never_runs(ledger, funded, channel):
    name = _large(ledger).approval
    checker = _approvals(channel, "amy;approver")
    rejected = checker.RejectOperation(apb.RejectOperationRequest(
        request_id=request_id(), name=name, note="no board minute"))
    assert rejected.state == apb.Approval.STATE_REJECTED
    assert rejected.note == "no board minute"
    with pytest.raises(grpc.RpcError) as caught:
        checker.ApproveOperation(apb.ApproveOperationRequest(request_id=request_id(), name=name))
    assert error_info(caught.value).reason == "APPROVAL_ALREADY_DECIDED"
    assert _balance(ledger) == 0


def test_an_expired_approval_cannot_be_approved(ledger, funded, channel, clock):
    name = _large(ledger).approval
    clock.advance(24 * 3600 + 1)
    checker = _approvals(channel, "amy;approver")
    assert checker.GetApproval(apb.GetApprovalRequest(name=name)).state == \
        apb.Approval.STATE_EXPIRED
    with pytest.raises(grpc.RpcError) as caught:
        checker.ApproveOperation(apb.ApproveOperationRequest(request_id=request_id(), name=name))
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(caught.value).reason == "APPROVAL_EXPIRED"
    assert _balance(ledger) == 0


def test_the_maker_cannot_approve_their_own_operation(uow, clock, ledger, funded):
    maker = Principal("amy", Role.APPROVER, "branch:preston")
    spec = TransferSpec("self-1", TransferKind.POSTED, (
        PostingLine("cash", Side.DEBIT, LARGE, "GBP"), PostingLine("coop", Side.CREDIT, LARGE,
                                                                   "GBP")))
    made = create_transfers(uow, clock, maker, request_id(), [spec])
    assert made.approval_id
    with pytest.raises(PermissionDenied) as caught:
        approve(uow, clock, maker, request_id(), made.approval_id)
    assert caught.value.reason == "SELF_APPROVAL"
    assert _balance(ledger) == 0


def test_a_stored_command_cannot_be_changed_before_approval(engine, ledger, funded):
    name = _large(ledger).approval
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.execute(text("UPDATE approvals SET payload_json = '{}' WHERE approval_id = :a"),
                     {"a": name.removeprefix("approvals/")})


def test_two_approvers_racing_run_the_command_once(ledger, funded, channel):
    name = _large(ledger).approval
    outcomes: list[str] = []

    def race(principal: str) -> None:
        try:
            _approvals(channel, principal).ApproveOperation(
                apb.ApproveOperationRequest(request_id=request_id(), name=name))
            outcomes.append("ok")
        except grpc.RpcError as error:
            outcomes.append(error_info(error).reason)

    threads = [threading.Thread(target=race, args=(p,)) for p in ("amy;approver", "abe;approver")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["APPROVAL_ALREADY_DECIDED", "ok"]
    assert _balance(ledger) == LARGE // 100


def test_splitting_a_large_amount_over_postings_or_transfers_still_needs_approval(ledger,
                                                                               funded):
    half = LARGE // 2 + 1
    split = pb.CreateTransfersRequest(request_id=request_id(), transfers=[
        transfer("half-1", "cash", "coop", half), transfer("half-2", "cash", "coop", half)])
    assert ledger.CreateTransfers(split).approval.startswith("approvals/")
    assert _balance(ledger) == 0


def test_currencies_without_an_explicit_threshold_are_not_exempt(ledger):
    ledger.CreateAccounts(pb.CreateAccountsRequest(request_id=request_id(), accounts=[
        account("usd-cash", "ASSET", owner=("BANK", "bank"), currency="USD"),
        account("usd-coop", currency="USD")]))
    big = transfer("usd-1", "usd-cash", "usd-coop", LARGE)
    for posting in big.postings:
        posting.amount.currency_code = "USD"
    response = ledger.CreateTransfers(pb.CreateTransfersRequest(request_id=request_id(),
                                                                transfers=[big]))
    assert response.approval.startswith("approvals/")
