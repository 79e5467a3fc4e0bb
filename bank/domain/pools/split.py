"""Largest-remainder apportionment and basis-point funding splits.

Every split in a pool goes through `apportion`, so its parts always sum exactly to the whole:

- each part is the floor of its exact share `total * weight / sum(weights)`, plus 0 or 1;
- the pennies left over go, one each, to the largest fractional remainders; equal remainders go
  to the lower index (callers order their parties deterministically, e.g. by id);
- a zero weight always gets zero; a negative total is split as the mirror image of the positive
  one, so `apportion(-t, w) == [-p for p in apportion(t, w)]`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bank.domain.errors import ViolationCollector, invalid
from bank.domain.invariants import ensure

BPS_TOTAL = 10_000
PARTIES_PER_SPLIT_MAX = 1_000
PARTY_ID_LENGTH_MAX = 64


def apportion(total: int, weights: Sequence[int], field_path: str = "weights") -> list[int]:
    """Split `total` into integer parts proportional to `weights` (largest remainder).

    Raises `InvalidArgument` naming `field_path` (or `field_path[i]`) when the weights are empty,
    when a weight is negative or not an int, or when no weight is positive.
    """
    _check_weights(weights, field_path)
    if total < 0:
        return [-part for part in apportion(-total, weights, field_path)]
    weight_sum = sum(weights)
    floors: list[int] = []
    remainders: list[int] = []
    for weight in weights:
        floor, remainder = divmod(total * weight, weight_sum)
        floors.append(floor)
        remainders.append(remainder)
    leftover = total - sum(floors)
    # Each remainder is below weight_sum and they add up to leftover * weight_sum, so at least
    # `leftover` of them are positive: a zero weight (remainder 0) never gets a leftover unit.
    ensure(0 <= leftover <= sum(1 for r in remainders if r), "apportion: leftover out of range")
    by_remainder = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for index in by_remainder[:leftover]:
        floors[index] += 1
    ensure(sum(floors) == total, "apportion: parts do not sum to the total")
    return floors


def _check_weights(weights: Sequence[int], field_path: str) -> None:
    if len(weights) == 0:
        raise invalid(field_path, "must not be empty", reason="WEIGHTS_EMPTY")
    for index, weight in enumerate(weights):
        if type(weight) is not int:
            raise invalid(f"{field_path}[{index}]", "must be an integer", reason="WEIGHT_NOT_INT")
        if weight < 0:
            raise invalid(f"{field_path}[{index}]", "must not be negative",
                          reason="WEIGHT_NEGATIVE")
    if not any(weights):
        raise invalid(field_path, "must contain at least one positive weight",
                      reason="WEIGHTS_ALL_ZERO")


@dataclass(frozen=True, slots=True)
class FundingSplit:
    """Who funds a loan, in basis points summing to exactly 10,000; fixed at first disbursement.

    `shares_bps` holds (party id, bps) pairs sorted by party id, so equal splits compare equal
    and the largest-remainder tie-break does not depend on how the split was written down.
    """

    shares_bps: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        ensure(sum(bps for _, bps in self.shares_bps) == BPS_TOTAL,
               "FundingSplit must sum to 10,000 bps; build it with FundingSplit.of")
        ensure(list(self.shares_bps) == sorted(self.shares_bps),
               "FundingSplit shares must be sorted by party id")

    @staticmethod
    def of(shares_bps: Mapping[str, int], field_path: str = "funding_split") -> FundingSplit:
        """Validate and build a split, e.g. `FundingSplit.of({"pool": 8000, "bank": 2000})`.

        Raises `InvalidArgument` listing every broken rule, in party order: no parties, too many
        parties, an empty or over-long party id, a share that is not an int between 1 and
        10,000, and finally a total other than 10,000 (reason `SPLIT_NOT_10000_BPS`).
        """
        if not shares_bps:
            raise invalid(field_path, "must name at least one party", reason="SPLIT_EMPTY")
        if len(shares_bps) > PARTIES_PER_SPLIT_MAX:
            raise invalid(field_path, f"must name at most {PARTIES_PER_SPLIT_MAX} parties",
                          reason="SPLIT_TOO_MANY_PARTIES")
        collector = ViolationCollector()
        for party, bps in shares_bps.items():
            if not party or len(party) > PARTY_ID_LENGTH_MAX:
                collector.add(f"{field_path}[{party!r}]",
                              f"party id must be 1 to {PARTY_ID_LENGTH_MAX} characters")
            if type(bps) is not int or not 1 <= bps <= BPS_TOTAL:
                collector.add(f"{field_path}[{party!r}]",
                              f"share must be an integer from 1 to {BPS_TOTAL} bps")
        collector.raise_if_any(reason="SPLIT_SHARE_INVALID")
        total_bps = sum(shares_bps.values())
        if total_bps != BPS_TOTAL:
            raise invalid(field_path, f"shares must sum to {BPS_TOTAL} bps, not {total_bps}",
                          reason="SPLIT_NOT_10000_BPS")
        return FundingSplit(tuple(sorted(shares_bps.items())))

    @property
    def parties(self) -> tuple[str, ...]:
        return tuple(party for party, _ in self.shares_bps)


def split_amount(amount: int, split: FundingSplit) -> dict[str, int]:
    """Split a loan cash flow or loss of `amount` minor units by `split`; parts sum to `amount`."""
    parts = apportion(amount, [bps for _, bps in split.shares_bps], "funding_split")
    return dict(zip(split.parties, parts, strict=True))
