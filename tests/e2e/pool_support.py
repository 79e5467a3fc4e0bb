"""Shared steps for the pool tests: councils with money, a pool, dealing, closes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.type import date_pb2, decimal_pb2
from sqlalchemy import select

from bank.adapters import tables as t
from bank.app.accounts import AccountSpec, create_accounts
from bank.app.ports import Clock, UnitOfWork
from bank.app.transfers import create_transfers
from bank.domain.accounts import AccountType, OwnerKind, Side
from bank.domain.entries import PostingLine, TransferKind, TransferSpec
from bank.domain.identity import SYSTEM
from services.generated.peoplesbank.approvals.v1 import approval_service_pb2 as apb
from services.generated.peoplesbank.approvals.v1 import approval_service_pb2_grpc as apb_grpc
from services.generated.peoplesbank.pools.v1 import pool_service_pb2 as ppb
from services.generated.peoplesbank.pools.v1 import pool_service_pb2_grpc as ppb_grpc
from tests.helpers import gbp, request_id

TELLER = "tess;teller;branch:preston"
LOAN_OFFICER = "lou;loan_officer;branch:preston"
APPROVER = "amy;approver;branch:preston"
APPROVER_2 = "abe;approver;branch:lancaster"
COUNCILS = ("preston", "lancaster", "blackburn", "burnley")
POOL = "lancs"


@dataclass
class Stub:
    """A stub of `stub_class` calling as one development principal."""

    channel: grpc.Channel
    principal: str
    stub_class: Any = ppb_grpc.PoolServiceStub

    def __getattr__(self, method: str) -> Any:
        call = getattr(self.stub_class(self.channel), method)

        def invoke(request: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", 15)
            kwargs.setdefault("metadata", [("x-bank-principal", self.principal)])
            return call(request, **kwargs)

        return invoke


def pools(channel: grpc.Channel, principal: str = TELLER) -> Stub:
    return Stub(channel, principal)


def approvals(channel: grpc.Channel, principal: str) -> Stub:
    return Stub(channel, principal, apb_grpc.ApprovalServiceStub)


def settlement(council: str) -> str:
    return f"council-{council}"


def seed_councils(uow: UnitOfWork, clock: Clock, pence_each: int = 200_000_000) -> None:
    """Bank cash and each council's own deposit account, funded with `pence_each`."""
    specs = [AccountSpec("bank-cash", "GBP", AccountType.ASSET, "1000", OwnerKind.BANK, "bank")]
    specs += [AccountSpec(settlement(c), "GBP", AccountType.LIABILITY, "2500", OwnerKind.COUNCIL,
                          f"council:{c}", debits_must_not_exceed_credits=True) for c in COUNCILS]
    create_accounts(uow, clock, SYSTEM, request_id(), specs)
    transfers = [TransferSpec(f"fund-{c}", TransferKind.POSTED, (
        PostingLine("bank-cash", Side.DEBIT, pence_each, "GBP"),
        PostingLine(settlement(c), Side.CREDIT, pence_each, "GBP"))) for c in COUNCILS]
    result = create_transfers(uow, clock, SYSTEM, request_id(), transfers)
    assert all(item.error is None for item in result.items)


def day(text: str) -> date_pb2.Date:
    y, m, d = (int(part) for part in text.split("-"))
    return date_pb2.Date(year=y, month=m, day=d)


DEALING_DATES = ("2025-01-01", "2025-07-01", "2026-01-01")


def pool_message(pool_id: str = POOL, councils: tuple[str, ...] = COUNCILS,
                 classes: tuple[tuple[str, int], ...] = (("senior", 1),),
                 fee_bps: int = 25, dates: tuple[str, ...] = DEALING_DATES,
                 **extra: Any) -> ppb.Pool:
    return ppb.Pool(
        pool_id=pool_id, display_name="Lancashire SME pool", currency_code="GBP",
        unit_classes=[ppb.UnitClass(class_id=c, seniority=s) for c, s in classes],
        participants=[ppb.Participant(participant_id=c, kind=ppb.PARTICIPANT_KIND_COUNCIL,
                                      settlement_account=f"accounts/{settlement(c)}")
                      for c in councils],
        dealing_dates=[day(d) for d in dates], servicing_fee_bps_per_year=fee_bps, **extra)


def create_pool(channel: grpc.Channel, **kwargs: Any) -> ppb.Pool:
    return pools(channel, APPROVER).CreatePool(ppb.CreatePoolRequest(
        request_id=request_id(), pool=pool_message(**kwargs)))


def subscribe(channel: grpc.Channel, council: str, pence: int, dealing: str = "2025-01-01",
              pool_id: str = POOL, unit_class: str = "senior") -> ppb.PoolEventResult:
    return pools(channel).Subscribe(ppb.SubscribeRequest(
        request_id=request_id(), pool=f"pools/{pool_id}", participant=council,
        unit_class=unit_class, amount=gbp(pence), dealing_date=day(dealing)))


def loan_event(channel: grpc.Channel, kind: str, pence: int, loan: str = "loan-1",
               pool_id: str = POOL, **extra: Any) -> ppb.PoolEventResult:
    return pools(channel, LOAN_OFFICER).RecordLoanEvent(ppb.RecordLoanEventRequest(
        request_id=request_id(), pool=f"pools/{pool_id}", loan=f"loans/{loan}",
        kind=ppb.LoanEventKind.Value(f"LOAN_EVENT_KIND_{kind}"), amount=gbp(pence), **extra))


def close_period(channel: grpc.Channel, period: int, pool_id: str = POOL) -> str:
    """Propose as one approver, approve as another; returns the approval name."""
    proposed = pools(channel, APPROVER).ClosePeriod(ppb.ClosePeriodRequest(
        request_id=request_id(), pool=f"pools/{pool_id}", period=period))
    approvals(channel, APPROVER_2).ApproveOperation(apb.ApproveOperationRequest(
        request_id=request_id(), name=proposed.approval))
    return str(proposed.approval)


def units(value: str) -> decimal_pb2.Decimal:
    return decimal_pb2.Decimal(value=value)


def minor(money: Any) -> int:
    return int(money.units) * 100 + int(money.nanos) // 10_000_000


def snapshot(engine: Any, skip: tuple[str, ...] = ("audit_log", "ledger_head")
             ) -> dict[str, list[Any]]:
    with engine.connect() as conn:
        return {name: sorted(tuple(r) for r in conn.execute(select(table)))
                for name, table in t.metadata.tables.items() if name not in skip}


def statement(channel: grpc.Channel, council: str, period: int,
              principal: str = TELLER, pool_id: str = POOL) -> ppb.Statement:
    return pools(channel, principal).GetStatement(ppb.GetStatementRequest(
        name=f"pools/{pool_id}/periods/{period}/statements/{council}"))
