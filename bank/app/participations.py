"""Loan participations on the ledger: who funds a loan, and each of its movements split among
its funders and posted to every pool that funds it, in the loan command's own transaction.

A loan's funding split (`bank.domain.pools.participation`) is proposed at approval (optional;
checked against the pools' concentration limits) and fixed at the first disbursement (checked
again); without one the bank funds the loan alone and nothing here runs for it. From then on,
every booking of the loan (a command or close of business) is split into lines, one per
movement and funder with the bps in force, stored in `loan_participation_lines` and never
recomputed; each pool's lines become one `participation` pool event per pool and command
(`bank.app.pools`), whose entries move the pool's accounts and the bank's pass-through accounts
(`bank.app.pool_ledger`), and the pool is reconciled with the ledger to the penny.

The funding is stored on the loan (`loans.funding_json`): the proposal, the split in force and
its version, the borrower's sector (for the sector limit), what each funder holds of the loan,
and how many lines the loan has. The split changes only by a participation transfer: a maker
asks (`request_participation_transfer`, an approval) and a different approver approves; the
transfer then moves the bps and the same fraction of the seller's principal, receivables and
provisions to the buyer, at par (`execute_participation_transfer`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from bank.app.loan_ports import LoanRecord, LoanStatus, ParticipationLine, loan_writer
from bank.app.pool_limits import borrower_facts, check_concentration
from bank.app.pool_ports import pool_store
from bank.app.pools import LoadedPool, load, record_event
from bank.app.ports import Clock, Head
from bank.app.unit import Context
from bank.domain.errors import FailedPrecondition, NotFound, invalid
from bank.domain.lending import LedgerBuckets
from bank.domain.pools.participation import (
    BANK,
    Line,
    Share,
    holdings_of,
    movements,
    pool_of,
    split_booking,
    transfer,
)
from bank.domain.pools.split import FundingSplit, split_amount
from bank.domain.pools.terms import POOL_ID_RE

FUNDERS_MAX = 20
SECTOR_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
PARTICIPATION_TRANSFER_OPERATION = "TransferParticipation"


@dataclass(frozen=True, slots=True)
class Funding:
    """What `loans.funding_json` holds (see the module docstring)."""

    proposed: FundingSplit | None = None
    split: FundingSplit | None = None  # in force from the first disbursement
    version: int = 0
    since: date | None = None
    sector: str = ""
    holdings: dict[str, Share] = field(default_factory=dict)
    lines: int = 0

    def to_json(self) -> str:
        return json.dumps({
            "proposed": list(map(list, self.proposed.shares_bps)) if self.proposed else None,
            "split": list(map(list, self.split.shares_bps)) if self.split else None,
            "version": self.version, "since": self.since.isoformat() if self.since else None,
            "sector": self.sector, "lines": self.lines,
            "holdings": {f: s.to_json() for f, s in sorted(self.holdings.items())}},
            sort_keys=True, separators=(",", ":"))

    @staticmethod
    def of(loan: LoanRecord) -> Funding:
        if loan.funding_json is None:
            return Funding()
        data = json.loads(loan.funding_json)

        def split(value: list[list[Any]] | None) -> FundingSplit | None:
            return FundingSplit(tuple((f, b) for f, b in value)) if value else None

        return Funding(split(data["proposed"]), split(data["split"]), data["version"],
                       date.fromisoformat(data["since"]) if data["since"] else None,
                       data["sector"], {f: Share.from_json(s)
                                        for f, s in data["holdings"].items()}, data["lines"])


def split_text(split: FundingSplit) -> str:
    """`bank:2000,pools/p1:8000`: how entries and events name a split."""
    return ",".join(f"{funder}:{bps}" for funder, bps in split.shares_bps)


def parse_funding(shares: Sequence[tuple[str, int]], field_path: str = "funding"
                  ) -> FundingSplit | None:
    """A split from (funder, bps) pairs, or None when there are none (the bank alone).
    Funders are `bank` or `pools/<pool_id>`, each once. Raises `InvalidArgument` naming
    `field_path[i].funder` or the split's own reasons (SPLIT_NOT_10000_BPS, ...)."""
    if not shares:
        return None
    if len(shares) > FUNDERS_MAX:
        raise invalid(field_path, f"at most {FUNDERS_MAX} funders",
                      reason="SPLIT_TOO_MANY_PARTIES")
    seen: dict[str, int] = {}
    for index, (funder, bps) in enumerate(shares):
        _check_funder(funder, f"{field_path}[{index}].funder")
        if funder in seen:
            raise invalid(f"{field_path}[{index}].funder", f"{funder} is named twice",
                          reason="FUNDER_REPEATED")
        seen[funder] = bps
    return FundingSplit.of(seen, field_path)


