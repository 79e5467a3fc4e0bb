"""In-process seeding for the big scenarios: the server's own use cases on the scratch database,
with the server stopped, so a 1,000,000-leaf audit log or a 100,000-loan book takes minutes
rather than the half hour single RPCs would.

Run by the scenarios as a subprocess of the server's Python, with the server's source tree
first on PYTHONPATH (so `--server-rev` seeds with the same code as it serves), before the
server starts:

    python ops/bench/seed.py transfers --database-url URL --accounts 10000 --leaves 1000000
    python ops/bench/seed.py statement --database-url URL --entries 1000000 --batch 4000
    python ops/bench/seed.py loans --database-url URL --keys-dir DIR --loans 100000

What goes in is what the server would write for the same calls: each request is built as the
same protobuf the RPC seeding sends (`load.py`), checked by the server's own edge converters
(`services.convert`, `services.members`, `services.loans`), and run by the same use case with
the same principal:

- `transfers`: the accounts and their funding (`create_accounts`, `create_transfers_group`
  exactly as `CreateAccounts` and `CreateTransfers` of 1,000 run them), then single-transfer
  requests, uniform over the member accounts, each its own request with its own audit leaf and
  stored outcome, given to `create_transfers_group` 1,000 requests at a time: what the server's
  group commit does with 1,000 concurrent callers (it closes a group at 512 requests).
- `statement`: two accounts, then `--batch` transfers per request, one request per
  `create_transfers_group` call (what one `CreateTransfers` call of that size does).
- `loans`: one product, then per loan: `onboard_member` (share and deposit accounts, encrypted
  personal data under the server's member master key in `--keys-dir`), `update_kyc_status`
  (VERIFIED), `apply_for_loan` (loan officer), `decide_loan` (a different principal, an
  approver), `disburse_loan` (teller) on the business date. `--per-transaction K` runs the
  commands of K loans in one database transaction (each command still its own audit leaf,
  stored request and outcome, exactly as alone; only the commit boundaries differ); 1 commits
  every command on its own, as the server does.

Progress goes to stdout; the last line is `RESULT {json}` (counts, seconds, the window of
recorded times).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

# This file runs as a script: its folder is sys.path[0], so `load` is ops/bench/load.py.
import load

PROGRESS_EVERY_S = 10.0
TELLER = "bench;teller"  # the RPC seeding's principal (load.PRINCIPAL)
OFFICER = "bench-officer;loan_officer;branch:preston"
APPROVER = "bench-approver;approver;branch:preston"
PRODUCT = "bench-sme"


def say(line: str) -> None:
    print(line, flush=True)


def principal(header: str) -> Any:
    from services.auth import principal_from_header

    return principal_from_header(header)


def open_uow(url: str) -> Any:
    """The scratch database, migrated to the code's head (as `bank serve` would)."""
    from bank.adapters import migrate
    from bank.adapters.sql import SqlUnitOfWork, make_engine

    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = make_engine(url)
    migrate.upgrade(engine)
    return SqlUnitOfWork(engine)


class Analyzer:
    """ANALYZE on PostgreSQL as a table grows, as autovacuum would (it is off on the benchmark
    machine's instance: without statistics the planner keeps a generic plan from when the
    tables were empty, e.g. a sequential scan of `entries` to look up transfer ids, so every
    batch gets slower). Every time the work done doubles, and at the end."""

    def __init__(self, uow: Any) -> None:
        self.uow = uow
        self.next = 1_000

    def __call__(self, done: int, force: bool = False) -> None:
        if not self.uow.is_postgres or not (force or done >= self.next):
            return
        self.next = max(self.next * 2, done + 1)
        with self.uow.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()


def checked(convert: Callable[[Any], Any]) -> Any:
    """Run an edge converter; refuse what the server would refuse."""
    from bank.domain.errors import ViolationCollector

    v = ViolationCollector()
    value = convert(v)
    v.raise_if_any()
    return value


