"""The lending book's pure domain: products and terms, day counts, schedules, and the
replay-based loan engine. Standard library only; no database, no transport.

    daycount      ACT/365F (default), 30/360 (ISDA bond basis), ACT/360 year fractions
    product       LoanTerms / LoanProduct: conventions as validated, JSON round-tripping data
    schedule      repayment schedules exact to the penny
    transactions  what happens to a loan, and the fixed order of replay
    account       replay(terms, transactions, business_date) -> LoanState
    ledger        LedgerBuckets, the accounts they are balances of, and journal_lines
"""

from bank.domain.lending.account import (
    InstalmentState,
    LoanState,
    LoanStatus,
    arrears_bucket,
    ifrs9_stage,
    payoff_quote,
    replay,
)
from bank.domain.lending.daycount import DayCount, year_fraction
from bank.domain.lending.ledger import LEDGER_ACCOUNTS, JournalLine, LedgerBuckets, journal_lines
from bank.domain.lending.product import (
    Amortisation,
    ArrearsBucket,
    Component,
    Frequency,
    LateFeeRule,
    LoanProduct,
    LoanTerms,
    ProvisionMatrix,
    RoundingMode,
    terms_from_json,
)
from bank.domain.lending.schedule import Instalment, RepaymentSchedule, generate_schedule
from bank.domain.lending.transactions import (
    ChargeOff,
    Disbursement,
    FeeCharge,
    Forbearance,
    LoanTransaction,
    Payoff,
    Recovery,
    Refund,
    Repayment,
    Waiver,
    WriteOff,
)

__all__ = [
    "LEDGER_ACCOUNTS",
    "Amortisation",
    "ArrearsBucket",
    "ChargeOff",
    "Component",
    "DayCount",
    "Disbursement",
    "FeeCharge",
    "Forbearance",
    "Frequency",
    "Instalment",
    "InstalmentState",
    "JournalLine",
    "LateFeeRule",
    "LedgerBuckets",
    "LoanProduct",
    "LoanState",
    "LoanStatus",
    "LoanTerms",
    "LoanTransaction",
    "Payoff",
    "ProvisionMatrix",
    "Recovery",
    "Refund",
    "Repayment",
    "RepaymentSchedule",
    "RoundingMode",
    "Waiver",
    "WriteOff",
    "arrears_bucket",
    "generate_schedule",
    "ifrs9_stage",
    "journal_lines",
    "payoff_quote",
    "replay",
    "terms_from_json",
    "year_fraction",
]
