"""A unitised lending pool: the register of units, capital accounts, and the pool's assets.

Two sides, kept equal at every valuation:

- assets: net assets = cash + the pool's share of loan principal + accrued interest
  - provisions - servicing fees payable;
- capital: one capital account (integer minor units) per position (participant x unit class).
  Every change to net assets is posted to capital accounts through the waterfall, so at each
  period close the capital accounts sum exactly to net assets.

Dealing (subscriptions, redemptions, distributions) happens only at a valuation point: at the
opening or after a close, before any income or loss of the next period is recorded. So a
newcomer buys at a NAV that already holds the earlier income, and shares only in what follows.

A subscriber's capital account is credited with exactly what it paid; its units are that amount
at NAV, rounded down. A partial redemption pays units at NAV rounded down; the position's last
unit pays out its whole capital account, so rounding dust never moves between participants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from bank.domain import currency as currencies
from bank.domain.errors import (
    FailedPrecondition,
    InvariantViolation,
    NotFound,
    ViolationCollector,
    invalid,
)
from bank.domain.invariants import ensure
from bank.domain.pools.split import BPS_TOTAL, apportion
from bank.domain.pools.units import (
    INITIAL_NAV_PER_UNIT,
    Holding,
    Position,
    UnitClass,
    amount_for_units,
    nav_per_unit,
    units_for_amount,
)
from bank.domain.pools.waterfall import (
    PositionStatement,
    allocate_income,
    allocate_loss,
    allocate_recovery,
    servicing_fee_minor,
)

# Named limits of a pool. They belong in bank/domain/limits.py once PoolService uses them.
UNIT_CLASSES_PER_POOL_MAX = 8
POSITIONS_PER_POOL_MAX = 1_000
LOANS_PER_POOL_MAX = 100_000
ID_LENGTH_MAX = 64
PERIOD_DAYS_MAX = 366
FEE_BPS_PER_YEAR_MAX = 1_000


@dataclass(frozen=True, slots=True)
class PoolAgreement:
    """The pool's parameters. Validated on construction (`InvalidArgument`, every violation)."""

    pool_id: str
    currency: str
    unit_classes: tuple[UnitClass, ...]
    servicing_fee_bps_per_year: int = 0
    year_days: int = 365

    def __post_init__(self) -> None:
        collector = ViolationCollector()
        if not 1 <= len(self.pool_id) <= ID_LENGTH_MAX:
            collector.add("pool_id", f"must be 1 to {ID_LENGTH_MAX} characters")
        if not currencies.is_known(self.currency):
            collector.add("currency", "unknown currency")
        if not 1 <= len(self.unit_classes) <= UNIT_CLASSES_PER_POOL_MAX:
            collector.add("unit_classes", f"must hold 1 to {UNIT_CLASSES_PER_POOL_MAX} classes")
        seen: set[str] = set()
        for index, unit_class in enumerate(self.unit_classes):
            path = f"unit_classes[{index}]"
            if not 1 <= len(unit_class.class_id) <= ID_LENGTH_MAX or unit_class.class_id in seen:
                collector.add(f"{path}.class_id", "must be a unique id of 1 to 64 characters")
            seen.add(unit_class.class_id)
            if unit_class.seniority < 0:
                collector.add(f"{path}.seniority", "must not be negative")
            if not 1 <= unit_class.income_weight_bps <= 10 * BPS_TOTAL:
                collector.add(f"{path}.income_weight_bps", "must be from 1 to 100,000")
        if not 0 <= self.servicing_fee_bps_per_year <= FEE_BPS_PER_YEAR_MAX:
            collector.add("servicing_fee_bps_per_year", f"must be 0 to {FEE_BPS_PER_YEAR_MAX}")
        if self.year_days not in (360, 365, 366):
            collector.add("year_days", "must be 360, 365 or 366")
        collector.raise_if_any()

    def unit_class(self, class_id: str) -> UnitClass:
        for unit_class in self.unit_classes:
            if unit_class.class_id == class_id:
                return unit_class
        raise NotFound("UNIT_CLASS_NOT_FOUND", f"pool {self.pool_id} has no unit class "
                       f"{class_id!r}", metadata={"class_id": class_id})


@dataclass(frozen=True, slots=True)
class Deal:
    """The outcome of a subscription or redemption: units, cash, and the NAV dealt at."""

    position: Position
    units_micro: int
    amount_minor: int
    nav_per_unit: Decimal


