"""Booking a loan: replay its transactions, post (new state) - (booked) to the ledger.

The engine (`bank.domain.lending.replay`) recomputes a loan from its transactions; this module
turns the difference between that state and what the ledger already holds for the loan
(`loan_balances`) into ONE balanced journal entry, posted through the transfer engine inside
the caller's command, so the ledger, the loan tables and the audit leaf commit together.

Ledger accounts. The balance-sheet buckets are the loan's own accounts (owner: the member):

    loan-<id>-principal    asset 1200        loan-<id>-allowance    asset 1290 (contra: credit
    loan-<id>-interest     asset 1210                                balance = loss allowance)
    loan-<id>-fees         asset 1220        loan-<id>-overpayment  liability 2150
    loan-<id>-penalties    asset 1230

Income and impairment are the bank's, one account per currency (`bank-loan-interest-income-
gbp` 4010, `-fee-income-` 4110, `-penalty-income-` 4120, `-recovery-income-` 4130,
`bank-loan-impairment-gbp` expense 5200). The cash bucket is the account the command names
(the member's deposit account, or a settlement account); close of business never moves cash.

Transfer ids are derived from the loan and the event: `loan:<id>:tx:<n>` for the n-th
transaction of the loan, `loan:<id>:cob:<date>` for close of business; a replayed command finds
its transfer already there (the ledger's own idempotence).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from datetime import date
from typing import Any

from bank.app.accounts import AccountSpec, insert_accounts, plan_accounts
from bank.app.loan_ports import (
    ArrearsDay,
    Booked,
    LoanAccounts,
    LoanRecord,
    LoanStatus,
    LoanWriter,
    StoredLoanTransaction,
)
from bank.app.participations import Funding, Moved, participate, split_text
from bank.app.ports import Clock, Head
from bank.app.transfers import apply_transfers
from bank.app.unit import Context
from bank.domain.accounts import AccountStatus, AccountType, OwnerKind, Side
from bank.domain.entries import PostingLine, TransferKind, TransferSpec
from bank.domain.errors import FailedPrecondition, NotFound
from bank.domain.invariants import ensure
from bank.domain.lending import (
    ChargeOff,
    Component,
    Disbursement,
    FeeCharge,
    Forbearance,
    LedgerBuckets,
    LoanState,
    LoanTerms,
    LoanTransaction,
    Payoff,
    Recovery,
    Refund,
    Repayment,
    Waiver,
    WriteOff,
    journal_lines,
    replay,
    terms_from_json,
)
from bank.domain.lending import LoanStatus as EngineStatus
from bank.domain.lending.ledger import Side as BucketSide

ZERO = LedgerBuckets(**{f.name: 0 for f in fields(LedgerBuckets)})
ARREARS_HISTORY_MAX = 100_000

_LOAN_ACCOUNTS = (  # (LoanAccounts field, suffix, type, code)
    ("principal", "principal", AccountType.ASSET, "1200"),
    ("interest", "interest", AccountType.ASSET, "1210"),
    ("fee", "fees", AccountType.ASSET, "1220"),
    ("penalty", "penalties", AccountType.ASSET, "1230"),
    ("allowance", "allowance", AccountType.ASSET, "1290"),
    ("overpayment", "overpayment", AccountType.LIABILITY, "2150"),
)
_BANK_ACCOUNTS = (  # (bucket, account id stem, type, code)
    ("interest_income_minor", "bank-loan-interest-income", AccountType.INCOME, "4010"),
    ("fee_income_minor", "bank-loan-fee-income", AccountType.INCOME, "4110"),
    ("penalty_income_minor", "bank-loan-penalty-income", AccountType.INCOME, "4120"),
    ("recovered_minor", "bank-loan-recovery-income", AccountType.INCOME, "4130"),
    ("impairment_expense_minor", "bank-loan-impairment", AccountType.EXPENSE, "5200"),
)
_BUCKET_OF_ACCOUNT = {
    "principal_outstanding_minor": "principal", "interest_receivable_minor": "interest",
    "fee_receivable_minor": "fee", "penalty_receivable_minor": "penalty",
    "provision_required_minor": "allowance", "overpayment_liability_minor": "overpayment",
}
_STATUS = {EngineStatus.ACTIVE: LoanStatus.ACTIVE, EngineStatus.CLOSED: LoanStatus.CLOSED,
           EngineStatus.CHARGED_OFF: LoanStatus.CHARGED_OFF,
           EngineStatus.WRITTEN_OFF: LoanStatus.WRITTEN_OFF}


def loan_accounts(loan_id: str) -> LoanAccounts:
    return LoanAccounts(*(f"loan-{loan_id}-{suffix}" for _, suffix, _, _ in _LOAN_ACCOUNTS))


def bank_account(bucket: str, currency: str) -> str:
    stem = next(s for b, s, _, _ in _BANK_ACCOUNTS if b == bucket)
    return f"{stem}-{currency.lower()}"


def account_specs(loan: LoanRecord) -> list[AccountSpec]:
    """The loan's own accounts and the bank's lending income and impairment accounts."""
    own = loan_accounts(loan.loan_id)
    specs = [AccountSpec(getattr(own, name), loan.currency, kind, code, OwnerKind.MEMBER,
                         loan.member_id) for name, _, kind, code in _LOAN_ACCOUNTS]
    specs += [AccountSpec(bank_account(bucket, loan.currency), loan.currency, kind, code,
                          OwnerKind.BANK, "bank") for bucket, _, kind, code in _BANK_ACCOUNTS]
    return specs


def open_accounts(ctx: Context, loan: LoanRecord) -> LoanAccounts:
    """Open the loan's accounts (and the bank's, the first time) in this command."""
    items, new = plan_accounts(ctx, account_specs(loan))
    for item in items:
        if item.error is not None:
            raise item.error
    insert_accounts(ctx, new)
    return loan_accounts(loan.loan_id)


def check_cash_account(ctx: Context, account_id: str, currency: str, field: str) -> None:
    """The account a loan's cash moves through must exist, be open and be in its currency."""
    account = ctx.tx.get_account(account_id)
    if account is None:
        raise NotFound("ACCOUNT_NOT_FOUND", f"no account {account_id!r}",
                       metadata={"account_id": account_id, "field": field})
    if account.status is not AccountStatus.OPEN:
        raise FailedPrecondition("ACCOUNT_NOT_OPEN", f"account {account_id!r} is "
                                 f"{account.status.value}", metadata={"account_id": account_id})
    if account.currency != currency:
        raise FailedPrecondition("CURRENCY_MISMATCH", f"account {account_id!r} is in "
                                 f"{account.currency}, the loan in {currency}",
                                 metadata={"account_id": account_id})


