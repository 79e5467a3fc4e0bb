"""PoolService: protos in, use cases called, protos out. No rules live here.

Every field is validated at the edge (all broken rules of a request reported together, named
by their path); the pool rules themselves are `bank.domain.pools` and `bank.app.pools`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import grpc
from google.type import decimal_pb2

from bank.app import pool_reads as reads
from bank.app import pools as cases
from bank.app.members import member_council_areas
from bank.app.pool_ledger import capital_account
from bank.app.pools import EventResult
from bank.app.ports import Clock, UnitOfWork
from bank.domain import limits
from bank.domain.errors import ViolationCollector
from bank.domain.pools import MICRO_UNITS_PER_UNIT, format_units
from bank.domain.pools.terms import (
    ConcentrationLimits,
    Participant,
    ParticipantKind,
    PoolTerms,
    validate_terms,
)
from bank.domain.pools.units import UnitClass
from bank.domain.postcodes import COUNCIL_AREAS
from services import convert as cv
from services.auth import current_principal
from services.errors import guarded, guarded_stream
from services.generated.peoplesbank.pools.v1 import pool_service_pb2 as pb
from services.generated.peoplesbank.pools.v1 import pool_service_pb2_grpc as pb_grpc
from services.ledger import remaining

WATCH_POLL_S = 0.5
REFERENCE_LENGTH_MAX = 256
UNITS_RE = re.compile(r"\d{1,15}(\.\d{1,6})?")
SECTOR_RE = re.compile(r"[a-z0-9_-]{1,64}")
POOL_RE = re.compile(r"pools/([a-z0-9][a-z0-9-]{0,19})")
STATEMENT_RE = re.compile(r"pools/([a-z0-9][a-z0-9-]{0,19})/periods/([1-9][0-9]{0,4})"
                          r"/statements/([A-Za-z0-9][A-Za-z0-9_.-]{0,19})")
COUNCIL_RE = re.compile(r"councils/([a-z-]{1,32})")
KINDS = {pb.PARTICIPANT_KIND_COUNCIL: ParticipantKind.COUNCIL,
         pb.PARTICIPANT_KIND_BANK: ParticipantKind.BANK,
         pb.PARTICIPANT_KIND_FUNDER: ParticipantKind.FUNDER}
_KINDS_OUT = {v: k for k, v in KINDS.items()}
LOAN_KINDS = {pb.LOAN_EVENT_KIND_FUND: "fund", pb.LOAN_EVENT_KIND_REPAY_PRINCIPAL: "repay",
              pb.LOAN_EVENT_KIND_ACCRUE_INTEREST: "accrue",
              pb.LOAN_EVENT_KIND_RECEIVE_INTEREST: "receive",
              pb.LOAN_EVENT_KIND_PROVIDE: "provide",
              pb.LOAN_EVENT_KIND_RELEASE_PROVISION: "release",
              pb.LOAN_EVENT_KIND_CHARGE_OFF: "charge_off", pb.LOAN_EVENT_KIND_RECOVER: "recover"}
_POOL_OUTPUT_ONLY = ("name", "open_period", "open_period_start_date", "open_period_end_date",
                     "valuation", "reserve", "reserve_target", "create_time")


# -- in -------------------------------------------------------------------------------------------
def pool_name(value: str, field: str, v: ViolationCollector) -> str:
    match = POOL_RE.fullmatch(value)
    if not value:
        v.add(field, "is required")
    elif match is None:
        v.add(field, "must be pools/{pool_id} with a pool id of 1-20 characters of [a-z0-9-]")
    return match.group(1) if match else ""


def statement_name(value: str, field: str, v: ViolationCollector) -> tuple[str, int, str]:
    match = STATEMENT_RE.fullmatch(value)
    if match is None:
        v.add(field, "must be pools/{pool}/periods/{period}/statements/{participant}")
        return "", 0, ""
    return match.group(1), int(match.group(2)), match.group(3)


def _required_text(value: str, field: str, v: ViolationCollector) -> str:
    if not value:
        v.add(field, "is required")
    elif len(value) > 20 or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
        v.add(field, "must be 1-20 characters of [A-Za-z0-9_.-]")
    return value


def amount_in(m: Any, field: str, currency: str, v: ViolationCollector,
              allow_zero: bool = False) -> int:
    """A positive amount in the pool's currency, in minor units (0 with a violation if not)."""
    parsed = cv.money_in(m, field, v)
    if parsed is None:
        return 0
    money_currency, minor = parsed
    if money_currency != currency:
        v.add(f"{field}.currency_code", f"must be the pool's currency {currency}")
    elif not (0 if allow_zero else 1) <= minor <= limits.AMOUNT_MINOR_MAX:
        v.add(field, f"must be greater than zero and at most {limits.AMOUNT_MINOR_MAX} minor "
              "units")
    return minor


