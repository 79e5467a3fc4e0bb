"""The loan engine: a loan's state is a pure function of (terms, transactions, business date).

`replay` rebuilds the state from the disbursement on, so a backdated repayment is handled by
replaying, and close of business for the same date twice gives the same figures. Rules:

- Interest follows the schedule (no recalculation on actual payment dates): each instalment's
  scheduled interest is recognised evenly over the days of its period with cumulative rounding
  (the loan's mode), so accruals over a period sum exactly to its interest.
- Cash pays what is due (due date on or before the payment), instalment by instalment oldest
  first, each by the allocation order of the terms; the rest is an overpayment (a liability)
  applied automatically to each later instalment on its due date, or refunded.
- An instalment is overdue once its unpaid principal, interest and fees exceed the arrears
  tolerance (penalties alone never keep a loan overdue). Days past due count from the due date
  of the oldest overdue instalment; 0 on the due date itself.
- Late fees (a `LateFeeRule`) are charged at the end of the day, after that day's payments, as
  penalties on the overdue instalment, cut down to the per-instalment and per-loan caps; they
  stop once the loan is charged off.
- IFRS 9 stage (simplified, no cure period): 3 if more than 90 days past due, charged off or
  written off; else 2 if more than 30 days past due or ever forborne; else 1.
- Provision required = the provision-matrix rate of the arrears bucket (the 90+ rate once
  charged off) x gross exposure (principal + interest receivable + fees + penalties), rounded
  once with the loan's mode; nil after write-off.

`LoanState.buckets` are the balances of the loan's ledger accounts; `ledger.journal_lines`
turns the difference between two states into a balanced journal entry.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from fractions import Fraction

from bank.domain.errors import FailedPrecondition, invalid
from bank.domain.invariants import ensure
from bank.domain.lending.ledger import LedgerBuckets
from bank.domain.lending.product import ArrearsBucket, Component, LoanTerms
from bank.domain.lending.schedule import RepaymentSchedule, generate_schedule, round_fraction
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
    replay_key,
)
from bank.domain.limits import AMOUNT_MINOR_MAX, ID_LENGTH_MAX

TRANSACTIONS_PER_LOAN_MAX = 100_000
_COMPONENTS = tuple(Component)


class LoanStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    CLOSED = "CLOSED"  # nothing receivable and no principal left (an overpayment may remain)
    CHARGED_OFF = "CHARGED_OFF"
    WRITTEN_OFF = "WRITTEN_OFF"


@dataclass(frozen=True, slots=True)
class InstalmentState:
    """One instalment at the business date; amounts per component in `Component` order
    (PENALTY, FEE, INTEREST, PRINCIPAL) as `(component, amount)` pairs."""

    number: int
    due_date: date
    period_start: date
    period_end: date
    charged: tuple[tuple[Component, int], ...]
    paid: tuple[tuple[Component, int], ...]
    waived: tuple[tuple[Component, int], ...]
    written_off: tuple[tuple[Component, int], ...]
    interest_accrued_minor: int

    def unpaid(self, component: Component) -> int:
        """What is still owed of `component` (charged - paid - waived - written off)."""
        return (dict(self.charged)[component] - dict(self.paid)[component]
                - dict(self.waived)[component] - dict(self.written_off)[component])


@dataclass(frozen=True, slots=True)
class LoanState:
    """The loan at `business_date`. Amounts are minor units; see the module docstring."""

    business_date: date
    status: LoanStatus
    terms: LoanTerms
    schedules: tuple[RepaymentSchedule, ...]
    instalments: tuple[InstalmentState, ...]
    principal_outstanding_minor: int
    interest_accrued_minor: int  # recognised since disbursement, cumulative
    interest_receivable_minor: int  # accrued and unpaid
    interest_due_unpaid_minor: int  # due (due date on or before the business date) and unpaid
    fee_receivable_minor: int
    penalty_receivable_minor: int
    overpayment_minor: int
    days_past_due: int
    arrears_bucket: ArrearsBucket
    stage: int
    forborne: bool
    provision_required_minor: int
    late_fees_charged_minor: int
    buckets: LedgerBuckets

    @property
    def payoff_quote_minor(self) -> int:
        """Principal + interest accrued to the business date + fees and penalties - overpayment
        (negative: the bank owes the borrower that much)."""
        return (self.principal_outstanding_minor + self.interest_receivable_minor
                + self.fee_receivable_minor + self.penalty_receivable_minor
                - self.overpayment_minor)


def arrears_bucket(days_past_due: int) -> ArrearsBucket:
    """CURRENT at 0 days, then 1-30, 31-60, 61-90, and 90+ from 91 days."""
    ensure(days_past_due >= 0, "days past due must not be negative")
    for limit, bucket in ((0, ArrearsBucket.CURRENT), (30, ArrearsBucket.DPD_1_30),
                          (60, ArrearsBucket.DPD_31_60), (90, ArrearsBucket.DPD_61_90)):
        if days_past_due <= limit:
            return bucket
    return ArrearsBucket.DPD_OVER_90


def ifrs9_stage(days_past_due: int, *, forborne: bool, credit_impaired: bool) -> int:
    """3 if more than 90 days past due or charged/written off; 2 if more than 30 or forborne."""
    if credit_impaired or days_past_due > 90:
        return 3
    if forborne or days_past_due > 30:
        return 2
    return 1


def replay(terms: LoanTerms, transactions: Iterable[LoanTransaction],
           business_date: date) -> LoanState:
    """The loan's state at the end of `business_date`, from its transactions (in any order).

    Transactions dated after `business_date` are ignored. Raises `InvalidArgument` naming
    `transactions[i]...` for a malformed transaction (index in the order given), and
    `FailedPrecondition` for one the loan's history refuses (a repayment after write-off, a
    payoff short of the quote, a refund beyond the overpayment, ...).
    """
    given = list(transactions)
    _check_transactions(given)
    ordered = sorted((t for t in given if t.on <= business_date), key=replay_key)
    book = _Book(terms)
    position = 0
    day: date | None = ordered[0].on if ordered else None
    while day is not None:
        book.apply_credit(day)
        while position < len(ordered) and ordered[position].on == day:
            book.apply(ordered[position])
            book.apply_credit(day)
            position += 1
        book.charge_late_fees(day)
        upcoming = [ordered[position].on] if position < len(ordered) else []
        upcoming += book.event_dates_after(day)
        later = [d for d in upcoming if day < d <= business_date]
        day = min(later) if later else None
    return book.state(business_date)


def payoff_quote(terms: LoanTerms, transactions: Iterable[LoanTransaction], on: date) -> int:
    """What settles the loan on `on` (see `LoanState.payoff_quote_minor`); `replay` raises."""
    return replay(terms, transactions, on).payoff_quote_minor


def _check_transactions(given: Sequence[LoanTransaction]) -> None:
    if len(given) > TRANSACTIONS_PER_LOAN_MAX:
        raise invalid("transactions", f"at most {TRANSACTIONS_PER_LOAN_MAX} per loan")
    seen: set[str] = set()
    disbursed_on: date | None = None
    for index, transaction in enumerate(given):
        path = f"transactions[{index}]"
        tid = transaction.transaction_id
        if not isinstance(tid, str) or not 0 < len(tid) <= ID_LENGTH_MAX:
            raise invalid(f"{path}.transaction_id", f"must be 1 to {ID_LENGTH_MAX} characters")
        if tid in seen:
            raise invalid(f"{path}.transaction_id", f"{tid!r} is used twice",
                          reason="DUPLICATE_TRANSACTION_ID")
        seen.add(tid)
        amount = getattr(transaction, "amount_minor", 1)
        if type(amount) is not int or not 0 < amount <= AMOUNT_MINOR_MAX:
            raise invalid(f"{path}.amount_minor", f"must be within 1 and {AMOUNT_MINOR_MAX}")
        if isinstance(transaction, Disbursement):
            if disbursed_on is not None:
                raise invalid(path, "a loan is disbursed once", reason="SECOND_DISBURSEMENT")
            disbursed_on = transaction.on
        if isinstance(transaction, FeeCharge) and transaction.component not in (
                Component.FEE, Component.PENALTY):
            raise invalid(f"{path}.component", "must be FEE or PENALTY")
        if isinstance(transaction, Waiver) and transaction.component is Component.PRINCIPAL:
            raise invalid(f"{path}.component", "must be INTEREST, FEE or PENALTY")
    if given and disbursed_on is None:
        raise invalid("transactions", "a loan's history starts with its disbursement",
                      reason="NOT_DISBURSED")
    for index, transaction in enumerate(given):
        if disbursed_on is not None and transaction.on < disbursed_on:
            raise invalid(f"transactions[{index}].on", "is before the disbursement")


def _refuse(reason: str, message: str) -> FailedPrecondition:
    return FailedPrecondition(reason, message)


class _Line:
    """A mutable instalment while replaying; frozen into `InstalmentState` at the end."""

    __slots__ = ("charged", "due_date", "late_fees", "number", "paid", "period_end",
                 "period_start", "waived", "written_off")

    def __init__(self, number: int, due_date: date, period_start: date, period_end: date,
                 principal: int, interest: int, fee: int) -> None:
        self.number = number
        self.due_date = due_date
        self.period_start = period_start
        self.period_end = period_end
        self.charged = {Component.PENALTY: 0, Component.FEE: fee,
                        Component.INTEREST: interest, Component.PRINCIPAL: principal}
        self.paid = dict.fromkeys(_COMPONENTS, 0)
        self.waived = dict.fromkeys(_COMPONENTS, 0)
        self.written_off = dict.fromkeys(_COMPONENTS, 0)
        self.late_fees = 0

    def unpaid(self, component: Component) -> int:
        return (self.charged[component] - self.paid[component] - self.waived[component]
                - self.written_off[component])

    def overdue_amount(self) -> int:
        """Unpaid principal, interest and fees (penalties alone never make it overdue), plus
        what was written off: a written-off debt is still contractually past due."""
        return sum(self.unpaid(c) + self.written_off[c]
                   for c in (Component.FEE, Component.INTEREST, Component.PRINCIPAL))

    def accrued(self, on: date, terms: LoanTerms) -> int:
        """Scheduled interest recognised by the end of `on`: evenly over the period's days,
        cumulatively rounded, so it reaches exactly the scheduled interest at period end."""
        interest = self.charged[Component.INTEREST]
        if on >= self.period_end:
            return interest
        if on <= self.period_start:
            return 0
        elapsed, days = (on - self.period_start).days, (self.period_end - self.period_start).days
        return round_fraction(Fraction(interest * elapsed, days), terms.rounding)


class _Book:
    """The loan while replaying. Every method keeps the lines' components non-negative."""

    def __init__(self, terms: LoanTerms) -> None:
        self.terms = terms
        self.lines: list[_Line] = []
        self.schedules: list[RepaymentSchedule] = []
        self.disbursed = 0
        self.repaid = 0
        self.refunded = 0
        self.recovered = 0
        self.overpayment = 0
        self.late_fees = 0
        self.forborne = False
        self.charged_off = False
        self.written_off = False

    # --- replay steps ------------------------------------------------------------------------

    def apply(self, transaction: LoanTransaction) -> None:
        if self.written_off and not isinstance(transaction, Recovery | Refund):
            raise _refuse("LOAN_WRITTEN_OFF", f"{transaction.transaction_id}: the loan is "
                          "written off; only recoveries and refunds follow")
        match transaction:
            case Disbursement():
                self._disburse(transaction)
            case Forbearance():
                self._forbear(transaction)
            case FeeCharge():
                self._charge(transaction.on, transaction.component, transaction.amount_minor)
            case Waiver():
                self._waive(transaction)
            case Repayment():
                self._repay(transaction.on, transaction.amount_minor)
            case Payoff():
                self._pay_off(transaction)
            case Refund():
                if transaction.amount_minor > self.overpayment:
                    raise _refuse("REFUND_EXCEEDS_OVERPAYMENT", f"{transaction.transaction_id}:"
                                  f" the overpayment is {self.overpayment}")
                self.overpayment -= transaction.amount_minor
                self.refunded += transaction.amount_minor
            case ChargeOff():
                if self.charged_off:
                    raise _refuse("LOAN_CHARGED_OFF", "the loan is already charged off")
                self._stop_accrual(transaction.on)
                self.charged_off = True
            case WriteOff():
                self._write_off(transaction.on)
            case Recovery():
                self._recover(transaction)

    def apply_credit(self, day: date) -> None:
        """Apply the overpayment to whatever is due on `day`."""
        if self.overpayment and not self.written_off:
            self.overpayment -= self._allocate(day, self.overpayment)

    def charge_late_fees(self, day: date) -> None:
        """End of day: the late-fee rule on every instalment overdue long enough."""
        rule = self.terms.late_fee
        if rule is None or self.charged_off or self.written_off:
            return
        for line in self.lines:
            late = (day - line.due_date).days - rule.days_overdue
            if late < 0 or (late > 0 and (rule.repeat_every_days == 0
                                          or late % rule.repeat_every_days)):
                continue
            if line.overdue_amount() <= self.terms.arrears_tolerance_minor:
                continue
            fee = min(rule.amount_minor, rule.per_instalment_cap_minor - line.late_fees,
                      rule.per_loan_cap_minor - self.late_fees)
            if fee > 0:
                line.charged[Component.PENALTY] += fee
                line.late_fees += fee
                self.late_fees += fee

    def event_dates_after(self, day: date) -> list[date]:
        """Dates after `day` on which something happens without a transaction: an instalment
        falls due (the overpayment is applied), or a late fee may be charged."""
        dates = [line.due_date for line in self.lines if line.due_date > day]
        rule = self.terms.late_fee
        if rule is None or self.charged_off or self.written_off:
            return dates
        tolerance = self.terms.arrears_tolerance_minor
        for line in self.lines:
            if line.late_fees >= rule.per_instalment_cap_minor or (
                    self.late_fees >= rule.per_loan_cap_minor):
                continue
            if line.due_date > day or line.overdue_amount() <= tolerance:
                continue  # its due date is an event already; once paid it stays paid
            first = line.due_date + timedelta(rule.days_overdue)
            if first > day:
                dates.append(first)
            elif rule.repeat_every_days:
                steps = (day - first).days // rule.repeat_every_days + 1
                dates.append(first + timedelta(steps * rule.repeat_every_days))
        return dates

    # --- transactions ------------------------------------------------------------------------

    def _disburse(self, transaction: Disbursement) -> None:
        schedule = generate_schedule(self.terms, transaction.amount_minor, transaction.on,
                                     transaction.first_due_on)
        self._add_schedule(schedule)
        self.disbursed = transaction.amount_minor

    def _add_schedule(self, schedule: RepaymentSchedule) -> None:
        self.schedules.append(schedule)
        self.lines.extend(
            _Line(i.number, i.due_date, i.period_start, i.period_end, i.principal_minor,
                  i.interest_minor, i.fee_minor) for i in schedule.instalments)

    def _forbear(self, transaction: Forbearance) -> None:
        if self.charged_off:
            raise _refuse("LOAN_CHARGED_OFF", f"{transaction.transaction_id}: a charged-off "
                          "loan is not rescheduled")
        current = self._cut_at(transaction.on)
        moved = self._take_unpaid_principal()
        if moved == 0:
            raise _refuse("NOTHING_TO_RESCHEDULE", f"{transaction.transaction_id}: no principal "
                          "is outstanding")
        self.terms = transaction.terms
        number = max(line.number for line in self.lines) + 1
        schedule = generate_schedule(self.terms, moved, transaction.on,
                                     transaction.first_due_on, first_number=number)
        if current is not None:  # the broken period's interest is deferred to the new first
            current.due_date = max(current.due_date, schedule.instalments[0].due_date)
        self._add_schedule(schedule)
        self.forborne = True

    def _pay_off(self, transaction: Payoff) -> None:
        day = transaction.on
        current = self._cut_at(day)
        moved = self._take_unpaid_principal(due_after=day)
        if current is not None:  # everything not yet due falls due today
            current.charged[Component.PRINCIPAL] += moved
            current.due_date = day
        ensure(current is not None or moved == 0, "principal not yet due needs an instalment")
        self.apply_credit(day)
        quote = self._receivable(day) - self.overpayment
        if transaction.amount_minor < quote:
            raise _refuse("PAYOFF_SHORT", f"{transaction.transaction_id}: the payoff quote on "
                          f"{day} is {quote}, {transaction.amount_minor} was paid")
        self._repay(day, transaction.amount_minor)

    def _charge(self, day: date, component: Component, amount: int) -> None:
        line = next((x for x in self.lines if x.due_date >= day), self.lines[-1])
        line.charged[component] += amount

    def _waive(self, transaction: Waiver) -> None:
        left = transaction.amount_minor
        due = [x for x in self.lines if x.due_date <= transaction.on]
        if left > sum(x.unpaid(transaction.component) for x in due):
            raise _refuse("WAIVER_EXCEEDS_DUE", f"{transaction.transaction_id}: more "
                          f"{transaction.component} than is due")
        for line in due:
            part = min(left, line.unpaid(transaction.component))
            line.waived[transaction.component] += part
            left -= part

    def _repay(self, day: date, amount: int) -> None:
        self.repaid += amount
        self.overpayment += amount - self._allocate(day, amount)

    def _write_off(self, day: date) -> None:
        if not self.charged_off:
            self._stop_accrual(day)
        for line in self.lines:
            for component in _COMPONENTS:
                line.written_off[component] += line.unpaid(component)
        self.written_off = True

    def _recover(self, transaction: Recovery) -> None:
        if not self.written_off:
            raise _refuse("LOAN_NOT_WRITTEN_OFF", f"{transaction.transaction_id}: cash before "
                          "a write-off is a repayment")
        written = sum(sum(x.written_off.values()) for x in self.lines)
        if self.recovered + transaction.amount_minor > written:
            raise _refuse("RECOVERY_EXCEEDS_WRITE_OFF", f"{transaction.transaction_id}: "
                          f"{written} was written off, {self.recovered} already recovered")
        self.recovered += transaction.amount_minor

    # --- helpers -----------------------------------------------------------------------------

    def _allocate(self, day: date, amount: int) -> int:
        """Pay what is due on `day`, oldest instalment first, each in allocation order."""
        left = amount
        for line in sorted((x for x in self.lines if x.due_date <= day),
                           key=lambda x: (x.due_date, x.number)):
            for component in self.terms.allocation_order:
                part = min(left, line.unpaid(component))
                line.paid[component] += part
                left -= part
            if left == 0:
                break
        ensure(0 <= left <= amount, "an allocation must stay within the amount paid")
        return amount - left

    def _cut_at(self, day: date) -> _Line | None:
        """End the instalment in progress on `day` there (its interest becomes what accrued to
        `day`) and drop the instalments wholly after it, folding their charges into it."""
        current = next((x for x in self.lines if x.due_date > day), None)
        if current is None:
            return None
        current.charged[Component.INTEREST] = current.accrued(day, self.terms)
        current.period_end = max(current.period_start, min(current.period_end, day))
        later = [x for x in self.lines if x.due_date > day and x is not current]
        for line in later:
            ensure(not any(line.paid.values()), "an instalment not yet due cannot be paid")
            current.charged[Component.PRINCIPAL] += line.charged[Component.PRINCIPAL]
            current.charged[Component.FEE] += line.charged[Component.FEE]
            current.charged[Component.PENALTY] += line.charged[Component.PENALTY]
        self.lines = [x for x in self.lines if x.due_date <= day or x is current]
        return current

    def _take_unpaid_principal(self, due_after: date | None = None) -> int:
        """Remove unpaid principal from the instalments (all, or those due after a date)."""
        moved = 0
        for line in self.lines:
            if due_after is None or line.due_date > due_after:
                part = line.unpaid(Component.PRINCIPAL)
                line.charged[Component.PRINCIPAL] -= part
                moved += part
        return moved

    def _stop_accrual(self, day: date) -> None:
        """Non-accrual from `day`: interest after it is never charged."""
        for line in self.lines:
            if line.period_end > day:
                line.charged[Component.INTEREST] = line.accrued(day, self.terms)
                line.period_end = max(line.period_start, day)

    def _receivable(self, day: date) -> int:
        accrued = sum(x.accrued(day, self.terms) for x in self.lines)
        interest = accrued - sum(x.charged[Component.INTEREST] - x.unpaid(Component.INTEREST)
                                 for x in self.lines)
        return interest + sum(x.unpaid(c) for x in self.lines
                              for c in (Component.PENALTY, Component.FEE, Component.PRINCIPAL))

    # --- the result --------------------------------------------------------------------------

    def state(self, business_date: date) -> LoanState:
        lines = self.lines
        terms = self.terms

        def total(part: str, component: Component) -> int:
            return sum(getattr(x, part)[component] for x in lines)

        def unpaid(component: Component) -> int:
            return sum(x.unpaid(component) for x in lines)

        interest, fee, penalty = Component.INTEREST, Component.FEE, Component.PENALTY
        accrued = sum(x.accrued(business_date, terms) for x in lines)
        interest_receivable = (accrued - total("paid", interest) - total("waived", interest)
                               - total("written_off", interest))
        ensure(interest_receivable >= 0, "interest is never paid before it has accrued")
        principal = unpaid(Component.PRINCIPAL)
        overdue = [x.due_date for x in lines if x.due_date < business_date
                   and x.overdue_amount() > terms.arrears_tolerance_minor]
        days_past_due = (business_date - min(overdue)).days if overdue else 0
        bucket = arrears_bucket(days_past_due)
        impaired = self.charged_off or self.written_off
        exposure = principal + interest_receivable + unpaid(fee) + unpaid(penalty)
        rate_bucket = ArrearsBucket.DPD_OVER_90 if impaired else bucket
        provision = 0 if self.written_off else round_fraction(
            Fraction(exposure * terms.provision_matrix.rate_bps(rate_bucket), 10_000),
            terms.rounding)
        written_off = {c: total("written_off", c) for c in _COMPONENTS}
        buckets = LedgerBuckets(
            principal_outstanding_minor=principal,
            interest_receivable_minor=interest_receivable,
            fee_receivable_minor=unpaid(fee),
            penalty_receivable_minor=unpaid(penalty),
            impairment_expense_minor=provision + sum(written_off.values()),
            cash_minor=self.repaid + self.recovered - self.disbursed - self.refunded,
            overpayment_liability_minor=self.overpayment,
            provision_required_minor=provision,
            interest_income_minor=accrued - total("waived", interest),
            fee_income_minor=total("charged", fee) - total("waived", fee),
            penalty_income_minor=total("charged", penalty) - total("waived", penalty),
            recovered_minor=self.recovered,
            written_off_principal_minor=written_off[Component.PRINCIPAL],
            written_off_interest_minor=written_off[interest],
            written_off_fees_minor=written_off[fee] + written_off[penalty],
        )
        return LoanState(
            business_date=business_date,
            status=self._status(business_date, exposure),
            terms=terms,
            schedules=tuple(self.schedules),
            instalments=tuple(self._freeze(x, business_date) for x in lines),
            principal_outstanding_minor=principal,
            interest_accrued_minor=accrued,
            interest_receivable_minor=interest_receivable,
            interest_due_unpaid_minor=sum(x.unpaid(interest) for x in lines
                                          if x.due_date <= business_date),
            fee_receivable_minor=unpaid(fee),
            penalty_receivable_minor=unpaid(penalty),
            overpayment_minor=self.overpayment,
            days_past_due=days_past_due,
            arrears_bucket=bucket,
            stage=ifrs9_stage(days_past_due, forborne=self.forborne, credit_impaired=impaired),
            forborne=self.forborne,
            provision_required_minor=provision,
            late_fees_charged_minor=self.late_fees,
            buckets=buckets,
        )

    def _status(self, business_date: date, exposure: int) -> LoanStatus:
        if self.written_off:
            return LoanStatus.WRITTEN_OFF
        if self.charged_off:
            return LoanStatus.CHARGED_OFF
        unaccrued = sum(x.charged[Component.INTEREST] - x.accrued(business_date, self.terms)
                        for x in self.lines)
        if self.lines and exposure == 0 and unaccrued == 0:
            return LoanStatus.CLOSED
        return LoanStatus.ACTIVE

    def _freeze(self, line: _Line, business_date: date) -> InstalmentState:
        def pairs(amounts: dict[Component, int]) -> tuple[tuple[Component, int], ...]:
            return tuple((c, amounts[c]) for c in _COMPONENTS)

        return InstalmentState(
            number=line.number, due_date=line.due_date, period_start=line.period_start,
            period_end=line.period_end, charged=pairs(line.charged), paid=pairs(line.paid),
            waived=pairs(line.waived), written_off=pairs(line.written_off),
            interest_accrued_minor=line.accrued(business_date, self.terms))
