"""Shared steps for the member tests: build onboarding requests and call MemberService."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.type import date_pb2

from services.generated.peoplesbank.members.v1 import member_service_pb2 as mpb
from services.generated.peoplesbank.members.v1 import member_service_pb2_grpc as mpb_grpc
from tests.helpers import request_id

TELLER = "tess;teller;branch:preston"


@dataclass
class MemberClient:
    """A MemberService stub that calls as one development principal."""

    channel: grpc.Channel
    principal: str = TELLER

    def __getattr__(self, method: str) -> Any:
        call = getattr(mpb_grpc.MemberServiceStub(self.channel), method)

        def invoke(request: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", 15)
            kwargs.setdefault("metadata", [("x-bank-principal", self.principal)])
            return call(request, **kwargs)

        return invoke


def personal(name: str = "Ada Lovelace", postcode: str = "PR1 2HE",
             born: tuple[int, int, int] | None = (1990, 5, 17), **extra: Any) -> mpb.PersonalData:
    data = mpb.PersonalData(display_name=name, address=mpb.Address(
        lines=["12 Fishergate"], locality="Preston", postcode=postcode),
        email="ada@example.org", phone="+44 1772 000000", notes="prefers letters", **extra)
    if born is not None:
        data.birth_date.CopyFrom(date_pb2.Date(year=born[0], month=born[1], day=born[2]))
    return data


def onboard_request(member_id: str, form: str = "INDIVIDUAL", deposit: bool = True,
                    rid: str | None = None, **personal_args: Any) -> mpb.OnboardMemberRequest:
    if form != "INDIVIDUAL" and form != "SOLE_TRADER":
        personal_args.setdefault("born", None)
    return mpb.OnboardMemberRequest(
        request_id=rid or request_id(), open_deposit_account=deposit,
        member=mpb.Member(member_id=member_id, legal_form=mpb.LegalForm.Value(f"LEGAL_FORM_{form}"),
                          personal_data=personal(**personal_args)))
