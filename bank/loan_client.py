"""`bank loans ...`: the lending book on a running server (list, show, the business date and
the reports), and close of business, which an operator runs on the database itself (like
`bank audit`), with progress shown chunk by chunk."""

from __future__ import annotations

import argparse
import getpass
import uuid
from collections.abc import Callable
from datetime import date
from typing import Any

from bank.client import _call, _money
from services.generated.peoplesbank.lending.v1 import loan_service_pb2 as lpb
from services.generated.peoplesbank.lending.v1 import loan_service_pb2_grpc as lpb_grpc

STATES = [name[len("LOAN_STATE_"):].lower() for name in lpb.LoanState.keys()[1:]]


def _loans(args: argparse.Namespace, method: str, request: Any) -> Any:
    return _call(args, method, request, lpb_grpc.LoanServiceStub)


def _date(d: Any) -> str:
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}" if d.year else "-"


def _state(value: int) -> str:
    return lpb.LoanState.Name(lpb.LoanState.ValueType(value))[len("LOAN_STATE_"):].lower()


def cmd_list(args: argparse.Namespace) -> int:
    token, shown = "", 0
    while True:
        request = lpb.ListLoansRequest(page_size=200, page_token=token,
                                       council_area=args.council_area or "")
        if args.state:
            request.state = lpb.LoanState.Value(f"LOAN_STATE_{args.state.upper()}")
        page = _loans(args, "ListLoans", request)
        for loan in page.loans:
            print(f"{loan.loan_id:24} {loan.member.removeprefix('members/'):20} "
                  f"{_state(loan.state):12} {_money(loan.amount_applied):>16} "
                  f"dpd {loan.days_past_due:4} {loan.arrears_bucket:8} stage {loan.stage}")
        shown += len(page.loans)
        token = page.next_page_token
        if not token:
            break
    print(f"{shown} loans")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    name = args.loan_id if args.loan_id.startswith("loans/") else f"loans/{args.loan_id}"
    loan = _loans(args, "GetLoan", lpb.GetLoanRequest(name=name))
    print(f"{loan.name}  {_state(loan.state)}  member {loan.member}  {loan.council_area}")
    print(f"  applied {_money(loan.amount_applied)} by {loan.applied_by}; "
          f"purpose: {loan.purpose}")
    if loan.decided_by:
        approved = _money(loan.amount_approved) if loan.HasField("amount_approved") else "-"
        print(f"  decided by {loan.decided_by}: approved {approved}")
    if loan.HasField("balances"):
        b = loan.balances
        print(f"  booked through {_date(loan.booked_date)}: principal "
              f"{_money(b.principal_outstanding)}, interest {_money(b.interest_receivable)}, "
              f"fees {_money(b.fee_receivable)}, penalties {_money(b.penalty_receivable)}, "
              f"overpayment {_money(b.overpayment)}, provision {_money(b.provision)}")
        print(f"  days past due {loan.days_past_due} ({loan.arrears_bucket}), IFRS 9 stage "
              f"{loan.stage}{', forborne' if loan.forborne else ''}")
        for line in loan.schedule:
            print(f"    {line.number:4} due {_date(line.due_date)}  principal "
                  f"{_money(line.principal):>14} interest {_money(line.interest):>12}  "
                  f"paid {_money(line.paid):>14} unpaid {_money(line.unpaid):>14}")
    print(f"  schedule versions: {len(loan.schedule_versions)}; arrears history: "
          f"{len(loan.arrears_history)} days")
    return 0


def cmd_business_date(args: argparse.Namespace) -> int:
    found = _loans(args, "GetBusinessDate", lpb.GetBusinessDateRequest())
    print(f"business date {_date(found.business_date)}; last closed "
          f"{_date(found.last_closed_date)} ({found.last_run_loans} loans, "
          f"{found.last_run_entries} entries)")
    return 0


def _buckets(lines: Any) -> None:
    for b in lines:
        print(f"    {b.key:8} loans {b.loans:6}  principal {_money(b.principal):>16}  arrears "
              f"{_money(b.arrears):>14}  exposure {_money(b.exposure):>16}  provision "
              f"{_money(b.provision):>14}")


def cmd_book(args: argparse.Namespace) -> int:
    report = _loans(args, "GetLoanBookReport",
                    lpb.LoanReportRequest(council_area=args.council_area or ""))
    print(f"loan book at business date {_date(report.business_date)}"
          + (f", {args.council_area}" if args.council_area else ""))
    for book in report.currencies:
        print(f"  {book.currency_code}: portfolio at risk {book.portfolio_at_risk_1_bps / 100:.2f}"
              f" % (1+ days), {book.portfolio_at_risk_30_bps / 100:.2f} % (31+ days); written "
              f"off {_money(book.written_off)}, recovered {_money(book.recovered)}")
        for s in book.by_state:
            print(f"    {_state(s.state):12} loans {s.loans:6}  principal "
                  f"{_money(s.principal_outstanding):>16}")
        _buckets(book.by_bucket)
    return 0


