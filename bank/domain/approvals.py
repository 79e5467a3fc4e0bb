"""Maker-checker: configured operations wait for a second, different approver.

A rule names an operation and, per currency, an amount threshold in minor units: a request
moving at least that much in any one posting becomes a pending approval instead of executing.
An approver who is not the maker approves it (the stored command then runs, exactly as made,
once) or rejects it; an approval left undecided past its expiry can no longer be approved.
State is derived from the decision record, never written back onto the approval.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from bank.domain.currency import exponent
from bank.domain.identity import Principal

APPROVAL_TTL_SECONDS = 24 * 3600


class ApprovalState(enum.Enum):
    PENDING = "pending"
    EXECUTED = "executed"  # approved, and the command ran (its result is recorded)
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    """A request moving at least the threshold *in total* (all its debits, per currency) needs a
    second approver. Currencies without an explicit threshold use `default_major_units` whole
    units of the currency, so no currency escapes the rule."""

    operation: str  # e.g. "CreateTransfers"
    thresholds_minor: tuple[tuple[str, int], ...]  # (currency, minor units) pairs
    default_major_units: int = 100_000

    def threshold(self, currency: str) -> int:
        for code, minor in self.thresholds_minor:
            if code == currency:
                return minor
        return int(self.default_major_units * 10 ** exponent(currency))

    def describe(self, currency: str) -> str:
        return f"{self.operation} moving at least {self.threshold(currency)} minor units of " \
               f"{currency} in one request needs a second approver"


# £100,000 / €100,000 in one request; 100,000 whole units of any other currency.
DEFAULT_RULES = (ApprovalRule("CreateTransfers", (("GBP", 10_000_000), ("EUR", 10_000_000))),)


def rule_applying(rules: Iterable[ApprovalRule], operation: str,
                  debits: Iterable[tuple[str, int]]) -> tuple[ApprovalRule, str] | None:
    """The first rule (and the currency) that makes this operation need approval, or None.

    `debits` are the (currency, minor units) of every debit the request would post; they are
    added up per currency, so splitting an amount over postings or transfers changes nothing.
    """
    totals: dict[str, int] = {}
    for currency, minor in debits:
        totals[currency] = totals.get(currency, 0) + minor
    for rule in rules:
        if rule.operation != operation:
            continue
        for currency, total in sorted(totals.items()):
            if total >= rule.threshold(currency):
                return rule, currency
    return None


@dataclass(frozen=True, slots=True)
class Approval:
    approval_id: str
    operation: str
    payload_json: str  # the command exactly as made, canonical JSON
    payload_sha256: str
    maker: Principal
    maker_request_id: str
    reason: str
    created_ns: int
    expires_ns: int


@dataclass(frozen=True, slots=True)
class Decision:
    approval_id: str
    approved: bool
    checker: Principal
    decided_ns: int
    note: str
    outcome_json: str  # the executed command's result (approved), or "" (rejected)


def state_of(approval: Approval, decision: Decision | None, now_ns: int) -> ApprovalState:
    if decision is not None:
        return ApprovalState.EXECUTED if decision.approved else ApprovalState.REJECTED
    return ApprovalState.EXPIRED if now_ns >= approval.expires_ns else ApprovalState.PENDING
