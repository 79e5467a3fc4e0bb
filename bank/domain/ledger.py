"""The posting engine: applies a batch of transfers to accounts, in memory, with no I/O.

The use case loads every account and earlier entry that a batch refers to (one read each),
hands them to `BatchPosting`, and writes back what it produced: new entries with their postings
and the final totals of the accounts touched. The same engine runs against the in-memory fake
in unit tests and against SQL in production, so the rules live in exactly one place.

Result reasons, checked in this order for each transfer (the first that applies is reported):

    TRANSFER_ID_REUSED            the id exists with different content       ALREADY_EXISTS
    ACCOUNT_NOT_FOUND             a posting names an unknown account         NOT_FOUND
    ACCOUNT_CLOSED / ACCOUNT_FROZEN                                          FAILED_PRECONDITION
    CURRENCY_MISMATCH             posting currency differs from account's    FAILED_PRECONDITION
    PENDING_TRANSFER_NOT_FOUND / TRANSFER_NOT_FOUND                          NOT_FOUND
    NOT_A_PENDING_TRANSFER, PENDING_TRANSFER_ALREADY_POSTED,
    PENDING_TRANSFER_ALREADY_VOIDED, PENDING_TRANSFER_EXPIRED,
    PENDING_TRANSFER_NOT_EXPIRED, POSTING_NOT_IN_PENDING_TRANSFER,
    EXCEEDS_PENDING_AMOUNT, TRANSFER_NOT_REVERSIBLE,
    TRANSFER_ALREADY_REVERSED                                                FAILED_PRECONDITION
    EXCEEDS_CREDITS               would overdraw an account (insufficient funds)
    EXCEEDS_DEBITS                the mirror limit                           FAILED_PRECONDITION
    OVERFLOWS_TOTALS              a running total would leave int64          FAILED_PRECONDITION
    LINKED_TRANSFER_FAILED        another transfer of its linked group failed FAILED_PRECONDITION
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

from bank.domain.accounts import Account, AccountStatus, Side, Totals
from bank.domain.entries import (
    Effect,
    JournalEntry,
    Posting,
    PostingLine,
    TransferKind,
    TransferSpec,
)
from bank.domain.errors import AlreadyExists, FailedPrecondition, LedgerError, NotFound
from bank.domain.invariants import ensure
from bank.domain.limits import TOTAL_MINOR_MAX

NANOS_PER_SECOND = 1_000_000_000


class LedgerView(Protocol):
    """What the engine may read: the accounts and entries a batch names, loaded up front."""

    def account(self, account_id: str) -> Account | None: ...

    def entry(self, transfer_id: str) -> JournalEntry | None: ...

    def resolution(self, pending_id: str) -> JournalEntry | None:
        """The entry that posted, voided or expired this hold, if any."""
        ...

    def reversal(self, transfer_id: str) -> JournalEntry | None:
        """The entry that reversed this one, if any."""
        ...


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """The result of one transfer of a batch: the recorded entry, or the error."""

    index: int
    transfer_id: str
    entry: JournalEntry | None
    error: LedgerError | None
    replayed: bool = False  # the same transfer already existed; nothing new was recorded


def fail(reason: str, message: str, cls: type[LedgerError] = FailedPrecondition,
         **metadata: str) -> LedgerError:
    return cls(reason, message, metadata=metadata)


@dataclass
class _UndoLog:
    """Records dict writes so a failed linked group can be rolled back in O(its size)."""

    entries: list[tuple[dict[Any, Any], Any, Any]] = field(default_factory=list)

    def set(self, d: dict[Any, Any], key: Any, value: Any) -> None:
        self.entries.append((d, key, d.get(key, _MISSING)))
        d[key] = value

    def rollback_to(self, mark: int) -> None:
        while len(self.entries) > mark:
            d, key, old = self.entries.pop()
            if old is _MISSING:
                del d[key]
            else:
                d[key] = old


_MISSING = object()


class BatchPosting:
    """Applies transfers one by one to a working copy of the ledger.

    `next_seq` and `last_recorded_ns` come from the ledger head, read under its lock, so entry
    positions are dense and recorded times strictly increase across the whole ledger.
    """

    def __init__(self, view: LedgerView, *, next_seq: int, last_recorded_ns: int, now_ns: int,
                 business_date: date, request_id: str = "") -> None:
        self._view = view
        self._accounts: dict[str, Account] = {}
        self._entries: dict[str, JournalEntry] = {}
        self._resolutions: dict[str, JournalEntry] = {}
        self._reversals: dict[str, JournalEntry] = {}
        self._new: dict[int, JournalEntry] = {}
        self._undo = _UndoLog()
        self._seq = next_seq
        self._ns = max(now_ns, last_recorded_ns + 1) - 1
        self._now_ns = now_ns
        self._business_date = business_date
        self._request_id = request_id

    # -- reads through the working copy -------------------------------------------------------
    def _account(self, account_id: str) -> Account | None:
        return self._accounts.get(account_id) or self._view.account(account_id)

    def _entry(self, transfer_id: str) -> JournalEntry | None:
        return self._entries.get(transfer_id) or self._view.entry(transfer_id)

    def _resolution(self, pending_id: str) -> JournalEntry | None:
        return self._resolutions.get(pending_id) or self._view.resolution(pending_id)

    def _reversal(self, transfer_id: str) -> JournalEntry | None:
        return self._reversals.get(transfer_id) or self._view.reversal(transfer_id)

    # -- results --------------------------------------------------------------------------------
    @property
    def new_entries(self) -> list[JournalEntry]:
        return [self._new[k] for k in sorted(self._new)]

    @property
    def touched_accounts(self) -> list[Account]:
        return [self._accounts[k] for k in sorted(self._accounts)]

    @property
    def next_seq(self) -> int:
        return self._seq

    @property
    def last_recorded_ns(self) -> int:
        return self._ns

    def begin_command(self, request_id: str, now_ns: int) -> None:
        """Start the next command of a group commit: its entries carry `request_id` and are
        recorded at or after `now_ns` (still strictly after every earlier entry)."""
        self._request_id = request_id
        self._now_ns = now_ns
        self._ns = max(self._ns, now_ns - 1)

    def recorded_from(self, seq: int) -> list[JournalEntry]:
        """The entries this batch recorded at positions `seq` onwards, in order."""
        return [self._new[k] for k in range(seq, self._seq)]

    def entry(self, transfer_id: str) -> JournalEntry | None:
        """An entry as the working copy sees it (including those recorded by this batch)."""
        return self._entry(transfer_id)

    def apply_all(self, specs: list[TransferSpec]) -> list[ItemOutcome]:
        """Apply every transfer; linked groups succeed or fail as a whole."""
        outcomes: list[ItemOutcome] = []
        group: list[tuple[int, TransferSpec]] = []
        for index, spec in enumerate(specs):
            group.append((index, spec))
            if not spec.linked:
                outcomes.extend(self._apply_group(group))
                group = []
        ensure(not group, "validate_specs must refuse an open linked group")
        return outcomes

    def _apply_group(self, group: list[tuple[int, TransferSpec]]) -> list[ItemOutcome]:
        mark, seq, ns = len(self._undo.entries), self._seq, self._ns
        results: list[ItemOutcome] = []
        for index, spec in group:
            outcome = self._apply_one(index, spec)
            results.append(outcome)
            if outcome.error is not None and len(group) > 1:
                self._undo.rollback_to(mark)
                self._seq, self._ns = seq, ns
                linked = fail("LINKED_TRANSFER_FAILED",
                              f"not applied: transfer {spec.transfer_id!r} of its linked group "
                              f"failed ({outcome.error.reason})", failed_transfer=spec.transfer_id)
                return [outcome if i == index else ItemOutcome(i, s.transfer_id, None, linked)
                        for i, s in group]
        return results

    def apply_expiry(self, index: int, pending: JournalEntry, transfer_id: str) -> ItemOutcome:
        """Release a hold whose timeout has passed (server-made; no client spec)."""
        spec = TransferSpec(transfer_id, TransferKind.EXPIRE_PENDING,
                            pending_id=pending.transfer_id)
        return self._apply_one(index, spec)

    # -- one transfer ---------------------------------------------------------------------------
    def _apply_one(self, index: int, spec: TransferSpec) -> ItemOutcome:
        fingerprint = spec.fingerprint()
        existing = self._entry(spec.transfer_id)
        if existing is not None:
            if existing.fingerprint == fingerprint:
                return ItemOutcome(index, spec.transfer_id, existing, None, replayed=True)
            return ItemOutcome(index, spec.transfer_id, None, fail(
                "TRANSFER_ID_REUSED",
                f"transfer {spec.transfer_id!r} already exists with different content",
                AlreadyExists, transfer_id=spec.transfer_id))
        try:
            lines, pending, expires_ns = self._plan(spec)
            entry = self._record(spec, fingerprint, lines, pending, expires_ns)
        except LedgerError as error:
            return ItemOutcome(index, spec.transfer_id, None, error)
        return ItemOutcome(index, spec.transfer_id, entry, None)

    def _plan(self, spec: TransferSpec) -> tuple[list[tuple[PostingLine, Effect]],
                                                 JournalEntry | None, int]:
        kind = spec.kind
        if kind in (TransferKind.POSTED, TransferKind.PENDING):
            effect = Effect.POST if kind is TransferKind.POSTED else Effect.RESERVE
            expires = (self._now_ns + spec.timeout_seconds * NANOS_PER_SECOND
                       if spec.timeout_seconds else 0)
            return [(line, effect) for line in spec.postings], None, expires
        if kind is TransferKind.REVERSAL:
            assert spec.reverses_id is not None
            return self._plan_reversal(spec.reverses_id), None, 0
        assert spec.pending_id is not None
        pending = self._open_hold(spec.pending_id, kind)
        release = [(_line_of(p), Effect.RELEASE) for p in pending.lines(Effect.RESERVE)]
        if kind is TransferKind.POST_PENDING:
            posted = list(spec.postings) or [line for line, _ in release]
            _check_within_hold(posted, [line for line, _ in release])
            # Release first: the hold's reservation is gone before the posting lands.
            return release + [(line, Effect.POST) for line in posted], pending, 0
        return release, pending, 0

    def _open_hold(self, pending_id: str, kind: TransferKind) -> JournalEntry:
        pending = self._entry(pending_id)
        if pending is None:
            raise fail("PENDING_TRANSFER_NOT_FOUND", f"no transfer {pending_id!r}", NotFound,
                       pending_transfer=pending_id)
        if pending.kind is not TransferKind.PENDING:
            raise fail("NOT_A_PENDING_TRANSFER", f"transfer {pending_id!r} is not pending",
                       pending_transfer=pending_id)
        resolution = self._resolution(pending_id)
        if resolution is not None:
            reason = {TransferKind.POST_PENDING: "PENDING_TRANSFER_ALREADY_POSTED",
                      TransferKind.VOID_PENDING: "PENDING_TRANSFER_ALREADY_VOIDED",
                      TransferKind.EXPIRE_PENDING: "PENDING_TRANSFER_EXPIRED"}[resolution.kind]
            raise fail(reason, f"pending transfer {pending_id!r} was already resolved by "
                       f"{resolution.transfer_id!r}", pending_transfer=pending_id)
        expired = pending.expires_ns and pending.expires_ns <= self._now_ns
        if kind is TransferKind.EXPIRE_PENDING and not expired:
            raise fail("PENDING_TRANSFER_NOT_EXPIRED", f"{pending_id!r} has not timed out",
                       pending_transfer=pending_id)
        if kind is not TransferKind.EXPIRE_PENDING and expired:
            raise fail("PENDING_TRANSFER_EXPIRED", f"pending transfer {pending_id!r} has expired",
                       pending_transfer=pending_id)
        return pending

    def _plan_reversal(self, reverses_id: str) -> list[tuple[PostingLine, Effect]]:
        original = self._entry(reverses_id)
        if original is None:
            raise fail("TRANSFER_NOT_FOUND", f"no transfer {reverses_id!r} to reverse", NotFound,
                       reverses_transfer=reverses_id)
        if original.kind not in (TransferKind.POSTED, TransferKind.POST_PENDING):
            raise fail("TRANSFER_NOT_REVERSIBLE",
                       f"a {original.kind.value} transfer cannot be reversed; only posted ones",
                       reverses_transfer=reverses_id)
        earlier = self._reversal(reverses_id)
        if earlier is not None:
            raise fail("TRANSFER_ALREADY_REVERSED",
                       f"transfer {reverses_id!r} was already reversed by {earlier.transfer_id!r}",
                       reverses_transfer=reverses_id)
        return [(PostingLine(p.account_id, p.side.flipped(), p.amount, p.currency), Effect.POST)
                for p in original.lines(Effect.POST)]

    def _record(self, spec: TransferSpec, fingerprint: str,
                lines: list[tuple[PostingLine, Effect]], pending: JournalEntry | None,
                expires_ns: int) -> JournalEntry:
        # Per effect and currency, debits minus credits must be zero (an effect with no lines
        # balances trivially).
        net: dict[tuple[Effect, str], int] = {}
        for line, e in lines:
            key = (e, line.currency)
            net[key] = net.get(key, 0) + (line.amount if line.side is Side.DEBIT
                                          else -line.amount)
        if any(net.values()):
            unbalanced = sorted({e.value for (e, _), n in net.items() if n})
            ensure(False, f"unbalanced {', '.join(unbalanced)} lines in {spec.transfer_id!r}")
        accounts = self._check_accounts(line for line, _ in lines)
        seq = self._seq
        postings: list[Posting] = []
        for i, (line, effect) in enumerate(lines):
            account = accounts[line.account_id]
            totals = _apply(account.totals, line.side, line.amount, effect)
            accounts[line.account_id] = account.with_totals(totals)
            postings.append(Posting(seq, i, line.account_id, line.side, line.amount,
                                    line.currency, effect, totals))
        # Limits hold for the entry as a whole: an entry is atomic, its lines are not steps.
        for account_id, account in accounts.items():
            breach = account.limit_breached(account.totals)
            if breach is not None:
                raise fail(breach, _BREACH_TEXT[breach].format(account_id),
                           account_id=account_id)
        entry = JournalEntry(
            seq=seq, transfer_id=spec.transfer_id, kind=spec.kind, recorded_ns=self._ns + 1,
            effective_date=spec.effective_date or self._business_date, postings=tuple(postings),
            pending_id=spec.pending_id, reverses_id=spec.reverses_id, expires_ns=expires_ns,
            description=spec.description, metadata=spec.metadata, fingerprint=fingerprint,
            request_id=self._request_id)
        self._commit(entry, accounts, pending)
        return entry

    def _check_accounts(self, lines: Iterable[PostingLine]) -> dict[str, Account]:
        accounts: dict[str, Account] = {}
        for line in lines:
            account = accounts.get(line.account_id) or self._account(line.account_id)
            if account is None:
                raise fail("ACCOUNT_NOT_FOUND", f"no account {line.account_id!r}", NotFound,
                           account_id=line.account_id)
            if account.status is not AccountStatus.OPEN:
                reason = f"ACCOUNT_{account.status.name}"
                raise fail(reason, f"account {line.account_id!r} is {account.status.value}",
                           account_id=line.account_id)
            if account.currency != line.currency:
                raise fail("CURRENCY_MISMATCH",
                           f"account {line.account_id!r} holds {account.currency}, "
                           f"not {line.currency}", account_id=line.account_id)
            accounts[line.account_id] = account
        return accounts

    def _commit(self, entry: JournalEntry, accounts: dict[str, Account],
                pending: JournalEntry | None) -> None:
        undo = self._undo
        for account_id, account in accounts.items():
            undo.set(self._accounts, account_id, account)
        undo.set(self._entries, entry.transfer_id, entry)
        undo.set(self._new, entry.seq, entry)
        if pending is not None:
            undo.set(self._resolutions, pending.transfer_id, entry)
        if entry.reverses_id is not None:
            undo.set(self._reversals, entry.reverses_id, entry)
        self._seq += 1
        self._ns += 1


_BREACH_TEXT = {
    "EXCEEDS_CREDITS": "insufficient funds: account {!r} may not be overdrawn",
    "EXCEEDS_DEBITS": "account {!r} may not go into credit beyond its debits",
}


def _line_of(p: Posting) -> PostingLine:
    return PostingLine(p.account_id, p.side, p.amount, p.currency)


def _check_within_hold(posted: list[PostingLine], held: list[PostingLine]) -> None:
    """Posting a hold for less: each (account, side) may post at most what was held on it."""
    limit: dict[tuple[str, Side], int] = defaultdict(int)
    for line in held:
        limit[(line.account_id, line.side)] += line.amount
    asked: dict[tuple[str, Side], int] = defaultdict(int)
    for line in posted:
        key = (line.account_id, line.side)
        if key not in limit:
            raise fail("POSTING_NOT_IN_PENDING_TRANSFER",
                       f"the hold has no {line.side.name.lower()} on account {line.account_id!r}",
                       account_id=line.account_id)
        asked[key] += line.amount
        if asked[key] > limit[key]:
            raise fail("EXCEEDS_PENDING_AMOUNT",
                       f"posting {asked[key]} on account {line.account_id!r} exceeds the "
                       f"{limit[key]} held", account_id=line.account_id)


def _apply(totals: Totals, side: Side, amount: int, effect: Effect) -> Totals:
    """The account totals after one posting; raises OVERFLOWS_TOTALS past int64."""
    d_post, c_post, d_pend, c_pend = (totals.debits_posted, totals.credits_posted,
                                      totals.debits_pending, totals.credits_pending)
    sign = -1 if effect is Effect.RELEASE else 1
    if effect is Effect.POST:
        if side is Side.DEBIT:
            d_post += amount
        else:
            c_post += amount
    elif side is Side.DEBIT:
        d_pend += sign * amount
    else:
        c_pend += sign * amount
    if max(d_post, c_post, d_pend, c_pend) > TOTAL_MINOR_MAX:
        raise fail("OVERFLOWS_TOTALS", "a running total of the account would overflow")
    ensure(min(d_pend, c_pend) >= 0, "a release took more than was pending")
    return Totals(d_post, c_post, d_pend, c_pend)