def units_in(d: decimal_pb2.Decimal, field: str, v: ViolationCollector) -> int:
    if not UNITS_RE.fullmatch(d.value):
        v.add(f"{field}.value", "must be a positive decimal with at most 6 decimal places")
        return 0
    micro = int(Decimal(d.value) * MICRO_UNITS_PER_UNIT)
    if micro <= 0:
        v.add(f"{field}.value", "must be greater than zero")
    return micro


def _money(currency: str) -> Callable[[int], Any]:
    def money(minor: int) -> Any:
        return cv.money_out(minor, currency)
    return money


def _decimal_out(value: str | None) -> decimal_pb2.Decimal | None:
    return decimal_pb2.Decimal(value=value) if value is not None else None


def _units_out(micro: int) -> decimal_pb2.Decimal:
    return decimal_pb2.Decimal(value=format_units(micro))


def terms_in(p: pb.Pool, v: ViolationCollector, today: date) -> PoolTerms:
    present = {descriptor.name for descriptor, _ in p.ListFields()}
    for name in _POOL_OUTPUT_ONLY:
        if name in present:
            v.add(f"pool.{name}", "is output only and must not be set")
    participants = []
    for i, part in enumerate(p.participants):
        where = f"pool.participants[{i}]"
        kind = KINDS.get(part.kind)
        if kind is None:
            v.add(f"{where}.kind", "is required: COUNCIL, BANK or FUNDER")
        account = cv.parse_name(part.settlement_account, "accounts",
                                f"{where}.settlement_account", v)
        participants.append(Participant(part.participant_id, kind or ParticipantKind.FUNDER,
                                        account or "-"))
    dates = []
    for i, d in enumerate(p.dealing_dates):
        parsed = cv.date_in(d, f"pool.dealing_dates[{i}]", v, today)
        dates.append(parsed or date(1, 1, 1))
    limits_in = p.concentration_limits
    return PoolTerms(
        p.pool_id, p.display_name, p.currency_code,
        tuple(UnitClass(c.class_id, c.seniority, c.income_weight_bps or 10_000)
              for c in p.unit_classes),
        tuple(participants), tuple(dates), p.servicing_fee_bps_per_year, p.year_days or 365,
        p.reserve_target_bps,
        ConcentrationLimits(limits_in.single_borrower_bps, limits_in.sector_bps,
                            limits_in.council_area_bps))


