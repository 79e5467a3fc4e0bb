"""Loan participations: who funds a loan, and how each of its movements is split among them.

A loan funded from pools carries a `FundingSplit` in basis points (summing to 10,000), fixed at
its first disbursement; the parties are funders: `bank` and `pools/<pool_id>`. The split
changes only by an approved participation transfer (`transfer`), which makes a new version.

Each funder holds a `Share` of the loan: principal, receivables (interest, fees and penalties
accrued and not received), provisions against them, and what it lost to write-offs and had
recovered. Every booking of the loan (the difference between two states of its ledger buckets,
`movements`) is split by `split_booking` into `Line`s, one per movement and funder, each
carrying the bps in force; the parts of a movement sum exactly to it:

- what grows a claim (principal lent, income accrued, a receipt undone by a backdated replay)
  is split by the bps, largest remainder;
- what settles a claim (principal repaid, receivables received, an accrual reversed, a
  write-off) is split by the bps as well, but takes no more than a funder holds: a part above a
  funder's balance goes to the others in proportion to what they still hold. So a payment that
  settles a bucket pays every funder exactly what it holds, and receivables accrued before a
  participation transfer are paid to the funder that earned them;
- provisions are a valuation: each funder's provision is its bps share of the loan's allowance
  (never more than its exposure), reached by `provide` and `release` lines; a write-off uses a
  funder's provision first (`provision_used`);
- recoveries go back to whoever bore the loss: split by each funder's unrecovered loss.

Lines are stored as made and never recomputed; a funder's `Share` is the fold of its lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from bank.domain.errors import FailedPrecondition, invalid
from bank.domain.invariants import ensure
from bank.domain.lending.ledger import LedgerBuckets
from bank.domain.pools.split import BPS_TOTAL, FundingSplit, apportion

BANK = "bank"
POOL_PREFIX = "pools/"

# movement -> (Share field, sign); `lost` moves with the write-offs (see `Share.moved`).
_EFFECT: dict[str, tuple[str, int]] = {
    "fund": ("principal_minor", 1), "repay": ("principal_minor", -1),
    "write_off_principal": ("principal_minor", -1),
    "buy_principal": ("principal_minor", 1), "sell_principal": ("principal_minor", -1),
    "accrue": ("income_minor", 1), "reverse_receipt": ("income_minor", 1),
    "receive": ("income_minor", -1), "reverse_accrual": ("income_minor", -1),
    "write_off_income": ("income_minor", -1),
    "buy_income": ("income_minor", 1), "sell_income": ("income_minor", -1),
    "provide": ("provisions_minor", 1), "release": ("provisions_minor", -1),
    "provision_used": ("provisions_minor", -1),
    "recover": ("recovered_minor", 1),
    # What the bank held when a loan it funded alone got its first split (by a transfer).
    "opening_principal": ("principal_minor", 1), "opening_income": ("income_minor", 1),
    "opening_provisions": ("provisions_minor", 1),
}
MOVEMENTS = tuple(_EFFECT)


def pool_of(funder: str) -> str | None:
    """The pool id of a `pools/<id>` funder; None for the bank."""
    return funder[len(POOL_PREFIX):] if funder.startswith(POOL_PREFIX) else None


@dataclass(frozen=True, slots=True)
class Share:
    """One funder's part of one loan, in minor units."""

    principal_minor: int = 0
    income_minor: int = 0
    provisions_minor: int = 0
    lost_minor: int = 0
    recovered_minor: int = 0

    @property
    def exposure_minor(self) -> int:
        return self.principal_minor + self.income_minor

    @property
    def unrecovered_minor(self) -> int:
        return self.lost_minor - self.recovered_minor

    def moved(self, movement: str, amount_minor: int) -> Share:
        name, sign = _EFFECT[movement]
        share = replace(self, **{name: getattr(self, name) + sign * amount_minor})
        if movement in ("write_off_principal", "write_off_income"):
            share = replace(share, lost_minor=share.lost_minor + amount_minor)
        ensure(min(share.principal_minor, share.income_minor, share.provisions_minor) >= 0
               and share.recovered_minor <= share.lost_minor,
               f"a participation line would leave a funder with {share}")
        return share

    def to_json(self) -> list[int]:
        return [self.principal_minor, self.income_minor, self.provisions_minor,
                self.lost_minor, self.recovered_minor]

    @staticmethod
    def from_json(data: list[int]) -> Share:
        return Share(*data)


@dataclass(frozen=True, slots=True)
class Line:
    """One funder's part of one movement; `bps` is its share in the split in force."""

    movement: str
    funder: str
    bps: int
    amount_minor: int