def check_sector(sector: str, field_path: str = "sector") -> str:
    if sector and not SECTOR_RE.fullmatch(sector):
        raise invalid(field_path, "must be 1-64 characters of [a-z0-9_-], starting with a "
                      "letter or digit")
    return sector


def _pool(tx: Any, loan: LoanRecord, pool_id: str, cache: dict[str, LoadedPool]) -> LoadedPool:
    if pool_id not in cache:
        cache[pool_id] = load(pool_store(tx), pool_id)
    pool = cache[pool_id]
    if pool.terms.currency != loan.currency:
        raise FailedPrecondition("CURRENCY_MISMATCH", f"pool {pool_id} lends in "
                                 f"{pool.terms.currency}, loan {loan.loan_id} is in "
                                 f"{loan.currency}", metadata={"pool": f"pools/{pool_id}"})
    return pool


def check_pool_part(tx: Any, loan: LoanRecord, pool: LoadedPool, amount_minor: int,
                    sector: str, holds: bool) -> None:
    """A pool may take `amount_minor` more of the loan: its reserve and concentration limits
    allow it (a pool with a sector limit needs the borrower's sector: SECTOR_REQUIRED), and
    the loan id is not one the pool already holds for a loan serviced elsewhere
    (LOAN_ID_TAKEN_IN_POOL; `holds` says whether the pool is already a funder of this loan)."""
    pool_id = pool.terms.pool_id
    if not holds and loan.loan_id in pool.register.loan_ids:
        raise FailedPrecondition(
            "LOAN_ID_TAKEN_IN_POOL", f"pool {pool_id} already holds a loan {loan.loan_id!r} "
            "recorded by hand (serviced elsewhere): this loan cannot share its id there",
            metadata={"pool": f"pools/{pool_id}", "loan": f"loans/{loan.loan_id}"})
    if pool.terms.limits.sector_bps and not sector:
        raise FailedPrecondition(
            "SECTOR_REQUIRED", f"pool {pool_id} has a sector limit: give the borrower's sector "
            "(DecideLoan.sector) before it funds the loan",
            metadata={"pool": f"pools/{pool_id}", "limit": "sector"})
    check_concentration(pool, loan.loan_id, amount_minor,
                        borrower_facts(tx, loan.member_id, sector))


def check_funding(tx: Any, loan: LoanRecord, split: FundingSplit, amount_minor: int,
                  sector: str) -> None:
    """Every pool of the split exists, lends in the loan's currency and can take its part of
    `amount_minor` (`check_pool_part`). Raises `NotFound` POOL_NOT_FOUND or
    `FailedPrecondition` CURRENCY_MISMATCH, RESERVE_BELOW_TARGET, SECTOR_REQUIRED,
    LOAN_ID_TAKEN_IN_POOL or CONCENTRATION_LIMIT_EXCEEDED."""
    cache: dict[str, LoadedPool] = {}
    parts = split_amount(amount_minor, split)
    for funder in split.parties:
        pool_id = pool_of(funder)
        if pool_id is not None:
            check_pool_part(tx, loan, _pool(tx, loan, pool_id, cache), parts[funder], sector,
                            holds=False)


def check_buyer(tx: Any, loan: LoanRecord, buyer: str) -> None:
    """A pool buying into a loan exists and lends in its currency (checked when a transfer is
    asked for; its reserve and limits are checked when it runs). Raises `NotFound`
    POOL_NOT_FOUND or `FailedPrecondition` CURRENCY_MISMATCH."""
    pool_id = pool_of(buyer)
    if pool_id is not None:
        _pool(tx, loan, pool_id, {})


def propose(loan: LoanRecord, split: FundingSplit | None, sector: str) -> LoanRecord:
    """The loan with a split proposed at approval (or none), and the borrower's sector."""
    if split is None and not sector:
        return loan
    return replace(loan, funding_json=Funding(proposed=split, sector=sector).to_json())


def fix_at_disbursement(tx: Any, loan: LoanRecord, on: date) -> LoanRecord:
    """The loan with the split approved at `DecideLoan` fixed (none: the bank alone), checked
    again against the pools' reserves and limits for the amount approved: they may have moved
    since the approval. Only an approved participation transfer changes it afterwards."""
    funding = Funding.of(loan)
    split = funding.proposed
    if split is None or split.parties == (BANK,):
        return loan if not funding.sector else replace(
            loan, funding_json=Funding(sector=funding.sector).to_json())
    assert loan.amount_approved_minor is not None
    check_funding(tx, loan, split, loan.amount_approved_minor, funding.sector)
    return replace(loan, funding_json=replace(funding, split=split, version=1,
                                              since=on).to_json())


