"""Close of business: accrue, age arrears, charge late fees and set provisions for every
serviced loan, then advance the logical business date.

For a business date D (the open day), every ACTIVE or CHARGED_OFF loan is replayed to the end
of D and the difference from what is booked is posted as one entry `loan:<id>:cob:<D>` (daily
accrual: Dr interest receivable / Cr interest income; late fees within the caps: Dr penalty
receivable / Cr penalty income; provision changes: Dr impairment / Cr loss allowance, or back),
and the day's arrears (days past due, bucket, IFRS 9 stage, provision) is recorded. Then D is
marked closed and the business date becomes D + 1.

Idempotence and resumption. Loans are taken in id order, `COB_CHUNK_LOANS` at a time; each
chunk is its own audited command with the deterministic request id `cob:<D>:<n>` (body: D and
the last loan id of chunk n - 1), so a crashed run resumes where it stopped, and a finished
chunk replays its stored outcome. A loan already booked through D gives an empty difference and
posts nothing. Running close of business for a date already closed writes nothing at all.

Catch-up. Asked to close through a date past the business date (a missed day), it closes every
day from the business date on, one by one, each day as above.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

from bank.app.loan_book import (
    Booking,
    arrears_day,
    business_date,
    commit_booking,
    participations,
    plan_booking,
    post,
)
from bank.app.loan_ports import CobRun, LoanWriter, loan_reader, loan_writer
from bank.app.ports import Clock, Head, UnitOfWork
from bank.app.unit import Command, Context, run_command
from bank.domain.errors import FailedPrecondition, invalid
from bank.domain.identity import SYSTEM, Principal
from bank.domain.invariants import ensure

log = logging.getLogger(__name__)

COB_CHUNK_LOANS = 500
CATCH_UP_DAYS_MAX = 3_660


@dataclass(frozen=True, slots=True)
class Progress:
    """Reported after every chunk: the day, the chunk number, and the day's totals so far."""

    business_date: date
    chunk: int
    loans: int
    entries: int


@dataclass(frozen=True, slots=True)
class CobSummary:
    first_date: date | None  # the first day this call closed (None: nothing to close)
    last_date: date | None
    days: int
    loans: int  # loan-days processed
    entries: int
    business_date: date  # after the run
    already_closed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"first": self.first_date.isoformat() if self.first_date else None,
                "last": self.last_date.isoformat() if self.last_date else None,
                "days": self.days, "loans": self.loans, "entries": self.entries,
                "business_date": self.business_date.isoformat(),
                "already_closed": self.already_closed}

    @staticmethod
    def from_json(data: dict[str, Any]) -> CobSummary:
        return CobSummary(
            date.fromisoformat(data["first"]) if data["first"] else None,
            date.fromisoformat(data["last"]) if data["last"] else None, data["days"],
            data["loans"], data["entries"], date.fromisoformat(data["business_date"]),
            data["already_closed"])


@dataclass(frozen=True, slots=True)
class _Chunk:
    loans: int
    entries: int
    last_loan_id: str

    def to_json(self) -> dict[str, Any]:
        return {"loans": self.loans, "entries": self.entries, "last": self.last_loan_id}

    @staticmethod
    def from_json(data: dict[str, Any]) -> _Chunk:
        return _Chunk(data["loans"], data["entries"], data["last"])


@dataclass(frozen=True, slots=True)
class _Started:
    business_date: date
    through: date  # what this request closes through: a retry of it closes no further

    def to_json(self) -> dict[str, Any]:
        return {"business_date": self.business_date.isoformat(),
                "through": self.through.isoformat()}

    @staticmethod
    def from_json(data: dict[str, Any]) -> _Started:
        return _Started(date.fromisoformat(data["business_date"]),
                        date.fromisoformat(data["through"]))


def get_business_date(uow: UnitOfWork, clock: Clock) -> tuple[date, CobRun | None]:
    """The business date, and the last close-of-business run (the day before it)."""
    with uow.read() as r:
        store = loan_reader(r)
        today = business_date(store, clock)
        return today, store.cob_run(today - timedelta(days=1))


def run_close_of_business(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                          through: date | None = None,
                          progress: Callable[[Progress], None] | None = None,
                          chunk_loans: int = COB_CHUNK_LOANS) -> CobSummary:
    """Close every business day from the business date through `through` (default: the
    business date alone). A `through` already closed writes nothing and returns
    `already_closed`. Raises `InvalidArgument` naming `business_date` for a catch-up of more
    than `CATCH_UP_DAYS_MAX` days."""
    today, _ = get_business_date(uow, clock)
    if through is not None and through < today:
        return CobSummary(None, None, 0, 0, 0, today, already_closed=True)
    if through is not None and (through - today).days >= CATCH_UP_DAYS_MAX:
        raise invalid("business_date", f"catches up at most {CATCH_UP_DAYS_MAX} days at once")
    # The request is fingerprinted as sent (no date: null), and what it closes through is
    # fixed when it first runs: the same request resent after the business date moved on
    # (a client that timed out) gets its own result back, and closes no further day.
    start = run_command(uow, clock, Command(
        "RunCloseOfBusiness", request_id, principal,
        {"through": through.isoformat() if through else None}),
        lambda ctx: _start(ctx, clock, principal, through), _Started.from_json)
    target = start.through
    day, loans, entries, days = start.business_date, 0, 0, 0
    first = day
    while day <= target:
        closed = _close_day(uow, clock, principal, day, progress, chunk_loans)
        loans, entries, days = loans + closed.loans, entries + closed.entries, days + 1
        day += timedelta(days=1)
    return CobSummary(first if days else None, target if days else None, days, loans, entries,
                      day if days else get_business_date(uow, clock)[0])