@dataclass(frozen=True, slots=True)
class Movements:
    """What one booking of a loan moved (see `movements`)."""

    principal_minor: int  # + lent, - repaid (write-offs apart)
    accrued_minor: int  # income recognised (interest, fees, penalties); - reversed
    received_minor: int  # receivables received; - a receipt undone
    written_off_principal_minor: int
    written_off_income_minor: int
    allowance_after_minor: int
    recovered_minor: int


def movements(before: LedgerBuckets, after: LedgerBuckets) -> Movements:
    """The movements between two states of a loan's ledger buckets."""
    def delta(*names: str) -> int:
        return sum(getattr(after, n) - getattr(before, n) for n in names)

    written_off_principal = delta("written_off_principal_minor")
    written_off_income = delta("written_off_interest_minor", "written_off_fees_minor")
    accrued = delta("interest_income_minor", "fee_income_minor", "penalty_income_minor")
    receivables = delta("interest_receivable_minor", "fee_receivable_minor",
                        "penalty_receivable_minor")
    recovered = delta("recovered_minor")
    ensure(min(written_off_principal, written_off_income, recovered) >= 0,
           "a booking cannot undo a write-off or a recovery")
    return Movements(delta("principal_outstanding_minor") + written_off_principal, accrued,
                     accrued - receivables - written_off_income, written_off_principal,
                     written_off_income, after.provision_required_minor, recovered)


def holdings_of(lines: Iterable[Line], start: Mapping[str, Share] | None = None
                ) -> dict[str, Share]:
    """Every funder's `Share` after `lines` (from `start`)."""
    shares = dict(start or {})
    for line in lines:
        shares[line.funder] = shares.get(line.funder, Share()).moved(line.movement,
                                                                    line.amount_minor)
    return _nonzero(shares)


def _nonzero(shares: Mapping[str, Share]) -> dict[str, Share]:
    """Holdings keep only funders holding something (or with a loss on record)."""
    return {f: s for f, s in sorted(shares.items()) if s != Share()}


def take(amount_minor: int, weights: Mapping[str, int], balances: Mapping[str, int]
         ) -> dict[str, int]:
    """Split `amount_minor` by `weights` (largest remainder, parties in id order) without
    giving any party more than its balance: what is above a balance goes to the others in
    proportion to the room they have left. All of the balances: each party gets its own."""
    parties = sorted(balances)
    total = sum(balances.values())
    ensure(0 <= amount_minor <= total,
           f"cannot take {amount_minor} from balances summing to {total}")
    if amount_minor == total:
        return {p: balances[p] for p in parties}
    weight = [weights.get(p, 0) for p in parties]
    if not any(weight):
        weight = [balances[p] for p in parties]
    parts = apportion(amount_minor, weight)
    overflow = 0
    for index, party in enumerate(parties):
        if parts[index] > balances[party]:
            overflow += parts[index] - balances[party]
            parts[index] = balances[party]
    if overflow:
        room = [balances[p] - parts[i] for i, p in enumerate(parties)]
        for index, extra in enumerate(apportion(overflow, room)):
            parts[index] += extra
    return dict(zip(parties, parts, strict=True))


class _Splitter:
    """Accumulates the lines of one booking and the holdings they lead to."""

    def __init__(self, split: FundingSplit, holdings: Mapping[str, Share]) -> None:
        self.bps = dict(split.shares_bps)
        self.funders = sorted(set(self.bps) | set(holdings))
        self.held = {f: holdings.get(f, Share()) for f in self.funders}
        self.lines: list[Line] = []

    def emit(self, movement: str, parts: Mapping[str, int]) -> None:
        for funder in self.funders:
            amount = parts.get(funder, 0)
            if amount:
                self.lines.append(Line(movement, funder, self.bps.get(funder, 0), amount))
                self.held[funder] = self.held[funder].moved(movement, amount)

    def grow(self, movement: str, amount_minor: int) -> None:
        if amount_minor > 0:
            parties = sorted(self.bps)
            self.emit(movement, dict(zip(parties, apportion(
                amount_minor, [self.bps[p] for p in parties]), strict=True)))

    def settle(self, movement: str, amount_minor: int, field: str) -> dict[str, int]:
        if amount_minor <= 0:
            return {}
        parts = take(amount_minor, self.bps,
                     {f: getattr(s, field) for f, s in self.held.items()})
        self.emit(movement, parts)
        return parts

    def provisions_to(self, target: Mapping[str, int]) -> None:
        self.emit("release", {f: s.provisions_minor - target.get(f, 0)
                              for f, s in self.held.items()
                              if s.provisions_minor > target.get(f, 0)})
        self.emit("provide", {f: target.get(f, 0) - s.provisions_minor
                              for f, s in self.held.items()
                              if target.get(f, 0) > s.provisions_minor})

    def provision_targets(self, allowance_minor: int) -> dict[str, int]:
        """Each funder's bps share of the allowance, none above its exposure (what is above
        goes to the others with room; if the exposures cannot hold it all, they hold what
        they can)."""
        room = {f: s.exposure_minor for f, s in self.held.items()}
        wanted = min(allowance_minor, sum(room.values()))
        return take(wanted, self.bps, room) if wanted > 0 else {}