# -- out ------------------------------------------------------------------------------------------
def pool_out(view: reads.PoolView) -> pb.Pool:
    terms, register, val = view.pool.terms, view.pool.register, view.valuation
    money = _money(terms.currency)
    start, end = terms.period_dates(register.period_number)
    message = pb.Pool(
        name=f"pools/{terms.pool_id}", pool_id=terms.pool_id, display_name=terms.display_name,
        currency_code=terms.currency,
        unit_classes=[pb.UnitClass(class_id=c.class_id, seniority=c.seniority,
                                   income_weight_bps=c.income_weight_bps)
                      for c in terms.unit_classes],
        participants=[pb.Participant(participant_id=p.participant_id, kind=_KINDS_OUT[p.kind],
                                     settlement_account=f"accounts/{p.settlement_account_id}")
                      for p in terms.participants],
        dealing_dates=[cv.date_out(d) for d in terms.dealing_dates],
        servicing_fee_bps_per_year=terms.servicing_fee_bps_per_year, year_days=terms.year_days,
        reserve_target_bps=terms.reserve_target_bps,
        concentration_limits=pb.ConcentrationLimits(
            single_borrower_bps=terms.limits.single_borrower_bps,
            sector_bps=terms.limits.sector_bps, council_area_bps=terms.limits.council_area_bps),
        open_period=register.period_number, open_period_start_date=cv.date_out(start),
        valuation=pb.Valuation(
            cash=money(val.cash_minor), loan_principal=money(val.loan_principal_minor),
            accrued_interest=money(val.accrued_interest_minor),
            provisions=money(val.provisions_minor), fees_payable=money(val.fees_payable_minor),
            net_assets=money(val.net_assets_minor), capital_total=money(val.capital_total_minor),
            classes=[pb.ClassValuation(
                class_id=c.class_id, units=_units_out(c.units_micro),
                capital=money(c.capital_minor),
                nav_per_unit=_decimal_out(str(c.nav_per_unit) if c.nav_per_unit else None))
                for c in val.classes]),
        reserve=money(view.reserve_minor), reserve_target=money(view.reserve_target_minor),
        create_time=cv.timestamp_out(view.created_ns))
    if end is not None:
        message.open_period_end_date.CopyFrom(cv.date_out(end))
    return message


def result_out(result: EventResult, currency: str) -> pb.PoolEventResult:
    out = result.outcome
    message = pb.PoolEventResult(pool=f"pools/{result.pool_id}", event=result.seq,
                                 transfers=[f"transfers/{t}" for t in result.transfer_ids])
    if "units" in out:
        message.units.CopyFrom(_units_out(out["units"]))
    if "amount" in out:
        message.amount.CopyFrom(cv.money_out(out["amount"], currency))
    if "nav" in out:
        message.nav_per_unit.CopyFrom(decimal_pb2.Decimal(value=out["nav"]))
    for part in out.get("parts", []):
        message.parts.append(pb.Part(participant=part[0], amount=cv.money_out(part[1], currency),
                                     units=_units_out(part[2]) if len(part) > 2 else None))
    return message


def statement_out(pool_id: str, period: int, participant: str, currency: str,
                  found: list[Any]) -> pb.Statement:
    money = _money(currency)
    first = found[0].statement
    classes = []
    for stored in found:
        s = stored.statement
        classes.append(pb.ClassStatement(
            unit_class=stored.class_id, opening_units=_units_out(s["opening_units"]),
            opening_capital=money(s["opening_capital"]),
            contributions=money(s["contributions"]), units_issued=_units_out(s["units_issued"]),
            redemptions=money(s["redemptions"]), units_redeemed=_units_out(s["units_redeemed"]),
            distributions=money(s["distributions"]), income=money(s["income"]),
            fees=money(s["fees"]), losses=money(s["losses"]),
            recoveries=money(s["recoveries"]), closing_units=_units_out(s["closing_units"]),
            closing_capital=money(s["closing_capital"]), nav_per_unit=_decimal_out(s["nav"]),
            capital_account=f"accounts/{capital_account(pool_id, participant, stored.class_id)}",
            loans=[pb.LoanExposure(loan=f"loans/{loan}", council_area=area,
                                   amount=money(amount)) for loan, area, amount in s["loans"]]))
    return pb.Statement(
        name=f"pools/{pool_id}/periods/{period}/statements/{participant}", pool=f"pools/{pool_id}",
        period=period, participant=participant,
        start_date=cv.date_out(date.fromisoformat(first["start_date"])),
        end_date=cv.date_out(date.fromisoformat(first["end_date"])), classes=classes,
        close_time=cv.timestamp_out(found[0].closed_ns))


