"""Concentration limits when a pool funds a loan: single borrower (a connected group counts as
one), sector and council area, each refused with an error naming the limit, changing nothing."""

from __future__ import annotations

import grpc
import pytest

from services.generated.peoplesbank.members.v1 import member_service_pb2 as mpb
from services.generated.peoplesbank.pools.v1 import pool_service_pb2 as ppb
from tests.e2e.member_support import MemberClient, onboard_request
from tests.e2e.pool_support import (
    LOAN_OFFICER,
    POOL,
    create_pool,
    loan_event,
    seed_councils,
    snapshot,
    subscribe,
)
from tests.helpers import error_info, request_id


def _member(channel, member_id: str, postcode: str, group: str = "") -> None:
    MemberClient(channel).OnboardMember(onboard_request(member_id, "COOPERATIVE",
                                                        postcode=postcode))
    if group:
        MemberClient(channel, LOAN_OFFICER).SetConnectedGroup(mpb.SetConnectedGroupRequest(
            request_id=request_id(), name=f"members/{member_id}",
            connected_group=f"connectedGroups/{group}"))


def test_funding_past_a_limit_is_refused_naming_the_limit(engine, uow, clock, channel):
    seed_councils(uow, clock)
    create_pool(channel, councils=("preston",), concentration_limits=ppb.ConcentrationLimits(
        single_borrower_bps=2_000, sector_bps=5_000, council_area_bps=3_000))
    subscribe(channel, "preston", 10_000_000)
    _member(channel, "m-a", "PR1 2HE", group="g1")
    _member(channel, "m-b", "PR1 3AA", group="g1")
    _member(channel, "m-c", "LA1 1AA")
    _member(channel, "m-d", "PR2 1AA")
    loan_event(channel, "FUND", 1_500_000, loan="loan-a", borrower="members/m-a",
               sector="retail")
    loan_event(channel, "FUND", 1_900_000, loan="loan-c", borrower="members/m-c",
               sector="retail")

    before = snapshot(engine, skip=("audit_log", "ledger_head", "requests"))
    for loan, member, sector, pence, limit in [
            ("loan-b", "m-b", "food", 600_000, "single_borrower"),  # g1: 2.1m > 20% of 10m
            ("loan-d", "m-d", "retail", 1_700_000, "sector"),  # retail: 5.1m > 50%
            ("loan-e", "m-d", "food", 1_600_000, "council_area")]:  # preston: 3.1m > 30%
        with pytest.raises(grpc.RpcError) as caught:
            loan_event(channel, "FUND", pence, loan=loan, borrower=f"members/{member}",
                       sector=sector)
        info = error_info(caught.value)
        assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert (info.reason, info.metadata["limit"]) == ("CONCENTRATION_LIMIT_EXCEEDED", limit)
        assert limit.replace("_", " ") in caught.value.details()
    assert snapshot(engine, skip=("audit_log", "ledger_head", "requests")) == before
    # Within every limit, the same borrower's group may still borrow.
    funded = loan_event(channel, "FUND", 500_000, loan="loan-b", borrower="members/m-b",
                        sector="food")
    assert funded.pool == f"pools/{POOL}" and funded.transfers
