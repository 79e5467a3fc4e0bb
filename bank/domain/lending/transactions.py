"""What happens to a loan: the transactions the engine replays, in effective-date order.

Each has a client-chosen `transaction_id` (unique per loan) and an effective date `on`. Several
on one date are replayed in a fixed order whatever order they were stored in: by kind, in the
order of `REPLAY_ORDER`, then by `transaction_id`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from bank.domain.lending.product import Component, LoanTerms


@dataclass(frozen=True, slots=True)
class Disbursement:
    """The loan is paid out: `amount_minor` is the principal; the first, and only one."""

    transaction_id: str
    on: date
    amount_minor: int
    first_due_on: date | None = None


@dataclass(frozen=True, slots=True)
class Forbearance:
    """From `on`, all unpaid principal (arrears included) is rescheduled under `terms` (longer
    term, lower rate, grace...); interest, fees and penalties already due stay due."""

    transaction_id: str
    on: date
    terms: LoanTerms
    first_due_on: date | None = None


@dataclass(frozen=True, slots=True)
class FeeCharge:
    """A fee (or, with `component=PENALTY`, a penalty) charged on `on`; it is due with the
    first instalment due on or after `on` (the last instalment once the loan has matured)."""

    transaction_id: str
    on: date
    amount_minor: int
    component: Component = Component.FEE


@dataclass(frozen=True, slots=True)
class Waiver:
    """Forgives `amount_minor` of INTEREST, FEE or PENALTY already due, oldest first."""

    transaction_id: str
    on: date
    component: Component
    amount_minor: int


@dataclass(frozen=True, slots=True)
class Repayment:
    """Cash from the borrower: allocated to what is due, the rest held as overpayment."""

    transaction_id: str
    on: date
    amount_minor: int


@dataclass(frozen=True, slots=True)
class Payoff:
    """Early settlement: all principal and the interest accrued to `on` fall due on `on`;
    interest not yet accrued is never charged. `amount_minor` must cover the payoff quote."""

    transaction_id: str
    on: date
    amount_minor: int


@dataclass(frozen=True, slots=True)
class Refund:
    """Part or all of the overpayment (credit balance) paid back to the borrower."""

    transaction_id: str
    on: date
    amount_minor: int


@dataclass(frozen=True, slots=True)
class ChargeOff:
    """The loan goes on non-accrual (stage 3): interest stops accruing after `on`."""

    transaction_id: str
    on: date


@dataclass(frozen=True, slots=True)
class WriteOff:
    """Everything still receivable is written off against the loss allowance on `on`."""

    transaction_id: str
    on: date


@dataclass(frozen=True, slots=True)
class Recovery:
    """Cash recovered after a write-off (recovery income), at most what was written off."""

    transaction_id: str
    on: date
    amount_minor: int


LoanTransaction = (Disbursement | Forbearance | FeeCharge | Waiver | Repayment | Payoff | Refund
                   | ChargeOff | WriteOff | Recovery)

REPLAY_ORDER: tuple[type, ...] = (Disbursement, Forbearance, FeeCharge, Waiver, Repayment,
                                  Payoff, Refund, ChargeOff, WriteOff, Recovery)
_RANK = {kind: rank for rank, kind in enumerate(REPLAY_ORDER)}


def replay_key(transaction: LoanTransaction) -> tuple[date, int, str]:
    """The order of replay: effective date, then kind, then transaction id."""
    return transaction.on, _RANK[type(transaction)], transaction.transaction_id
