"""Regulator export bundles: what `bank audit export` and AuditService.ExportBundle produce.

A bundle is a set of files, streamed as (path, chunk) pairs so nothing large is held in memory
more than once:

    checkpoint.txt        a signed checkpoint of the audit log (tree size N, root)
    leaves.jsonl          the audit leaves of the period, [first_index, end_index), canonical bytes
    proof.json            the compact range left of the period and the aligned subtree roots
                          right of it (the verifier rebuilds the root from them and the leaves),
                          and a consistency proof from a previous checkpoint when asked
    entries.jsonl         the journal entries those leaves recorded (canonical form)
    statements/<id>.xml   ISO 20022 camt.053.001.08 statements of the period per account
    trial_balance.json    posted debits and credits per currency up to the period's last entry
    manifest.json         every file above with its SHA-256
    manifest.sig          a signed note naming the SHA-256 of manifest.json

`bank.offline.verify` checks a bundle with pinned public keys only.

Memory does not grow with the log or the period: one pass over the audit log writes the leaves
and computes the proof's subtree roots (a `RootBuilder` per range, O(log n) hashes each); the
entries the leaves recorded are kept as a bitmap of positions (one bit each) and streamed in
position order; each account's statement is written from two cursors over the posted lines,
ordered by account then position: the first sums the account's lines (the summary and closing
balance come before the entries in camt.053), the second writes them. Opening balances come from
each account's first line (its running totals); only an account asked for with no line in the
period needs a query of its own.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain, groupby
from typing import Any

from bank.app.audit import sign_checkpoint
from bank.app.ports import Clock, LedgerReader, PostedLine, UnitOfWork
from bank.domain.accounts import Side
from bank.domain.currency import exponent
from bank.domain.errors import NotFound, invalid
from bank.domain.merkle import EMPTY_ROOT, RootBuilder, aligned_subtrees, build_consistency_proof
from bank.offline.camt053 import (
    LineTotals,
    Statement,
    StatementLine,
    camt_account_id,
    camt_ref,
    iter_camt053,
)
from bank.offline.note import Signer

BUNDLE_FORMAT = "peoplesbank-audit-export/1"
MANIFEST_ORIGIN = "peoplesbank.coop/export/v1"
ENTRY_BATCH = 1_000
CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class ExportSpec:
    start_ns: int | None = None  # leaves recorded at or after (None: from the first)
    end_ns: int | None = None  # leaves recorded before (None: up to the checkpoint)
    accounts: tuple[str, ...] = ()  # only entries touching these accounts (empty: all)
    previous_size: int | None = None  # prove consistency from this earlier tree size


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _chunks(path: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    for start in range(0, max(len(data), 1), CHUNK_BYTES):
        yield path, data[start:start + CHUNK_BYTES]


def export_bundle(uow: UnitOfWork, clock: Clock, signer: Signer, spec: ExportSpec,
                  progress: Callable[[str], None] | None = None) -> Iterator[tuple[str, bytes]]:
    """Yield the bundle's files as (path, chunk); chunks of one file are consecutive and at
    most CHUNK_BYTES long.

    Raises `InvalidArgument` for a bad period or previous size, `NotFound` for an unknown
    account.
    """
    if spec.start_ns is not None and spec.end_ns is not None and spec.start_ns >= spec.end_ns:
        raise invalid("end_time", "must be after start_time")
    checkpoint = sign_checkpoint(uow, clock, signer)
    size = checkpoint.tree_size
    if spec.previous_size is not None and not 0 < spec.previous_size <= size:
        raise invalid("previous_tree_size", f"must be between 1 and the current size {size}")
    hashes: dict[str, str] = {}
    with uow.read() as r:
        owners = {a.account_id: (a.currency, f"{a.owner_kind.value}:{a.owner_id}")
                  for a in r.get_accounts(list(spec.accounts))}
        missing = sorted(set(spec.accounts) - set(owners))
        if missing:
            raise NotFound("ACCOUNT_NOT_FOUND", f"no account {missing[0]!r}",
                           metadata={"account_id": missing[0]})
        first = min(r.audit_index_at(spec.start_ns), size) if spec.start_ns else 0
        if spec.previous_size is not None:  # show every leaf since the previous checkpoint
            first = min(first, spec.previous_size)
        end = min(r.audit_index_at(spec.end_ns), size) if spec.end_ns is not None else size
        end = max(end, first)
        proof = _Proof(size, first, end, spec.previous_size)
        positions = _Positions()
        yield from _hashed("leaves.jsonl", _leaves(r, size, first, end, proof, positions),
                           hashes)
        if progress:
            progress(f"exported audit leaves {first}..{end - 1}")
        yield from _hashed("entries.jsonl", _entries(r, positions, set(spec.accounts)), hashes)
        yield from _hashed("checkpoint.txt", iter([checkpoint.note.encode()]), hashes)
        yield from _hashed("proof.json", iter([proof.body()]), hashes)
        for path, parts in _statements(r, positions, spec, owners, clock):
            yield from _hashed(path, parts, hashes)
        upto = positions.last or 0  # the trial balance as of the period's last entry
        trial_balance = _canonical({
            "upto_position": upto,
            "currencies": [{"currency": c, "debits_posted": d, "credits_posted": k}
                           for c, d, k in r.posted_sums(upto)]})
    yield from _hashed("trial_balance.json", iter([trial_balance]), hashes)
    manifest = _canonical({"format": BUNDLE_FORMAT, "tree_size": size,
                           "leaves": [first, end], "accounts": list(spec.accounts),
                           "files": dict(sorted(hashes.items()))})
    yield from _chunks("manifest.json", manifest)
    digest = hashlib.sha256(manifest).hexdigest()
    yield from _chunks("manifest.sig", signer.sign(f"{MANIFEST_ORIGIN}\n{digest}\n").encode())


def _hashed(path: str, parts: Iterable[bytes], hashes: dict[str, str]
            ) -> Iterator[tuple[str, bytes]]:
    """The file `path` made of `parts`, in chunks of CHUNK_BYTES (the last one shorter; one
    empty chunk for an empty file); records its SHA-256 in `hashes` once it is all out."""
    digest = hashlib.sha256()
    buffer = bytearray()
    sent = False
    for part in parts:
        digest.update(part)
        buffer += part
        if len(buffer) >= CHUNK_BYTES:
            taken = 0
            while len(buffer) - taken >= CHUNK_BYTES:
                yield path, bytes(buffer[taken:taken + CHUNK_BYTES])
                taken += CHUNK_BYTES
            del buffer[:taken]
            sent = True
    if buffer or not sent:
        yield path, bytes(buffer)
    hashes[path] = digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Leaves and the proof: one pass over the log


class _Positions:
    """The entry positions that the exported leaves recorded, as a bitmap from the smallest
    to the largest (a million entries take 125 kB), with the smallest, largest and count."""

    __slots__ = ("_base", "_bits", "count", "first", "last")

    def __init__(self) -> None:
        self._base = 0
        self._bits = bytearray()
        self.count = 0
        self.first: int | None = None
        self.last: int | None = None

    def add(self, position: int) -> None:
        base = position - position % 8
        if self.first is None:
            self._base = base
        elif base < self._base:
            self._bits[:0] = bytes((self._base - base) // 8)
            self._base = base
        byte, bit = divmod(position - self._base, 8)
        if byte >= len(self._bits):
            self._bits.extend(bytes(byte + 1 - len(self._bits)))
        if not self._bits[byte] >> bit & 1:
            self._bits[byte] |= 1 << bit
            self.count += 1
        self.first = position if self.first is None else min(self.first, position)
        self.last = position if self.last is None else max(self.last, position)

    def __contains__(self, position: int) -> bool:
        byte, bit = divmod(position - self._base, 8)
        return 0 <= byte < len(self._bits) and bool(self._bits[byte] >> bit & 1)


class _Proof:
    """proof.json, computed while the leaf hashes of the whole tree stream past (`add` each in
    order): the compact range left of the period, the aligned subtree roots right of it and,
    when asked, the root of the previous tree and the consistency proof from it. Every range
    it needs is rooted by its own `RootBuilder`, so memory is O(log n) per range."""

    def __init__(self, size: int, first: int, end: int, previous: int | None) -> None:
        self.size, self.first, self.end, self.previous = size, first, end, previous
        self._left = RootBuilder()
        self._right = [(start, start + (1 << height))
                       for start, height in aligned_subtrees(end, size)]
        ranges = list(self._right)
        if previous is not None:
            ranges.append((0, previous))

            def needed(start: int, stop: int) -> bytes:
                ranges.append((start, stop))
                return EMPTY_ROOT  # only the ranges matter here, not the hashes

            build_consistency_proof(previous, size, needed)
        self._pending = sorted(set(ranges), reverse=True)  # the next to start is last
        self._active: list[tuple[int, int, RootBuilder]] = []  # (start, stop, builder)
        self._roots: dict[tuple[int, int], bytes] = {}
        self._count = 0

    def add(self, leaf_hash: bytes) -> None:
        index = self._count
        self._count += 1
        if index < self.first:
            self._left.append(leaf_hash)
        pending = self._pending
        while pending and pending[-1][0] == index:
            start, stop = pending.pop()
            self._active.append((start, stop, RootBuilder()))
        if not self._active:
            return
        finished = False
        for _, stop, builder in self._active:
            builder.append(leaf_hash)
            finished = finished or stop == index + 1
        if finished:
            for start, stop, builder in self._active:
                if stop == index + 1:
                    self._roots[(start, stop)] = builder.root()
            self._active = [a for a in self._active if a[1] != index + 1]

    def body(self) -> bytes:
        if self._count != self.size:
            raise AssertionError(f"the log gave {self._count} leaves, not {self.size}")
        body: dict[str, Any] = {
            "tree_size": self.size,
            "left": [h.hex() for h in self._left.compact_range()],
            "right": [[self._roots[(start, stop)].hex(), (stop - start).bit_length() - 1]
                      for start, stop in self._right],
            "previous": None,
        }
        if self.previous is not None:
            body["previous"] = {
                "tree_size": self.previous, "root": self._roots[(0, self.previous)].hex(),
                "consistency": [h.hex() for h in build_consistency_proof(
                    self.previous, self.size, lambda a, b: self._roots[(a, b)])]}
        return _canonical(body)


def _leaves(r: LedgerReader, size: int, first: int, end: int, proof: _Proof,
            positions: _Positions) -> Iterator[bytes]:
    """leaves.jsonl: every leaf of the tree goes to the proof; those of the period are written,
    and the entry positions they recorded noted."""
    leaves = r.iter_audit(0, size)
    try:
        for leaf in leaves:
            proof.add(leaf.leaf_hash)
            if not first <= leaf.index < end:
                continue
            record = json.loads(leaf.leaf)
            for effect in record.get("effects", []):
                if effect[0] == "entry":
                    positions.add(effect[1])
            yield _canonical({"index": leaf.index,
                              "leaf": base64.b64encode(leaf.leaf).decode()}) + b"\n"
    finally:
        leaves.close()


# ---------------------------------------------------------------------------------------------
# Entries and statements


def _entries(r: LedgerReader, positions: _Positions, accounts: set[str]) -> Iterator[bytes]:
    """entries.jsonl: the entries the leaves recorded (touching `accounts`, when given), in
    position order, read a page at a time."""
    if positions.first is None or positions.last is None:
        return
    cursor = positions.first - 1
    while cursor < positions.last:
        batch = r.entries_after(cursor, ENTRY_BATCH)
        if not batch:
            break
        cursor = batch[-1].seq
        for entry in batch:
            if entry.seq in positions and (
                    not accounts or any(p.account_id in accounts for p in entry.postings)):
                yield _canonical(entry.canonical()) + b"\n"


def _posted(r: LedgerReader, positions: _Positions, account_id: str | None = None
            ) -> Iterator[PostedLine]:
    """The posted lines of the recorded entries, by account then position."""
    if positions.first is None or positions.last is None:
        return
    lines = r.iter_posted_lines(positions.first, positions.last, account_id)
    try:
        every = positions.count == positions.last - positions.first + 1
        for line in lines:
            if every or line.posting.entry_seq in positions:
                yield line
    finally:
        lines.close()


@dataclass
class _Account:
    """What a statement says before its entries, from one pass over the account's lines."""

    account_id: str
    currency: str
    owner_name: str
    totals: LineTotals
    first: PostedLine | None = None

    @staticmethod
    def summed(account_id: str, currency: str, owner_name: str,
               lines: Iterable[PostedLine]) -> _Account:
        account = _Account(account_id, currency, owner_name, LineTotals())
        for line in lines:
            if account.first is None:
                account.first = line
            account.totals.add(line.posting.side.value, line.posting.amount)
        return account


