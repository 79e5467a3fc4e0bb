"""The audit log's checkpoints and its self-check (`bank audit sign`, `bank audit verify`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from bank.app.check import check_ledger
from bank.app.ports import AuditLeaf, StoredCheckpoint, UnitOfWork
from bank.domain.audit import leaf_hash
from bank.domain.entries import canonical_hash
from bank.domain.errors import Aborted, FailedPrecondition
from bank.domain.merkle import RootBuilder
from bank.offline.checkpoint import ORIGIN, Checkpoint, verify_checkpoint
from bank.offline.note import NoteError, Signer, Verifier

PROGRESS_EVERY = 100_000
PROBLEMS_MAX = 1_000


def sign_checkpoint(uow: UnitOfWork, clock: Any, signer: Signer) -> StoredCheckpoint:
    """Sign a checkpoint of the whole audit log as it is now.

    The tree is recomputed from the stored leaves; the signer refuses (FailedPrecondition
    TREE_INCONSISTENT) when the first leaves no longer hash to the last signed checkpoint's root,
    or when a stored leaf hash does not match its leaf. Returns the last checkpoint unchanged
    when nothing was appended since.
    """
    with uow.read() as r:
        size = r.head().audit_size
        existing = r.checkpoints()
        last = existing[-1] if existing else None
        if last is not None and last.tree_size == size:
            return last
        builder = RootBuilder()
        leaves = r.iter_audit(0, size)
        try:  # close the cursor even when we refuse early
            _extend_checked(builder, leaves, last)
        finally:
            leaves.close()
        if builder.size != size:
            raise FailedPrecondition("TREE_INCONSISTENT", "refusing to sign: the log has "
                                     f"{builder.size} leaves but the head says {size}")
    checkpoint = Checkpoint(ORIGIN, size, builder.root())
    stored = StoredCheckpoint((last.seq if last else 0) + 1, size, checkpoint.root,
                              signer.sign(checkpoint.text()), signer.name, clock.now_ns())
    with uow.write() as tx:
        tx.lock_head()
        latest = tx.checkpoints()
        if (latest[-1].seq if latest else 0) != stored.seq - 1:
            raise Aborted("CONCURRENT_CHECKPOINT", "another checkpoint was signed meanwhile")
        tx.insert_checkpoint(stored)
    return stored


def _extend_checked(builder: RootBuilder, leaves: Generator[AuditLeaf, None, None],
                    last: StoredCheckpoint | None) -> None:
    for leaf in leaves:
        if leaf.index != builder.size or leaf_hash(leaf.leaf) != leaf.leaf_hash:
            raise FailedPrecondition("TREE_INCONSISTENT",
                                     f"refusing to sign: audit leaf {builder.size} is "
                                     "missing or does not match its hash")
        builder.append(leaf.leaf_hash)
        if last is not None and builder.size == last.tree_size and (
                builder.root() != last.root_hash):
            raise FailedPrecondition("TREE_INCONSISTENT",
                                     "refusing to sign: the log is not consistent with "
                                     f"checkpoint {last.seq} (size {last.tree_size})")


@dataclass
class AuditReport:
    leaves: int = 0
    checkpoints: int = 0
    entries: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        if len(self.problems) < PROBLEMS_MAX:
            self.problems.append(problem)


class _EntryDigests:
    """The digest each audited operation recorded for each entry, by entry number: 32 bytes
    per entry in one array (entries are numbered densely from 1 up to the ledger head), so a
    log of millions of entries is checked in tens of megabytes, not hundreds."""

    SIZE = 32

    def __init__(self, limit: int) -> None:
        self.limit = limit  # entry numbers are 1 .. limit - 1
        self.digests = bytearray()
        self.recorded = bytearray()
        self.seen = bytearray()

    def _grow(self, seq: int) -> None:
        if seq >= len(self.recorded):
            more = max(seq + 1, 2 * len(self.recorded)) - len(self.recorded)
            self.recorded.extend(bytes(more))
            self.seen.extend(bytes(more))
            self.digests.extend(bytes(more * self.SIZE))

    def record(self, index: int, seq: Any, digest: Any, report: AuditReport) -> None:
        if type(seq) is not int or not 1 <= seq < self.limit:
            report.add(f"audit leaf {index} records entry {seq!r}, outside the ledger's "
                       f"entries 1 to {self.limit - 1}")
            return
        try:
            raw = bytes.fromhex(digest)
        except (TypeError, ValueError):
            raw = b""
        if len(raw) != self.SIZE:
            report.add(f"audit leaf {index} records entry {seq} with a malformed digest")
            return
        self._grow(seq)
        if self.recorded[seq]:
            report.add(f"audit leaf {index} records entry {seq} a second time")
        self.recorded[seq] = 1
        self.digests[seq * self.SIZE:(seq + 1) * self.SIZE] = raw

    def get(self, seq: int) -> str | None:
        """The recorded digest of entry `seq` (None if no operation recorded it); marks the
        entry as present in the ledger."""
        if not 0 <= seq < len(self.recorded) or not self.recorded[seq]:
            return None
        self.seen[seq] = 1
        return self.digests[seq * self.SIZE:(seq + 1) * self.SIZE].hex()

    def missing(self) -> Generator[int, None, None]:
        """Entries recorded by the log and never found in the ledger, in order."""
        for seq, (recorded, seen) in enumerate(zip(self.recorded, self.seen, strict=True)):
            if recorded and not seen:
                yield seq


@dataclass
class _Effects:
    entries: _EntryDigests
    accounts: dict[str, str] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)

    def record(self, index: int, effects: list[Any], report: AuditReport) -> None:
        for effect in effects:
            kind, key = effect[0], effect[1]
            if kind == "entry":
                self.entries.record(index, key, effect[2], report)
            elif kind == "account":
                self.accounts[key] = effect[2]
            elif kind == "close":
                self.closed.add(key)


def _check_leaves(r: Any, report: AuditReport, checkpoints: list[StoredCheckpoint],
                  verifiers: list[Verifier], progress: Callable[[str], None] | None,
                  entries_limit: int) -> _Effects:
    effects = _Effects(_EntryDigests(entries_limit))
    builder = RootBuilder()
    by_size: dict[int, list[StoredCheckpoint]] = {}
    for cp in checkpoints:
        by_size.setdefault(cp.tree_size, []).append(cp)
    _compare_roots(by_size.get(0, []), builder, report)
    for leaf in r.iter_audit():
        if leaf.index != builder.size:
            report.add(f"audit leaf index {leaf.index} found where {builder.size} was expected "
                       "(a leaf was deleted, inserted or reordered)")
        if leaf_hash(leaf.leaf) != leaf.leaf_hash:
            report.add(f"audit leaf {leaf.index}: stored hash does not match its content "
                       "(the leaf was edited)")
        builder.append(leaf_hash(leaf.leaf))
        try:
            record = json.loads(leaf.leaf)
            if record.get("index") != leaf.index:
                report.add(f"audit leaf {leaf.index} says it is leaf {record.get('index')}")
            effects.record(leaf.index, record.get("effects", []), report)
        except (ValueError, AttributeError, IndexError, TypeError):
            report.add(f"audit leaf {leaf.index} is not a canonical audit record")
        _compare_roots(by_size.get(builder.size, []), builder, report)
        if progress and builder.size % PROGRESS_EVERY == 0:
            progress(f"hashed {builder.size} audit leaves")
    report.leaves = builder.size
    for cp in checkpoints:
        if cp.tree_size > builder.size:
            report.add(f"checkpoint {cp.seq} covers {cp.tree_size} leaves but the log has only "
                       f"{builder.size} (the log was truncated)")
        try:
            signed = verify_checkpoint(cp.note, verifiers)
            if (signed.size, signed.root) != (cp.tree_size, cp.root_hash):
                report.add(f"checkpoint {cp.seq}: signed note does not match its row")
        except NoteError as error:
            report.add(f"checkpoint {cp.seq}: {error}")
    return effects


def _compare_roots(cps: list[StoredCheckpoint], builder: RootBuilder,
                   report: AuditReport) -> None:
    for cp in cps:
        if builder.root() != cp.root_hash:
            report.add(f"checkpoint {cp.seq}: the log's first {cp.tree_size} leaves hash to a "
                       "different root (history was changed or forked)")


def verify_audit(uow: UnitOfWork, verifiers: list[Verifier],
                 progress: Callable[[str], None] | None = None) -> AuditReport:
    """Recompute the tree, check every checkpoint, and check that the ledger's entries and
    accounts are exactly those the audited operations recorded. Names every problem found."""
    report = AuditReport()
    with uow.read() as r:
        head = r.head()
        checkpoints = r.checkpoints()
        report.checkpoints = len(checkpoints)
        effects = _check_leaves(r, report, checkpoints, verifiers, progress, head.next_seq)
        if head.audit_size != report.leaves:
            report.add(f"the ledger head counts {head.audit_size} audit leaves; the log has "
                       f"{report.leaves}")
        for entry in r.iter_entries():
            report.entries += 1
            audited = effects.entries.get(entry.seq)
            if audited is None:
                report.add(f"entry {entry.seq} ({entry.transfer_id}) was not produced by any "
                           "audited operation")
            elif audited != entry.digest():
                report.add(f"entry {entry.seq} ({entry.transfer_id}) differs from what its "
                           "audited operation recorded")
        for seq in effects.entries.missing():
            report.add(f"entry {seq} recorded by the audit log is missing from the ledger")
        for account in r.iter_accounts():
            digest = effects.accounts.get(account.account_id)
            if digest != canonical_hash(account.definition()):
                report.add(f"account {account.account_id} does not match its audited creation")
            if (account.status.value == "closed") != (account.account_id in effects.closed):
                report.add(f"account {account.account_id}: status {account.status.value} does "
                           "not match the audited operations")
            effects.accounts.pop(account.account_id, None)
        for account_id in sorted(effects.accounts):
            report.add(f"account {account_id} recorded by the audit log is missing")
    for problem in check_ledger(uow).problems:
        report.add(problem)
    return report
