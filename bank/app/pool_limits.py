"""Concentration limits of a lending pool: single borrower (or connected group), sector and
council area, as a share of the pool's capital.

`check_concentration` is what lending calls at approval, at disbursement and for a
participation transfer's buyer (`bank.app.participations.check_pool_part`, inside the command's
transaction, before it writes anything); PoolService applies it when the pool funds a loan
recorded by hand (`RecordLoanEvent` FUND). A breach is `FailedPrecondition`
CONCENTRATION_LIMIT_EXCEEDED whose metadata names the limit first (`single_borrower`,
`sector` or `council_area`), then the pool, the limit and the exposure in minor units.

Exposure is the pool's principal in the loans of the same borrower (members of one connected
group count as one borrower), sector or council area, plus the amount about to be lent. The
base is the pool's net assets now; a limit of 0 bps means no limit.
"""

from __future__ import annotations

from typing import Any

from bank.app.pools import LoadedPool
from bank.domain.errors import FailedPrecondition
from bank.domain.pools.split import BPS_TOTAL


def borrower_facts(tx: Any, member_id: str, sector: str = "") -> dict[str, str]:
    """What the limits need to know of a borrower: member, connected group, council area and
    sector (empty strings when unknown)."""
    member = tx.get_member(member_id) if member_id else None
    return {"member": member_id, "group": (member.connected_group or "") if member else "",
            "council_area": member.council_area if member else "", "sector": sector}


def _borrower_key(facts: dict[str, str]) -> str:
    if facts.get("group"):
        return "group:" + facts["group"]
    return "member:" + facts["member"] if facts.get("member") else ""


def reserve(pool: LoadedPool) -> tuple[int, int]:
    """The first-loss reserve (the most junior class's capital) and its target (the terms'
    bps of the pool's capital), in minor units."""
    valuation = pool.register.valuation()
    junior = min(pool.terms.unit_classes, key=lambda c: (c.seniority, c.class_id))
    held = next(c.capital_minor for c in valuation.classes if c.class_id == junior.class_id)
    return held, valuation.capital_total_minor * pool.terms.reserve_target_bps // BPS_TOTAL


def check_concentration(pool: LoadedPool, loan_id: str, amount_minor: int,
                        borrower: dict[str, str]) -> None:
    """Refuse lending `amount_minor` more to `loan_id` if the pool's first-loss reserve is
    below its target (FAILED_PRECONDITION RESERVE_BELOW_TARGET: senior money is not lent
    without the first-loss cushion the terms promise) or a limit of the pool would be exceeded
    (see the module docstring). Raises `FailedPrecondition`."""
    held, target = reserve(pool)
    if held < target:
        raise FailedPrecondition(
            "RESERVE_BELOW_TARGET", f"pool {pool.terms.pool_id}: the first-loss reserve of "
            f"{held} minor units is below its target of {target} "
            f"({pool.terms.reserve_target_bps} bps of capital); it lends again once the "
            "junior class is topped up", metadata={
                "limit": "reserve_target", "pool": f"pools/{pool.terms.pool_id}",
                "limit_minor": str(target), "exposure_minor": str(held)})
    limits, register = pool.terms.limits, pool.register
    base = register.valuation().net_assets_minor
    facts = pool.loans.get(loan_id) or borrower
    checks = (("single_borrower", limits.single_borrower_bps, _borrower_key),
              ("sector", limits.sector_bps, lambda f: f.get("sector", "")),
              ("council_area", limits.council_area_bps, lambda f: f.get("council_area", "")))
    for name, bps, key_of in checks:
        key = key_of(facts)
        if not bps or not key:
            continue
        exposure = amount_minor + sum(
            register.loan(other).principal_minor for other, other_facts in pool.loans.items()
            if key_of(other_facts) == key)
        limit = base * bps // BPS_TOTAL
        if exposure > limit:
            raise FailedPrecondition(
                "CONCENTRATION_LIMIT_EXCEEDED",
                f"pool {pool.terms.pool_id}: the {name.replace('_', ' ')} limit of {bps} bps "
                f"of net assets ({limit} minor units) would be exceeded by {key}: exposure "
                f"{exposure}", metadata={"limit": name, "pool": f"pools/{pool.terms.pool_id}",
                                         "limit_minor": str(limit),
                                         "exposure_minor": str(exposure), "key": key})