def _statements(r: LedgerReader, positions: _Positions, spec: ExportSpec,
                owners: dict[str, tuple[str, str]], clock: Clock
                ) -> Iterator[tuple[str, Iterator[bytes]]]:
    """(path, parts) per statement; the caller must consume each file's parts before asking
    for the next file."""
    now = datetime.fromtimestamp(clock.now_ns() // 1_000_000_000, UTC)
    if spec.accounts:
        for account_id in sorted(spec.accounts):
            currency, owner_name = owners[account_id]
            account = _Account.summed(account_id, currency, owner_name,
                                      _posted(r, positions, account_id))
            yield (f"statements/{account_id}.xml",
                   _statement(r, account, _posted(r, positions, account_id), spec, now, clock))
        return
    # Two cursors in step: the one ahead sums an account, the one behind writes it.
    ahead = groupby(_posted(r, positions), key=lambda line: line.posting.account_id)
    behind = groupby(_posted(r, positions), key=lambda line: line.posting.account_id)
    for (account_id, summing), (same_id, writing) in zip(ahead, behind, strict=True):
        assert account_id == same_id
        first = next(summing)
        account = _Account.summed(account_id, first.account_currency,
                                  f"{first.owner_kind}:{first.owner_id}", chain([first], summing))
        yield f"statements/{account_id}.xml", _statement(r, account, writing, spec, now, clock)


def _statement(r: LedgerReader, account: _Account, lines: Iterator[PostedLine],
               spec: ExportSpec, now: datetime, clock: Clock) -> Iterator[bytes]:
    first = account.first
    if first is not None:  # the balance right before the first line, from its running totals
        after = first.posting.totals_after
        signed = first.posting.amount if first.posting.side is Side.CREDIT else \
            -first.posting.amount
        opening = after.credits_posted - after.debits_posted - signed
    else:
        totals = r.totals_as_of(account.account_id, spec.start_ns or 0)
        opening = totals.credits_posted - totals.debits_posted
    t = account.totals
    statement = Statement(
        statement_id=f"S{now:%Y%m%d%H%M%S}-"
                     f"{hashlib.sha256(account.account_id.encode()).hexdigest()[:16]}",
        account_id=camt_account_id(account.account_id),
        currency=account.currency, exponent=exponent(account.currency),
        owner_name=account.owner_name, created=now,
        from_time=_time(spec.start_ns or (first.recorded_ns if first else 0)),
        to_time=_time(spec.end_ns or clock.now_ns()),
        opening_balance_minor=opening,
        closing_balance_minor=opening + t.credits - t.debits)
    return iter_camt053(statement, t, (StatementLine(
        entry_ref=camt_ref(line.transfer_id, f"P{line.posting.entry_seq}"),
        position=line.posting.entry_seq,
        booking_date=datetime.fromtimestamp(line.recorded_ns // 10**9, UTC).date(),
        value_date=line.effective_date, side=line.posting.side.value,
        amount_minor=line.posting.amount, description=line.description) for line in lines))


def _time(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC)