# -- transactions in storage <-> transactions the engine replays ----------------------------------
def to_engine(stored: StoredLoanTransaction) -> LoanTransaction:
    payload: dict[str, Any] = json.loads(stored.payload_json)
    tid, on, amount = stored.transaction_id, stored.business_date, stored.amount_minor or 0
    first_due = payload.get("first_due_on")
    first_due_on = date.fromisoformat(first_due) if first_due else None
    match stored.kind:
        case "disbursement":
            return Disbursement(tid, on, amount, first_due_on)
        case "repayment":
            return Repayment(tid, on, amount)
        case "payoff":
            return Payoff(tid, on, amount)
        case "refund":
            return Refund(tid, on, amount)
        case "recovery":
            return Recovery(tid, on, amount)
        case "charge_off":
            return ChargeOff(tid, on)
        case "write_off":
            return WriteOff(tid, on)
        case "forbearance":
            return Forbearance(tid, on, terms_from_json(payload["terms"]), first_due_on)
        case "fee":
            return FeeCharge(tid, on, amount, Component(payload["component"]))
        case "waiver":
            return Waiver(tid, on, Component(payload["component"]), amount)
    raise AssertionError(f"unknown loan transaction kind {stored.kind!r}")


@dataclass(frozen=True, slots=True)
class Booking:
    """One loan event: the stored transaction to add (None at close of business), the date
    the ledger is brought to, and where cash goes."""

    as_of: date
    transfer_id: str
    description: str
    new: StoredLoanTransaction | None = None
    cash_account: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    state: LoanState
    spec: TransferSpec | None
    loan: LoanRecord
    arrears: list[ArrearsDay]
    before: LedgerBuckets = ZERO  # what was booked


def participations(ctx: Context, clock: Clock, plans: list[tuple[Booking, Plan]]
                   ) -> tuple[list[tuple[Booking, Plan]], Head]:
    """Split the bookings of pool-funded loans among their funders and post the pools' parts
    (`bank.app.participations`), after the loans' own entries; returns the plans with the
    loans' funding brought up to date, and the head."""
    updated, head = participate(ctx, clock, [
        Moved(plan.loan, plan.before, plan.state.buckets, booking.transfer_id,
              plan.state.business_date) for booking, plan in plans])
    return [(b, replace(p, loan=updated[p.loan.loan_id]) if p.loan.loan_id in updated else p)
            for b, p in plans], head


def loan_terms(loan: LoanRecord) -> LoanTerms:
    ensure(loan.terms_json is not None, f"loan {loan.loan_id} has no frozen terms")
    assert loan.terms_json is not None
    return terms_from_json(json.loads(loan.terms_json))


def plan_booking(store: LoanWriter, loan: LoanRecord, booking: Booking) -> Plan:
    """Replay and work out the entry; writes nothing. Raises what `replay` raises
    (`FailedPrecondition` for a transaction the loan's history refuses)."""
    stored = store.loan_transactions(loan.loan_id)
    if booking.new is not None:
        stored.append(booking.new)
    terms = loan_terms(loan)
    transactions = [to_engine(x) for x in stored]
    booked = store.booked(loan.loan_id) or Booked(booking.as_of, ZERO)
    as_of = max(booking.as_of, booked.booked_through)
    state = replay(terms, transactions, as_of)
    spec = entry_spec(loan, booked.buckets, state.buckets, booking, as_of)
    arrears = []
    backdated = booking.new is not None and booking.new.business_date < booked.booked_through
    if backdated:
        assert booking.new is not None
        since = booking.new.business_date
        arrears = [arrears_day(replay(terms, transactions, day.business_date))
                   for day in store.arrears_history(loan.loan_id, ARREARS_HISTORY_MAX)
                   if day.business_date >= since]
    return Plan(state, spec, with_state(loan, state), arrears, booked.buckets)


