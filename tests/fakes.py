"""An in-memory implementation of the storage ports of `bank.app.ports`, with plain dicts.

`InMemoryUnitOfWork.write()` snapshots the whole state and restores it if the block raises, so a
write transaction is all-or-nothing, as in SQL. Writers are not concurrent here (one thread), so
the head "lock" is just a read. The fake refuses what the database's keys refuse (a second entry
with the same position or transfer id, a second request with the same id, a gap in the audit
log), so a use case bug that the database would catch is not hidden by the fake.

All stored values are frozen dataclasses, so a shallow copy of each dict is a full snapshot.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from bank.app.ports import (
    AccountFilter,
    AuditLeaf,
    Head,
    PostedLine,
    StoredCheckpoint,
    StoredRequest,
)
from bank.domain.accounts import Account, AccountStatus, Side, Totals
from bank.domain.approvals import Approval, Decision
from bank.domain.entries import Effect, JournalEntry, Posting, TransferKind


@dataclass
class _State:
    head: Head = field(default_factory=lambda: Head(next_seq=1, last_recorded_ns=0,
                                                    audit_size=0))
    accounts: dict[str, Account] = field(default_factory=dict)
    entries: dict[int, JournalEntry] = field(default_factory=dict)  # by position
    by_transfer_id: dict[str, JournalEntry] = field(default_factory=dict)
    requests: dict[str, StoredRequest] = field(default_factory=dict)
    audit: list[AuditLeaf] = field(default_factory=list)
    approvals: dict[str, Approval] = field(default_factory=dict)
    decisions: dict[str, Decision] = field(default_factory=dict)
    checkpoints: list[StoredCheckpoint] = field(default_factory=list)

    def snapshot(self) -> _State:
        return _State(
            self.head, dict(self.accounts), dict(self.entries), dict(self.by_transfer_id),
            dict(self.requests), list(self.audit), dict(self.approvals), dict(self.decisions),
            list(self.checkpoints))


class InMemoryLedger:
    """`LedgerWriter` (and so `LedgerReader`) over a `_State`."""

    def __init__(self, state: _State) -> None:
        self.s = state

    # -- head, requests, audit ------------------------------------------------------------------
    def head(self) -> Head:
        return self.s.head

    def lock_head(self) -> Head:
        return self.s.head

    def save_head(self, head: Head) -> None:
        old = self.s.head
        assert head.next_seq >= old.next_seq and head.audit_size >= old.audit_size
        assert head.last_recorded_ns >= old.last_recorded_ns, "the head never moves backwards"
        self.s.head = head

    def find_request(self, request_id: str) -> StoredRequest | None:
        return self.s.requests.get(request_id)

    def save_request(self, request: StoredRequest) -> None:
        assert request.request_id not in self.s.requests, "requests are append-only"
        self.s.requests[request.request_id] = request

    def find_requests(self, request_ids: Sequence[str]) -> dict[str, StoredRequest]:
        return {i: self.s.requests[i] for i in request_ids if i in self.s.requests}

    def save_requests(self, requests: Sequence[StoredRequest]) -> None:
        for request in requests:
            self.save_request(request)

    def append_audit(self, leaves: Sequence[AuditLeaf]) -> None:
        for leaf in leaves:
            assert leaf.index == len(self.s.audit), "audit indices are dense"
            self.s.audit.append(leaf)

    def iter_audit(self, start: int = 0, stop: int | None = None
                   ) -> Generator[AuditLeaf, None, None]:
        yield from self.s.audit[start:stop]

    @contextmanager
    def write_behind(self) -> Iterator[None]:
        yield  # in memory, every write lands at once

    def audit_index_at(self, recorded_ns: int) -> int:
        return sum(1 for leaf in self.s.audit if leaf.recorded_ns < recorded_ns)

    def checkpoints(self) -> list[StoredCheckpoint]:
        return sorted(self.s.checkpoints, key=lambda c: c.seq)

    def insert_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        assert all(c.seq != checkpoint.seq for c in self.s.checkpoints), "checkpoints append"
        self.s.checkpoints.append(checkpoint)

    # -- approvals (maker-checker) ------------------------------------------------------------
    def get_approval(self, approval_id: str) -> tuple[Approval, Decision | None] | None:
        approval = self.s.approvals.get(approval_id)
        return (approval, self.s.decisions.get(approval_id)) if approval else None

    def list_approvals(self, before_created_ns: int, limit: int
                       ) -> list[tuple[Approval, Decision | None]]:
        newest_first = sorted(self.s.approvals.values(), key=lambda a: -a.created_ns)
        return [(a, self.s.decisions.get(a.approval_id)) for a in newest_first
                if a.created_ns < before_created_ns][:limit]

    def insert_approval(self, approval: Approval) -> None:
        assert approval.approval_id not in self.s.approvals, "approvals are append-only"
        self.s.approvals[approval.approval_id] = approval

    def insert_decision(self, decision: Decision) -> None:
        assert decision.approval_id in self.s.approvals, "a decision needs its approval"
        assert decision.approval_id not in self.s.decisions, "an approval is decided once"
        self.s.decisions[decision.approval_id] = decision

    # -- accounts -------------------------------------------------------------------------------
    def get_account(self, account_id: str) -> Account | None:
        return self.s.accounts.get(account_id)

    def get_accounts(self, account_ids: Sequence[str]) -> list[Account]:
        return [self.s.accounts[i] for i in sorted(set(account_ids)) if i in self.s.accounts]

    def list_accounts(self, after_id: str, limit: int, flt: AccountFilter) -> list[Account]:
        rows = [a for i, a in sorted(self.s.accounts.items()) if i > after_id
                and (not flt.owner_kind or a.owner_kind.value == flt.owner_kind)
                and (not flt.owner_id or a.owner_id == flt.owner_id)
                and (not flt.currency or a.currency == flt.currency)
                and (flt.owner_ids is None or a.owner_id in flt.owner_ids)]
        return rows[:limit]

    def iter_accounts(self) -> Iterator[Account]:
        yield from (a for _, a in sorted(self.s.accounts.items()))

    def insert_accounts(self, accounts: Sequence[Account]) -> None:
        for a in accounts:
            assert a.account_id not in self.s.accounts, f"duplicate account {a.account_id!r}"
            self.s.accounts[a.account_id] = a

    def save_account_totals(self, accounts: Sequence[Account]) -> None:
        for a in accounts:
            self.s.accounts[a.account_id] = self.s.accounts[a.account_id].with_totals(a.totals)

    def set_account_status(self, account_id: str, status: AccountStatus, at_ns: int) -> None:
        self.s.accounts[account_id] = replace(self.s.accounts[account_id], status=status)

    # -- entries --------------------------------------------------------------------------------
    def insert_entries(self, entries: Sequence[JournalEntry]) -> None:
        for e in entries:
            assert e.seq not in self.s.entries, f"duplicate position {e.seq}"
            assert e.transfer_id not in self.s.by_transfer_id, f"duplicate {e.transfer_id!r}"
            self.s.entries[e.seq] = e
            self.s.by_transfer_id[e.transfer_id] = e

    def _ordered(self) -> list[JournalEntry]:
        return [self.s.entries[k] for k in sorted(self.s.entries)]

    def get_entries(self, transfer_ids: Sequence[str]) -> dict[str, JournalEntry]:
        return {i: self.s.by_transfer_id[i] for i in transfer_ids if i in self.s.by_transfer_id}

    def get_resolutions(self, pending_ids: Sequence[str]) -> dict[str, JournalEntry]:
        wanted = set(pending_ids)
        return {e.pending_id: e for e in self._ordered() if e.pending_id in wanted}

    def get_reversals(self, transfer_ids: Sequence[str]) -> dict[str, JournalEntry]:
        wanted = set(transfer_ids)
        return {e.reverses_id: e for e in self._ordered() if e.reverses_id in wanted}

    def entries_after(self, after_seq: int, limit: int) -> list[JournalEntry]:
        return [e for e in self._ordered() if e.seq > after_seq][:limit]

    def expired_holds(self, now_ns: int, limit: int) -> list[JournalEntry]:
        resolved = {e.pending_id for e in self._ordered() if e.pending_id}
        return [e for e in self._ordered() if e.kind is TransferKind.PENDING
                and 0 < e.expires_ns <= now_ns and e.transfer_id not in resolved][:limit]

    def iter_postings(self) -> Iterator[Posting]:
        for e in self._ordered():
            yield from e.postings

    def entries_out_of_time_order(self, limit: int) -> list[int]:
        ordered = self._ordered()
        return [b.seq for a, b in itertools.pairwise(ordered)
                if b.recorded_ns <= a.recorded_ns][:limit]

    def iter_entries(self) -> Iterator[JournalEntry]:
        yield from self._ordered()

    def posted_sums(self, upto_seq: int) -> list[tuple[str, int, int]]:
        sums: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for p in self.iter_postings():
            if p.effect is Effect.POST and p.entry_seq <= upto_seq:
                sums[p.currency][0 if p.side is Side.DEBIT else 1] += p.amount
        return [(c, d, k) for c, (d, k) in sorted(sums.items())]

    def statement(self, account_id: str, after_seq: int, after_index: int, limit: int,
                  from_ns: int | None, to_ns: int | None) -> list[tuple[Posting, JournalEntry]]:
        rows = [(p, replace(e, postings=())) for e in self._ordered() for p in e.postings
                if p.account_id == account_id and p.effect is Effect.POST
                and (p.entry_seq, p.index) > (after_seq, after_index)
                and (from_ns is None or e.recorded_ns >= from_ns)
                and (to_ns is None or e.recorded_ns < to_ns)]
        return rows[:limit]

    def iter_posted_lines(self, first_seq: int, last_seq: int, account_id: str | None = None
                          ) -> Generator[PostedLine, None, None]:
        rows = sorted(((p, e) for e in self._ordered() if first_seq <= e.seq <= last_seq
                       for p in e.postings if p.effect is Effect.POST
                       and account_id in (None, p.account_id)),
                      key=lambda pe: (pe[0].account_id, pe[0].entry_seq, pe[0].index))
        for p, e in rows:
            a = self.s.accounts[p.account_id]
            yield PostedLine(p, e.transfer_id, e.recorded_ns, e.effective_date, e.description,
                             a.currency, a.owner_kind.value, a.owner_id)

    def totals_as_of(self, account_id: str, as_of_ns: int) -> Totals:
        lines = [p for e in self._ordered() if e.recorded_ns <= as_of_ns for p in e.postings
                 if p.account_id == account_id]
        return lines[-1].totals_after if lines else Totals()

    def trial_balance(self) -> list[tuple[str, str, int, int]]:
        sums: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        for a in self.s.accounts.values():
            row = sums[(a.currency, a.account_type.value)]
            row[0] += a.totals.debits_posted
            row[1] += a.totals.credits_posted
        return [(c, t, d, k) for (c, t), (d, k) in sorted(sums.items())]


class InMemoryUnitOfWork:
    """`UnitOfWork` over one in-memory state; a failed write block leaves no trace."""

    def __init__(self) -> None:
        self.state = _State()

    @contextmanager
    def write(self, timeout_s: float | None = None) -> Iterator[InMemoryLedger]:
        saved = self.state.snapshot()
        try:
            yield InMemoryLedger(self.state)
        except BaseException:
            self.state = saved
            raise

    @contextmanager
    def read(self, timeout_s: float | None = None) -> Iterator[InMemoryLedger]:
        yield InMemoryLedger(self.state)
