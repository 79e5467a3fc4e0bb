"""PoolService through a real server on both databases: the worked scenario of issue 6, the
ledger it leaves, dealing rules, two-approver closes, and bad input changing nothing."""

from __future__ import annotations

import grpc
import pytest

from bank.app.pool_ledger import capital_account, pool_account
from services.generated.peoplesbank.approvals.v1 import approval_service_pb2 as apb
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from services.generated.peoplesbank.pools.v1 import pool_service_pb2 as ppb
from tests.e2e.conftest import TELLER, Client
from tests.e2e.pool_support import (
    APPROVER,
    APPROVER_2,
    LOAN_OFFICER,
    POOL,
    approvals,
    close_period,
    create_pool,
    day,
    loan_event,
    minor,
    pool_message,
    pools,
    seed_councils,
    snapshot,
    statement,
    subscribe,
    units,
)
from tests.helpers import error_info, field_violations, gbp, request_id


def ledger_client(channel):
    return Client(channel, TELLER)


def balance(ledger, account_id: str) -> int:
    b = ledger.GetAccountBalance(pb.GetAccountBalanceRequest(account=f"accounts/{account_id}"))
    return minor(b.balance)


def test_worked_scenario_burnley_shares_the_later_loss_not_the_earlier_income(
        uow, clock, channel, ledger):
    seed_councils(uow, clock)
    create_pool(channel)
    for council, pence in [("preston", 100_000_000), ("lancaster", 60_000_000),
                           ("blackburn", 40_000_000)]:
        dealt = subscribe(channel, council, pence)
        assert dealt.nav_per_unit.value == "1.00000000"
    loan_event(channel, "FUND", 150_000_000)
    # Half a year (181 days) of interest: the 25 bps servicing fee takes 2,479.45 of it,
    # leaving net income of 61,234.56.
    loan_event(channel, "ACCRUE_INTEREST", 6_123_456 + 247_945)
    close_period(channel, 1)

    pool = pools(channel).GetPool(ppb.GetPoolRequest(name=f"pools/{POOL}"))
    assert pool.open_period == 2
    assert pool.valuation.classes[0].nav_per_unit.value == "1.03061728"
    assert minor(pool.valuation.net_assets) == 206_123_456
    first = {c: statement(channel, c, 1).classes[0] for c in ("preston", "lancaster",
                                                              "blackburn")}
    assert {c: (s.closing_units.value, minor(s.closing_capital)) for c, s in first.items()} == {
        "preston": ("1000000.000000", 103_061_728), "lancaster": ("600000.000000", 61_837_037),
        "blackburn": ("400000.000000", 41_224_691)}

    burnley = subscribe(channel, "burnley", 50_000_000, dealing="2025-07-01")
    assert (burnley.nav_per_unit.value, burnley.units.value) == ("1.03061728", "485146.144648")

    loan_event(channel, "CHARGE_OFF", 1_000_000)  # a 10,000.00 loss in the next period
    close_period(channel, 2)
    second = {c: statement(channel, c, 2).classes[0]
              for c in ("preston", "lancaster", "blackburn", "burnley")}
    assert {c: minor(s.losses) for c, s in second.items()} == {
        "blackburn": 160_956, "burnley": 195_218, "lancaster": 241_435, "preston": 402_391}
    assert minor(second["burnley"].income) == 0
    assert minor(second["burnley"].opening_capital) == 0
    assert minor(second["burnley"].contributions) == 50_000_000
    assert {c: minor(s.closing_capital) for c, s in second.items()} == {
        "blackburn": 41_011_781, "burnley": 49_741_768, "lancaster": 61_517_671,
        "preston": 102_529_451}
    assert second["preston"].nav_per_unit.value == "1.02529451"

    # The ledger says the same, to the penny.
    for council, s in second.items():
        assert balance(ledger, capital_account(POOL, council, "senior")) == minor(
            s.closing_capital)
    cash, loans, interest, due = (balance(ledger, pool_account(POOL, n))
                                  for n in ("cash", "loans", "interest", "due"))
    assert due == cash + loans + interest
    assert balance(ledger, pool_account(POOL, "fees")) == 247_945 + 322_785
    for name in ("income", "losses", "recoveries"):
        assert balance(ledger, pool_account(POOL, name)) == 0
    trial = ledger.GetTrialBalance(pb.GetTrialBalanceRequest())
    assert trial.totals and all(minor(r.debits_posted) == minor(r.credits_posted)
                                for r in trial.totals)


def _refused(call, request) -> tuple[grpc.StatusCode, str, list[str]]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request)
    return caught.value.code(), error_info(caught.value).reason, field_violations(caught.value)


