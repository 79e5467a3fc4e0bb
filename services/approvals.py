"""ApprovalService: the maker-checker edge."""

from __future__ import annotations

import json

import grpc

from bank.app import approvals as cases
from bank.app.approvals import ApprovalView
from bank.app.paging import decode_token, encode_token, page_size, position_int
from bank.app.ports import Clock, UnitOfWork
from bank.domain.approvals import ApprovalState
from bank.domain.entries import TransferSpec
from bank.domain.errors import ViolationCollector
from bank.domain.identity import Principal
from bank.domain.limits import DESCRIPTION_LENGTH_MAX
from services import convert as cv
from services.auth import current_principal
from services.errors import guarded
from services.generated.peoplesbank.approvals.v1 import approval_service_pb2 as pb
from services.generated.peoplesbank.approvals.v1 import approval_service_pb2_grpc as pb_grpc
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as ledger_pb
from services.ledger import remaining, transfers_response

STATES = {ApprovalState.PENDING: pb.Approval.STATE_PENDING,
          ApprovalState.EXECUTED: pb.Approval.STATE_EXECUTED,
          ApprovalState.REJECTED: pb.Approval.STATE_REJECTED,
          ApprovalState.EXPIRED: pb.Approval.STATE_EXPIRED}


def _principal_out(p: Principal) -> pb.Principal:
    return pb.Principal(subject=p.subject, role=p.role.value, scope=p.scope)


def spec_out(spec: TransferSpec) -> ledger_pb.TransferInput:
    message = ledger_pb.TransferInput(
        transfer_id=spec.transfer_id, kind=cv.KINDS[spec.kind], description=spec.description,
        metadata=dict(spec.metadata), timeout_seconds=spec.timeout_seconds, linked=spec.linked,
        pending_transfer=f"transfers/{spec.pending_id}" if spec.pending_id else "",
        reverses_transfer=f"transfers/{spec.reverses_id}" if spec.reverses_id else "",
        postings=[ledger_pb.Posting(account=f"accounts/{p.account_id}", side=cv.SIDES[p.side],
                                    amount=cv.money_out(p.amount, p.currency))
                  for p in spec.postings])
    if spec.effective_date:
        message.effective_date.CopyFrom(cv.date_out(spec.effective_date))
    return message


def approval_out(view: ApprovalView) -> pb.Approval:
    a, d = view.approval, view.decision
    payload = json.loads(a.payload_json)
    message = pb.Approval(
        name=f"approvals/{a.approval_id}", operation=a.operation, reason=a.reason,
        state=STATES[view.state], maker=_principal_out(a.maker),
        create_time=cv.timestamp_out(a.created_ns), expire_time=cv.timestamp_out(a.expires_ns),
        payload_sha256=a.payload_sha256,
        transfers=[spec_out(TransferSpec.from_json(t)) for t in payload.get("transfers", [])])
    if d is not None:
        message.checker.CopyFrom(_principal_out(d.checker))
        message.decide_time.CopyFrom(cv.timestamp_out(d.decided_ns))
        message.note = d.note
    if view.result is not None:
        message.transfers_result.CopyFrom(transfers_response(view.result))
    return message


class ApprovalServicer(pb_grpc.ApprovalServiceServicer):
    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self.uow = uow
        self.clock = clock

    @guarded
    def ListApprovals(self, request: pb.ListApprovalsRequest,
                      context: grpc.ServicerContext) -> pb.ListApprovalsResponse:
        limit = page_size(request.page_size)
        before = position_int(decode_token(request.page_token, {"m": "approvals"}))
        views = cases.list_approvals(self.uow, self.clock, limit + 1, before)
        more = len(views) > limit
        views = views[:limit]
        token = encode_token({"m": "approvals"}, views[-1].approval.created_ns) if more else ""
        return pb.ListApprovalsResponse(approvals=[approval_out(v) for v in views],
                                        next_page_token=token)

    @guarded
    def GetApproval(self, request: pb.GetApprovalRequest,
                    context: grpc.ServicerContext) -> pb.Approval:
        approval_id = cv.name_or_raise(request.name, "approvals", "name")
        return approval_out(cases.get_approval(self.uow, self.clock, approval_id))

    def _decision_args(self, request: pb.ApproveOperationRequest | pb.RejectOperationRequest
                       ) -> str:
        v = ViolationCollector()
        cv.request_id(request.request_id, v)
        approval_id = cv.parse_name(request.name, "approvals", "name", v)
        cv.text_in(request.note, "note", DESCRIPTION_LENGTH_MAX, v)
        v.raise_if_any()
        return approval_id

    @guarded
    def ApproveOperation(self, request: pb.ApproveOperationRequest,
                         context: grpc.ServicerContext) -> pb.Approval:
        approval_id = self._decision_args(request)
        cases.approve(self.uow, self.clock, current_principal(), request.request_id,
                      approval_id, request.note, remaining(context))
        return approval_out(cases.get_approval(self.uow, self.clock, approval_id))

    @guarded
    def RejectOperation(self, request: pb.RejectOperationRequest,
                        context: grpc.ServicerContext) -> pb.Approval:
        approval_id = self._decision_args(request)
        cases.reject(self.uow, self.clock, current_principal(), request.request_id,
                     approval_id, request.note, remaining(context))
        return approval_out(cases.get_approval(self.uow, self.clock, approval_id))
