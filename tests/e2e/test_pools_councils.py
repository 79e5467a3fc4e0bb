"""Council integrations and pools: a council sees only its own positions, statements and
entries, cannot change any position, and every statement export reconciles to the ledger."""

from __future__ import annotations

import csv
import hashlib
import io
import json

import grpc
import pytest

from bank.app.pool_ledger import capital_account
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from services.generated.peoplesbank.pools.v1 import pool_service_pb2 as ppb
from tests.e2e.conftest import Client
from tests.e2e.pool_support import (
    POOL,
    close_period,
    create_pool,
    day,
    loan_event,
    minor,
    pools,
    seed_councils,
    snapshot,
    statement,
    subscribe,
    units,
)
from tests.helpers import error_info, gbp, request_id

PRESTON = "preston-backoffice;council;council:preston"
P = f"pools/{POOL}"


@pytest.fixture
def closed_pool(uow, clock, channel):
    """Preston and Lancaster in a pool (Blackburn a participant with no money in), one loan,
    one period closed."""
    seed_councils(uow, clock)
    create_pool(channel, councils=("preston", "lancaster", "blackburn"))
    subscribe(channel, "preston", 30_000_000)
    subscribe(channel, "lancaster", 20_000_000)
    loan_event(channel, "FUND", 40_000_000)
    loan_event(channel, "ACCRUE_INTEREST", 1_000_001)
    close_period(channel, 1)
    return channel


def _denied(call, request) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        result = call(request)
        if hasattr(result, "__next__"):
            next(result)
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    return str(error_info(caught.value).reason)


def test_a_council_sees_only_its_own_positions_statements_and_accounts(closed_pool):
    channel = closed_pool
    preston = pools(channel, PRESTON)
    assert preston.GetPool(ppb.GetPoolRequest(name=P)).pool_id == POOL
    own = preston.ListPositions(ppb.ListPositionsRequest(pool=P, participant="preston"))
    closing = minor(statement(channel, "preston", 1, PRESTON).classes[0].closing_capital)
    assert [(p.participant, minor(p.capital)) for p in own.positions] == [("preston", closing)]
    assert closing > 30_000_000  # its subscription and its share of the period's income
    ledger = Client(channel, PRESTON)
    ledger.GetAccount(pb.GetAccountRequest(
        name=f"accounts/{capital_account(POOL, 'preston', 'senior')}"))

    for call, request in [
            (preston.ListPositions, ppb.ListPositionsRequest(pool=P)),
            (preston.ListPositions, ppb.ListPositionsRequest(pool=P, participant="lancaster")),
            (preston.GetStatement, ppb.GetStatementRequest(
                name=f"{P}/periods/1/statements/lancaster")),
            (preston.GetStatement, ppb.GetStatementRequest(
                name=f"{P}/periods/1/statements/no-such-one")),
            (preston.ExportStatement, ppb.ExportStatementRequest(
                name=f"{P}/periods/1/statements/lancaster")),
            (preston.WatchCouncilEntries, ppb.WatchCouncilEntriesRequest(
                council="councils/lancaster")),
            (ledger.GetAccount, pb.GetAccountRequest(
                name=f"accounts/{capital_account(POOL, 'lancaster', 'senior')}")),
            (ledger.GetAccountBalance, pb.GetAccountBalanceRequest(
                account=f"accounts/{capital_account(POOL, 'lancaster', 'senior')}")),
            (pools(channel, "burnley-bo;council;council:burnley").GetPool,
             ppb.GetPoolRequest(name=P)),
            (preston.GetPool, ppb.GetPoolRequest(name="pools/no-such-pool"))]:
        assert _denied(call, request) == "OUT_OF_SCOPE", request