class Progress:
    def __init__(self, what: str, total: int) -> None:
        self.what, self.total = what, total
        self.started = self.last = time.perf_counter()

    def __call__(self, done: int, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last >= PROGRESS_EVERY_S or done == self.total:
            self.last = now
            rate = done / max(now - self.started, 1e-9)
            eta = (self.total - done) / rate if rate else float("nan")
            say(f"    {done:>9,} / {self.total:,} {self.what}, {rate:,.0f}/s, "
                f"{now - self.started:,.0f} s, about {eta:,.0f} s to go")


# -- ledger ---------------------------------------------------------------------------------------
def group(uow: Any, clock: Any, who: Any, requests: list[tuple[str, list[Any]]]) -> int:
    """`create_transfers_group` over (request id, TransferInput protos) pairs; every transfer
    must succeed. Returns the number of transfers."""
    from bank.app.accounts import BatchResult
    from bank.app.group_commit import TransferRequest, create_transfers_group
    from services import convert as cv

    today = clock.business_date()
    built = [TransferRequest(who, request_id, [
        checked(lambda v, t=t, i=i: cv.transfer_spec_in(t, f"transfers[{i}]", v, today))
        for i, t in enumerate(transfers)]) for request_id, transfers in requests]
    outcomes = create_transfers_group(uow, clock, built)
    count = 0
    for (request_id, _), outcome in zip(requests, outcomes, strict=True):
        if not isinstance(outcome, BatchResult):
            raise SystemExit(f"request {request_id} failed: {outcome!r}")
        bad = [i for i in outcome.items if i.error is not None]
        if bad:
            raise SystemExit(f"request {request_id}: {len(bad)} transfers refused, first: "
                             f"{bad[0].error!r}")
        count += len(outcome.items)
    return count


def accounts(uow: Any, clock: Any, who: Any, members: int) -> int:
    """The benchmark's accounts, as `scenarios.seed_accounts` makes them over RPC (same
    request ids): `members` funded member deposit accounts, cash, one hot income account.
    Returns the number of commands (audit leaves)."""
    from bank.app.accounts import create_accounts
    from services import convert as cv
    from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb

    specs = load.account_protos(pb, members)
    commands = 0
    for start in range(0, len(specs), load.MEMBERS_PER_CALL):
        part = specs[start:start + load.MEMBERS_PER_CALL]
        result = create_accounts(uow, clock, who, f"seed-accounts-{start}", [
            checked(lambda v, a=a, i=i: cv.account_spec_in(a, f"accounts[{i}]", v))
            for i, a in enumerate(part)])
        bad = [i for i in result.items if i.error is not None]
        if bad:
            raise SystemExit(f"{len(bad)} accounts refused, first: {bad[0].error!r}")
        commands += 1
    for start in range(0, members, load.MEMBERS_PER_CALL):
        group(uow, clock, who, [(f"seed-fund-{start}", [
            load.transfer(pb, f"fund-{i}", load.CASH, load.member(i), load.FUND_MINOR)
            for i in range(start, min(members, start + load.MEMBERS_PER_CALL))])])
        commands += 1
    return commands


def seed_transfers(args: argparse.Namespace) -> dict[str, Any]:
    """Accounts, then single-transfer requests until the audit log holds `--leaves` leaves."""
    from bank.adapters.clock import SystemClock
    from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb

    uow, clock, who = open_uow(args.database_url), SystemClock(), principal(TELLER)
    began_ns = time.time_ns()
    started = time.perf_counter()
    with uow.read() as r:
        have = r.head().audit_size
    if have == 0:
        have += accounts(uow, clock, who, args.accounts)
        say(f"  {args.accounts:,} funded member accounts ({have} commands) in "
            f"{time.perf_counter() - started:.1f} s")
    want = max(args.leaves - have, 0)
    say(f"  adding {want:,} single-transfer requests (one audit leaf each), "
        f"{args.group:,} requests per create_transfers_group transaction")
    rng = random.Random(args.seed)
    n = args.accounts
    progress = Progress("single-transfer requests", want)
    analyze = Analyzer(uow)
    seeding = time.perf_counter()
    done = 0
    while done < want:
        requests = []
        for k in range(done, min(want, done + args.group)):
            a = rng.randrange(n)
            b = (a + 1 + rng.randrange(n - 1)) % n
            requests.append((f"seed-single-{k}", [
                load.transfer(pb, f"seed-single-{k}", load.member(a), load.member(b))]))
        group(uow, clock, who, requests)
        done += len(requests)
        progress(done)
        analyze(done)
    analyze(done, force=True)
    seconds = time.perf_counter() - seeding
    with uow.read() as r:
        leaves = r.head().audit_size
    return {"requests": want, "seconds": seconds, "total_seconds": time.perf_counter() - started,
            "leaves": leaves, "began_ns": began_ns, "ended_ns": time.time_ns()}


def seed_statement(args: argparse.Namespace) -> dict[str, Any]:
    """Cash and the hot account, then `--entries` transfers cash -> hot, `--batch` per request."""
    from bank.adapters.clock import SystemClock
    from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb

    uow, clock, who = open_uow(args.database_url), SystemClock(), principal(TELLER)
    accounts(uow, clock, who, 2)
    began_ns = time.time_ns()
    started = time.perf_counter()
    n = args.entries
    progress = Progress("entries", n)
    analyze = Analyzer(uow)
    for first in range(0, n, args.batch):
        last = min(n, first + args.batch)
        group(uow, clock, who, [(f"stmt-seed-{first}", [
            load.transfer(pb, f"st-{i}", load.CASH, load.HOT) for i in range(first, last)])])
        progress(last)
        analyze(last)
    analyze(n, force=True)
    return {"entries": n, "seconds": time.perf_counter() - started, "began_ns": began_ns,
            "ended_ns": time.time_ns()}


# -- loans ----------------------------------------------------------------------------------------
class SharedTransaction:
    """A unit of work that, inside `batch()`, hands every command the same open write
    transaction (a fresh repository over the same connection), so K commands commit once.
    Each command still locks the head, checks its request id, writes its rows, its audit leaf
    and its stored outcome, exactly as alone. Outside `batch()` it is the plain unit of work."""

    def __init__(self, uow: Any) -> None:
        self.uow = uow
        self.engine = uow.engine
        self.is_postgres = uow.is_postgres
        self._tx: Any = None

    @contextmanager
    def batch(self) -> Iterator[None]:
        with self.uow.write() as tx:
            self._tx = tx
            try:
                yield
            finally:
                self._tx = None

    @contextmanager
    def write(self, timeout_s: float | None = None) -> Iterator[Any]:
        if self._tx is None:
            with self.uow.write(timeout_s) as tx:
                yield tx
        else:
            yield type(self._tx)(self._tx.conn, self._tx.is_postgres)

    @contextmanager
    def read(self, timeout_s: float | None = None) -> Iterator[Any]:
        if self._tx is None:
            with self.uow.read(timeout_s) as tx:
                yield tx
        else:
            yield type(self._tx)(self._tx.conn, self._tx.is_postgres)


def product_request(lpb: Any) -> Any:
    from google.type import money_pb2

    def gbp(pence: int) -> Any:
        return money_pb2.Money(currency_code="GBP", units=pence // 100,
                               nanos=pence % 100 * 10**7)

    terms = lpb.LoanTerms(
        amortisation=lpb.AMORTISATION_EQUAL_INSTALMENTS, frequency=lpb.FREQUENCY_MONTHLY,
        instalments=36, day_count=lpb.DAY_COUNT_ACT_365F,
        late_fee=lpb.LateFeeRule(amount=gbp(1_000), days_overdue=5,
                                 per_instalment_cap=gbp(2_500), per_loan_cap=gbp(6_000),
                                 repeat_every_days=10),
        provision_matrix=lpb.ProvisionMatrix(current_bps=100, dpd_1_30_bps=500,
                                             dpd_31_60_bps=2_000, dpd_61_90_bps=5_000,
                                             dpd_over_90_bps=10_000))
    terms.annual_rate.value = "8.5"
    return lpb.CreateProductRequest(request_id="bench-product", product=lpb.Product(
        product_id=PRODUCT, display_name="SME growth loan (benchmark)", terms=terms,
        principal_min=gbp(100_000), principal_max=gbp(5_000_000)))


def seed_loans(args: argparse.Namespace) -> dict[str, Any]:
    from google.type import money_pb2

    from bank.adapters.clock import SystemClock
    from bank.adapters.keys import KeyRing
    from bank.app import loans as loan_cases
    from bank.app import members as member_cases
    from bank.domain.members import KycStatus
    from bank.domain.postcodes import DISTRICTS
    from services import loans as loan_edge
    from services import members as member_edge
    from services.generated.peoplesbank.lending.v1 import loan_service_pb2 as lpb
    from services.generated.peoplesbank.members.v1 import member_service_pb2 as mpb

    base = open_uow(args.database_url)
    uow = SharedTransaction(base)
    clock = SystemClock()
    teller, officer, approver = principal(TELLER), principal(OFFICER), principal(APPROVER)
    # The server's member cipher: master keys under <keys dir>/member-master.
    cipher = member_edge.member_cipher(KeyRing(Path(args.keys_dir)))
    today = clock.business_date()
    request = product_request(lpb)
    loan_cases.create_product(uow, clock, officer, request.request_id,
                              checked(lambda v: loan_edge.product_in(request, v)))
    districts = sorted(DISTRICTS)
    rng = random.Random(args.seed)
    n, per_member = args.loans, max(1, args.loans_per_member)
    forms = ["COOPERATIVE", "CIC", "COMPANY", "SOLE_TRADER", "COMMUNITY_BENEFIT_SOCIETY"]
    known_forms = set(mpb.LegalForm.keys())
    forms = [f for f in forms if f"LEGAL_FORM_{f}" in known_forms] or ["INDIVIDUAL"]
    ownerships = [lpb.OWNERSHIP_COOPERATIVE, lpb.OWNERSHIP_EMPLOYEE_OWNED, lpb.OWNERSHIP_OTHER]
    say(f"  {n:,} loans ({per_member} per member), {args.per_transaction} loans' commands per "
        f"transaction, business date {today}")
    progress = Progress("loans", n)
    analyze = Analyzer(base)
    started = time.perf_counter()
    began_ns = time.time_ns()
    commands = 1

    def one_loan(i: int) -> int:
        member_id = f"bm{i // per_member:06d}"
        count = 0
        if i % per_member == 0:
            form = forms[(i // per_member) % len(forms)]
            natural = form in ("INDIVIDUAL", "SOLE_TRADER")
            data = mpb.PersonalData(
                display_name=f"Bench member {i // per_member}", address=mpb.Address(
                    lines=[f"{1 + i % 200} Market Street"], locality="Lancashire",
                    postcode=f"{districts[i % len(districts)]} 1AA"),
                email=f"m{i // per_member}@example.org", phone="+44 1772 000000")
            if natural:
                data.birth_date.year, data.birth_date.month, data.birth_date.day = 1980, 5, 17
            onboard = mpb.OnboardMemberRequest(
                request_id=f"bench-onboard-{member_id}", open_deposit_account=True,
                member=mpb.Member(member_id=member_id,
                                  legal_form=mpb.LegalForm.Value(f"LEGAL_FORM_{form}"),
                                  personal_data=data))
            member_cases.onboard_member(
                uow, clock, cipher, teller, onboard.request_id,
                checked(lambda v: member_edge.application_in(onboard, v, today)))
            member_cases.update_kyc_status(uow, clock, teller, f"bench-kyc-{member_id}",
                                           member_id, KycStatus.VERIFIED)
            count += 2
        loan_id = f"bl{i:06d}"
        pence = rng.randrange(1_000, 50_000) * 100
        apply = lpb.ApplyForLoanRequest(request_id=f"bench-apply-{loan_id}", loan=lpb.Loan(
            loan_id=loan_id, member=f"members/{member_id}", product=f"loanProducts/{PRODUCT}",
            amount_applied=money_pb2.Money(currency_code="GBP", units=pence // 100),
            purpose="Working capital and equipment",
            social_value=lpb.SocialValue(jobs_created=rng.randrange(6),
                                         jobs_safeguarded=rng.randrange(20),
                                         living_wage_employer=rng.random() < 0.6,
                                         ownership=rng.choice(ownerships))))
        loan_cases.apply_for_loan(uow, clock, officer, apply.request_id,
                                  checked(lambda v: loan_edge.application_in(apply, v)))
        loan_cases.decide_loan(uow, clock, approver, f"bench-decide-{loan_id}", loan_id, True,
                               None, "")
        # First instalment due 1-31 days after the business date: a spread of due days.
        loan_cases.disburse_loan(uow, clock, teller, f"bench-disburse-{loan_id}", loan_id, None,
                                 today + timedelta(days=1 + i % 31))
        return count + 3

    k = max(1, args.per_transaction)
    for first in range(0, n, k):
        last = min(n, first + k)
        if k == 1:
            commands += one_loan(first)
        else:
            with uow.batch():
                for i in range(first, last):
                    commands += one_loan(i)
        progress(last)
        analyze(last)
    analyze(n, force=True)
    with base.read() as r:
        leaves = r.head().audit_size
    return {"loans": n, "members": (n + per_member - 1) // per_member, "commands": commands,
            "seconds": time.perf_counter() - started, "leaves": leaves, "began_ns": began_ns,
            "ended_ns": time.time_ns(), "business_date": today.isoformat()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ops/bench/seed.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("transfers", help="accounts, then single-transfer requests")
    t.add_argument("--accounts", type=int, default=10_000)
    t.add_argument("--leaves", type=int, required=True, help="audit log size to reach")
    t.add_argument("--group", type=int, default=1_000, help="requests per transaction")
    s = sub.add_parser("statement", help="entries on one account")
    s.add_argument("--entries", type=int, required=True)
    s.add_argument("--batch", type=int, default=4_000, help="transfers per request")
    loans = sub.add_parser("loans", help="a disbursed loan book")
    loans.add_argument("--loans", type=int, required=True)
    loans.add_argument("--loans-per-member", type=int, default=1)
    loans.add_argument("--per-transaction", type=int, default=1,
                       help="loans whose commands share one transaction (1: as the server)")
    loans.add_argument("--keys-dir", required=True, help="the server's keys folder")
    for parser in (t, s, loans):
        parser.add_argument("--database-url", required=True)
        parser.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    run = {"transfers": seed_transfers, "statement": seed_statement, "loans": seed_loans}
    result = run[args.what](args)
    say("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