@dataclass(frozen=True, slots=True)
class Moved:
    """One booking of one loan: its buckets before and after, and the entry it posted."""

    loan: LoanRecord
    before: LedgerBuckets
    after: LedgerBuckets
    transfer_id: str
    on: date


def participate(ctx: Context, clock: Clock, moved: Sequence[Moved]
                ) -> tuple[dict[str, LoanRecord], Head]:
    """Split every booking of a loan with a funding split among its funders, store the lines
    and post each pool's part (one event per pool, pools in id order). Returns the loans whose
    funding changed (by id) and the head. Raises a pool's refusal (e.g.
    INSUFFICIENT_POOL_CASH) before the caller writes anything of its own."""
    updated: dict[str, LoanRecord] = {}
    items: dict[tuple[str, date], list[dict[str, Any]]] = {}
    rows: list[ParticipationLine] = []
    for m in moved:
        funding = Funding.of(m.loan)
        if funding.split is None:
            continue
        lines, holdings = split_booking(funding.split, funding.holdings,
                                        movements(m.before, m.after))
        if not lines:
            continue
        rows += _rows(ctx, m.loan.loan_id, m.transfer_id, m.on, funding, lines)
        _pool_items(ctx, items, m.loan, m.transfer_id, m.on, funding, funding.split, lines)
        updated[m.loan.loan_id] = replace(m.loan, funding_json=replace(
            funding, holdings=holdings, lines=funding.lines + len(lines)).to_json())
    head = _post_pool_items(ctx, clock, items)
    _store(ctx, rows)
    return updated, head


def _rows(ctx: Context, loan_id: str, transfer_id: str, on: date, funding: Funding,
          lines: Sequence[Line], version: int | None = None) -> list[ParticipationLine]:
    return [ParticipationLine(loan_id, funding.lines + n, transfer_id, on, line.movement,
                              line.funder, version or funding.version, line.bps,
                              line.amount_minor, ctx.now_ns)
            for n, line in enumerate(lines, start=1)]


def _pool_items(ctx: Context, items: dict[tuple[str, date], list[dict[str, Any]]],
                loan: LoanRecord, transfer_id: str, on: date, funding: Funding,
                split: FundingSplit, lines: Sequence[Line]) -> None:
    for funder in sorted({line.funder for line in lines}):
        pool_id = pool_of(funder)
        if pool_id is None:
            continue
        flows = [[x.movement, x.bps, x.amount_minor] for x in lines if x.funder == funder]
        item: dict[str, Any] = {"loan": loan.loan_id, "entry": transfer_id,
                                "split": split_text(split), "flows": flows}
        if any(f[0] in ("fund", "buy_principal") for f in flows):
            item["borrower"] = borrower_facts(ctx.tx, loan.member_id, funding.sector)
        items.setdefault((pool_id, on), []).append(item)


def _post_pool_items(ctx: Context, clock: Clock,
                     items: dict[tuple[str, date], list[dict[str, Any]]]) -> Head:
    """One `participation` event per pool and date (pools in id order), its entries dated
    like the loan bookings they share. A pool's refusal names the pool."""
    head = ctx.head
    for pool_id, on in sorted(items):
        pool = load(pool_store(ctx.tx), pool_id)
        try:
            _, head = record_event(replace(ctx, head=head), clock, pool, "participation",
                                   {"items": items[(pool_id, on)]}, "", on)
        except (FailedPrecondition, NotFound) as error:
            raise type(error)(error.reason, f"pool {pool_id}: {error.message}", metadata={
                **error.metadata, "pool": f"pools/{pool_id}"}) from error
    return head


def _store(ctx: Context, rows: Sequence[ParticipationLine]) -> None:
    if not rows:
        return
    loan_writer(ctx.tx).insert_participation_lines(rows)
    digest = hashlib.sha256(json.dumps(
        [[r.loan_id, r.line_no, r.transfer_id, r.movement, r.funder, r.split_version, r.bps,
          r.amount_minor] for r in rows], separators=(",", ":")).encode()).hexdigest()
    ctx.effects.append(["participation_lines", len(rows), digest])


# -- participation transfers --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Transfer:
    funding: Funding
    split: FundingSplit
    lines: list[Line]
    after: dict[str, Share]


