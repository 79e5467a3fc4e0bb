"""Every RPC against every role: allowed calls get through, the rest are PERMISSION_DENIED,
change nothing but one audit leaf recording the denial; councils stay inside their scope."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from google.type import decimal_pb2
from sqlalchemy import select

from bank.adapters import tables as t
from bank.domain.identity import Role
from services.generated.peoplesbank.approvals.v1 import approval_service_pb2 as apb
from services.generated.peoplesbank.audit.v1 import audit_service_pb2 as aupb
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from services.generated.peoplesbank.lending.v1 import loan_service_pb2 as lpb
from services.generated.peoplesbank.members.v1 import member_service_pb2 as mpb
from services.generated.peoplesbank.pools.v1 import pool_service_pb2 as ppb
from services.policy import APPROVALS, AUDIT, LEDGER, LOANS, MEMBERS, POLICY, POOLS
from tests.e2e.loan_support import application, product_request
from tests.e2e.loan_support import gbp as gbp_money
from tests.e2e.member_support import MemberClient, onboard_request
from tests.e2e.pool_support import APPROVER, day, pools
from tests.helpers import account, error_info, gbp, request_id, transfer

ROLES = [r for r in Role if r is not Role.SYSTEM]

# method -> (request factory, response class)
CALLS: dict[str, tuple[Any, Any]] = {
    LEDGER + "CreateAccounts": (lambda: pb.CreateAccountsRequest(
        request_id=request_id(), accounts=[account("new-acct")]), pb.CreateAccountsResponse),
    LEDGER + "CloseAccount": (lambda: pb.CloseAccountRequest(
        request_id=request_id(), name="accounts/empty"), pb.Account),
    LEDGER + "CreateTransfers": (lambda: pb.CreateTransfersRequest(
        request_id=request_id(), transfers=[transfer(f"t-{request_id()[:8]}", "cash", "m1", 100)]),
        pb.CreateTransfersResponse),
    LEDGER + "GetAccount": (lambda: pb.GetAccountRequest(name="accounts/cp"), pb.Account),
    LEDGER + "ListAccounts": (lambda: pb.ListAccountsRequest(owner_id="council:preston"),
                              pb.ListAccountsResponse),
    LEDGER + "GetTransfer": (lambda: pb.GetTransferRequest(name="transfers/fund-cp"),
                             pb.Transfer),
    LEDGER + "ListAccountEntries": (lambda: pb.ListAccountEntriesRequest(account="accounts/cp"),
                                    pb.ListAccountEntriesResponse),
    LEDGER + "GetAccountBalance": (lambda: pb.GetAccountBalanceRequest(account="accounts/cp"),
                                   pb.AccountBalance),
    LEDGER + "GetTrialBalance": (lambda: pb.GetTrialBalanceRequest(), pb.TrialBalance),
    LEDGER + "WatchEntries": (lambda: pb.WatchEntriesRequest(after_position=0),
                              pb.WatchEntriesResponse),
    APPROVALS + "ListApprovals": (lambda: apb.ListApprovalsRequest(), apb.ListApprovalsResponse),
    APPROVALS + "GetApproval": (lambda: apb.GetApprovalRequest(name="approvals/none"),
                                apb.Approval),
    APPROVALS + "ApproveOperation": (lambda: apb.ApproveOperationRequest(
        request_id=request_id(), name="approvals/none"), apb.Approval),
    APPROVALS + "RejectOperation": (lambda: apb.RejectOperationRequest(
        request_id=request_id(), name="approvals/none"), apb.Approval),
    AUDIT + "GetCheckpoint": (lambda: aupb.GetCheckpointRequest(), aupb.SignedCheckpoint),
    AUDIT + "ExportBundle": (lambda: aupb.ExportBundleRequest(), aupb.BundleChunk),
    MEMBERS + "OnboardMember": (lambda: onboard_request(f"m-{request_id()[:8]}"), mpb.Member),
    MEMBERS + "GetMember": (lambda: mpb.GetMemberRequest(name="members/mp"), mpb.Member),
    MEMBERS + "ListMembers": (lambda: mpb.ListMembersRequest(council_area="preston"),
                              mpb.ListMembersResponse),
    MEMBERS + "UpdateKycStatus": (lambda: mpb.UpdateKycStatusRequest(
        request_id=request_id(), name="members/mp", kyc_status=mpb.KYC_STATUS_VERIFIED),
        mpb.Member),
    MEMBERS + "SetConnectedGroup": (lambda: mpb.SetConnectedGroupRequest(
        request_id=request_id(), name="members/mp", connected_group="connectedGroups/g1"),
        mpb.Member),
    MEMBERS + "EraseMember": (lambda: mpb.EraseMemberRequest(
        request_id=request_id(), name="members/mp"), mpb.EraseMemberResponse),
    LOANS + "CreateProduct": (lambda: product_request("p-matrix"), lpb.Product),
    LOANS + "GetProduct": (lambda: lpb.GetProductRequest(name="loanProducts/none"),
                           lpb.Product),
    LOANS + "ApplyForLoan": (lambda: application(f"l-{request_id()[:8]}", "mp"), lpb.Loan),
    LOANS + "DecideLoan": (lambda: lpb.DecideLoanRequest(
        request_id=request_id(), name="loans/none",
        decision=lpb.DecideLoanRequest.DECISION_REJECT), lpb.Loan),
    LOANS + "DisburseLoan": (lambda: lpb.DisburseLoanRequest(
        request_id=request_id(), name="loans/none"), lpb.Loan),
    LOANS + "RecordRepayment": (lambda: lpb.RecordRepaymentRequest(
        request_id=request_id(), name="loans/none", amount=gbp_money(100)),
        lpb.RecordRepaymentResponse),
    LOANS + "GetLoan": (lambda: lpb.GetLoanRequest(name="loans/none"), lpb.Loan),
    LOANS + "ListLoans": (lambda: lpb.ListLoansRequest(), lpb.ListLoansResponse),
    LOANS + "GetPayoffQuote": (lambda: lpb.GetPayoffQuoteRequest(name="loans/none"),
                               lpb.PayoffQuote),
    LOANS + "RescheduleLoan": (lambda: lpb.RescheduleLoanRequest(
        request_id=request_id(), name="loans/none", instalments=12), lpb.Loan),
    LOANS + "ChargeOffLoan": (lambda: lpb.ChargeOffLoanRequest(
        request_id=request_id(), name="loans/none"), lpb.Loan),
    LOANS + "WriteOffLoan": (lambda: lpb.WriteOffLoanRequest(
        request_id=request_id(), name="loans/none"), lpb.WriteOffLoanResponse),
    LOANS + "RecordRecovery": (lambda: lpb.RecordRecoveryRequest(
        request_id=request_id(), name="loans/none", amount=gbp_money(100)), lpb.Loan),
    LOANS + "TransferParticipation": (lambda: lpb.TransferParticipationRequest(
        request_id=request_id(), name="loans/none", from_funder="bank",
        to_funder="pools/none", bps=100), lpb.TransferParticipationResponse),
    LOANS + "ListParticipationLines": (lambda: lpb.ListParticipationLinesRequest(
        name="loans/none"), lpb.ListParticipationLinesResponse),
    LOANS + "RunCloseOfBusiness": (lambda: lpb.RunCloseOfBusinessRequest(
        request_id=request_id()), lpb.RunCloseOfBusinessResponse),
    LOANS + "GetBusinessDate": (lambda: lpb.GetBusinessDateRequest(), lpb.BusinessDate),
    LOANS + "GetLoanBookReport": (lambda: lpb.LoanReportRequest(council_area="preston"),
                                  lpb.LoanBookReport),
    LOANS + "GetArrearsReport": (lambda: lpb.LoanReportRequest(council_area="preston"),
                                 lpb.ArrearsReport),
    LOANS + "GetProvisionReport": (lambda: lpb.LoanReportRequest(council_area="preston"),
                                   lpb.ProvisionReport),
    LOANS + "GetSocialValueReport": (lambda: lpb.LoanReportRequest(council_area="preston"),
                                     lpb.SocialValueReport),
}


def _pool(pool_id: str) -> ppb.Pool:
    return ppb.Pool(pool_id=pool_id, display_name="Matrix pool", currency_code="GBP",
                    unit_classes=[ppb.UnitClass(class_id="senior", seniority=1)],
                    participants=[ppb.Participant(participant_id="preston",
                                                  kind=ppb.PARTICIPANT_KIND_COUNCIL,
                                                  settlement_account="accounts/cp")],
                    dealing_dates=[day("2025-01-01"), day("2025-07-01")])


P1 = "pools/p1"
CALLS.update({
    POOLS + "CreatePool": (lambda: ppb.CreatePoolRequest(
        request_id=request_id(), pool=_pool(f"p-{request_id()[:8]}")), ppb.Pool),
    POOLS + "GetPool": (lambda: ppb.GetPoolRequest(name=P1), ppb.Pool),
    POOLS + "CommitCapital": (lambda: ppb.CommitCapitalRequest(
        request_id=request_id(), pool=P1, participant="preston", unit_class="senior",
        amount=gbp(100)), ppb.PoolEventResult),
    POOLS + "CallCapital": (lambda: ppb.CallCapitalRequest(
        request_id=request_id(), pool=P1, unit_class="senior", amount=gbp(100),
        dealing_date=day("2025-01-01")), ppb.PoolEventResult),
    POOLS + "Subscribe": (lambda: ppb.SubscribeRequest(
        request_id=request_id(), pool=P1, participant="preston", unit_class="senior",
        amount=gbp(100), dealing_date=day("2025-01-01")), ppb.PoolEventResult),
    POOLS + "Redeem": (lambda: ppb.RedeemRequest(
        request_id=request_id(), pool=P1, participant="preston", unit_class="senior",
        units=decimal_pb2.Decimal(value="1000"), dealing_date=day("2025-01-01")),
        ppb.PoolEventResult),
    POOLS + "Distribute": (lambda: ppb.DistributeRequest(
        request_id=request_id(), pool=P1, unit_class="senior", amount=gbp(100),
        dealing_date=day("2025-01-01")), ppb.PoolEventResult),
    POOLS + "RecordLoanEvent": (lambda: ppb.RecordLoanEventRequest(
        request_id=request_id(), pool=P1, loan="loans/l-1", kind=ppb.LOAN_EVENT_KIND_FUND,
        amount=gbp(1_000_000)), ppb.PoolEventResult),
    POOLS + "PayServicingFee": (lambda: ppb.PayServicingFeeRequest(
        request_id=request_id(), pool=P1, amount=gbp(100)), ppb.PoolEventResult),
    POOLS + "ClosePeriod": (lambda: ppb.ClosePeriodRequest(
        request_id=request_id(), pool=P1, period=1), ppb.ClosePeriodResponse),
    POOLS + "ListPositions": (lambda: ppb.ListPositionsRequest(pool=P1, participant="preston"),
                              ppb.ListPositionsResponse),
    POOLS + "GetStatement": (lambda: ppb.GetStatementRequest(
        name=f"{P1}/periods/1/statements/preston"), ppb.Statement),
    POOLS + "ExportStatement": (lambda: ppb.ExportStatementRequest(
        name=f"{P1}/periods/1/statements/preston"), ppb.StatementExport),
    POOLS + "WatchCouncilEntries": (lambda: ppb.WatchCouncilEntriesRequest(
        council="councils/preston"), ppb.WatchCouncilEntriesResponse),
})
STREAMING = {LEDGER + "WatchEntries", AUDIT + "ExportBundle", POOLS + "WatchCouncilEntries"}


def test_every_method_of_the_policy_is_in_this_matrix():
    assert set(CALLS) == set(POLICY)


def _seed(ledger: Any) -> None:
    """Accounts of the bank and two councils, and member `mp` of Preston (a council's own)."""
    MemberClient(ledger.channel).OnboardMember(onboard_request("mp", "COOPERATIVE",
                                                               deposit=False))
    accounts = [account("cash", "ASSET", owner=("BANK", "bank")), account("m1"),
                account("empty"), account("cp", owner=("COUNCIL", "council:preston")),
                account("cl", owner=("COUNCIL", "council:lancaster"))]
    ledger.CreateAccounts(pb.CreateAccountsRequest(request_id=request_id(), accounts=accounts))
    ledger.CreateTransfers(pb.CreateTransfersRequest(request_id=request_id(), transfers=[
        transfer("fund-cp", "cash", "cp", 5_000), transfer("fund-cl", "cash", "cl", 7_000)]))
    pools(ledger.channel, APPROVER).CreatePool(ppb.CreatePoolRequest(
        request_id=request_id(), pool=_pool("p1")))


def _call(channel: grpc.Channel, method: str, principal: str) -> grpc.StatusCode:
    make, response_cls = CALLS[method]
    streaming = method in STREAMING
    kind = channel.unary_stream if streaming else channel.unary_unary
    call = kind(method, request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response_cls.FromString)
    try:
        result = call(make(), timeout=1.5 if streaming else 10,
                      metadata=[("x-bank-principal", principal)])
        if streaming:
            next(iter(result))
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        if error.code() is grpc.StatusCode.PERMISSION_DENIED:
            assert error_info(error).reason in ("ROLE_NOT_ALLOWED", "OUT_OF_SCOPE")
        return error.code()


def _snapshot(engine: Any) -> dict[str, list[Any]]:
    with engine.connect() as conn:
        return {name: [tuple(r) for r in conn.execute(select(table))]
                for name, table in t.metadata.tables.items()
                if name not in ("audit_log", "ledger_head")}


def _audit_size(engine: Any) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(t.audit_log.c.idx)).all())


