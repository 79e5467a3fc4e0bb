"""Use cases on transfers: post a batch, expire holds past their timeout."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from bank.app.accounts import BatchResult, ItemResult
from bank.app.ports import Clock, Head, LedgerReader, UnitOfWork
from bank.app.unit import Command, Context, request_approval, run_command
from bank.domain.accounts import Account, Side
from bank.domain.approvals import DEFAULT_RULES, ApprovalRule, rule_applying
from bank.domain.entries import Effect, JournalEntry, TransferKind, TransferSpec, validate_specs
from bank.domain.errors import FailedPrecondition
from bank.domain.identity import SYSTEM, Principal, Role
from bank.domain.invariants import ensure
from bank.domain.ledger import BatchPosting, ItemOutcome

log = logging.getLogger(__name__)

EXPIRY_BATCH_MAX = 500
# Transfer ids the server makes (expiry of holds); the edge refuses them from clients.
RESERVED_TRANSFER_PREFIX = "expire:"


@dataclass
class _Preloaded:
    """A `LedgerView` over rows read once, up front, for a whole batch."""

    accounts: dict[str, Account]
    entries: dict[str, JournalEntry]
    resolutions: dict[str, JournalEntry]
    reversals: dict[str, JournalEntry]

    def account(self, account_id: str) -> Account | None:
        return self.accounts.get(account_id)

    def entry(self, transfer_id: str) -> JournalEntry | None:
        return self.entries.get(transfer_id)

    def resolution(self, pending_id: str) -> JournalEntry | None:
        return self.resolutions.get(pending_id)

    def reversal(self, transfer_id: str) -> JournalEntry | None:
        return self.reversals.get(transfer_id)


def preload(tx: LedgerReader, specs: list[TransferSpec]) -> _Preloaded:
    """Read every row a batch can touch: three entry queries and one account query."""
    referenced = {s.pending_id for s in specs if s.pending_id} | {
        s.reverses_id for s in specs if s.reverses_id}
    entries = tx.get_entries(sorted({s.transfer_id for s in specs} | referenced))
    resolutions = tx.get_resolutions(sorted({s.pending_id for s in specs if s.pending_id}))
    reversals = tx.get_reversals(sorted({s.reverses_id for s in specs if s.reverses_id}))
    account_ids = {p.account_id for s in specs for p in s.postings}
    account_ids |= {p.account_id for e in entries.values() for p in e.postings}
    accounts = {a.account_id: a for a in tx.get_accounts(sorted(account_ids))}
    return _Preloaded(accounts, entries, resolutions, reversals)


def batch_result(outcomes: list[ItemOutcome]) -> BatchResult:
    return BatchResult(tuple(
        ItemResult(o.index, o.transfer_id, o.error,
                   o.entry.seq if o.entry else 0, o.entry.recorded_ns if o.entry else 0)
        for o in outcomes))


def _write(ctx: Context, engine: BatchPosting) -> Head:
    ctx.tx.insert_entries(engine.new_entries)
    ctx.effects.extend(["entry", e.seq, e.digest()] for e in engine.new_entries)
    ctx.tx.save_account_totals(engine.touched_accounts)
    return Head(engine.next_seq, max(ctx.head.last_recorded_ns, engine.last_recorded_ns),
                ctx.head.audit_size)


def apply_transfers(ctx: Context, specs: list[TransferSpec], business_date: date,
                    request_id: str) -> tuple[BatchResult, Head]:
    """Apply validated transfers inside the current command's transaction."""
    engine = BatchPosting(preload(ctx.tx, specs), next_seq=ctx.head.next_seq,
                          last_recorded_ns=ctx.head.last_recorded_ns, now_ns=ctx.now_ns,
                          business_date=business_date, request_id=request_id)
    outcomes = engine.apply_all(specs)
    ensure(len(outcomes) == len(specs), "one outcome per transfer")
    return batch_result(outcomes), _write(ctx, engine)


def amounts_moved(entries_of: Callable[[list[str]], dict[str, JournalEntry]],
                  specs: list[TransferSpec]) -> list[tuple[str, int]]:
    """(currency, minor) of every debit the batch would post, including the debits of the
    entries a reversal mirrors and of holds posted in full (looked up with `entries_of`)."""
    amounts = [(p.currency, p.amount) for s in specs for p in s.postings
               if p.side is Side.DEBIT]
    referenced = [s.reverses_id if s.kind is TransferKind.REVERSAL else s.pending_id
                  for s in specs if (s.kind is TransferKind.REVERSAL or (
                      s.kind is TransferKind.POST_PENDING and not s.postings))]
    for entry in entries_of([r for r in referenced if r]).values():
        amounts += [(p.currency, p.amount) for p in entry.postings
                    if p.side is Side.DEBIT and p.effect is not Effect.RELEASE]
    return amounts


