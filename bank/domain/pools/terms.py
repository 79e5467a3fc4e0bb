"""A pool's written terms: who takes part, the unit classes, fees, dealing dates and limits.

`PoolTerms` wraps the arithmetic's `PoolAgreement` with what the register does not need but the
bank does: the participants and the account each one settles through, the dealing dates that
bound the periods, the first-loss reserve target and the concentration limits. Terms are fixed
when the pool is created (they are stored as JSON and never change).

Periods. Dealing dates d0 < d1 < ... < dn bound the periods: period k runs from d(k-1) to dk
(`days` = dk - d(k-1)). Subscriptions and redemptions deal on the open period's first date, at
the NAV per unit of the close before it; the close of period k values the pool on dk.

Participants. A council takes part under its council area id (`preston`; its integration's
scope is `council:preston`), the bank as `bank`, any other funder under its member id. Every
participant settles through one account it owns: a council's own account at the bank
(owner `council:<area>`), the bank's own, or the funder member's deposit account.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from bank.domain import currency as currencies
from bank.domain.errors import ViolationCollector
from bank.domain.pools.pool import PoolAgreement
from bank.domain.pools.split import BPS_TOTAL
from bank.domain.pools.units import UnitClass
from bank.domain.postcodes import COUNCIL_AREAS, council_scope

POOL_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,19}")
CLASS_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,11}")
PARTICIPANT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,19}")
POOL_NAME_LENGTH_MAX = 100
PARTICIPANTS_PER_POOL_MAX = 100
DEALING_DATES_MAX = 120
PERIOD_DAYS_MAX = 366
BANK_PARTICIPANT = "bank"


class ParticipantKind(enum.Enum):
    COUNCIL = "council"
    BANK = "bank"
    FUNDER = "funder"  # another member of the bank (a housing association, a credit union...)


@dataclass(frozen=True, slots=True)
class Participant:
    participant_id: str
    kind: ParticipantKind
    settlement_account_id: str

    @property
    def owner(self) -> tuple[str, str]:
        """(owner kind, owner id) of the accounts that belong to this participant."""
        if self.kind is ParticipantKind.COUNCIL:
            return "council", council_scope(self.participant_id)
        if self.kind is ParticipantKind.BANK:
            return "bank", BANK_PARTICIPANT
        return "member", self.participant_id


@dataclass(frozen=True, slots=True)
class ConcentrationLimits:
    """Largest share of the pool's capital, in bps, that may be lent to one borrower (or one
    connected group), one sector, or borrowers in one council area. 0 means no limit."""

    single_borrower_bps: int = 0
    sector_bps: int = 0
    council_area_bps: int = 0


@dataclass(frozen=True, slots=True)
class PoolTerms:
    pool_id: str
    display_name: str
    currency: str
    unit_classes: tuple[UnitClass, ...]
    participants: tuple[Participant, ...]
    dealing_dates: tuple[date, ...]
    servicing_fee_bps_per_year: int = 0
    year_days: int = 365
    reserve_target_bps: int = 0  # first-loss (most junior) class capital / pool capital
    limits: ConcentrationLimits = ConcentrationLimits()

    def agreement(self) -> PoolAgreement:
        return PoolAgreement(self.pool_id, self.currency, self.unit_classes,
                             self.servicing_fee_bps_per_year, self.year_days)

    def participant(self, participant_id: str) -> Participant | None:
        for participant in self.participants:
            if participant.participant_id == participant_id:
                return participant
        return None

    def period_dates(self, period_number: int) -> tuple[date, date | None]:
        """(start, end) of period `period_number` (1-based); end is None past the last date."""
        start = self.dealing_dates[period_number - 1]
        end = (self.dealing_dates[period_number] if period_number < len(self.dealing_dates)
               else None)
        return start, end

    def to_json(self) -> dict[str, Any]:
        return {
            "pool_id": self.pool_id, "display_name": self.display_name,
            "currency": self.currency,
            "unit_classes": [[c.class_id, c.seniority, c.income_weight_bps]
                             for c in self.unit_classes],
            "participants": [[p.participant_id, p.kind.value, p.settlement_account_id]
                             for p in self.participants],
            "dealing_dates": [d.isoformat() for d in self.dealing_dates],
            "servicing_fee_bps_per_year": self.servicing_fee_bps_per_year,
            "year_days": self.year_days, "reserve_target_bps": self.reserve_target_bps,
            "limits": [self.limits.single_borrower_bps, self.limits.sector_bps,
                       self.limits.council_area_bps],
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> PoolTerms:
        return PoolTerms(
            data["pool_id"], data["display_name"], data["currency"],
            tuple(UnitClass(c, s, w) for c, s, w in data["unit_classes"]),
            tuple(Participant(p, ParticipantKind(k), a) for p, k, a in data["participants"]),
            tuple(date.fromisoformat(d) for d in data["dealing_dates"]),
            data["servicing_fee_bps_per_year"], data["year_days"], data["reserve_target_bps"],
            ConcentrationLimits(*data["limits"]))


def validate_terms(terms: PoolTerms, v: ViolationCollector, path: str = "pool") -> None:
    """Add every broken rule of `terms` to `v`, named by its field path under `path`."""
    if not POOL_ID_RE.fullmatch(terms.pool_id):
        v.add(f"{path}.pool_id", "must be 1-20 characters of [a-z0-9-], starting with a letter "
              "or digit")
    if not 1 <= len(terms.display_name) <= POOL_NAME_LENGTH_MAX:
        v.add(f"{path}.display_name", f"must be 1-{POOL_NAME_LENGTH_MAX} characters")
    if not currencies.is_known(terms.currency):
        v.add(f"{path}.currency_code", "must be a known ISO 4217 currency")
    _validate_classes(terms, v, path)
    _validate_participants(terms, v, path)
    _validate_dates(terms, v, path)
    if not 0 <= terms.servicing_fee_bps_per_year <= 1_000:
        v.add(f"{path}.servicing_fee_bps_per_year", "must be 0 to 1,000")
    if terms.year_days not in (360, 365, 366):
        v.add(f"{path}.year_days", "must be 360, 365 or 366")
    if not 0 <= terms.reserve_target_bps <= BPS_TOTAL:
        v.add(f"{path}.reserve_target_bps", "must be 0 to 10,000")
    for name in ("single_borrower_bps", "sector_bps", "council_area_bps"):
        if not 0 <= getattr(terms.limits, name) <= BPS_TOTAL:
            v.add(f"{path}.concentration_limits.{name}", "must be 0 (no limit) to 10,000")


def _validate_classes(terms: PoolTerms, v: ViolationCollector, path: str) -> None:
    if not 1 <= len(terms.unit_classes) <= 8:
        v.add(f"{path}.unit_classes", "must hold 1 to 8 unit classes")
    seen: set[str] = set()
    for index, unit_class in enumerate(terms.unit_classes):
        where = f"{path}.unit_classes[{index}]"
        if not CLASS_ID_RE.fullmatch(unit_class.class_id):
            v.add(f"{where}.class_id", "must be 1-12 characters of [a-z0-9-]")
        elif unit_class.class_id in seen:
            v.add(f"{where}.class_id", "must be unique within the pool")
        seen.add(unit_class.class_id)
        if not 0 <= unit_class.seniority <= 100:
            v.add(f"{where}.seniority", "must be 0 (first loss) to 100")
        if not 1 <= unit_class.income_weight_bps <= 10 * BPS_TOTAL:
            v.add(f"{where}.income_weight_bps", "must be 1 to 100,000 (10,000 = at par)")


def _validate_participants(terms: PoolTerms, v: ViolationCollector, path: str) -> None:
    if not 1 <= len(terms.participants) <= PARTICIPANTS_PER_POOL_MAX:
        v.add(f"{path}.participants", f"must name 1 to {PARTICIPANTS_PER_POOL_MAX} participants")
    seen: set[str] = set()
    for index, p in enumerate(terms.participants):
        where = f"{path}.participants[{index}]"
        if not PARTICIPANT_ID_RE.fullmatch(p.participant_id):
            v.add(f"{where}.participant_id", "must be 1-20 characters of [A-Za-z0-9_.-]")
        elif p.participant_id in seen:
            v.add(f"{where}.participant_id", "must be unique within the pool")
        seen.add(p.participant_id)
        is_area = p.participant_id in COUNCIL_AREAS
        if p.kind is ParticipantKind.COUNCIL and not is_area:
            v.add(f"{where}.participant_id", "a council takes part under its council area id: "
                  "one of " + ", ".join(COUNCIL_AREAS))
        if p.kind is not ParticipantKind.COUNCIL and is_area:
            v.add(f"{where}.kind", "a council area id is reserved for that council (COUNCIL)")
        if p.kind is ParticipantKind.BANK and p.participant_id != BANK_PARTICIPANT:
            v.add(f"{where}.participant_id", f"the bank takes part as {BANK_PARTICIPANT!r}")
        if not p.settlement_account_id:
            v.add(f"{where}.settlement_account", "is required")


def _validate_dates(terms: PoolTerms, v: ViolationCollector, path: str) -> None:
    dates = terms.dealing_dates
    if not 2 <= len(dates) <= DEALING_DATES_MAX:
        v.add(f"{path}.dealing_dates", f"must hold 2 to {DEALING_DATES_MAX} dates (the first "
              "opens the pool, each next one closes a period)")
    for index in range(1, len(dates)):
        gap = (dates[index] - dates[index - 1]).days
        if not 1 <= gap <= PERIOD_DAYS_MAX:
            v.add(f"{path}.dealing_dates[{index}]", "must be 1 to 366 days after the date "
                  "before it")