def _opened(uow, clock, channel):
    seed_councils(uow, clock, pence_each=100_000_000)
    create_pool(channel, classes=(("junior", 0), ("senior", 1)))
    subscribe(channel, "preston", 10_000_000)


def test_malformed_requests_name_the_field_and_change_nothing(engine, uow, clock, channel):
    _opened(uow, clock, channel)
    teller, officer, approver = pools(channel), pools(channel, LOAN_OFFICER), pools(
        channel, APPROVER)
    p = f"pools/{POOL}"
    good = {"request_id": request_id(), "pool": p, "participant": "preston",
            "unit_class": "senior", "amount": gbp(100), "dealing_date": day("2025-01-01")}
    cases = [
        (teller.Subscribe, ppb.SubscribeRequest(**{**good, "request_id": ""}), "request_id"),
        (teller.Subscribe, ppb.SubscribeRequest(**{**good, "pool": "pool/lancs"}), "pool"),
        (teller.Subscribe, ppb.SubscribeRequest(**{**good, "participant": ""}), "participant"),
        (teller.Subscribe, ppb.SubscribeRequest(**{**good, "unit_class": "a b"}), "unit_class"),
        (teller.Subscribe, ppb.SubscribeRequest(**{**good, "amount": gbp(0)}), "amount"),
        (teller.Subscribe, ppb.SubscribeRequest(**{**good, "amount": {
            "currency_code": "EUR", "units": 1}}), "amount.currency_code"),
        (teller.Subscribe, ppb.SubscribeRequest(**{**good, "amount": {
            "currency_code": "GBP", "units": 1, "nanos": 5}}), "amount.nanos"),
        (teller.Subscribe, ppb.SubscribeRequest(**{**good, "dealing_date": day("2025-02-30")}),
         "dealing_date"),
        (teller.Subscribe, ppb.SubscribeRequest(**{k: v for k, v in good.items()
                                                   if k != "dealing_date"}), "dealing_date"),
        (teller.Redeem, ppb.RedeemRequest(
            request_id=request_id(), pool=p, participant="preston", unit_class="senior",
            units=units("1.0000001"), dealing_date=day("2025-01-01")), "units.value"),
        (teller.Redeem, ppb.RedeemRequest(
            request_id=request_id(), pool=p, participant="preston", unit_class="senior",
            units=units("-5"), dealing_date=day("2025-01-01")), "units.value"),
        (officer.RecordLoanEvent, ppb.RecordLoanEventRequest(
            request_id=request_id(), pool=p, loan="loans/l1", amount=gbp(100)), "kind"),
        (officer.RecordLoanEvent, ppb.RecordLoanEventRequest(
            request_id=request_id(), pool=p, loan="l1", kind=ppb.LOAN_EVENT_KIND_FUND,
            amount=gbp(100)), "loan"),
        (officer.RecordLoanEvent, ppb.RecordLoanEventRequest(
            request_id=request_id(), pool=p, loan="loans/l1",
            kind=ppb.LOAN_EVENT_KIND_REPAY_PRINCIPAL, amount=gbp(100), interest=gbp(5)),
         "interest"),
        (officer.RecordLoanEvent, ppb.RecordLoanEventRequest(
            request_id=request_id(), pool=p, loan="loans/l1", kind=ppb.LOAN_EVENT_KIND_FUND,
            amount=gbp(100), sector="Shops!"), "sector"),
        (officer.RecordLoanEvent, ppb.RecordLoanEventRequest(
            request_id=request_id(), pool=p, loan="loans/l1", kind=ppb.LOAN_EVENT_KIND_FUND,
            amount=gbp(100), reference="x" * 257), "reference"),
        (approver.ClosePeriod, ppb.ClosePeriodRequest(request_id=request_id(), pool=p),
         "period"),
        (teller.ListPositions, ppb.ListPositionsRequest(pool=p, page_size=-1), "page_size"),
        (teller.GetStatement, ppb.GetStatementRequest(name=f"{p}/periods/0/statements/x"),
         "name"),
        (approver.CreatePool, ppb.CreatePoolRequest(request_id=request_id(), pool=pool_message(
            pool_id="Bad_Id")), "pool.pool_id"),
        (approver.CreatePool, ppb.CreatePoolRequest(request_id=request_id(), pool=pool_message(
            pool_id="p2", dates=("2025-01-01",))), "pool.dealing_dates"),
        (approver.CreatePool, ppb.CreatePoolRequest(request_id=request_id(), pool=pool_message(
            pool_id="p2", dates=("2025-07-01", "2025-01-01"))), "pool.dealing_dates[1]"),
        (approver.CreatePool, ppb.CreatePoolRequest(request_id=request_id(), pool=pool_message(
            pool_id="p2", councils=("preston", "preston"))), "pool.participants[1].participant_id"),
        (approver.CreatePool, ppb.CreatePoolRequest(request_id=request_id(), pool=pool_message(
            pool_id="p2", fee_bps=1_001)), "pool.servicing_fee_bps_per_year"),
        (approver.CreatePool, ppb.CreatePoolRequest(request_id=request_id(), pool=pool_message(
            pool_id="p2", classes=(("senior", 1), ("senior", 0)))),
         "pool.unit_classes[1].class_id"),
        (approver.CreatePool, ppb.CreatePoolRequest(request_id=request_id(), pool=pool_message(
            pool_id="p2", open_period=3)), "pool.open_period"),
    ]
    before = snapshot(engine, skip=())
    for call, request, field in cases:
        code, _reason, fields = _refused(call, request)
        assert code is grpc.StatusCode.INVALID_ARGUMENT, (field, code)
        assert field in fields, (field, fields)
    assert snapshot(engine, skip=()) == before