class PoolServicer(pb_grpc.PoolServiceServicer):
    def __init__(self, uow: UnitOfWork, clock: Clock, stopping: threading.Event) -> None:
        self.uow = uow
        self.clock = clock
        self.stopping = stopping

    def _start(self, request: Any, v: ViolationCollector) -> tuple[str, PoolTerms | None]:
        """request_id and pool of a mutating pool request, and the pool's terms if it exists
        and the request is well formed so far."""
        cv.request_id(request.request_id, v)
        pool_id = pool_name(request.pool, "pool", v)
        if not pool_id:
            return "", None
        return pool_id, reads.pool_terms(self.uow, pool_id)

    @guarded
    def CreatePool(self, request: pb.CreatePoolRequest,
                   context: grpc.ServicerContext) -> pb.Pool:
        v = ViolationCollector()
        cv.request_id(request.request_id, v)
        if not request.HasField("pool"):
            v.add("pool", "is required")
            v.raise_if_any()
        terms = terms_in(request.pool, v, self.clock.business_date())
        validate_terms(terms, v)
        v.raise_if_any()
        cases.create_pool(self.uow, self.clock, current_principal(), request.request_id, terms,
                          remaining(context))
        return pool_out(reads.get_pool(self.uow, terms.pool_id))

    @guarded
    def GetPool(self, request: pb.GetPoolRequest, context: grpc.ServicerContext) -> pb.Pool:
        v = ViolationCollector()
        pool_id = pool_name(request.name, "name", v)
        v.raise_if_any()
        return pool_out(reads.get_pool(self.uow, pool_id))

    @guarded
    def CommitCapital(self, request: pb.CommitCapitalRequest,
                      context: grpc.ServicerContext) -> pb.PoolEventResult:
        v = ViolationCollector()
        pool_id, terms = self._start(request, v)
        participant = _required_text(request.participant, "participant", v)
        class_id = _required_text(request.unit_class, "unit_class", v)
        amount = amount_in(request.amount, "amount", terms.currency if terms else "", v)
        v.raise_if_any()
        assert terms is not None
        result = cases.commit_capital(self.uow, self.clock, current_principal(),
                                      request.request_id, pool_id, participant, class_id, amount,
                                      remaining(context))
        return result_out(result, terms.currency)

    def _deal(self, request: Any, context: grpc.ServicerContext, method: str, kind: str,
              args: dict[str, Any], v: ViolationCollector, terms: PoolTerms | None,
              pool_id: str) -> pb.PoolEventResult:
        dealing = (cv.date_in(request.dealing_date, "dealing_date", v,
                              self.clock.business_date())
                   if request.HasField("dealing_date") else None)
        if not request.HasField("dealing_date"):
            v.add("dealing_date", "is required")
        v.raise_if_any()
        assert terms is not None and dealing is not None
        result = cases.deal(self.uow, self.clock, current_principal(), request.request_id,
                            method, pool_id, kind, dealing, args, remaining(context))
        return result_out(result, terms.currency)

    @guarded
    def Subscribe(self, request: pb.SubscribeRequest,
                  context: grpc.ServicerContext) -> pb.PoolEventResult:
        v = ViolationCollector()
        pool_id, terms = self._start(request, v)
        args = {"participant": _required_text(request.participant, "participant", v),
                "class": _required_text(request.unit_class, "unit_class", v),
                "amount": amount_in(request.amount, "amount", terms.currency if terms else "", v)}
        return self._deal(request, context, "Subscribe", "subscribe", args, v, terms, pool_id)

    @guarded
    def CallCapital(self, request: pb.CallCapitalRequest,
                    context: grpc.ServicerContext) -> pb.PoolEventResult:
        v = ViolationCollector()
        pool_id, terms = self._start(request, v)
        args = {"class": _required_text(request.unit_class, "unit_class", v),
                "amount": amount_in(request.amount, "amount", terms.currency if terms else "", v)}
        return self._deal(request, context, "CallCapital", "call", args, v, terms, pool_id)

    @guarded
    def Redeem(self, request: pb.RedeemRequest,
               context: grpc.ServicerContext) -> pb.PoolEventResult:
        v = ViolationCollector()
        pool_id, terms = self._start(request, v)
        args = {"participant": _required_text(request.participant, "participant", v),
                "class": _required_text(request.unit_class, "unit_class", v),
                "units": units_in(request.units, "units", v)}
        return self._deal(request, context, "Redeem", "redeem", args, v, terms, pool_id)

    @guarded
    def Distribute(self, request: pb.DistributeRequest,
                   context: grpc.ServicerContext) -> pb.PoolEventResult:
        v = ViolationCollector()
        pool_id, terms = self._start(request, v)
        args = {"class": _required_text(request.unit_class, "unit_class", v),
                "amount": amount_in(request.amount, "amount", terms.currency if terms else "", v)}
        return self._deal(request, context, "Distribute", "distribute", args, v, terms, pool_id)

    @guarded
    def RecordLoanEvent(self, request: pb.RecordLoanEventRequest,
                        context: grpc.ServicerContext) -> pb.PoolEventResult:
        v = ViolationCollector()
        pool_id, terms = self._start(request, v)
        currency = terms.currency if terms else ""
        loan = cv.parse_name(request.loan, "loans", "loan", v)
        kind = LOAN_KINDS.get(request.kind)
        if kind is None:
            v.add("kind", "is required: one of " + ", ".join(
                pb.LoanEventKind.Name(k) for k in LOAN_KINDS))
        args: dict[str, Any] = {"loan": loan}
        if kind == "charge_off":
            args["principal"] = amount_in(request.amount, "amount", currency, v, allow_zero=True)
            args["interest"] = (amount_in(request.interest, "interest", currency, v,
                                          allow_zero=True) if request.HasField("interest") else 0)
            if args["principal"] + args["interest"] <= 0 and not v.violations:
                v.add("amount", "charge off a positive amount of principal or interest")
        else:
            args["amount"] = amount_in(request.amount, "amount", currency, v)
            if request.HasField("interest"):
                v.add("interest", "is only allowed with CHARGE_OFF")
        self._borrower(request, kind, args, v)
        reference = cv.text_in(request.reference, "reference", REFERENCE_LENGTH_MAX, v)
        v.raise_if_any()
        assert terms is not None and kind is not None
        result = cases.record_loan_event(self.uow, self.clock, current_principal(),
                                         request.request_id, pool_id, kind, args, reference,
                                         remaining(context))
        return result_out(result, terms.currency)

    def _borrower(self, request: pb.RecordLoanEventRequest, kind: str | None,
                  args: dict[str, Any], v: ViolationCollector) -> None:
        if kind != "fund":
            for name in ("borrower", "sector"):
                if getattr(request, name):
                    v.add(name, "is only allowed with FUND")
            return
        borrower: dict[str, str] = {}
        if request.sector:
            if not SECTOR_RE.fullmatch(request.sector):
                v.add("sector", "must be 1-64 characters of [a-z0-9_-]")
            borrower["sector"] = request.sector
        if request.borrower:
            member_id = cv.parse_name(request.borrower, "members", "borrower", v)
            if member_id:
                area = member_council_areas(self.uow, [member_id]).get(member_id)
                if area is None:
                    v.add("borrower", "is not a member of the bank")
                else:
                    borrower.update(member=member_id, council_area=area)
        if borrower:
            args["borrower"] = borrower

    @guarded
    def PayServicingFee(self, request: pb.PayServicingFeeRequest,
                        context: grpc.ServicerContext) -> pb.PoolEventResult:
        v = ViolationCollector()
        pool_id, terms = self._start(request, v)
        amount = amount_in(request.amount, "amount", terms.currency if terms else "", v)
        v.raise_if_any()
        assert terms is not None
        result = cases.pay_servicing_fee(self.uow, self.clock, current_principal(),
                                         request.request_id, pool_id, amount, remaining(context))
        return result_out(result, terms.currency)

    @guarded
    def ClosePeriod(self, request: pb.ClosePeriodRequest,
                    context: grpc.ServicerContext) -> pb.ClosePeriodResponse:
        v = ViolationCollector()
        cv.request_id(request.request_id, v)
        pool_id = pool_name(request.pool, "pool", v)
        if request.period <= 0:
            v.add("period", "is required: the open period's number (1 or more)")
        v.raise_if_any()
        result = cases.request_period_close(self.uow, self.clock, current_principal(),
                                            request.request_id, pool_id, request.period,
                                            remaining(context))
        return pb.ClosePeriodResponse(approval=f"approvals/{result.approval_id}")

    @guarded
    def ListPositions(self, request: pb.ListPositionsRequest,
                      context: grpc.ServicerContext) -> pb.ListPositionsResponse:
        v = ViolationCollector()
        pool_id = pool_name(request.pool, "pool", v)
        if request.participant:
            _required_text(request.participant, "participant", v)
        if request.page_size < 0:
            v.add("page_size", "must not be negative")
        v.raise_if_any()
        terms = reads.pool_terms(self.uow, pool_id)
        page = reads.list_positions(self.uow, pool_id, request.participant or None,
                                    request.page_size, request.page_token)
        money = _money(terms.currency)
        return pb.ListPositionsResponse(positions=[pb.Position(
            participant=p.position.participant_id, unit_class=p.position.class_id,
            units=_units_out(p.units_micro), capital=money(p.capital_minor),
            commitment=money(p.commitment_minor), unfunded_commitment=money(p.unfunded_minor),
            capital_account="accounts/" + capital_account(pool_id, p.position.participant_id,
                                                          p.position.class_id))
            for p in page.items], next_page_token=page.next_page_token)

    @guarded
    def GetStatement(self, request: pb.GetStatementRequest,
                     context: grpc.ServicerContext) -> pb.Statement:
        v = ViolationCollector()
        pool_id, period, participant = statement_name(request.name, "name", v)
        v.raise_if_any()
        terms = reads.pool_terms(self.uow, pool_id)
        found = reads.get_statement(self.uow, pool_id, period, participant)
        return statement_out(pool_id, period, participant, terms.currency, found)

    @guarded
    def ExportStatement(self, request: pb.ExportStatementRequest,
                        context: grpc.ServicerContext) -> pb.StatementExport:
        v = ViolationCollector()
        pool_id, period, participant = statement_name(request.name, "name", v)
        if request.format not in (pb.EXPORT_FORMAT_UNSPECIFIED, pb.EXPORT_FORMAT_JSON,
                                  pb.EXPORT_FORMAT_CSV):
            v.add("format", "must be JSON or CSV")
        v.raise_if_any()
        csv_wanted = request.format == pb.EXPORT_FORMAT_CSV
        content, digest = reads.export_statement(self.uow, pool_id, period, participant,
                                                 "csv" if csv_wanted else "json")
        return pb.StatementExport(
            name=request.name, format=pb.EXPORT_FORMAT_CSV if csv_wanted else pb.EXPORT_FORMAT_JSON,
            content_type="text/csv" if csv_wanted else "application/json", content=content,
            sha256=digest)

    @guarded_stream
    def WatchCouncilEntries(self, request: pb.WatchCouncilEntriesRequest,
                            context: grpc.ServicerContext
                            ) -> Iterator[pb.WatchCouncilEntriesResponse]:
        v = ViolationCollector()
        match = COUNCIL_RE.fullmatch(request.council)
        if match is None or match.group(1) not in COUNCIL_AREAS:
            v.add("council", "must be councils/{council_area} with a council area of the "
                  "bank's region")
        v.raise_if_any()
        assert match is not None
        owner, cursor = f"council:{match.group(1)}", request.after_position
        while context.is_active() and not self.stopping.is_set():
            entries = reads.owner_entries(self.uow, owner, cursor, request.page_size)
            if not entries:
                self.stopping.wait(WATCH_POLL_S)
                continue
            cursor = entries[-1].seq
            yield pb.WatchCouncilEntriesResponse(transfers=[cv.entry_out(e) for e in entries],
                                                 last_position=cursor)