def test_a_council_cannot_change_any_position_not_even_its_own(engine, closed_pool):
    channel = closed_pool
    preston = pools(channel, PRESTON)
    before = snapshot(engine)
    for participant in ("preston", "lancaster"):
        for call, request in [
                (preston.Subscribe, ppb.SubscribeRequest(
                    request_id=request_id(), pool=P, participant=participant,
                    unit_class="senior", amount=gbp(100), dealing_date=day("2025-07-01"))),
                (preston.Redeem, ppb.RedeemRequest(
                    request_id=request_id(), pool=P, participant=participant,
                    unit_class="senior", units=units("1"), dealing_date=day("2025-07-01"))),
                (preston.CommitCapital, ppb.CommitCapitalRequest(
                    request_id=request_id(), pool=P, participant=participant,
                    unit_class="senior", amount=gbp(100)))]:
            assert _denied(call, request) == "ROLE_NOT_ALLOWED"
    for call, request in [
            (preston.Distribute, ppb.DistributeRequest(
                request_id=request_id(), pool=P, unit_class="senior", amount=gbp(100),
                dealing_date=day("2025-07-01"))),
            (preston.ClosePeriod, ppb.ClosePeriodRequest(request_id=request_id(), pool=P,
                                                         period=2)),
            (preston.RecordLoanEvent, ppb.RecordLoanEventRequest(
                request_id=request_id(), pool=P, loan="loans/loan-1",
                kind=ppb.LOAN_EVENT_KIND_PROVIDE, amount=gbp(100)))]:
        assert _denied(call, request) == "ROLE_NOT_ALLOWED"
    assert snapshot(engine) == before  # only the denials' audit leaves were added


def test_a_councils_feed_carries_only_its_own_postings(closed_pool):
    channel = closed_pool
    stream = pools(channel, PRESTON).WatchCouncilEntries(
        ppb.WatchCouncilEntriesRequest(council="councils/preston", page_size=1000), timeout=10)
    page = next(iter(stream))
    stream.cancel()
    own = {"council-preston", capital_account(POOL, "preston", "senior")}
    accounts = {p.account.removeprefix("accounts/") for t in page.transfers for p in t.postings}
    assert accounts == own
    kinds = [(t.metadata.get("kind", ""), t.metadata.get("part", "")) for t in page.transfers]
    # Funded by the bank, subscribed, then its income and its servicing fee at the close.
    assert kinds == [("", ""), ("subscribe", ""), ("close", "income"), ("close", "fee")]
    assert page.last_position == page.transfers[-1].position
    assert all("lancaster" not in t.description for t in page.transfers)


def test_every_export_reconciles_to_the_ledger_to_the_penny(closed_pool, clock):
    channel = closed_pool
    clock.advance(1)  # the fixed clock has not moved since the close was recorded
    teller, ledger = pools(channel), Client(channel, "tess;teller;branch:preston")
    net_assets = minor(teller.GetPool(ppb.GetPoolRequest(name=P)).valuation.net_assets)
    total = 0
    for council in ("preston", "lancaster"):
        name = f"{P}/periods/1/statements/{council}"
        exported = teller.ExportStatement(ppb.ExportStatementRequest(name=name))
        assert hashlib.sha256(exported.content).hexdigest() == exported.sha256
        body = json.loads(exported.content)
        (line,) = body["classes"]
        moved = (line["opening_capital"] + line["contributions"] - line["redemptions"]
                 - line["distributions"] + line["income"] - line["fees"] - line["losses"]
                 + line["recoveries"])
        assert moved == line["closing_capital"] == line["ledger_balance_minor"]
        close_time = statement(channel, council, 1).close_time
        balance = ledger.GetAccountBalance(pb.GetAccountBalanceRequest(
            account=f"accounts/{line['capital_account']}", as_of_time=close_time))
        assert minor(balance.balance) == line["closing_capital"]
        rows = list(csv.DictReader(io.StringIO(teller.ExportStatement(
            ppb.ExportStatementRequest(name=name, format=ppb.EXPORT_FORMAT_CSV))
            .content.decode())))
        assert [int(r["closing_capital"]) for r in rows] == [line["closing_capital"]]
        assert rows[0]["loans"].startswith("loan-1|")
        total += line["closing_capital"]
    assert total == net_assets  # the capital accounts sum exactly to the NAV
