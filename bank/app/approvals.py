"""Maker-checker use cases: list, get, approve (runs the stored command once), reject."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bank.app.accounts import BatchResult
from bank.app.loans import (
    WRITE_OFF_OPERATION,
    execute_participation_transfer_approved,
    execute_write_off,
)
from bank.app.members import ERASE_OPERATION, execute_erasure
from bank.app.participations import PARTICIPATION_TRANSFER_OPERATION
from bank.app.pools import CLOSE_PERIOD_OPERATION, execute_period_close
from bank.app.ports import Clock, Head, UnitOfWork
from bank.app.transfers import apply_transfers
from bank.app.unit import Command, Context, run_command
from bank.domain.approvals import Approval, ApprovalState, Decision, state_of
from bank.domain.entries import TransferSpec, canonical_hash, validate_specs
from bank.domain.errors import FailedPrecondition, NotFound, PermissionDenied, invalid
from bank.domain.identity import Principal, Role
from bank.domain.invariants import ensure
from bank.domain.limits import DESCRIPTION_LENGTH_MAX, PAGE_SIZE_MAX


@dataclass(frozen=True, slots=True)
class ApprovalView:
    approval: Approval
    decision: Decision | None
    state: ApprovalState

    @property
    def result(self) -> BatchResult | None:
        if self.decision is None or not self.decision.outcome_json or (
                self.approval.operation != "CreateTransfers"):
            return None
        return BatchResult.from_json(json.loads(self.decision.outcome_json))


@dataclass(frozen=True, slots=True)
class DecisionResult:
    approval_id: str

    def to_json(self) -> dict[str, Any]:
        return {"approval_id": self.approval_id}

    @staticmethod
    def from_json(data: dict[str, Any]) -> DecisionResult:
        return DecisionResult(data["approval_id"])


def get_approval(uow: UnitOfWork, clock: Clock, approval_id: str) -> ApprovalView:
    """Raises `NotFound`."""
    with uow.read() as r:
        found = r.get_approval(approval_id)
    if found is None:
        raise NotFound("APPROVAL_NOT_FOUND", f"no approval {approval_id!r}",
                       metadata={"approval": approval_id})
    approval, decision = found
    return ApprovalView(approval, decision, state_of(approval, decision, clock.now_ns()))


def list_approvals(uow: UnitOfWork, clock: Clock, limit: int,
                   before_created_ns: int | None = None) -> list[ApprovalView]:
    """Newest first."""
    now = clock.now_ns()
    with uow.read() as r:
        rows = r.list_approvals(before_created_ns or 2**63 - 1, min(limit, PAGE_SIZE_MAX))
    return [ApprovalView(a, d, state_of(a, d, now)) for a, d in rows]


def _decide(ctx: Context, approval_id: str, checker: Principal) -> Approval:
    found = ctx.tx.get_approval(approval_id)
    if found is None:
        raise NotFound("APPROVAL_NOT_FOUND", f"no approval {approval_id!r}",
                       metadata={"approval": approval_id})
    approval, decision = found
    state = state_of(approval, decision, ctx.now_ns)
    if state is not ApprovalState.PENDING:
        reason = ("APPROVAL_EXPIRED" if state is ApprovalState.EXPIRED
                  else "APPROVAL_ALREADY_DECIDED")
        raise FailedPrecondition(reason, f"approval {approval_id!r} is {state.value}",
                                 metadata={"approval": approval_id})
    if checker.role is not Role.APPROVER:
        raise PermissionDenied("ROLE_NOT_ALLOWED", "only an approver may decide an approval",
                               metadata={"approval": approval_id})
    if checker.subject == approval.maker.subject:
        raise PermissionDenied("SELF_APPROVAL", "the maker of an operation cannot decide it",
                               metadata={"approval": approval_id})
    return approval


def approve(uow: UnitOfWork, clock: Clock, checker: Principal, request_id: str,
            approval_id: str, note: str = "", timeout_s: float | None = None) -> DecisionResult:
    """Approve and run the stored command exactly as made, once, in this transaction.

    Raises `NotFound`, `FailedPrecondition` (APPROVAL_EXPIRED, APPROVAL_ALREADY_DECIDED) or
    `PermissionDenied` (SELF_APPROVAL); each is recorded and replayed for this request id.
    """
    _check_note(note)
    command = Command("ApproveOperation", request_id, checker,
                      {"approval": approval_id, "note": note})

    def handler(ctx: Context) -> tuple[DecisionResult, Head]:
        approval = _decide(ctx, approval_id, checker)
        payload = json.loads(approval.payload_json)
        ensure(canonical_hash(payload) == approval.payload_sha256,
               f"approval {approval_id} payload does not match its hash")
        outcome, head = _execute(ctx, clock, approval, payload)
        ctx.tx.insert_decision(Decision(approval_id, True, checker, ctx.now_ns, note,
                                        json.dumps(outcome, sort_keys=True)))
        ctx.effects.append(["decision", approval_id, True])
        return DecisionResult(approval_id), head

    return run_command(uow, clock, command, handler, DecisionResult.from_json, timeout_s)


def _execute(ctx: Context, clock: Clock, approval: Approval, payload: dict[str, Any]
             ) -> tuple[dict[str, Any], Head]:
    """Run an approved operation exactly as made: one executor per operation that can wait
    for a second approver. Returns the operation's outcome (stored with the decision)."""
    if approval.operation == ERASE_OPERATION:
        return execute_erasure(ctx, payload)
    if approval.operation == CLOSE_PERIOD_OPERATION:
        return execute_period_close(ctx, clock, approval.approval_id, payload)
    if approval.operation == WRITE_OFF_OPERATION:
        return execute_write_off(ctx, clock, payload)
    if approval.operation == PARTICIPATION_TRANSFER_OPERATION:
        return execute_participation_transfer_approved(ctx, clock, payload)
    ensure(approval.operation == "CreateTransfers",
           f"no executor for approved operation {approval.operation!r}")
    specs = [TransferSpec.from_json(item) for item in payload["transfers"]]
    validate_specs(specs)
    result, head = apply_transfers(ctx, specs, clock.business_date(), approval.maker_request_id)
    return result.to_json(), head


def reject(uow: UnitOfWork, clock: Clock, checker: Principal, request_id: str,
           approval_id: str, note: str = "", timeout_s: float | None = None) -> DecisionResult:
    """Reject: the stored command never runs. Raises as `approve` does."""
    _check_note(note)
    command = Command("RejectOperation", request_id, checker,
                      {"approval": approval_id, "note": note})

    def handler(ctx: Context) -> tuple[DecisionResult, Head]:
        _decide(ctx, approval_id, checker)
        ctx.tx.insert_decision(Decision(approval_id, False, checker, ctx.now_ns, note, ""))
        ctx.effects.append(["decision", approval_id, False])
        return DecisionResult(approval_id), ctx.head

    return run_command(uow, clock, command, handler, DecisionResult.from_json, timeout_s)


def _check_note(note: str) -> None:
    if len(note) > DESCRIPTION_LENGTH_MAX:
        raise invalid("note", f"must be at most {DESCRIPTION_LENGTH_MAX} characters")