def cmd_arrears(args: argparse.Namespace) -> int:
    report = _loans(args, "GetArrearsReport",
                    lpb.LoanReportRequest(council_area=args.council_area or ""))
    print(f"arrears ageing at business date {_date(report.business_date)}")
    for currency in report.currencies:
        print(f"  {currency.currency_code}")
        _buckets(currency.buckets)
    return 0


def cmd_provisions(args: argparse.Namespace) -> int:
    report = _loans(args, "GetProvisionReport",
                    lpb.LoanReportRequest(council_area=args.council_area or ""))
    print(f"provisions at business date {_date(report.business_date)}")
    for currency in report.currencies:
        print(f"  {currency.currency_code}: provision {_money(currency.provision)} on exposure "
              f"{_money(currency.exposure)}")
        _buckets(currency.by_bucket)
        _buckets(currency.by_stage)
    return 0


def cmd_social_value(args: argparse.Namespace) -> int:
    report = _loans(args, "GetSocialValueReport",
                    lpb.LoanReportRequest(council_area=args.council_area or ""))
    for a in report.areas:
        print(f"{a.council_area:16} {a.currency_code} loans {a.loans:5}  approved "
              f"{_money(a.approved):>16}  disbursed {_money(a.disbursed):>16}  jobs created "
              f"{a.jobs_created}, safeguarded {a.jobs_safeguarded}; living-wage employers "
              f"{a.living_wage_employers}, co-operatives {a.cooperatives}, employee-owned "
              f"{a.employee_owned}")
    print(f"{len(report.areas)} council areas")
    return 0


def cmd_cob(args: argparse.Namespace) -> int:
    """Operator side, on the database: close of business with progress after every chunk."""
    from bank.adapters.clock import SystemClock
    from bank.adapters.sql import SqlUnitOfWork
    from bank.app.cob import Progress, run_close_of_business
    from bank.cli import UserError, _engine
    from bank.domain.errors import InvalidArgument
    from bank.domain.identity import Principal, Role

    try:
        through = date.fromisoformat(args.through) if args.through else None
    except ValueError:
        raise UserError(f"--through {args.through!r} is not a date (YYYY-MM-DD)") from None

    def show(p: Progress) -> None:
        print(f"  {p.business_date}: chunk {p.chunk}, {p.loans} loans, {p.entries} entries",
              flush=True)

    principal = Principal(f"cli:{getpass.getuser()}"[:128], Role.OPERATOR)
    with _engine(args) as engine:
        try:
            summary = run_close_of_business(SqlUnitOfWork(engine), SystemClock(), principal,
                                            args.request_id or str(uuid.uuid4()), through,
                                            show if not args.quiet else None)
        except InvalidArgument as error:
            raise UserError(error.message) from None
    if summary.already_closed:
        print(f"{through} is already closed; the business date is {summary.business_date}. "
              "Nothing was written.")
    else:
        print(f"closed {summary.days} business days ({summary.first_date} to "
              f"{summary.last_date}): {summary.loans} loan-days, {summary.entries} entries; "
              f"the business date is now {summary.business_date}")
    return 0


VERBS: dict[str, Callable[[argparse.Namespace], int]] = {
    "list": cmd_list, "show": cmd_show, "business-date": cmd_business_date, "book": cmd_book,
    "arrears": cmd_arrears, "provisions": cmd_provisions, "social-value": cmd_social_value,
    "cob": cmd_cob}
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "loans": lambda a: VERBS[a.loans_command](a)}


def add_parsers(sub: Any) -> None:
    loans = sub.add_parser("loans", help="the lending book: loans, reports, close of business")
    verbs = loans.add_subparsers(dest="loans_command", required=True)
    list_ = verbs.add_parser("list", help="list loans")
    list_.add_argument("--state", choices=STATES)
    list_.add_argument("--council-area", help="only this council area, e.g. preston")
    show = verbs.add_parser("show", help="one loan: balances, schedule, arrears")
    show.add_argument("loan_id")
    verbs.add_parser("business-date", help="the business date and the last close of business")
    for name, text in (("book", "loan book and portfolio at risk by arrears bucket"),
                       ("arrears", "arrears ageing by bucket"),
                       ("provisions", "provisions by arrears bucket and IFRS 9 stage"),
                       ("social-value", "social value totals by council area")):
        report = verbs.add_parser(name, help=text)
        report.add_argument("--council-area",
                            help="only this council area (a council must name its own)")
    cob = verbs.add_parser("cob", help="operator: close of business on the database (accrual, "
                           "arrears, late fees, provisions), then the next business date")
    cob.add_argument("--through", metavar="YYYY-MM-DD",
                     help="close every day up to this one (catch-up); default the business date")
    cob.add_argument("--request-id", help="reuse to resume a crashed run exactly")
    cob.add_argument("--quiet", action="store_true", help="no progress lines")
