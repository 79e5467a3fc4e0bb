"""Test helpers: building requests and reading rich error details."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb

CAMT053_XSD = Path(__file__).resolve().parent / "data" / "iso20022" / "camt.053.001.08.xsd"


def gbp(pence: int) -> dict[str, Any]:
    return {"currency_code": "GBP", "units": pence // 100, "nanos": (pence % 100) * 10_000_000}


def account(account_id: str, type_: str = "LIABILITY", no_overdraft: bool = False,
            owner: tuple[str, str] = ("MEMBER", "m-1"), currency: str = "GBP") -> pb.Account:
    return pb.Account(account_id=account_id, currency_code=currency,
                      type=pb.AccountType.Value(f"ACCOUNT_TYPE_{type_}"), code="2100",
                      owner_kind=pb.OwnerKind.Value(f"OWNER_KIND_{owner[0]}"), owner_id=owner[1],
                      debits_must_not_exceed_credits=no_overdraft)


def transfer(transfer_id: str, debit: str, credit: str, pence: int,
             kind: str = "POSTED", **kwargs: Any) -> pb.TransferInput:
    amount = gbp(pence)
    return pb.TransferInput(
        transfer_id=transfer_id, kind=pb.TransferKind.Value(f"TRANSFER_KIND_{kind}"),
        postings=[pb.Posting(account=f"accounts/{debit}", side=pb.SIDE_DEBIT, amount=amount),
                  pb.Posting(account=f"accounts/{credit}", side=pb.SIDE_CREDIT, amount=amount)],
        **kwargs)


def request_id() -> str:
    return str(uuid.uuid4())


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    assert status is not None, "the error carries no google.rpc.Status"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo in the status details")


def field_violations(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return fields


def item_reason(status: Any) -> str:
    """The ErrorInfo reason of one batch item's google.rpc.Status ('' when OK)."""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""
