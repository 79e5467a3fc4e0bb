"""Use cases on lending pools: create, commit, call, subscribe, redeem, distribute, record the
pool's share of loan activity, pay the servicer, and close a period (maker-checker).

Persistence is event-sourced, like the loan engine: a pool is its terms (`pools`, never
changed) and its events (`pool_events`, append-only, numbered per pool). Every command replays
the events into a fresh `PoolRegister` (the pure arithmetic of `bank.domain.pools`), checking
that each reproduces the outcome it first had, then applies the new event to the register.
The register refuses what breaks a rule before anything is written; then, in the same
transaction through `run_command` (one audit leaf): the event's balanced entries
(`bank.app.pool_ledger`), the event row, and for a close the period and the statements. After
every command the pool's ledger accounts are reconciled with the register to the penny; a
difference is a bug (`InvariantViolation`), never corrected.

Dealing (subscriptions, capital calls, redemptions, distributions) happens on the open period's
first dealing date, at the NAV per unit of the close before it (the register refuses dealing
once income or a loss has been recorded in the period: VALUATION_REQUIRED). A period closes on
its end date by two approvers: one proposes the close (`request_period_close`, an approval),
another approves it, and `execute_period_close` runs in the approval's transaction. Closed
periods are history: corrections are new events of the open period that carry a reference.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from bank.app.accounts import insert_accounts, plan_accounts
from bank.app.loan_ports import loan_reader
from bank.app.pool_ledger import (
    account_specs,
    capital_account,
    event_entries,
    pool_account,
    signed_balance,
)
from bank.app.pool_ports import (
    ClosedPeriod,
    PoolEvent,
    PoolRecord,
    PoolStore,
    StoredStatement,
    pool_store,
)
from bank.app.ports import Clock, Head, UnitOfWork
from bank.app.transfers import preload
from bank.app.unit import Command, Context, request_approval, run_command
from bank.domain.accounts import AccountStatus, AccountType, OwnerKind
from bank.domain.entries import TransferSpec, canonical_hash, validate_specs
from bank.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    InvariantViolation,
    NotFound,
)
from bank.domain.identity import Principal
from bank.domain.invariants import ensure
from bank.domain.ledger import BatchPosting
from bank.domain.pools import PeriodClose, PoolRegister, Position, apportion
from bank.domain.pools.terms import Participant, PoolTerms

CLOSE_PERIOD_OPERATION = "ClosePoolPeriod"
LOAN_EVENT_KINDS = ("fund", "repay", "accrue", "receive", "provide", "release", "charge_off",
                    "recover")
DEALING_KINDS = ("subscribe", "call", "redeem", "distribute", "settle")


@dataclass
class LoadedPool:
    """A pool rebuilt from its terms and events."""

    terms: PoolTerms
    register: PoolRegister
    events: list[PoolEvent]
    loans: dict[str, dict[str, str]] = field(default_factory=dict)  # loan -> borrower facts

    @property
    def next_seq(self) -> int:
        return len(self.events) + 1


@dataclass(frozen=True, slots=True)
class EventResult:
    """What a pool command did: the event number, its outcome and the entries it posted."""

    pool_id: str
    seq: int
    kind: str
    outcome: dict[str, Any]
    transfer_ids: tuple[str, ...]
    approval_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"pool": self.pool_id, "seq": self.seq, "kind": self.kind,
                "outcome": self.outcome, "transfers": list(self.transfer_ids),
                "approval": self.approval_id}

    @staticmethod
    def from_json(data: dict[str, Any]) -> EventResult:
        return EventResult(data["pool"], data["seq"], data["kind"], data["outcome"],
                           tuple(data["transfers"]), data["approval"])


def pool_not_found(pool_id: str) -> NotFound:
    return NotFound("POOL_NOT_FOUND", f"no pool {pool_id!r}", metadata={"pool": f"pools/{pool_id}"})


# -- replay -------------------------------------------------------------------------------------
def position(args: dict[str, Any]) -> Position:
    return Position(args["participant"], args["class"])


def apply_event(register: PoolRegister, kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """Apply one event to the register; returns its outcome (JSON). Raises what the register
    raises when a rule refuses it (nothing of a refused event may be kept)."""
    amount = args.get("amount", 0)
    if kind == "commit":
        register.commit(position(args), amount)
        return {}
    if kind == "subscribe":
        deal = register.subscribe(position(args), amount)
        return {"units": deal.units_micro, "nav": str(deal.nav_per_unit)}
    if kind == "call":
        parts = register.call_capital(args["class"], amount)
        deals = [register.subscribe(p, part) for p, part in parts.items()]
        return {"parts": [[d.position.participant_id, d.amount_minor, d.units_micro,
                           str(d.nav_per_unit)] for d in deals]}
    if kind == "redeem":
        deal = register.redeem(position(args), args["units"])
        return {"amount": deal.amount_minor, "nav": str(deal.nav_per_unit)}
    if kind == "settle":
        return {"amount": register.settle_former_participant(position(args))}
    if kind == "distribute":
        shares = register.distribute(args["class"], amount)
        return {"parts": [[p.participant_id, part] for p, part in shares.items()]}
    if kind == "pay_fee":
        register.pay_servicing_fee(amount)
        return {}
    if kind == "close":
        return close_outcome(register.close_period(args["days"]))
    if kind == "participation":
        return {"items": [_apply_participation(register, item) for item in args["items"]]}
    return _apply_loan_event(register, kind, args)


_WRITE_OFF_MOVEMENTS = ("write_off_principal", "write_off_income", "provision_used")


def _apply_participation(register: PoolRegister, item: dict[str, Any]) -> list[int]:
    """Apply the pool's lines of one booking of a loan it funds (`bank.domain.pools
    .participation`, in their order); returns [provision used by a write-off, recovered].
    A refusal part-way leaves the register part-applied: callers discard the loaded pool (the
    command rolls back), as they do for every refused event."""
    loan = item["loan"]
    methods: dict[str, Callable[[str, int], None]] = {
        "fund": register.fund_loan, "buy_principal": register.fund_loan,
        "repay": register.repay_principal, "sell_principal": register.repay_principal,
        "accrue": register.accrue_interest, "reverse_accrual": register.reverse_accrual,
        "receive": register.receive_interest, "sell_income": register.receive_interest,
        "reverse_receipt": register.reverse_receipt, "buy_income": register.reverse_receipt,
        "provide": register.provide, "release": register.release_provision,
        "recover": register.recover}
    register.hold_loan(loan)  # a pool may first come in for receivables or provisions
    written = {m: 0 for m in _WRITE_OFF_MOVEMENTS}
    used = recovered = 0

    def write_off() -> int:
        if not written["write_off_principal"] + written["write_off_income"]:
            return 0
        share = register.loan(loan)
        covered = min(share.provisions_minor,
                      written["write_off_principal"] + written["write_off_income"])
        ensure(covered == written["provision_used"],
               f"loan {loan}: the pool's provision used by the write-off is {covered}, the "
               f"line says {written['provision_used']}")
        register.charge_off(loan, written["write_off_principal"], written["write_off_income"])
        for movement in _WRITE_OFF_MOVEMENTS:
            written[movement] = 0
        return covered

    for movement, _bps, amount in item["flows"]:
        if movement in written:
            written[movement] += amount
            continue
        used += write_off()
        ensure(movement in methods, f"no pool event for participation movement {movement!r}")
        methods[movement](loan, amount)
        recovered += amount if movement == "recover" else 0
    used += write_off()
    return [used, recovered]


def _apply_loan_event(register: PoolRegister, kind: str, args: dict[str, Any]) -> dict[str, Any]:
    loan, amount = args["loan"], args.get("amount", 0)
    if kind == "charge_off":
        share = register.loan(loan)
        covered = min(share.provisions_minor, args["principal"] + args["interest"])
        register.charge_off(loan, args["principal"], args["interest"])
        return {"from_provision": covered}
    if kind == "recover":
        share = register.loan(loan)
        applied = min(amount, share.charged_off_minor - share.recovered_minor)
        register.recover(loan, amount)
        return {"applied": applied}
    methods: dict[str, Callable[[str, int], None]] = {
        "fund": register.fund_loan, "repay": register.repay_principal,
        "accrue": register.accrue_interest, "receive": register.receive_interest,
        "provide": register.provide, "release": register.release_provision}
    ensure(kind in methods, f"unknown pool event kind {kind!r}")
    methods[kind](loan, amount)
    return {}


def close_outcome(closed: PeriodClose) -> dict[str, Any]:
    v = closed.valuation
    return {
        "period": closed.period_number, "income": closed.income_minor,
        "fee": closed.servicing_fee_minor, "losses": closed.losses_minor,
        "recoveries": closed.recoveries_minor,
        "valuation": {"cash": v.cash_minor, "loans": v.loan_principal_minor,
                      "interest": v.accrued_interest_minor, "provisions": v.provisions_minor,
                      "fees_payable": v.fees_payable_minor, "net_assets": v.net_assets_minor,
                      "capital": v.capital_total_minor,
                      "former_participants": v.former_participants_minor},
        "classes": [[c.class_id, c.units_micro, c.capital_minor,
                     str(c.nav_per_unit) if c.nav_per_unit is not None else None]
                    for c in v.classes],
        "statements": [{
            "participant": s.position.participant_id, "class": s.position.class_id,
            "opening_units": s.opening_units_micro, "opening_capital": s.opening_capital_minor,
            "contributions": s.contributions_minor, "units_issued": s.units_issued_micro,
            "redemptions": s.redemptions_minor, "units_redeemed": s.units_redeemed_micro,
            "distributions": s.distributions_minor, "income": s.income_minor,
            "fees": s.fees_minor, "losses": s.losses_minor, "recoveries": s.recoveries_minor,
            "closing_units": s.closing_units_micro, "closing_capital": s.closing_capital_minor,
            "nav": str(s.closing_nav_per_unit) if s.closing_nav_per_unit is not None else None,
        } for s in closed.statements],
    }


def load(store: PoolStore, pool_id: str) -> LoadedPool:
    """The pool rebuilt from its events. Raises `NotFound` POOL_NOT_FOUND; a replay that does
    not reproduce a recorded outcome is `InvariantViolation`."""
    record = store.get_pool(pool_id)
    if record is None:
        raise pool_not_found(pool_id)
    terms = PoolTerms.from_json(json.loads(record.terms_json))
    pool = LoadedPool(terms, PoolRegister(terms.agreement()), [])
    for event in store.pool_events(pool_id):
        ensure(event.seq == pool.next_seq, f"pool {pool_id}: event {event.seq} out of order")
        try:
            outcome = apply_event(pool.register, event.kind, event.payload["args"])
        except (FailedPrecondition, NotFound, InvalidArgument) as error:
            raise InvariantViolation(f"pool {pool_id}: event {event.seq} no longer replays: "
                                     f"{error.reason}") from error
        ensure(outcome == event.payload["outcome"],
               f"pool {pool_id}: event {event.seq} replays to a different outcome")
        _note_borrowers(pool, event.kind, event.payload["args"])
        pool.events.append(event)
    return pool


def _note_borrowers(pool: LoadedPool, kind: str, args: dict[str, Any]) -> None:
    """Remember who borrowed what the pool lends (for its concentration limits)."""
    if kind == "fund" and args["loan"] not in pool.loans:
        pool.loans[args["loan"]] = args.get("borrower", {})
    if kind == "participation":
        for item in args["items"]:
            if item["loan"] not in pool.loans and "borrower" in item:
                pool.loans[item["loan"]] = item["borrower"]


# -- writing ------------------------------------------------------------------------------------
def post_entries(ctx: Context, specs: list[TransferSpec], business_date: date) -> Head:
    """Post server-made entries: all of them, or (on a business refusal such as an overdrawn
    settlement account) none, with the first refusal raised before anything is written."""
    if not specs:
        return ctx.head
    try:
        validate_specs(specs)
    except InvalidArgument as error:
        raise InvariantViolation(f"pool entries are malformed: {error.message}") from error
    engine = BatchPosting(preload(ctx.tx, specs), next_seq=ctx.head.next_seq,
                          last_recorded_ns=ctx.head.last_recorded_ns, now_ns=ctx.now_ns,
                          business_date=business_date, request_id=ctx.command.request_id)
    for outcome in engine.apply_all(specs):
        if outcome.error is not None:
            raise outcome.error
        ensure(not outcome.replayed, f"pool entry {outcome.transfer_id} already existed")
    ctx.tx.insert_entries(engine.new_entries)
    ctx.effects.extend(["entry", e.seq, e.digest()] for e in engine.new_entries)
    ctx.tx.save_account_totals(engine.touched_accounts)
    return Head(engine.next_seq, max(ctx.head.last_recorded_ns, engine.last_recorded_ns),
                ctx.head.audit_size)


def record_event(ctx: Context, clock: Clock, pool: LoadedPool, kind: str, args: dict[str, Any],
                 reference: str, on: date | None = None) -> tuple[EventResult, Head]:
    """Apply `kind` to the loaded pool and write it: entries (dated `on`, default the
    clock's business date), then the event. Refusals are raised before anything is
    written."""
    store = pool_store(ctx.tx)
    period = pool.register.period_number
    outcome = apply_event(pool.register, kind, args)
    seq = pool.next_seq
    specs = event_entries(pool.terms, seq, period, kind, args, outcome, reference)
    head = post_entries(ctx, specs, on or clock.business_date())
    payload = {"args": args, "outcome": outcome}
    event = PoolEvent(pool.terms.pool_id, seq, period, kind, payload, reference,
                      ctx.command.request_id, ctx.now_ns)
    store.insert_pool_events([event])
    pool.events.append(event)
    _note_borrowers(pool, kind, args)
    ctx.effects.append(["pool_event", pool.terms.pool_id, seq, canonical_hash(payload)])
    reconcile(store, pool)
    return EventResult(pool.terms.pool_id, seq, kind, outcome,
                       tuple(s.transfer_id for s in specs)), head


def reconcile(store: PoolStore, pool: LoadedPool) -> None:
    """The pool's ledger accounts equal the register to the penny, and the bank owes the pool
    exactly its cash, loans and interest; anything else is a bug (`InvariantViolation`)."""
    terms, v = pool.terms, pool.register.valuation()
    names = ("cash", "loans", "interest", "provisions", "fees", "due")
    found = {a.account_id: signed_balance(a)
             for a in store.get_accounts([pool_account(terms.pool_id, n) for n in names])}
    ledger = {n: found[pool_account(terms.pool_id, n)] for n in names}
    register = {"cash": v.cash_minor, "loans": v.loan_principal_minor,
                "interest": v.accrued_interest_minor, "provisions": -v.provisions_minor,
                "fees": v.fees_payable_minor,
                "due": v.cash_minor + v.loan_principal_minor + v.accrued_interest_minor}
    ensure(ledger == register, f"pool {terms.pool_id}: ledger {ledger} != register {register}")
    capital = {capital_account(terms.pool_id, h.position.participant_id, h.position.class_id):
               h.capital_minor for h in v.holdings}
    for account in store.get_accounts(sorted(capital)):
        ensure(signed_balance(account) == capital[account.account_id],
               f"pool {terms.pool_id}: capital account {account.account_id} does not match")


def _pool_command(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                  method: str, pool_id: str, kind: str, args: dict[str, Any], reference: str,
                  check: Callable[[Context, LoadedPool], None] | None,
                  timeout_s: float | None) -> EventResult:
    command = Command(method, request_id, principal,
                      {"pool": pool_id, "kind": kind, "args": args, "reference": reference})

    def handler(ctx: Context) -> tuple[EventResult, Head]:
        pool = load(pool_store(ctx.tx), pool_id)
        if check is not None:
            check(ctx, pool)
        return record_event(ctx, clock, pool, kind, args, reference)

    return run_command(uow, clock, command, handler, EventResult.from_json, timeout_s)


# -- creating a pool ----------------------------------------------------------------------------
def create_pool(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                terms: PoolTerms, timeout_s: float | None = None) -> EventResult:
    """Create a pool from validated terms and open its accounts, in one audited command.

    The same pool id with identical terms is a success that changes nothing. Raises
    `AlreadyExists` POOL_ID_REUSED (different terms) or ACCOUNT_ID_REUSED, `NotFound`
    SETTLEMENT_ACCOUNT_NOT_FOUND, `FailedPrecondition` SETTLEMENT_ACCOUNT_NOT_OWNED,
    SETTLEMENT_ACCOUNT_CURRENCY or SETTLEMENT_ACCOUNT_CLOSED.
    """
    terms_json = json.dumps(terms.to_json(), sort_keys=True, separators=(",", ":"))
    command = Command("CreatePool", request_id, principal, {"terms": terms.to_json()})

    def handler(ctx: Context) -> tuple[EventResult, Head]:
        store = pool_store(ctx.tx)
        existing = store.get_pool(terms.pool_id)
        if existing is not None:
            if existing.terms_json != terms_json:
                raise AlreadyExists("POOL_ID_REUSED", f"pool {terms.pool_id!r} already exists "
                                    "with different terms",
                                    metadata={"pool": f"pools/{terms.pool_id}"})
            return EventResult(terms.pool_id, 0, "create", {}, ()), ctx.head
        for index, participant in enumerate(terms.participants):
            _check_settlement(ctx, terms, index, participant)
        items, accounts = plan_accounts(ctx, account_specs(terms))
        for item in items:
            if item.error is not None:
                raise item.error
        insert_accounts(ctx, accounts)
        store.insert_pool(PoolRecord(terms.pool_id, terms_json, ctx.now_ns))
        ctx.effects.append(["pool", terms.pool_id, canonical_hash(terms.to_json())])
        return EventResult(terms.pool_id, 0, "create", {}, ()), ctx.head

    return run_command(uow, clock, command, handler, EventResult.from_json, timeout_s)


def _check_settlement(ctx: Context, terms: PoolTerms, index: int,
                      participant: Participant) -> None:
    account_id = participant.settlement_account_id
    meta = {"account": f"accounts/{account_id}",
            "field": f"pool.participants[{index}].settlement_account"}
    account = ctx.tx.get_account(account_id)
    if account is None:
        raise NotFound("SETTLEMENT_ACCOUNT_NOT_FOUND", f"participant "
                       f"{participant.participant_id!r}: no account {account_id!r}", metadata=meta)
    owner_kind, owner_id = participant.owner
    if (account.owner_kind, account.owner_id) != (OwnerKind(owner_kind), owner_id):
        raise FailedPrecondition(
            "SETTLEMENT_ACCOUNT_NOT_OWNED", f"participant {participant.participant_id!r} must "
            f"settle through its own account ({owner_id}), not {account_id!r}", metadata=meta)
    if account.currency != terms.currency:
        raise FailedPrecondition("SETTLEMENT_ACCOUNT_CURRENCY", f"{account_id!r} is in "
                                 f"{account.currency}, the pool in {terms.currency}",
                                 metadata=meta)
    if account.status is not AccountStatus.OPEN or account.account_type is not (
            AccountType.LIABILITY):
        raise FailedPrecondition("SETTLEMENT_ACCOUNT_CLOSED", f"{account_id!r} must be an open "
                                 "deposit (liability) account", metadata=meta)


# -- dealing ------------------------------------------------------------------------------------
def _dealing_check(dealing_date: date, participant: str | None, class_id: str,
                   business_date: date) -> Callable[[Context, LoadedPool], None]:
    def check(ctx: Context, pool: LoadedPool) -> None:
        if participant is not None:
            ensure_participant(pool, participant)
        pool.terms.agreement().unit_class(class_id)
        start, _end = pool.terms.period_dates(pool.register.period_number)
        if dealing_date != start:
            raise FailedPrecondition(
                "DEALING_DATE_NOT_OPEN", f"pool {pool.terms.pool_id} deals next on {start} "
                f"(period {pool.register.period_number}), not on {dealing_date}",
                metadata={"dealing_date": start.isoformat(), "field": "dealing_date"})
        if business_date < start:
            raise FailedPrecondition("DEALING_DATE_IN_FUTURE", f"the dealing date {start} has "
                                     f"not come yet (business date {business_date})",
                                     metadata={"dealing_date": start.isoformat()})
    return check


def ensure_participant(pool: LoadedPool, participant_id: str) -> Participant:
    participant = pool.terms.participant(participant_id)
    if participant is None:
        raise NotFound("PARTICIPANT_NOT_FOUND", f"pool {pool.terms.pool_id} has no participant "
                       f"{participant_id!r}", metadata={"participant": participant_id})
    return participant


def commit_capital(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                   pool_id: str, participant: str, class_id: str, amount: int,
                   timeout_s: float | None = None) -> EventResult:
    """Add to a participant's commitment (what capital calls may ask of it). Posts nothing."""
    def check(ctx: Context, pool: LoadedPool) -> None:
        ensure_participant(pool, participant)
        pool.terms.agreement().unit_class(class_id)

    args = {"participant": participant, "class": class_id, "amount": amount}
    return _pool_command(uow, clock, principal, request_id, "CommitCapital", pool_id, "commit",
                         args, "", check, timeout_s)


def deal(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str, method: str,
         pool_id: str, kind: str, dealing_date: date, args: dict[str, Any],
         timeout_s: float | None = None) -> EventResult:
    """Subscribe, call capital, redeem or distribute on a dealing date (see the module doc).
    Raises `NotFound` (POOL_NOT_FOUND, PARTICIPANT_NOT_FOUND, UNIT_CLASS_NOT_FOUND),
    `FailedPrecondition` (DEALING_DATE_NOT_OPEN, DEALING_DATE_IN_FUTURE, the register's reasons,
    EXCEEDS_CREDITS when the settlement account cannot pay)."""
    ensure(kind in DEALING_KINDS, f"{kind} is not a dealing event")
    full = {**args, "dealing_date": dealing_date.isoformat()}
    check = _dealing_check(dealing_date, args.get("participant"), args["class"],
                           clock.business_date())
    return _pool_command(uow, clock, principal, request_id, method, pool_id, kind, full, "",
                         check, timeout_s)


def record_loan_event(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                      pool_id: str, kind: str, args: dict[str, Any], reference: str,
                      timeout_s: float | None = None) -> EventResult:
    """Record the pool's share of a loan cash flow, accrual, provision or loss in the open
    period (a correction carries a `reference` to what it corrects). Funding is checked
    against the pool's concentration limits (`bank.app.pool_limits`). For loans serviced
    elsewhere only: a loan on the bank's own book is FAILED_PRECONDITION LOAN_ON_BOOK (its
    pool's part follows its funding split, `bank.app.participations`). Raises `NotFound`
    LOAN_NOT_IN_POOL, or `FailedPrecondition` with the register's reason or
    CONCENTRATION_LIMIT_EXCEEDED."""
    ensure(kind in LOAN_EVENT_KINDS, f"{kind} is not a loan event")
    # Imported here: pool_limits builds on this module (it loads pools).
    from bank.app.pool_limits import borrower_facts, check_concentration

    def check(ctx: Context, pool: LoadedPool) -> None:
        if loan_reader(ctx.tx).get_loan(args["loan"]) is not None:
            raise FailedPrecondition(
                "LOAN_ON_BOOK", f"loan {args['loan']} is on the bank's lending book: its "
                "pool's part is posted from the loan's own movements (its funding split), "
                "never recorded by hand", metadata={"loan": f"loans/{args['loan']}"})
        if kind != "fund":
            return
        borrower = args.get("borrower", {})
        if borrower.get("member"):  # the connected group and area as they are now
            args["borrower"] = borrower_facts(ctx.tx, borrower["member"],
                                              borrower.get("sector", ""))
        check_concentration(pool, args["loan"], args["amount"], args.get("borrower", {}))

    return _pool_command(uow, clock, principal, request_id, "RecordLoanEvent", pool_id, kind,
                         args, reference, check, timeout_s)


def pay_servicing_fee(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                      pool_id: str, amount: int, timeout_s: float | None = None) -> EventResult:
    """Pay the bank (the servicer) fees charged at earlier closes, out of pool cash."""
    return _pool_command(uow, clock, principal, request_id, "PayServicingFee", pool_id,
                         "pay_fee", {"amount": amount}, "", None, timeout_s)


# -- period close (two approvers) ---------------------------------------------------------------
def _closable(pool: LoadedPool, business_date: date) -> tuple[date, date]:
    number = pool.register.period_number
    start, end = pool.terms.period_dates(number)
    if end is None:
        raise FailedPrecondition("NO_NEXT_DEALING_DATE", f"period {number} of pool "
                                 f"{pool.terms.pool_id} has no end date in the pool's terms",
                                 metadata={"pool": f"pools/{pool.terms.pool_id}"})
    if business_date < end:
        raise FailedPrecondition("PERIOD_NOT_ENDED", f"period {number} ends on {end}; the "
                                 f"business date is {business_date}",
                                 metadata={"pool": f"pools/{pool.terms.pool_id}"})
    return start, end


def request_period_close(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                         pool_id: str, period_number: int,
                         timeout_s: float | None = None) -> EventResult:
    """Propose closing the open period: stored as an approval that an approver other than the
    maker must approve (then `execute_period_close` runs). Raises `NotFound` POOL_NOT_FOUND,
    `FailedPrecondition` PERIOD_NOT_OPEN (the period asked for is not the open one),
    NO_NEXT_DEALING_DATE or PERIOD_NOT_ENDED."""
    command = Command(CLOSE_PERIOD_OPERATION, request_id, principal,
                      {"pool": pool_id, "period": period_number})

    def handler(ctx: Context) -> tuple[EventResult, Head]:
        pool = load(pool_store(ctx.tx), pool_id)
        _check_open(pool, period_number)
        start, end = _closable(pool, clock.business_date())
        approval_id = request_approval(
            ctx, {"pool_id": pool_id, "period": period_number},
            f"close period {period_number} ({start} to {end}) of pool {pool_id}: the waterfall "
            "and every participant's statement; needs a second approver")
        return EventResult(pool_id, 0, "close", {}, (), approval_id), ctx.head

    return run_command(uow, clock, command, handler, EventResult.from_json, timeout_s)


def _check_open(pool: LoadedPool, period_number: int) -> None:
    if period_number != pool.register.period_number:
        raise FailedPrecondition(
            "PERIOD_NOT_OPEN", f"period {period_number} of pool {pool.terms.pool_id} is not "
            f"the open period ({pool.register.period_number}); closed periods never change",
            metadata={"pool": f"pools/{pool.terms.pool_id}", "field": "period"})


def execute_period_close(ctx: Context, clock: Clock, approval_id: str,
                         payload: dict[str, Any]) -> tuple[dict[str, Any], Head]:
    """Run an approved close in the approval's transaction: the waterfall's entries, the
    event, the closed period and every position's statement."""
    store = pool_store(ctx.tx)
    pool = load(store, payload["pool_id"])
    _check_open(pool, payload["period"])
    start, end = _closable(pool, clock.business_date())
    result, head = record_event(ctx, clock, pool, "close", {"days": (end - start).days}, "")
    outcome = result.outcome
    summary = {k: outcome[k] for k in ("income", "fee", "losses", "recoveries", "valuation",
                                       "classes")}
    summary["transfers"] = list(result.transfer_ids)
    summary["event"] = result.seq
    # The close's instant: its last entry's recorded time (statements are as of it).
    closed_ns = max(ctx.now_ns, head.last_recorded_ns)
    store.insert_closed_period(ClosedPeriod(
        pool.terms.pool_id, payload["period"], start.isoformat(), end.isoformat(), summary,
        approval_id, closed_ns))
    exposures = loan_exposures(pool)
    store.insert_statements([StoredStatement(
        pool.terms.pool_id, payload["period"], s["participant"], s["class"],
        {**s, "start_date": start.isoformat(), "end_date": end.isoformat(),
         "loans": exposures.get((s["participant"], s["class"]), [])}, closed_ns)
        for s in outcome["statements"]])
    ctx.effects.append(["pool_period", pool.terms.pool_id, payload["period"],
                        canonical_hash(summary)])
    return {"pool": pool.terms.pool_id, "period": payload["period"], "event": result.seq}, head


def loan_exposures(pool: LoadedPool) -> dict[tuple[str, str], list[list[Any]]]:
    """Where each position's money is lent: per loan, its share of the pool's principal in
    that loan (by capital, largest remainder), with the borrower's council area."""
    holdings = [h for h in pool.register.valuation().holdings
                if h.units_micro > 0 and h.capital_minor > 0]
    out: dict[tuple[str, str], list[list[Any]]] = {}
    if not holdings:
        return out
    for loan_id in pool.register.loan_ids:
        principal = pool.register.loan(loan_id).principal_minor
        if principal <= 0:
            continue
        area = pool.loans.get(loan_id, {}).get("council_area", "")
        parts = apportion(principal, [h.capital_minor for h in holdings], "capital")
        for holding, part in zip(holdings, parts, strict=True):
            key = (holding.position.participant_id, holding.position.class_id)
            out.setdefault(key, []).append([loan_id, area, part])
    return out