def entry_spec(loan: LoanRecord, before: LedgerBuckets, after: LedgerBuckets,
               booking: Booking, as_of: date) -> TransferSpec | None:
    lines = journal_lines(before, after)
    if not lines:
        return None
    accounts = loan.accounts
    ensure(accounts is not None, f"loan {loan.loan_id} is booked before its accounts exist")
    assert accounts is not None
    postings = []
    for line in lines:
        if line.bucket == "cash_minor":
            ensure(booking.cash_account is not None,
                   f"loan {loan.loan_id}: cash moved with no cash account ({booking.transfer_id})")
            account = booking.cash_account or ""
        elif line.bucket in _BUCKET_OF_ACCOUNT:
            account = getattr(accounts, _BUCKET_OF_ACCOUNT[line.bucket])
        else:
            account = bank_account(line.bucket, loan.currency)
        side = Side.DEBIT if line.side is BucketSide.DEBIT else Side.CREDIT
        postings.append(PostingLine(account, side, line.amount_minor, loan.currency))
    metadata = [("loan", f"loans/{loan.loan_id}")]
    funding = Funding.of(loan)
    if funding.split is not None:  # the split this entry's movements are shared by
        metadata += [("funding", split_text(funding.split)),
                     ("funding_version", str(funding.version))]
    return TransferSpec(booking.transfer_id, TransferKind.POSTED, tuple(postings),
                        effective_date=as_of, description=booking.description[:256],
                        metadata=tuple(sorted(metadata)))


def arrears_day(state: LoanState) -> ArrearsDay:
    return ArrearsDay(state.business_date, state.days_past_due, state.arrears_bucket.value,
                      state.stage, state.provision_required_minor)


def arrears_minor(state: LoanState) -> int:
    """What is due and unpaid at the business date (principal, interest, fees, penalties)."""
    return sum(line.unpaid(c) for line in state.instalments
               if line.due_date <= state.business_date for c in Component)


def with_state(loan: LoanRecord, state: LoanState) -> LoanRecord:
    return replace(loan, status=_STATUS[state.status], forborne=state.forborne,
                   days_past_due=state.days_past_due, arrears_bucket=state.arrears_bucket.value,
                   stage=state.stage, arrears_minor=arrears_minor(state))


def post(ctx: Context, specs: list[TransferSpec], effective: date) -> Head:
    """Post the planned entries in this command; a refusal (funds, account state) is raised.
    Callers post before they write anything else, so a refusal leaves nothing behind."""
    if not specs:
        return ctx.head
    result, head = apply_transfers(ctx, specs, effective, ctx.command.request_id)
    for item in result.items:
        if item.error is not None:
            raise item.error
    return head


def commit_booking(ctx: Context, store: LoanWriter, planned: Plan, booking: Booking) -> None:
    """Write the loan side of a booking (after its entry is posted)."""
    loan = replace(planned.loan, updated_ns=ctx.now_ns)
    if booking.new is not None:
        store.insert_loan_transaction(booking.new)
        ctx.effects.append(["loan_transaction", loan.loan_id, booking.new.transaction_id,
                            booking.new.kind, booking.new.business_date.isoformat(),
                            booking.new.amount_minor])
    store.save_booked(loan.loan_id, Booked(planned.state.business_date, planned.state.buckets),
                      ctx.now_ns)
    store.save_loan(loan)
    if planned.arrears:
        store.save_arrears(loan.loan_id, planned.arrears, ctx.now_ns)
    ctx.effects.append(["loan", loan.loan_id, loan.status.value,
                        planned.state.business_date.isoformat()])


def book(ctx: Context, clock: Clock, store: LoanWriter, loan: LoanRecord, booking: Booking
         ) -> tuple[Plan, Head]:
    """Plan, post and write one loan event in this command (with the pools' parts of it);
    returns the plan and the head."""
    planned = plan_booking(store, loan, booking)
    head = post(ctx, [planned.spec] if planned.spec else [], planned.state.business_date)
    [(_, planned)], head = participations(replace(ctx, head=head), clock, [(booking, planned)])
    commit_booking(ctx, store, planned, booking)
    return planned, head


def business_date(store: LoanWriter | Any, clock: Clock) -> date:
    """The logical business date: the clock's (UTC) date until the first close of business
    stores one; from then on only close of business moves it."""
    stored: date | None = store.stored_business_date()
    return stored if stored is not None else clock.business_date()