@dataclass(frozen=True, slots=True)
class ClassValuation:
    class_id: str
    units_micro: int
    capital_minor: int  # capital accounts of the positions holding units
    nav_per_unit: Decimal | None  # None while the class has no units


@dataclass(frozen=True, slots=True)
class Valuation:
    """Both sides of the pool at one instant; `net_assets_minor == capital_total_minor` at close.

    `former_participants_minor` is capital owed to positions with no units left (recoveries
    that reached them after they left); it is part of the capital total but of no class NAV.
    """

    cash_minor: int
    loan_principal_minor: int
    accrued_interest_minor: int
    provisions_minor: int
    fees_payable_minor: int
    net_assets_minor: int
    capital_total_minor: int
    former_participants_minor: int
    classes: tuple[ClassValuation, ...]
    holdings: tuple[Holding, ...]


@dataclass(frozen=True, slots=True)
class PeriodClose:
    """What a close produced: the totals allocated, the valuation, and every statement."""

    period_number: int
    income_minor: int
    servicing_fee_minor: int
    losses_minor: int
    recoveries_minor: int
    valuation: Valuation
    statements: tuple[PositionStatement, ...]


@dataclass(frozen=True, slots=True)
class LoanShare:
    """The pool's share of one loan: balances, what was charged off and recovered, and who
    bore the losses (provisions and charge-offs beyond them) and had them restored."""

    loan_id: str
    principal_minor: int
    accrued_interest_minor: int
    charged_off_minor: int
    recovered_minor: int
    provisions_minor: int
    borne_minor: tuple[tuple[Position, int], ...]  # cumulative, as allocated at closes
    restored_minor: tuple[tuple[Position, int], ...]  # provision releases and recoveries


@dataclass(frozen=True, slots=True)
class _Loss:
    loan_id: str
    amount_minor: int


@dataclass(frozen=True, slots=True)
class _Restore:
    loan_id: str
    amount_minor: int


@dataclass(slots=True)
class _Activity:
    units_issued_micro: int = 0
    units_redeemed_micro: int = 0
    contributions_minor: int = 0
    redemptions_minor: int = 0
    distributions_minor: int = 0
    income_minor: int = 0
    fees_minor: int = 0
    losses_minor: int = 0
    recoveries_minor: int = 0


@dataclass(slots=True)
class _Loan:
    principal_minor: int = 0
    accrued_minor: int = 0
    provisions_minor: int = 0
    charged_off_minor: int = 0
    recovered_minor: int = 0
    borne: dict[Position, int] = field(default_factory=dict)
    restored: dict[Position, int] = field(default_factory=dict)

    def exposure_minor(self) -> int:
        return self.principal_minor + self.accrued_minor


def _positive(amount_minor: int, field_path: str) -> int:
    if type(amount_minor) is not int or amount_minor <= 0:
        raise invalid(field_path, "must be a whole number of minor units greater than zero",
                      reason="AMOUNT_NOT_POSITIVE")
    return amount_minor