@pytest.mark.parametrize("role", ROLES, ids=[r.value for r in ROLES])
def test_each_role_gets_exactly_what_the_policy_table_grants(role, engine, ledger, channel):
    _seed(ledger)
    scope = "council:preston" if role is Role.COUNCIL else "branch:preston"
    principal = f"{role.value}-user;{role.value};{scope}"
    for method, rule in POLICY.items():
        allowed = role in rule.roles or any(role is r for r, _ in rule.scoped)
        before, audit_before = _snapshot(engine), _audit_size(engine)
        code = _call(channel, method, principal)
        if allowed:
            assert code not in (grpc.StatusCode.PERMISSION_DENIED,
                                grpc.StatusCode.UNAUTHENTICATED), (method, code)
        else:
            assert code is grpc.StatusCode.PERMISSION_DENIED, (method, code)
            assert _snapshot(engine) == before, method
            assert _audit_size(engine) == audit_before + 1, method


def test_a_council_cannot_see_another_councils_accounts(engine, ledger, as_role):
    _seed(ledger)
    preston = as_role("council", "council:preston")
    assert preston.GetAccount(pb.GetAccountRequest(name="accounts/cp")).account_id == "cp"
    for call, request in [
            ("GetAccount", pb.GetAccountRequest(name="accounts/cl")),
            ("GetAccountBalance", pb.GetAccountBalanceRequest(account="accounts/cl")),
            ("ListAccountEntries", pb.ListAccountEntriesRequest(account="accounts/cl")),
            ("GetTransfer", pb.GetTransferRequest(name="transfers/fund-cl")),
            ("ListAccounts", pb.ListAccountsRequest(owner_id="council:lancaster")),
            ("ListAccounts", pb.ListAccountsRequest()),
            ("GetAccount", pb.GetAccountRequest(name="accounts/does-not-exist"))]:
        with pytest.raises(grpc.RpcError) as caught:
            getattr(preston, call)(request)
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED, call
        assert error_info(caught.value).reason == "OUT_OF_SCOPE"
    own = preston.ListAccounts(pb.ListAccountsRequest(owner_id="council:preston"))
    # Its own account, and its capital account in the pool it takes part in.
    assert [a.account_id for a in own.accounts] == ["cp", "pool:p1:cap:preston:senior"]


def test_a_council_cannot_move_money_even_on_its_own_account(engine, ledger, as_role):
    _seed(ledger)
    before = _snapshot(engine)
    with pytest.raises(grpc.RpcError) as caught:
        as_role("council", "council:preston").CreateTransfers(pb.CreateTransfersRequest(
            request_id=request_id(), transfers=[transfer("steal", "cp", "cl", 100)]))
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert _snapshot(engine) == before


def test_a_denial_is_recorded_in_the_audit_log_with_who_and_why(engine, ledger, as_role):
    _seed(ledger)
    with pytest.raises(grpc.RpcError):
        as_role("regulator").CreateTransfers(pb.CreateTransfersRequest(
            request_id=request_id(), transfers=[transfer("x", "cash", "m1", 1)]))
    with engine.connect() as conn:
        last = conn.execute(select(t.audit_log.c.leaf).order_by(t.audit_log.c.idx.desc())
                            .limit(1)).scalar_one()
    record = json.loads(last)
    assert record["outcome"] == "denied"
    assert record["reason"] == "ROLE_NOT_ALLOWED"
    assert record["principal"]["role"] == "regulator"
    assert record["method"].endswith("/CreateTransfers")
