"""Accounts: type, normal side, status, balance-limit flags and running totals.

Totals follow TigerBeetle's model: posted and pending debits and credits, all non-negative
integers of minor units. A pending (two-phase) entry moves only the pending totals; posting or
voiding it releases them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bank.domain.invariants import ensure
from bank.domain.limits import TOTAL_MINOR_MAX


class Side(enum.Enum):
    DEBIT = "D"
    CREDIT = "C"

    def flipped(self) -> Side:
        return Side.CREDIT if self is Side.DEBIT else Side.DEBIT


class AccountType(enum.Enum):
    ASSET = "asset"
    LIABILITY = "liability"
    EQUITY = "equity"
    INCOME = "income"
    EXPENSE = "expense"

    @property
    def normal_side(self) -> Side:
        """Assets and expenses grow with debits; the rest grow with credits."""
        return Side.DEBIT if self in (AccountType.ASSET, AccountType.EXPENSE) else Side.CREDIT


class AccountStatus(enum.Enum):
    OPEN = "open"
    FROZEN = "frozen"
    CLOSED = "closed"


class OwnerKind(enum.Enum):
    BANK = "bank"
    MEMBER = "member"
    COUNCIL = "council"
    POOL = "pool"


@dataclass(frozen=True, slots=True)
class Totals:
    """Running totals of an account, in minor units."""

    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0

    def __post_init__(self) -> None:
        # One comparison chain in the common case: the posting engine makes a Totals for every
        # line it applies, and every account read makes one.
        if not (0 <= self.debits_posted <= TOTAL_MINOR_MAX
                and 0 <= self.credits_posted <= TOTAL_MINOR_MAX
                and 0 <= self.debits_pending <= TOTAL_MINOR_MAX
                and 0 <= self.credits_pending <= TOTAL_MINOR_MAX):
            for value in (self.debits_posted, self.credits_posted, self.debits_pending,
                          self.credits_pending):
                ensure(0 <= value <= TOTAL_MINOR_MAX, f"account total out of range: {value}")

    def balance(self, normal_side: Side) -> int:
        """Posted balance on the account's normal side (may be negative)."""
        net = self.debits_posted - self.credits_posted
        return net if normal_side is Side.DEBIT else -net

    def available(self, normal_side: Side) -> int:
        """Posted balance less what pending entries have reserved against it."""
        if normal_side is Side.DEBIT:
            return self.debits_posted - self.credits_posted - self.credits_pending
        return self.credits_posted - self.debits_posted - self.debits_pending


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    currency: str
    account_type: AccountType
    code: str
    owner_kind: OwnerKind
    owner_id: str
    status: AccountStatus = AccountStatus.OPEN
    # "debits must not exceed credits": no overdraft (member deposits).
    debits_must_not_exceed_credits: bool = False
    # The mirror: for accounts that must never go into credit.
    credits_must_not_exceed_debits: bool = False
    totals: Totals = Totals()
    created_ns: int = 0

    def limit_breached(self, totals: Totals) -> str | None:
        """The reason these totals would break this account's balance limit, or None."""
        if self.debits_must_not_exceed_credits and (
            totals.debits_posted + totals.debits_pending > totals.credits_posted
        ):
            return "EXCEEDS_CREDITS"
        if self.credits_must_not_exceed_debits and (
            totals.credits_posted + totals.credits_pending > totals.debits_posted
        ):
            return "EXCEEDS_DEBITS"
        return None

    def with_totals(self, totals: Totals) -> Account:
        # The constructor directly: `dataclasses.replace` costs several times more, and the
        # posting engine calls this for every line it applies.
        return Account(self.account_id, self.currency, self.account_type, self.code,
                       self.owner_kind, self.owner_id, self.status,
                       self.debits_must_not_exceed_credits, self.credits_must_not_exceed_debits,
                       totals, self.created_ns)

    def is_zero(self) -> bool:
        t = self.totals
        return t.debits_posted == t.credits_posted and t.debits_pending == 0 == t.credits_pending

    def definition(self) -> dict[str, object]:
        """What defines the account (not its totals or status): audited on creation."""
        return {"account_id": self.account_id, "currency": self.currency,
                "type": self.account_type.value, "code": self.code,
                "owner_kind": self.owner_kind.value, "owner_id": self.owner_id,
                "no_overdraft": self.debits_must_not_exceed_credits,
                "no_excess_credit": self.credits_must_not_exceed_debits,
                "created_ns": self.created_ns}

    def same_definition(self, other: Account) -> bool:
        """True when `other` asks to create exactly this account (for idempotent replays)."""
        return (self.currency, self.account_type, self.code, self.owner_kind, self.owner_id,
                self.debits_must_not_exceed_credits, self.credits_must_not_exceed_debits) == (
            other.currency, other.account_type, other.code, other.owner_kind, other.owner_id,
            other.debits_must_not_exceed_credits, other.credits_must_not_exceed_debits)