def plan_transfer(tx: Any, loan: LoanRecord, seller: str, buyer: str, bps: int) -> _Transfer:
    """What moving `bps` of the loan's split from `seller` to `buyer` would do; writes
    nothing. Checked when a transfer is asked for and again when it runs: the loan ACTIVE
    (LOAN_NOT_ACTIVE), the seller a funder (FUNDER_NOT_IN_SPLIT), the transfer's own
    `InvalidArgument`s (PARTICIPATION_BPS_INVALID, PARTICIPATION_SAME_FUNDER), a buyer pool
    that exists in the loan's currency (POOL_NOT_FOUND, CURRENCY_MISMATCH)."""
    if loan.status is not LoanStatus.ACTIVE:
        raise FailedPrecondition("LOAN_NOT_ACTIVE", f"loan {loan.loan_id!r} is "
                                 f"{loan.status.value}: only an active loan's participation "
                                 "can be transferred", metadata={"loan": f"loans/{loan.loan_id}"})
    funding = Funding.of(loan)
    split = funding.split or FundingSplit(((BANK, 10_000),))
    if seller not in split.parties:
        raise FailedPrecondition("FUNDER_NOT_IN_SPLIT", f"{seller} does not fund loan "
                                 f"{loan.loan_id!r}", metadata={"loan": f"loans/{loan.loan_id}"})
    opening = [] if funding.split else _bank_alone(tx, loan)
    new_split, moved, after = transfer(split, holdings_of(opening, funding.holdings), seller,
                                       buyer, bps)
    check_buyer(tx, loan, buyer)
    return _Transfer(funding, new_split, [*opening, *moved], after)


def execute_participation_transfer(ctx: Context, clock: Clock, loan: LoanRecord, seller: str,
                                   buyer: str, bps: int, on: date
                                   ) -> tuple[LoanRecord, Head]:
    """Move `bps` of the loan's split from `seller` to `buyer` (see the module docstring), in
    the approval's transaction. Raises what `plan_transfer` raises, then the buyer pool's
    reserve and limits (`check_pool_part`) and its cash (INSUFFICIENT_POOL_CASH)."""
    plan = plan_transfer(ctx.tx, loan, seller, buyer, bps)
    funding, lines = plan.funding, plan.lines
    buyer_pool = pool_of(buyer)
    if buyer_pool is not None:
        bought = next((x.amount_minor for x in lines if x.movement == "buy_principal"), 0)
        check_pool_part(ctx.tx, loan, _pool(ctx.tx, loan, buyer_pool, {}), bought,
                        funding.sector, holds=buyer in funding.holdings)
    version = funding.version + 1
    transfer_id = f"loan:{loan.loan_id}:participation:{version}"
    items: dict[tuple[str, date], list[dict[str, Any]]] = {}
    _pool_items(ctx, items, loan, transfer_id, on, funding, plan.split, lines)
    head = _post_pool_items(ctx, clock, items)
    _store(ctx, _rows(ctx, loan.loan_id, transfer_id, on, funding, lines, version))
    changed = replace(funding, split=plan.split, version=version, since=on,
                      holdings=plan.after, lines=funding.lines + len(lines))
    return replace(loan, funding_json=changed.to_json()), head


def _bank_alone(tx: Any, loan: LoanRecord) -> list[Line]:
    """The opening lines of a loan the bank has funded alone: all of it, as booked."""
    booked = loan_writer(tx).booked(loan.loan_id)
    if booked is None:
        raise NotFound("LOAN_NOT_BOOKED", f"loan {loan.loan_id!r} has nothing booked")
    b = booked.buckets
    amounts = (("opening_principal", b.principal_outstanding_minor),
               ("opening_income", b.interest_receivable_minor + b.fee_receivable_minor
                + b.penalty_receivable_minor),
               ("opening_provisions", b.provision_required_minor))
    return [Line(movement, BANK, 10_000, amount) for movement, amount in amounts if amount]


def _check_funder(funder: str, field_path: str) -> None:
    pool_id = pool_of(funder)
    if funder != BANK and (pool_id is None or not POOL_ID_RE.fullmatch(pool_id)):
        raise invalid(field_path, "must be `bank` or `pools/{pool_id}`",
                      reason="FUNDER_INVALID")


def check_transfer_parties(seller: str, buyer: str) -> None:
    """Both funders well formed (edge check). Raises `InvalidArgument`."""
    _check_funder(seller, "from_funder")
    _check_funder(buyer, "to_funder")


__all__ = [
    "BANK",
    "PARTICIPATION_TRANSFER_OPERATION",
    "Funding",
    "Moved",
    "check_funding",
    "check_sector",
    "check_transfer_parties",
    "execute_participation_transfer",
    "fix_at_disbursement",
    "parse_funding",
    "participate",
    "plan_transfer",
    "propose",
    "split_text",
]