class PoolRegister:
    """The register of one pool. Methods raise `InvalidArgument` for malformed amounts,
    `NotFound` for unknown classes and loans, and `FailedPrecondition` when a rule refuses the
    change (reasons: VALUATION_REQUIRED, INSUFFICIENT_POOL_CASH, NAV_NOT_POSITIVE,
    AMOUNT_BUYS_NO_UNITS, UNITS_NOT_HELD, CAPITAL_ACCOUNT_NEGATIVE, POOL_WOULD_HAVE_NO_UNITHOLDERS,
    NO_UNITHOLDERS, EXCEEDS_UNFUNDED_COMMITMENT, EXCEEDS_LOAN_BALANCE, PROVISION_EXCEEDS_EXPOSURE,
    POSITIONS_LIMIT, LOANS_LIMIT). A refused call changes nothing.
    """

    def __init__(self, agreement: PoolAgreement) -> None:
        self.agreement = agreement
        self.period_number = 1
        self._cash_minor = 0
        self._fees_payable_minor = 0
        self._units: dict[Position, int] = {}
        self._capital: dict[Position, int] = {}
        self._commitment: dict[Position, int] = {}
        self._contributed: dict[Position, int] = {}
        self._loans: dict[str, _Loan] = {}
        self._pending_income_minor = 0
        self._pending: list[_Loss | _Restore] = []
        self._opening: dict[Position, tuple[int, int]] = {}
        self._activity: dict[Position, _Activity] = {}

    # -- capital side -------------------------------------------------------------------------

    def commit(self, position: Position, amount_minor: int) -> None:
        """Add `amount_minor` to the position's commitment (what it may be called to fund)."""
        _positive(amount_minor, "commitment_minor")
        self._known_position(position)
        self._commitment[position] = self._commitment.get(position, 0) + amount_minor

    def commitment_minor(self, position: Position) -> int:
        """The position's total commitment (contributed or not)."""
        return self._commitment.get(position, 0)

    def unfunded_commitment_minor(self, position: Position) -> int:
        """Commitment not yet contributed (never negative)."""
        return max(0, self._commitment.get(position, 0) - self._contributed.get(position, 0))

    def call_capital(self, class_id: str, amount_minor: int) -> dict[Position, int]:
        """Split a capital call on a class by unfunded commitment (largest remainder).

        Returns what each position must contribute (then `subscribe` each). Raises
        `FailedPrecondition` (`EXCEEDS_UNFUNDED_COMMITMENT`) when the call exceeds the total.
        """
        _positive(amount_minor, "amount_minor")
        self.agreement.unit_class(class_id)
        unfunded = {p: self.unfunded_commitment_minor(p) for p in sorted(self._commitment)
                    if p.class_id == class_id}
        unfunded = {p: u for p, u in unfunded.items() if u > 0}
        if amount_minor > sum(unfunded.values()):
            raise FailedPrecondition(
                "EXCEEDS_UNFUNDED_COMMITMENT",
                f"capital call of {amount_minor} exceeds the unfunded commitment of class "
                f"{class_id} ({sum(unfunded.values())})")
        parts = apportion(amount_minor, list(unfunded.values()), "unfunded_commitment")
        return {p: part for p, part in zip(unfunded, parts, strict=True) if part}

    def subscribe(self, position: Position, amount_minor: int) -> Deal:
        """Buy units of the position's class for `amount_minor` at the class NAV per unit.

        Units = amount / NAV rounded down to the micro-unit; the capital account is credited
        with the whole amount. A class with no units deals at 1.00000000.
        """
        _positive(amount_minor, "amount_minor")
        self._require_valuation_point()
        self._known_position(position)
        nav = self.nav_per_unit(position.class_id) or INITIAL_NAV_PER_UNIT
        units_micro = units_for_amount(amount_minor, nav, self.agreement.currency)
        if units_micro <= 0:
            raise FailedPrecondition("AMOUNT_BUYS_NO_UNITS",
                                     f"{amount_minor} buys no units at a NAV of {nav}")
        self._units[position] = self._units.get(position, 0) + units_micro
        self._capital[position] = self._capital.get(position, 0) + amount_minor
        self._contributed[position] = self._contributed.get(position, 0) + amount_minor
        self._cash_minor += amount_minor
        activity = self._activity_of(position)
        activity.contributions_minor += amount_minor
        activity.units_issued_micro += units_micro
        return Deal(position, units_micro, amount_minor, nav)

    def redeem(self, position: Position, units_micro: int) -> Deal:
        """Cancel `units_micro` units and pay them out of pool cash.

        A partial redemption pays units x NAV rounded down (at most the capital account); the
        position's last unit pays its whole capital account. The last units in the pool cannot
        leave while it still holds loans (`POOL_WOULD_HAVE_NO_UNITHOLDERS`).
        """
        _positive(units_micro, "units_micro")
        self._require_valuation_point()
        held = self._units.get(position, 0)
        if units_micro > held:
            raise FailedPrecondition("UNITS_NOT_HELD", f"{position} holds {held} micro-units, "
                                     f"cannot redeem {units_micro}")
        nav = self._holders_nav(position.class_id)
        capital = self._capital[position]
        if units_micro == held:
            amount_minor = capital
        else:
            amount_minor = min(capital, amount_for_units(units_micro, nav,
                                                         self.agreement.currency))
        if amount_minor < 0:
            raise FailedPrecondition("CAPITAL_ACCOUNT_NEGATIVE",
                                     f"{position} has a capital account of {capital}")
        if units_micro == self.units_outstanding_micro() and self._holds_loans():
            raise FailedPrecondition("POOL_WOULD_HAVE_NO_UNITHOLDERS",
                                     "the last units cannot leave while the pool holds loans")
        self._take_cash(amount_minor)
        self._units[position] = held - units_micro
        self._capital[position] = capital - amount_minor
        activity = self._activity_of(position)
        activity.redemptions_minor += amount_minor
        activity.units_redeemed_micro += units_micro
        return Deal(position, units_micro, amount_minor, nav)

    def distribute(self, class_id: str, amount_minor: int) -> dict[Position, int]:
        """Pay `amount_minor` out of pool cash to a class's holders, pro rata to units."""
        _positive(amount_minor, "amount_minor")
        self._require_valuation_point()
        self.agreement.unit_class(class_id)
        holders = sorted(p for p, u in self._units.items() if u > 0 and p.class_id == class_id)
        if not holders:
            raise FailedPrecondition("NO_UNITHOLDERS", f"class {class_id} has no unit holders")
        self._take_cash(amount_minor)
        parts = apportion(amount_minor, [self._units[p] for p in holders], "holdings")
        for position, part in zip(holders, parts, strict=True):
            self._capital[position] -= part
            self._activity_of(position).distributions_minor += part
        return dict(zip(holders, parts, strict=True))

    def settle_former_participant(self, position: Position) -> int:
        """Pay a position with no units the capital it is owed (a recovery after it left)."""
        self._require_valuation_point()
        if self._units.get(position, 0) != 0:
            raise FailedPrecondition("UNITS_NOT_HELD", f"{position} still holds units; redeem")
        owed = self._capital.get(position, 0)
        if owed <= 0:
            return 0
        self._take_cash(owed)
        self._capital[position] = 0
        self._activity_of(position).redemptions_minor += owed
        return owed

    # -- asset side ---------------------------------------------------------------------------

    def hold_loan(self, loan_id: str) -> None:
        """Start holding a share of a loan (nothing yet): a participation may come in for
        receivables or provisions before, or without, any principal."""
        if not 1 <= len(loan_id) <= ID_LENGTH_MAX:
            raise invalid("loan_id", f"must be 1 to {ID_LENGTH_MAX} characters")
        if loan_id not in self._loans and len(self._loans) >= LOANS_PER_POOL_MAX:
            raise FailedPrecondition("LOANS_LIMIT", f"a pool holds at most {LOANS_PER_POOL_MAX}")
        self._loans.setdefault(loan_id, _Loan())

    def fund_loan(self, loan_id: str, amount_minor: int) -> None:
        """Lend `amount_minor` of pool cash: the pool's share of a disbursement."""
        _positive(amount_minor, "amount_minor")
        if not 1 <= len(loan_id) <= ID_LENGTH_MAX:
            raise invalid("loan_id", f"must be 1 to {ID_LENGTH_MAX} characters")
        if loan_id not in self._loans and len(self._loans) >= LOANS_PER_POOL_MAX:
            raise FailedPrecondition("LOANS_LIMIT", f"a pool holds at most {LOANS_PER_POOL_MAX}")
        self._take_cash(amount_minor)
        self._loans.setdefault(loan_id, _Loan()).principal_minor += amount_minor

    def repay_principal(self, loan_id: str, amount_minor: int) -> None:
        """Principal repaid to the pool; NAV-neutral (cash up, principal down)."""
        _positive(amount_minor, "amount_minor")
        loan = self._loan(loan_id)
        self._check_within(loan.principal_minor, amount_minor, loan_id, "principal")
        self._check_provision_covered(loan, loan.exposure_minor() - amount_minor)
        loan.principal_minor -= amount_minor
        self._cash_minor += amount_minor

    def accrue_interest(self, loan_id: str, amount_minor: int) -> None:
        """Interest earned on the pool's share of a loan: income of the open period."""
        _positive(amount_minor, "amount_minor")
        loan = self._loan(loan_id)
        self._require_unitholders()
        loan.accrued_minor += amount_minor
        self._pending_income_minor += amount_minor

    def receive_interest(self, loan_id: str, amount_minor: int) -> None:
        """Accrued interest received in cash; NAV-neutral."""
        _positive(amount_minor, "amount_minor")
        loan = self._loan(loan_id)
        self._check_within(loan.accrued_minor, amount_minor, loan_id, "accrued interest")
        self._check_provision_covered(loan, loan.exposure_minor() - amount_minor)
        loan.accrued_minor -= amount_minor
        self._cash_minor += amount_minor

    def reverse_accrual(self, loan_id: str, amount_minor: int) -> None:
        """Take back interest accrued and not received (a waiver, or a backdated replay that
        accrues less): income of the open period goes down by it."""
        _positive(amount_minor, "amount_minor")
        loan = self._loan(loan_id)
        self._check_within(loan.accrued_minor, amount_minor, loan_id, "accrued interest")
        self._check_provision_covered(loan, loan.exposure_minor() - amount_minor)
        self._require_unitholders()
        loan.accrued_minor -= amount_minor
        self._pending_income_minor -= amount_minor

    def reverse_receipt(self, loan_id: str, amount_minor: int) -> None:
        """Accrued interest bought back for cash (a receipt undone by a backdated replay, or
        the receivable bought with a participation); NAV-neutral."""
        _positive(amount_minor, "amount_minor")
        loan = self._loan(loan_id)
        self._take_cash(amount_minor)
        loan.accrued_minor += amount_minor

    def provide(self, loan_id: str, amount_minor: int) -> None:
        """Raise a provision against a loan: a loss of the open period, borne by the waterfall."""
        _positive(amount_minor, "amount_minor")
        loan = self._loan(loan_id)
        self._require_unitholders()
        if loan.provisions_minor + amount_minor > loan.exposure_minor():
            raise FailedPrecondition("PROVISION_EXCEEDS_EXPOSURE",
                                     f"loan {loan_id}: provisions would exceed its exposure")
        loan.provisions_minor += amount_minor
        self._pending.append(_Loss(loan_id, amount_minor))

    def release_provision(self, loan_id: str, amount_minor: int) -> None:
        """Release a provision: goes back to whoever bore it."""
        _positive(amount_minor, "amount_minor")
        loan = self._loan(loan_id)
        self._check_within(loan.provisions_minor, amount_minor, loan_id, "provision")
        loan.provisions_minor -= amount_minor
        self._pending.append(_Restore(loan_id, amount_minor))

    def charge_off(self, loan_id: str, principal_minor: int, interest_minor: int = 0) -> None:
        """Charge off principal and accrued interest; the loan's provision absorbs it first and
        only the excess is a new loss of the open period."""
        if principal_minor < 0 or interest_minor < 0 or principal_minor + interest_minor <= 0:
            raise invalid("principal_minor", "charge off a positive amount of principal or "
                          "interest, neither negative", reason="AMOUNT_NOT_POSITIVE")
        loan = self._loan(loan_id)
        self._check_within(loan.principal_minor, principal_minor, loan_id, "principal")
        self._check_within(loan.accrued_minor, interest_minor, loan_id, "accrued interest")
        self._require_unitholders()
        total = principal_minor + interest_minor
        from_provision = min(loan.provisions_minor, total)
        loan.principal_minor -= principal_minor
        loan.accrued_minor -= interest_minor
        loan.provisions_minor -= from_provision
        loan.charged_off_minor += total
        if total > from_provision:
            self._pending.append(_Loss(loan_id, total - from_provision))

    def recover(self, loan_id: str, amount_minor: int) -> None:
        """Cash recovered on a charged-off loan. Up to the unrecovered charge-off it goes back
        to whoever bore the loss; anything beyond is ordinary income of the period."""
        _positive(amount_minor, "amount_minor")
        loan = self._loan(loan_id)
        applied = min(amount_minor, loan.charged_off_minor - loan.recovered_minor)
        if amount_minor > applied:
            self._require_unitholders()
        loan.recovered_minor += applied
        self._cash_minor += amount_minor
        self._pending_income_minor += amount_minor - applied
        if applied:
            self._pending.append(_Restore(loan_id, applied))

    def pay_servicing_fee(self, amount_minor: int) -> None:
        """Pay the servicer out of pool cash; NAV-neutral (the fee was charged at close)."""
        _positive(amount_minor, "amount_minor")
        if amount_minor > self._fees_payable_minor:
            raise FailedPrecondition("EXCEEDS_FEES_PAYABLE", f"only {self._fees_payable_minor} "
                                     "of servicing fees is payable")
        self._take_cash(amount_minor)
        self._fees_payable_minor -= amount_minor

    # -- period close and valuation -----------------------------------------------------------

    def close_period(self, days: int) -> PeriodClose:
        """Close the open period of `days` days: charge the servicing fee on the capital held,
        run the waterfall, value the pool and produce every position's statement.

        Raises `InvalidArgument` for days outside 0..366; `InvariantViolation` if the capital
        accounts then fail to sum exactly to net assets (a bug, never corrected silently).
        """
        if type(days) is not int or not 0 <= days <= PERIOD_DAYS_MAX:
            raise invalid("days", f"must be from 0 to {PERIOD_DAYS_MAX}")
        classes = self.agreement.unit_classes
        fee_base = sum(self._capital[p] for p, u in self._units.items() if u > 0)
        fee = servicing_fee_minor(fee_base, self.agreement.servicing_fee_bps_per_year, days,
                                  self.agreement.year_days)
        income = self._pending_income_minor
        # Income and fee share one key, so the key splits their net once (each position within
        # a penny of its exact share of the net) and the fee alone; income is the difference.
        holdings = self._holdings()
        net_parts = allocate_income(income - fee, classes, holdings)
        fee_parts = allocate_income(fee, classes, holdings)
        for position in net_parts.keys() | fee_parts.keys():
            net_part, fee_part = net_parts.get(position, 0), fee_parts.get(position, 0)
            self._capital[position] += net_part
            self._activity_of(position).income_minor += net_part + fee_part
            self._activity_of(position).fees_minor += fee_part
        self._fees_payable_minor += fee
        losses, recoveries = self._run_loss_events()
        valuation = self.valuation()
        ensure(valuation.net_assets_minor == valuation.capital_total_minor,
               f"pool {self.agreement.pool_id}: capital accounts "
               f"{valuation.capital_total_minor} != net assets {valuation.net_assets_minor}")
        closed = PeriodClose(self.period_number, income, fee, losses, recoveries, valuation,
                             self._statements(valuation))
        self._pending_income_minor = 0
        self._pending = []
        self._activity = {}
        self._opening = {p: (self._units[p], self._capital[p]) for p in self._units}
        self.period_number += 1
        return closed

    def _run_loss_events(self) -> tuple[int, int]:
        losses = recoveries = 0
        for event in self._pending:
            loan = self._loans[event.loan_id]
            if isinstance(event, _Loss):
                parts = allocate_loss(event.amount_minor, self.agreement.unit_classes,
                                      self._holdings())
                losses += event.amount_minor
                for position, part in parts.items():
                    self._capital[position] -= part
                    self._activity_of(position).losses_minor += part
                    loan.borne[position] = loan.borne.get(position, 0) + part
            else:
                unrecovered = {p: b - loan.restored.get(p, 0) for p, b in loan.borne.items()}
                recoveries += event.amount_minor
                for position, part in allocate_recovery(event.amount_minor, unrecovered).items():
                    self._capital[position] += part
                    self._activity_of(position).recoveries_minor += part
                    loan.restored[position] = loan.restored.get(position, 0) + part
        return losses, recoveries

    def valuation(self) -> Valuation:
        """Both sides of the pool now. Between closes the capital side lags by the open period's
        income and losses; at a close they are equal."""
        loans = self._loans.values()
        principal = sum(loan.principal_minor for loan in loans)
        accrued = sum(loan.accrued_minor for loan in loans)
        provisions = sum(loan.provisions_minor for loan in loans)
        net_assets = (self._cash_minor + principal + accrued - provisions
                      - self._fees_payable_minor)
        class_valuations = tuple(
            ClassValuation(c.class_id, self.units_outstanding_micro(c.class_id),
                           self._holders_capital(c.class_id), self.nav_per_unit(c.class_id))
            for c in self.agreement.unit_classes)
        former = sum(self._capital[p] for p, u in self._units.items() if u == 0)
        return Valuation(self._cash_minor, principal, accrued, provisions,
                         self._fees_payable_minor, net_assets, sum(self._capital.values()),
                         former, class_valuations, self._holdings())

    def _statements(self, valuation: Valuation) -> tuple[PositionStatement, ...]:
        navs = {c.class_id: c.nav_per_unit for c in valuation.classes}
        statements = []
        for position in sorted(set(self._opening) | set(self._activity)):
            opening_units, opening_capital = self._opening.get(position, (0, 0))
            activity = self._activity.get(position, _Activity())
            statements.append(PositionStatement(
                position, opening_units, opening_capital, activity.contributions_minor,
                activity.units_issued_micro, activity.redemptions_minor,
                activity.units_redeemed_micro, activity.distributions_minor,
                activity.income_minor, activity.fees_minor, activity.losses_minor,
                activity.recoveries_minor, self._units[position], self._capital[position],
                navs[position.class_id]))
        return tuple(statements)

    # -- queries ------------------------------------------------------------------------------

    def holding(self, position: Position) -> Holding:
        return Holding(position, self._units.get(position, 0), self._capital.get(position, 0))

    def units_outstanding_micro(self, class_id: str | None = None) -> int:
        """Units outstanding in one class, or in the whole pool."""
        return sum(u for p, u in self._units.items() if class_id in (None, p.class_id))

    def nav_per_unit(self, class_id: str) -> Decimal | None:
        """The class's NAV per unit (8 dp, half-even) from its holders' capital; None if no
        units. Between closes it excludes the open period's income and losses."""
        units = self.units_outstanding_micro(class_id)
        if units == 0:
            return None
        return nav_per_unit(self._holders_capital(class_id), units, self.agreement.currency)

    def loan(self, loan_id: str) -> LoanShare:
        """The pool's share of `loan_id`; raises `NotFound` (`LOAN_NOT_IN_POOL`)."""
        loan = self._loan(loan_id)
        return LoanShare(loan_id, loan.principal_minor, loan.accrued_minor,
                         loan.charged_off_minor, loan.recovered_minor,
                        loan.provisions_minor, tuple(sorted(loan.borne.items())),
                        tuple(sorted(loan.restored.items())))

    @property
    def loan_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._loans))

    # -- helpers ------------------------------------------------------------------------------

    def _holdings(self) -> tuple[Holding, ...]:
        return tuple(Holding(p, self._units[p], self._capital[p]) for p in sorted(self._units))

    def _holders_capital(self, class_id: str) -> int:
        return sum(self._capital[p] for p, u in self._units.items()
                   if u > 0 and p.class_id == class_id)

    def _holders_nav(self, class_id: str) -> Decimal:
        nav = self.nav_per_unit(class_id)
        if nav is None:
            raise InvariantViolation(f"class {class_id} has a holder but no units outstanding")
        return nav

    def _holds_loans(self) -> bool:
        return any(loan.exposure_minor() > 0 for loan in self._loans.values())

    def _activity_of(self, position: Position) -> _Activity:
        return self._activity.setdefault(position, _Activity())

    def _known_position(self, position: Position) -> None:
        self.agreement.unit_class(position.class_id)
        if not 1 <= len(position.participant_id) <= ID_LENGTH_MAX:
            raise invalid("position.participant_id", f"must be 1 to {ID_LENGTH_MAX} characters")
        known = position in self._units or position in self._commitment
        if not known and len(set(self._units) | set(self._commitment)) >= POSITIONS_PER_POOL_MAX:
            raise FailedPrecondition("POSITIONS_LIMIT",
                                     f"a pool holds at most {POSITIONS_PER_POOL_MAX} positions")

    def _loan(self, loan_id: str) -> _Loan:
        loan = self._loans.get(loan_id)
        if loan is None:
            raise NotFound("LOAN_NOT_IN_POOL", f"pool {self.agreement.pool_id} holds no share "
                           f"of loan {loan_id!r}", metadata={"loan_id": loan_id})
        return loan

    def _require_valuation_point(self) -> None:
        if self._pending_income_minor or self._pending:
            raise FailedPrecondition(
                "VALUATION_REQUIRED", "income or losses were recorded since the last valuation; "
                "close the period before dealing")

    def _require_unitholders(self) -> None:
        if self.units_outstanding_micro() == 0:
            raise FailedPrecondition("NO_UNITHOLDERS", "the pool has no unit holders")

    def _take_cash(self, amount_minor: int) -> None:
        if amount_minor > self._cash_minor:
            raise FailedPrecondition("INSUFFICIENT_POOL_CASH", f"the pool holds "
                                     f"{self._cash_minor} in cash, {amount_minor} is needed")
        self._cash_minor -= amount_minor

    @staticmethod
    def _check_within(balance: int, amount_minor: int, loan_id: str, what: str) -> None:
        if amount_minor > balance:
            raise FailedPrecondition("EXCEEDS_LOAN_BALANCE", f"loan {loan_id}: {amount_minor} "
                                     f"exceeds the pool's {what} of {balance}")

    @staticmethod
    def _check_provision_covered(loan: _Loan, exposure_after: int) -> None:
        if loan.provisions_minor > exposure_after:
            raise FailedPrecondition("PROVISION_EXCEEDS_EXPOSURE",
                                     "release the provision before the exposure falls below it")
