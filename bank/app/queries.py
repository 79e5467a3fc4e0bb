"""Read-side use cases: accounts, transfers, statements, balances, trial balance, change feed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from bank.app.paging import (
    decode_token,
    encode_token,
    page_size,
    position_pair,
    position_str,
)
from bank.app.ports import AccountFilter, UnitOfWork
from bank.domain.accounts import Account, Totals
from bank.domain.entries import JournalEntry, Posting, TransferKind, TransferState
from bank.domain.errors import NotFound, invalid
from bank.domain.invariants import ensure
from bank.domain.limits import WATCH_PAGE_SIZE_DEFAULT, WATCH_PAGE_SIZE_MAX


def _not_found(account_id: str) -> NotFound:
    return NotFound("ACCOUNT_NOT_FOUND", f"no account {account_id!r}",
                    metadata={"account_id": account_id})


def get_account(uow: UnitOfWork, account_id: str) -> Account:
    """Raises `NotFound`."""
    with uow.read() as r:
        account = r.get_account(account_id)
    if account is None:
        raise _not_found(account_id)
    return account


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


def list_accounts(uow: UnitOfWork, flt: AccountFilter, size: int, token: str) -> Page[Account]:
    """Accounts in id order, filtered; raises `InvalidArgument` for a bad size or token."""
    query = {"m": "accounts", "kind": flt.owner_kind, "owner": flt.owner_id, "cur": flt.currency,
             "owners": list(flt.owner_ids) if flt.owner_ids is not None else None}
    limit = page_size(size)
    after = position_str(decode_token(token, query))
    with uow.read() as r:
        rows = r.list_accounts(after, limit + 1, flt)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_token(query, rows[-1].account_id) if more else "")


@dataclass(frozen=True, slots=True)
class TransferView:
    entry: JournalEntry
    state: TransferState
    resolved_by: str | None  # the transfer that posted, voided or expired this hold
    reversed_by: str | None


_RESOLVED_STATE = {TransferKind.POST_PENDING: TransferState.PENDING_POSTED,
                   TransferKind.VOID_PENDING: TransferState.PENDING_VOIDED,
                   TransferKind.EXPIRE_PENDING: TransferState.PENDING_EXPIRED}


def get_transfer(uow: UnitOfWork, transfer_id: str) -> TransferView:
    """A transfer with its lifecycle state, derived from later entries. Raises `NotFound`."""
    with uow.read() as r:
        entry = r.get_entries([transfer_id]).get(transfer_id)
        if entry is None:
            raise NotFound("TRANSFER_NOT_FOUND", f"no transfer {transfer_id!r}",
                           metadata={"transfer_id": transfer_id})
        resolution = r.get_resolutions([transfer_id]).get(transfer_id)
        reversal = r.get_reversals([transfer_id]).get(transfer_id)
    state = TransferState.POSTED
    if entry.kind is TransferKind.PENDING:
        state = _RESOLVED_STATE[resolution.kind] if resolution else TransferState.PENDING
    return TransferView(entry, state, resolution.transfer_id if resolution else None,
                        reversal.transfer_id if reversal else None)


@dataclass(frozen=True, slots=True)
class StatementLine:
    posting: Posting
    entry: JournalEntry
    balance_after: int  # posted balance on the account's normal side, after this line


def statement(uow: UnitOfWork, account_id: str, size: int, token: str,
              from_ns: int | None, to_ns: int | None) -> tuple[Account, Page[StatementLine]]:
    """Posted lines of an account, oldest first, with the running balance after each.

    `from_ns` is inclusive, `to_ns` exclusive. Raises `NotFound` or `InvalidArgument`.
    """
    if from_ns is not None and to_ns is not None and from_ns >= to_ns:
        raise invalid("end_time", "must be after start_time")
    query = {"m": "statement", "a": account_id, "f": from_ns, "t": to_ns}
    limit = page_size(size)
    after = position_pair(decode_token(token, query)) or (-1, -1)
    with uow.read() as r:
        account = r.get_account(account_id)
        if account is None:
            raise _not_found(account_id)
        rows = r.statement(account_id, int(after[0]), int(after[1]), limit + 1, from_ns, to_ns)
    more = len(rows) > limit
    rows = rows[:limit]
    side = account.account_type.normal_side
    lines = [StatementLine(p, e, p.totals_after.balance(side)) for p, e in rows]
    last = rows[-1][0] if rows else None
    return account, Page(lines, encode_token(query, [last.entry_seq, last.index])
                         if more and last else "")


def balance_as_of(uow: UnitOfWork, account_id: str, as_of_ns: int | None) -> tuple[Account, Totals]:
    """The account's totals now, or right after everything recorded at or before `as_of_ns`."""
    with uow.read() as r:
        account = r.get_account(account_id)
        if account is None:
            raise _not_found(account_id)
        if as_of_ns is None:
            return account, account.totals
        return account, r.totals_as_of(account_id, as_of_ns)


@dataclass(frozen=True, slots=True)
class TrialBalanceRow:
    currency: str
    account_type: str
    debits_posted: int
    credits_posted: int


def trial_balance(uow: UnitOfWork) -> list[TrialBalanceRow]:
    """Posted debits and credits per currency and account type. Raises `InvariantViolation` if
    any currency's debits and credits differ (that would be a bug, never a user error)."""
    with uow.read() as r:
        rows = [TrialBalanceRow(*row) for row in r.trial_balance()]
    net: dict[str, int] = defaultdict(int)
    for row in rows:
        net[row.currency] += row.debits_posted - row.credits_posted
    for currency, difference in net.items():
        ensure(difference == 0, f"trial balance off by {difference} in {currency}")
    return rows


def account_owners(uow: UnitOfWork, account_ids: Iterable[str]) -> dict[str, str]:
    """Owner id of each existing account among `account_ids` (for scope checks)."""
    with uow.read() as r:
        return {a.account_id: a.owner_id for a in r.get_accounts(sorted(set(account_ids)))}


def transfer_accounts(uow: UnitOfWork, transfer_id: str) -> set[str]:
    """Accounts a transfer posts to (empty when there is no such transfer)."""
    with uow.read() as r:
        entry = r.get_entries([transfer_id]).get(transfer_id)
    return {p.account_id for p in entry.postings} if entry else set()


def entries_after(uow: UnitOfWork, after_seq: int, size: int) -> list[JournalEntry]:
    """The change feed: entries with positions after `after_seq`, in order, no gaps."""
    if after_seq < 0:
        raise invalid("after_position", "must be 0 (from the start) or a position")
    if size < 0:
        raise invalid("page_size", "must not be negative")
    limit = min(size or WATCH_PAGE_SIZE_DEFAULT, WATCH_PAGE_SIZE_MAX)
    with uow.read() as r:
        entries = r.entries_after(after_seq, limit)
    for expected, entry in enumerate(entries, start=after_seq + 1):
        ensure(entry.seq == expected, f"change feed gap at position {expected}")
    return entries