def transfers_command(principal: Principal, request_id: str,
                      specs: list[TransferSpec]) -> Command:
    return Command("CreateTransfers", request_id, principal,
                   {"transfers": [[s.fingerprint(), s.linked] for s in specs]})


def approval_gate(rules: tuple[ApprovalRule, ...], principal: Principal,
                  entries_of: Callable[[list[str]], dict[str, JournalEntry]],
                  specs: list[TransferSpec]) -> tuple[ApprovalRule, str] | None:
    """The maker-checker rule this batch triggers, if any (never for the system itself)."""
    if principal.role is Role.SYSTEM:
        return None
    return rule_applying(rules, "CreateTransfers", amounts_moved(entries_of, specs))


def hold_for_approval(ctx: Context, specs: list[TransferSpec],
                      gate: tuple[ApprovalRule, str]) -> BatchResult:
    """Store the batch as a pending approval; every item fails with APPROVAL_REQUIRED."""
    payload = {"transfers": [s.to_json() for s in specs]}
    approval_id = request_approval(ctx, payload, gate[0].describe(gate[1]))
    error = FailedPrecondition(
        "APPROVAL_REQUIRED", f"waiting for a second approver: approvals/{approval_id}",
        metadata={"approval": f"approvals/{approval_id}"})
    items = tuple(ItemResult(i, s.transfer_id, error) for i, s in enumerate(specs))
    return BatchResult(items, approval_id)


def create_transfers(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                     specs: list[TransferSpec], timeout_s: float | None = None,
                     rules: tuple[ApprovalRule, ...] = DEFAULT_RULES) -> BatchResult:
    """Apply a batch of transfers in one transaction, with one result per transfer, in order.

    When an approval rule applies (a large posting), nothing is applied: the batch is stored as
    a pending approval, every item fails with APPROVAL_REQUIRED, and `approval_id` names it.

    Raises `InvalidArgument` for a structurally malformed batch (nothing is applied), and
    `AlreadyExists` (REQUEST_ID_REUSED) for a conflicting replay.
    """
    validate_specs(specs)
    command = transfers_command(principal, request_id, specs)

    def handler(ctx: Context) -> tuple[BatchResult, Head]:
        gate = approval_gate(rules, principal, ctx.tx.get_entries, specs)
        if gate is not None:
            return hold_for_approval(ctx, specs, gate), ctx.head
        return apply_transfers(ctx, specs, clock.business_date(), request_id)

    return run_command(uow, clock, command, handler, BatchResult.from_json, timeout_s)


def expire_holds(uow: UnitOfWork, clock: Clock, run_id: str,
                 principal: Principal = SYSTEM) -> BatchResult:
    """Release up to `EXPIRY_BATCH_MAX` holds whose timeout has passed, as one audited command.

    `run_id` names this sweep (a fresh one each time); the expiry entries are recorded under
    transfer ids `expire:<position of the hold>`.
    """
    command = Command("ExpireHolds", run_id, principal, {"run": run_id})

    def handler(ctx: Context) -> tuple[BatchResult, Head]:
        holds = ctx.tx.expired_holds(ctx.now_ns, EXPIRY_BATCH_MAX)
        specs = [TransferSpec(f"{RESERVED_TRANSFER_PREFIX}{h.seq}", TransferKind.EXPIRE_PENDING,
                              pending_id=h.transfer_id) for h in holds]
        engine = BatchPosting(preload(ctx.tx, specs), next_seq=ctx.head.next_seq,
                              last_recorded_ns=ctx.head.last_recorded_ns, now_ns=ctx.now_ns,
                              business_date=clock.business_date(), request_id=run_id)
        # Server-made expiry bypasses maker-checker: it only releases reserved funds.
        outcomes = [engine.apply_expiry(i, h, s.transfer_id)
                    for i, (h, s) in enumerate(zip(holds, specs, strict=True))]
        for outcome in outcomes:  # one bad hold must not stop the others from expiring
            if outcome.error is not None:
                log.error("could not expire hold %s: %r", outcome.transfer_id, outcome.error)
        return batch_result(outcomes), _write(ctx, engine)

    return run_command(uow, clock, command, handler, BatchResult.from_json)