def _start(ctx: Context, clock: Clock, principal: Principal,
           through: date | None) -> tuple[_Started, Head]:
    store = loan_writer(ctx.tx)
    stored = store.stored_business_date()
    today = stored or clock.business_date()
    if through is not None and through < today:  # closed while this request waited
        raise FailedPrecondition("ALREADY_CLOSED", f"{through.isoformat()} is already closed; "
                                 f"the business date is {today.isoformat()}",
                                 metadata={"business_date": today.isoformat()})
    if stored is None:  # the first close of business pins the business date
        store.save_business_date(today, ctx.now_ns)
        ctx.effects.append(["business_date", today.isoformat()])
    if store.cob_run(today) is None:
        store.save_cob_run(CobRun(today, "running", 0, 0, 0, principal.subject, ctx.now_ns,
                                  None))
        ctx.effects.append(["cob_run", today.isoformat(), "running"])
    return _Started(today, through or today), ctx.head


def _close_day(uow: UnitOfWork, clock: Clock, principal: Principal, day: date,
               progress: Callable[[Progress], None] | None, chunk_loans: int) -> _Chunk:
    after, number, loans, entries = "", 0, 0, 0
    while True:
        number += 1
        command = Command("CloseOfBusinessChunk", f"cob:{day.isoformat()}:{number}", SYSTEM,
                          {"date": day.isoformat(), "after": after, "size": chunk_loans})
        chunk = run_command(uow, clock, command, functools.partial(
            _chunk, clock=clock, day=day, after=after, size=chunk_loans), _Chunk.from_json,
            record_refusals=False)  # its id is derived: a refusal must not stick to it
        loans, entries = loans + chunk.loans, entries + chunk.entries
        log.info("close of business %s: chunk %d, %d loans, %d entries so far", day, number,
                 loans, entries)
        if progress is not None:
            progress(Progress(day, number, loans, entries))
        if chunk.loans < chunk_loans:
            break
        after = chunk.last_loan_id
    run_command(uow, clock, Command("CloseBusinessDate", f"cob:{day.isoformat()}:close", SYSTEM,
                                    {"date": day.isoformat()}),
                lambda ctx: _close(ctx, principal, day, number, loans, entries),
                _Chunk.from_json)
    return _Chunk(loans, entries, after)


def _chunk(ctx: Context, clock: Clock, day: date, after: str, size: int
           ) -> tuple[_Chunk, Head]:
    store = loan_writer(ctx.tx)
    ensure(store.stored_business_date() == day,
           f"close of business for {day} runs on business date {store.stored_business_date()}")
    ids = store.loans_to_close(day, after, size)
    plans = []
    for loan_id in ids:
        loan = store.get_loan(loan_id)
        assert loan is not None
        booking = Booking(day, f"loan:{loan_id}:cob:{day.isoformat()}",
                          f"Close of business {day.isoformat()}: loan {loan_id}")
        plans.append((booking, plan_booking(store, loan, booking)))
    specs = [plan.spec for _, plan in plans if plan.spec is not None]
    head = post(ctx, specs, day)
    plans, head = participations(replace(ctx, head=head), clock, plans)
    for booking, plan in plans:
        commit_booking(ctx, store, plan, booking)
        store.save_arrears(plan.loan.loan_id, [arrears_day(plan.state)], ctx.now_ns)
    return _Chunk(len(ids), len(specs), ids[-1] if ids else after), head


def _close(ctx: Context, principal: Principal, day: date, chunks: int, loans: int,
           entries: int) -> tuple[_Chunk, Head]:
    store: LoanWriter = loan_writer(ctx.tx)
    ensure(store.stored_business_date() == day, f"closing {day}, not the business date")
    run = store.cob_run(day) or CobRun(day, "running", 0, 0, 0, principal.subject, ctx.now_ns,
                                       None)
    store.save_cob_run(replace(run, status="completed", chunks=chunks, loans=loans,
                               entries=entries, completed_ns=ctx.now_ns))
    store.save_business_date(day + timedelta(days=1), ctx.now_ns)
    ctx.effects.append(["cob_run", day.isoformat(), "completed", loans, entries])
    ctx.effects.append(["business_date", (day + timedelta(days=1)).isoformat()])
    return _Chunk(loans, entries, ""), ctx.head
