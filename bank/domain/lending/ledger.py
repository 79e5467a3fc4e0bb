"""A loan's ledger buckets, and the journal entry that moves the books from one state to the next.

The loan engine recomputes a loan's state from scratch; the caller posts the DIFFERENCE between
the buckets of the new state and those already posted. Each ledger bucket is the balance of one
ledger account for this loan, on its normal side, and the buckets always balance:

    debit-normal                                   credit-normal
    principal_outstanding  loan principal (asset)  overpayment_liability  borrower credit (liab.)
    interest_receivable    interest receivable     provision_required     loss allowance (contra-
    fee_receivable         fee receivable                                 asset)
    penalty_receivable     penalty receivable      interest_income        interest income
    impairment_expense     impairment expense      fee_income             fee income
    cash                   cash / settlement       penalty_income         penalty income
                           (received - disbursed   recovered              recovery income
                           - refunded)

so the difference of two states is a balanced journal entry (`journal_lines`). What moves what:

    disbursement    Dr loan principal            Cr cash
    daily accrual   Dr interest receivable       Cr interest income
    fee / penalty   Dr fee / penalty receivable  Cr fee / penalty income (arrangement fee at
                                                 disbursement: recognised when charged)
    repayment       Dr cash                      Cr penalty, fee, interest receivable, principal
                                                 by the allocation order; Cr overpayment for the
                                                 rest
    overpayment     Dr overpayment               Cr the receivables, as instalments fall due
    refund          Dr overpayment               Cr cash
    waiver          Dr interest / fee / penalty income (a reversal)  Cr the receivable
    provision up    Dr impairment expense        Cr loss allowance (down: the reverse)
    write-off       Dr impairment expense        Cr principal and receivables, with the loss
                    allowance released at the same time (Dr allowance, Cr impairment expense):
                    together, the allowance is used and any shortfall is expensed
    recovery        Dr cash                      Cr recovery income

Memo buckets (not ledger balances): `written_off_principal`, `written_off_interest`,
`written_off_fees` (fees and penalties).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields

from bank.domain.invariants import ensure


class Side(enum.StrEnum):
    DEBIT = "DEBIT"
    CREDIT = "CREDIT"


@dataclass(frozen=True, slots=True)
class LedgerBuckets:
    """The loan's ledger balances in minor units (see the module docstring)."""

    principal_outstanding_minor: int
    interest_receivable_minor: int
    fee_receivable_minor: int
    penalty_receivable_minor: int
    impairment_expense_minor: int
    cash_minor: int
    overpayment_liability_minor: int
    provision_required_minor: int
    interest_income_minor: int
    fee_income_minor: int
    penalty_income_minor: int
    recovered_minor: int
    written_off_principal_minor: int
    written_off_interest_minor: int
    written_off_fees_minor: int

    def __post_init__(self) -> None:
        debits = sum(getattr(self, name) for name, _, side in LEDGER_ACCOUNTS
                     if side is Side.DEBIT)
        credits = sum(getattr(self, name) for name, _, side in LEDGER_ACCOUNTS
                      if side is Side.CREDIT)
        ensure(debits == credits, f"loan ledger buckets must balance: {debits} != {credits}")


# (bucket, ledger account it is the balance of, the account's normal side)
LEDGER_ACCOUNTS: tuple[tuple[str, str, Side], ...] = (
    ("principal_outstanding_minor", "loan principal (asset)", Side.DEBIT),
    ("interest_receivable_minor", "interest receivable (asset)", Side.DEBIT),
    ("fee_receivable_minor", "fee receivable (asset)", Side.DEBIT),
    ("penalty_receivable_minor", "penalty receivable (asset)", Side.DEBIT),
    ("impairment_expense_minor", "impairment expense: provisions and write-offs", Side.DEBIT),
    ("cash_minor", "cash / settlement (asset)", Side.DEBIT),
    ("overpayment_liability_minor", "borrower overpayment (liability)", Side.CREDIT),
    ("provision_required_minor", "loan loss allowance (contra-asset)", Side.CREDIT),
    ("interest_income_minor", "interest income", Side.CREDIT),
    ("fee_income_minor", "fee income", Side.CREDIT),
    ("penalty_income_minor", "penalty income", Side.CREDIT),
    ("recovered_minor", "recovery income", Side.CREDIT),
)
MEMO_BUCKETS = ("written_off_principal_minor", "written_off_interest_minor",
                "written_off_fees_minor")


@dataclass(frozen=True, slots=True)
class JournalLine:
    """One posting: a positive `amount_minor` to `account` on `side`."""

    bucket: str
    account: str
    side: Side
    amount_minor: int


def journal_lines(before: LedgerBuckets, after: LedgerBuckets) -> tuple[JournalLine, ...]:
    """The postings that move the loan's accounts from `before` to `after`: balanced, positive
    amounts, in `LEDGER_ACCOUNTS` order; empty if nothing changed."""
    lines = []
    for name, account, normal in LEDGER_ACCOUNTS:
        delta = getattr(after, name) - getattr(before, name)
        if delta:
            opposite = Side.CREDIT if normal is Side.DEBIT else Side.DEBIT
            lines.append(JournalLine(name, account, normal if delta > 0 else opposite,
                                     abs(delta)))
    debits = sum(x.amount_minor for x in lines if x.side is Side.DEBIT)
    ensure(debits == sum(x.amount_minor for x in lines if x.side is Side.CREDIT),
           "a loan journal entry must balance")
    return tuple(lines)


def bucket_names() -> tuple[str, ...]:
    """Every bucket, ledger and memo, in declaration order."""
    return tuple(f.name for f in fields(LedgerBuckets))