def _settle_all(s: _Splitter, repaid: int, received: int, reversed_accrual: int) -> None:
    s.settle("repay", repaid, "principal_minor")
    s.settle("receive", received, "income_minor")
    s.settle("reverse_accrual", reversed_accrual, "income_minor")


def split_booking(split: FundingSplit, holdings: Mapping[str, Share], moved: Movements
                  ) -> tuple[list[Line], dict[str, Share]]:
    """The lines of one booking of a loan funded by `split`, given what each funder holds;
    returns them and the holdings after. Lines come in the order a pool applies them:
    lending and accrual, provisions released that the settlements would leave uncovered,
    settlements, receipts undone, write-offs (using provisions first), provisions to their
    new level, recoveries."""
    s = _Splitter(split, holdings)
    m = moved
    repaid, received = max(-m.principal_minor, 0), max(m.received_minor, 0)
    reversed_accrual = max(-m.accrued_minor, 0)
    s.grow("fund", m.principal_minor)
    s.grow("accrue", m.accrued_minor)
    # Release first what the settlements would leave uncovered (a pool keeps every provision
    # within its exposure): a probe makes the same settlements to see what each will hold.
    probe = _Splitter(split, s.held)
    _settle_all(probe, repaid, received, reversed_accrual)
    s.provisions_to({f: min(h.provisions_minor, probe.held[f].exposure_minor)
                     for f, h in s.held.items()})
    _settle_all(s, repaid, received, reversed_accrual)
    # A receipt undone pays cash back: after the settlements have brought theirs in.
    s.grow("reverse_receipt", -m.received_minor)
    before_write_off = {f: h.provisions_minor for f, h in s.held.items()}
    lost = {f: 0 for f in s.funders}
    for movement, amount, field in (
            ("write_off_principal", m.written_off_principal_minor, "principal_minor"),
            ("write_off_income", m.written_off_income_minor, "income_minor")):
        for funder, part in s.settle(movement, amount, field).items():
            lost[funder] += part
    s.emit("provision_used", {f: min(before_write_off[f], lost[f]) for f in s.funders})
    s.provisions_to(s.provision_targets(m.allowance_after_minor))
    if m.recovered_minor:
        unrecovered = {f: h.unrecovered_minor for f, h in s.held.items()}
        if m.recovered_minor > sum(unrecovered.values()):
            raise FailedPrecondition("RECOVERY_EXCEEDS_WRITE_OFF", "a recovery cannot exceed "
                                     "what the funders of the loan lost")
        s.emit("recover", take(m.recovered_minor, unrecovered, unrecovered))
    return s.lines, _nonzero(s.held)


def transfer(split: FundingSplit, holdings: Mapping[str, Share], seller: str, buyer: str,
             bps: int) -> tuple[FundingSplit, list[Line], dict[str, Share]]:
    """Move `bps` of the split from `seller` to `buyer`, with the same fraction of the
    seller's principal, receivables and provisions, at par; returns the new split, the lines
    and the holdings after. Raises `InvalidArgument` (reasons PARTICIPATION_SAME_FUNDER,
    PARTICIPATION_BPS_INVALID) naming `bps` or `to_funder`."""
    shares = dict(split.shares_bps)
    held = shares.get(seller, 0)
    if seller == buyer:
        raise invalid("to_funder", "must differ from from_funder",
                      reason="PARTICIPATION_SAME_FUNDER")
    if type(bps) is not int or not 1 <= bps <= held:
        raise invalid("bps", f"must be from 1 to the {held} bps {seller} holds",
                      reason="PARTICIPATION_BPS_INVALID")
    s = holdings.get(seller, Share())
    principal = apportion(s.principal_minor, [bps, held - bps])[0]
    income = apportion(s.income_minor, [bps, held - bps])[0]
    provisions = apportion(s.provisions_minor, [bps, held - bps])[0]
    left = s.exposure_minor - principal - income
    provisions = min(max(provisions, s.provisions_minor - left), principal + income)
    lines = [Line(movement, funder, shares.get(funder, 0), amount)
             for movement, funder, amount in (
                 ("release", seller, provisions), ("sell_principal", seller, principal),
                 ("sell_income", seller, income), ("buy_principal", buyer, principal),
                 ("buy_income", buyer, income), ("provide", buyer, provisions))
             if amount]
    shares[seller] = held - bps
    shares[buyer] = shares.get(buyer, 0) + bps
    new_split = FundingSplit.of({f: b for f, b in shares.items() if b})
    ensure(sum(b for _, b in new_split.shares_bps) == BPS_TOTAL, "a transfer keeps 10,000 bps")
    return new_split, lines, holdings_of(lines, holdings)
