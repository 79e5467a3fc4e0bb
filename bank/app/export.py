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
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bank.app.audit import sign_checkpoint
from bank.app.ports import Clock, LedgerReader, UnitOfWork
from bank.domain.accounts import Side
from bank.domain.currency import exponent
from bank.domain.entries import Effect, JournalEntry
from bank.domain.errors import NotFound, invalid
from bank.domain.merkle import RootBuilder, aligned_subtrees, consistency_proof, root
from bank.offline.camt053 import (
    Statement,
    StatementLine,
    camt_account_id,
    camt_ref,
    write_camt053,
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
    """Yield the bundle's files as (path, chunk); chunks of one file are consecutive.

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
        missing = sorted(set(spec.accounts) - {a.account_id for a in r.get_accounts(
            list(spec.accounts))})
        if missing:
            raise NotFound("ACCOUNT_NOT_FOUND", f"no account {missing[0]!r}",
                           metadata={"account_id": missing[0]})
        first = min(r.audit_index_at(spec.start_ns), size) if spec.start_ns else 0
        if spec.previous_size is not None:  # show every leaf since the previous checkpoint
            first = min(first, spec.previous_size)
        end = min(r.audit_index_at(spec.end_ns), size) if spec.end_ns is not None else size
        end = max(end, first)
        files = [("checkpoint.txt", checkpoint.note.encode())]
        files.append(("proof.json", _proof(r, size, first, end, spec.previous_size)))
        seqs: list[int] = []
        yield from _hashed("leaves.jsonl", _leaves(r, first, end, seqs), hashes)
        if progress:
            progress(f"exported audit leaves {first}..{end - 1}")
        entries = _entries(r, seqs, set(spec.accounts))
        yield from _hashed("entries.jsonl", (_canonical(e.canonical()) + b"\n"
                                             for e in entries), hashes)
        for path, data in _statements(r, entries, spec, clock):
            files.append((path, data))
        upto = max(seqs) if seqs else 0  # the trial balance as of the period's last entry
        files.append(("trial_balance.json", _canonical({
            "upto_position": upto,
            "currencies": [{"currency": c, "debits_posted": d, "credits_posted": k}
                           for c, d, k in r.posted_sums(upto)]})))
    for path, data in files:
        yield from _hashed(path, iter([data]), hashes)
    manifest = _canonical({"format": BUNDLE_FORMAT, "tree_size": size,
                           "leaves": [first, end], "accounts": list(spec.accounts),
                           "files": dict(sorted(hashes.items()))})
    yield from _chunks("manifest.json", manifest)
    digest = hashlib.sha256(manifest).hexdigest()
    yield from _chunks("manifest.sig", signer.sign(f"{MANIFEST_ORIGIN}\n{digest}\n").encode())


def _hashed(path: str, parts: Iterator[bytes], hashes: dict[str, str]
            ) -> Iterator[tuple[str, bytes]]:
    digest = hashlib.sha256()
    empty = True
    for part in parts:
        digest.update(part)
        empty = False
        yield from _chunks(path, part)
    if empty:
        yield path, b""
    hashes[path] = digest.hexdigest()


def _leaves(r: LedgerReader, first: int, end: int, seqs: list[int]) -> Iterator[bytes]:
    leaves = r.iter_audit(first, end)
    try:
        for leaf in leaves:
            record = json.loads(leaf.leaf)
            seqs.extend(e[1] for e in record.get("effects", []) if e[0] == "entry")
            yield _canonical({"index": leaf.index,
                              "leaf": base64.b64encode(leaf.leaf).decode()}) + b"\n"
    finally:
        leaves.close()


def _proof(r: LedgerReader, size: int, first: int, end: int, previous: int | None) -> bytes:
    leaf_hashes = [leaf.leaf_hash for leaf in r.iter_audit(0, size)]
    body: dict[str, Any] = {
        "tree_size": size,
        "left": [h.hex() for h in RootBuilder(leaf_hashes[:first]).compact_range()],
        "right": [[root(leaf_hashes[start:start + (1 << height)]).hex(), height]
                  for start, height in aligned_subtrees(end, size)],
        "previous": None,
    }
    if previous is not None:
        body["previous"] = {
            "tree_size": previous, "root": root(leaf_hashes[:previous]).hex(),
            "consistency": [h.hex() for h in consistency_proof(leaf_hashes, previous)]}
    return _canonical(body)


def _entries(r: LedgerReader, seqs: list[int], accounts: set[str]) -> list[JournalEntry]:
    if not seqs:
        return []
    wanted = set(seqs)
    out: list[JournalEntry] = []
    cursor = min(seqs) - 1
    while cursor < max(seqs):
        batch = r.entries_after(cursor, ENTRY_BATCH)
        if not batch:
            break
        cursor = batch[-1].seq
        out += [e for e in batch if e.seq in wanted and (
            not accounts or any(p.account_id in accounts for p in e.postings))]
    return out


def _statements(r: LedgerReader, entries: list[JournalEntry], spec: ExportSpec,
                clock: Clock) -> Iterator[tuple[str, bytes]]:
    lines: dict[str, list[tuple[JournalEntry, Any]]] = {}
    for entry in entries:
        for posting in entry.lines(Effect.POST):
            lines.setdefault(posting.account_id, []).append((entry, posting))
    account_ids = sorted(spec.accounts) if spec.accounts else sorted(lines)
    now = datetime.fromtimestamp(clock.now_ns() // 1_000_000_000, UTC)
    for account_id in account_ids:
        account = r.get_account(account_id)
        assert account is not None
        rows = lines.get(account_id, [])
        start = rows[0][0].recorded_ns - 1 if rows else (spec.start_ns or 0)
        opening = r.totals_as_of(account_id, start)
        balance = opening.credits_posted - opening.debits_posted
        statement_lines = []
        closing = balance
        for entry, posting in rows:
            closing += posting.amount if posting.side is Side.CREDIT else -posting.amount
            statement_lines.append(StatementLine(
                entry_ref=camt_ref(entry.transfer_id, f"P{entry.seq}"), position=entry.seq,
                booking_date=datetime.fromtimestamp(entry.recorded_ns // 10**9, UTC).date(),
                value_date=entry.effective_date, side=posting.side.value,
                amount_minor=posting.amount, description=entry.description))
        statement = Statement(
            statement_id=f"S{now:%Y%m%d%H%M%S}-{hashlib.sha256(account_id.encode()).hexdigest()[:16]}",
            account_id=camt_account_id(account_id),
            currency=account.currency, exponent=exponent(account.currency),
            owner_name=f"{account.owner_kind.value}:{account.owner_id}", created=now,
            from_time=_time(spec.start_ns or (rows[0][0].recorded_ns if rows else 0)),
            to_time=_time(spec.end_ns or clock.now_ns()),
            opening_balance_minor=balance, closing_balance_minor=closing,
            lines=statement_lines)
        yield f"statements/{account_id}.xml", write_camt053(statement)


def _time(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC)