def test_business_refusals_give_their_reason_and_move_no_money(engine, uow, clock, channel):
    _opened(uow, clock, channel)
    teller, officer = pools(channel), pools(channel, LOAN_OFFICER)
    p = f"pools/{POOL}"
    money_before = snapshot(engine, skip=("audit_log", "ledger_head", "requests"))

    def sub(**kw):
        base = {"request_id": request_id(), "pool": p, "participant": "preston",
                "unit_class": "senior", "amount": gbp(100), "dealing_date": day("2025-01-01")}
        return ppb.SubscribeRequest(**{**base, **kw})

    assert _refused(teller.Subscribe, sub(pool="pools/nope"))[:2] == (
        grpc.StatusCode.NOT_FOUND, "POOL_NOT_FOUND")
    assert _refused(teller.Subscribe, sub(participant="wigan"))[:2] == (
        grpc.StatusCode.NOT_FOUND, "PARTICIPANT_NOT_FOUND")
    assert _refused(teller.Subscribe, sub(unit_class="mezz"))[:2] == (
        grpc.StatusCode.NOT_FOUND, "UNIT_CLASS_NOT_FOUND")
    assert _refused(teller.Subscribe, sub(dealing_date=day("2025-07-01")))[:2] == (
        grpc.StatusCode.FAILED_PRECONDITION, "DEALING_DATE_NOT_OPEN")
    assert _refused(teller.Subscribe, sub(amount=gbp(100_000_001)))[:2] == (
        grpc.StatusCode.FAILED_PRECONDITION, "EXCEEDS_CREDITS")
    assert _refused(teller.Redeem, ppb.RedeemRequest(
        request_id=request_id(), pool=p, participant="lancaster", unit_class="senior",
        units=units("1"), dealing_date=day("2025-01-01")))[:2] == (
        grpc.StatusCode.FAILED_PRECONDITION, "UNITS_NOT_HELD")
    assert _refused(officer.RecordLoanEvent, ppb.RecordLoanEventRequest(
        request_id=request_id(), pool=p, loan="loans/l1", kind=ppb.LOAN_EVENT_KIND_FUND,
        amount=gbp(10_000_001)))[:2] == (
        grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_POOL_CASH")
    assert _refused(officer.RecordLoanEvent, ppb.RecordLoanEventRequest(
        request_id=request_id(), pool=p, loan="loans/l9", kind=ppb.LOAN_EVENT_KIND_ACCRUE_INTEREST,
        amount=gbp(1)))[:2] == (grpc.StatusCode.NOT_FOUND, "LOAN_NOT_IN_POOL")
    assert _refused(pools(channel, APPROVER).ClosePeriod, ppb.ClosePeriodRequest(
        request_id=request_id(), pool=p, period=2))[:2] == (
        grpc.StatusCode.FAILED_PRECONDITION, "PERIOD_NOT_OPEN")
    assert _refused(pools(channel, APPROVER).CreatePool, ppb.CreatePoolRequest(
        request_id=request_id(), pool=pool_message(fee_bps=30)))[:2] == (
        grpc.StatusCode.ALREADY_EXISTS, "POOL_ID_REUSED")
    assert snapshot(engine, skip=("audit_log", "ledger_head", "requests")) == money_before

    loan_event(channel, "FUND", 5_000_000)
    loan_event(channel, "ACCRUE_INTEREST", 10_000)
    assert _refused(teller.Subscribe, sub())[:2] == (
        grpc.StatusCode.FAILED_PRECONDITION, "VALUATION_REQUIRED")


def test_a_close_needs_a_second_approver_and_a_closed_period_never_changes(
        engine, uow, clock, channel):
    _opened(uow, clock, channel)
    proposed = pools(channel, APPROVER).ClosePeriod(ppb.ClosePeriodRequest(
        request_id=request_id(), pool=f"pools/{POOL}", period=1))
    assert _refused(approvals(channel, APPROVER).ApproveOperation, apb.ApproveOperationRequest(
        request_id=request_id(), name=proposed.approval))[:2] == (
        grpc.StatusCode.PERMISSION_DENIED, "SELF_APPROVAL")
    assert pools(channel).GetPool(ppb.GetPoolRequest(name=f"pools/{POOL}")).open_period == 1
    approvals(channel, APPROVER_2).ApproveOperation(apb.ApproveOperationRequest(
        request_id=request_id(), name=proposed.approval))
    closed = statement(channel, "preston", 1)
    assert [(c.unit_class, minor(c.closing_capital)) for c in closed.classes] == [
        ("senior", 10_000_000 - 12_397)]  # less 181 days of the 25 bps servicing fee
    # The same proposal cannot run twice, and period 1 cannot be proposed again.
    assert _refused(approvals(channel, APPROVER_2).ApproveOperation, apb.ApproveOperationRequest(
        request_id=request_id(), name=proposed.approval))[1] == "APPROVAL_ALREADY_DECIDED"
    assert _refused(pools(channel, APPROVER).ClosePeriod, ppb.ClosePeriodRequest(
        request_id=request_id(), pool=f"pools/{POOL}", period=1))[1] == "PERIOD_NOT_OPEN"
    # A correction of period 1 posts in period 2 with its reference; period 1 stays as it was.
    loan_event(channel, "FUND", 1_000_000)
    fix = loan_event(channel, "ACCRUE_INTEREST", 1_234, reference="corrects period 1 interest")
    entry = ledger_client(channel).GetTransfer(pb.GetTransferRequest(name=fix.transfers[0]))
    assert entry.metadata["reference"] == "corrects period 1 interest"
    assert entry.metadata["period"] == "2"
    assert statement(channel, "preston", 1) == closed
    create_pool(channel, pool_id="later", dates=("2025-12-01", "2026-06-01"))
    assert _refused(pools(channel, APPROVER).ClosePeriod, ppb.ClosePeriodRequest(
        request_id=request_id(), pool="pools/later", period=1))[1] == "PERIOD_NOT_ENDED"


def test_commitments_calls_distributions_redemptions_and_fees_move_money_as_agreed(
        uow, clock, channel, ledger):
    seed_councils(uow, clock)
    create_pool(channel, councils=("preston", "lancaster"))
    teller, p, on = pools(channel), f"pools/{POOL}", day("2025-01-01")
    for council, pence in [("preston", 100_000_000), ("lancaster", 50_000_000)]:
        teller.CommitCapital(ppb.CommitCapitalRequest(
            request_id=request_id(), pool=p, participant=council, unit_class="senior",
            amount=gbp(pence)))
    called = teller.CallCapital(ppb.CallCapitalRequest(
        request_id=request_id(), pool=p, unit_class="senior", amount=gbp(60_000_001),
        dealing_date=on))
    assert [(x.participant, minor(x.amount), x.units.value) for x in called.parts] == [
        ("lancaster", 20_000_000, "200000.000000"), ("preston", 40_000_001, "400000.010000")]
    positions = teller.ListPositions(ppb.ListPositionsRequest(pool=p)).positions
    assert [(x.participant, minor(x.unfunded_commitment)) for x in positions] == [
        ("lancaster", 30_000_000), ("preston", 59_999_999)]

    paid = teller.Distribute(ppb.DistributeRequest(
        request_id=request_id(), pool=p, unit_class="senior", amount=gbp(3_000_000),
        dealing_date=on))
    assert [(x.participant, minor(x.amount)) for x in paid.parts] == [
        ("lancaster", 1_000_000), ("preston", 2_000_000)]
    out = teller.Redeem(ppb.RedeemRequest(
        request_id=request_id(), pool=p, participant="lancaster", unit_class="senior",
        units=units("200000"), dealing_date=on))
    assert minor(out.amount) == 19_000_000  # its last units pay its whole capital account
    assert balance(ledger, "council-lancaster") == 200_000_000 - 20_000_000 + 1_000_000 + (
        19_000_000)
    assert balance(ledger, "council-preston") == 200_000_000 - 40_000_001 + 2_000_000

    loan_event(channel, "FUND", 10_000_000)
    loan_event(channel, "ACCRUE_INTEREST", 100_000)
    close_period(channel, 1)
    fees = balance(ledger, pool_account(POOL, "fees"))
    assert fees == 38_000_001 * 25 * 181 // (10_000 * 365)
    pools(channel).PayServicingFee(ppb.PayServicingFeeRequest(
        request_id=request_id(), pool=p, amount=gbp(fees)))
    assert balance(ledger, pool_account(POOL, "fees")) == 0
    assert balance(ledger, "bank:pool-servicing") == fees
