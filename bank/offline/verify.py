"""Offline verifier for regulator export bundles.

    python -m bank.offline.verify BUNDLE_DIR --key KEYS_FILE [--previous CHECKPOINT_FILE]

KEYS_FILE holds pinned verifier keys, one per line (`bank audit keys` prints them); keys that
arrive inside a bundle are never trusted. --previous is a checkpoint accepted earlier: the
bundle must prove that its tree extends it. Exit status 0 means every check passed; 1 means
the bundle is refused, with the reason on stderr; 2 means the command was used wrongly.

Checks, in order: the manifest's signature; that the bundle holds exactly the files the
manifest lists, each with its SHA-256; the checkpoint's signature; that the audit leaves are
contiguous and, with the proof's left and right subtree roots, rebuild the checkpoint's root;
consistency with the previous checkpoint; that every entry was recorded by an exported leaf and
balances per currency; that every statement adds up and matches the entries; that the trial
balance balances. Only the standard library and `cryptography` are needed.

Memory does not grow with the number of leaves, entries or lines: files are hashed and read in
chunks or a line at a time, the Merkle root is rebuilt in O(log n), entries are matched to the
leaves that recorded them by merging the two files in position order (read a second time), and
each statement is compared with the entries through a digest of each account's lines, kept per
account with its first line and running totals.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bank.domain.audit import leaf_hash
from bank.domain.merkle import ProofError, RootBuilder, aligned_subtrees, verify_consistency
from bank.offline.camt053 import (
    AddsUp,
    StatementError,
    StatementLine,
    camt_account_id,
    read_camt053,
    scan_camt053,
)
from bank.offline.checkpoint import Checkpoint, verify_checkpoint
from bank.offline.note import NoteError, Verifier, open_note

FORMAT = "peoplesbank-audit-export/1"
MANIFEST_ORIGIN = "peoplesbank.coop/export/v1"
SIGNED = ("manifest.json", "manifest.sig")
REQUIRED = ("checkpoint.txt", "proof.json", "leaves.jsonl", "entries.jsonl", "trial_balance.json")
READ_CHUNK = 1 << 20
SMALL_STATEMENT = 1 << 20  # bytes: larger statements are read as a stream (three passes)


class BundleError(Exception):
    """The bundle is refused; the message says exactly why."""


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        raise BundleError(f"{path.name}: not readable JSON ({error})") from None


def _hex(value: Any, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except (TypeError, ValueError):
        raise BundleError(f"{what} is not a hex hash") from None
    if len(raw) != 32:
        raise BundleError(f"{what} is not a SHA-256 hash")
    return raw


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _lines(path: Path) -> Iterator[bytes]:
    """`path.read_bytes().splitlines()`, a line at a time."""
    with path.open("rb") as handle:
        for line in handle:
            yield from line.splitlines()


def check_manifest(bundle: Path, verifiers: list[Verifier]) -> dict[str, Any]:
    try:
        text, _ = open_note((bundle / "manifest.sig").read_text(), verifiers)
    except (OSError, NoteError) as error:
        raise BundleError(f"manifest.sig: {error}") from None
    manifest_bytes = (bundle / "manifest.json").read_bytes()
    if text != f"{MANIFEST_ORIGIN}\n{hashlib.sha256(manifest_bytes).hexdigest()}\n":
        raise BundleError("manifest.sig does not sign this manifest.json")
    manifest: dict[str, Any] = _json(bundle / "manifest.json")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"unknown bundle format {manifest.get('format')!r}")
    listed = dict(manifest.get("files", {}))
    absent = sorted(set(REQUIRED) - set(listed))
    if absent:
        raise BundleError(f"the manifest does not list {absent[0]}")
    present = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    extra = sorted(present - set(listed) - set(SIGNED))
    missing = sorted(set(listed) - present)
    if extra:
        raise BundleError(f"file not in the manifest: {extra[0]}")
    if missing:
        raise BundleError(f"file listed in the manifest is missing: {missing[0]}")
    for name, digest in sorted(listed.items()):
        if _sha256(bundle / name) != digest:
            raise BundleError(f"{name}: SHA-256 does not match the manifest (file changed)")
    return manifest


@dataclass
class Tree:
    """What `check_tree` found: the checkpoint, the number of leaves, and whether the entry
    positions the leaves record are plain increasing integers (then entries are matched to
    them by a merge; otherwise by a table, as a bundle made by hand may need)."""

    checkpoint: Checkpoint
    leaves: int
    ordered: bool


def check_tree(bundle: Path, manifest: dict[str, Any], verifiers: list[Verifier],
               previous: Checkpoint | None) -> Tree:
    try:
        checkpoint = verify_checkpoint((bundle / "checkpoint.txt").read_text(), verifiers)
    except NoteError as error:
        raise BundleError(f"checkpoint.txt: {error}") from None
    first, end = manifest["leaves"]
    if checkpoint.size != manifest["tree_size"] or not 0 <= first <= end <= checkpoint.size:
        raise BundleError("the manifest's leaf range does not fit the checkpoint")
    proof = _json(bundle / "proof.json")
    try:
        builder = RootBuilder.from_compact_range(
            first, [_hex(h, "proof.left") for h in proof["left"]])
    except ProofError as error:
        raise BundleError(f"proof.json: {error}") from None
    count = 0
    ordered, last_position = True, 0
    for number, line in enumerate(_lines(bundle / "leaves.jsonl")):
        item = json.loads(line)
        if item["index"] != first + number:
            raise BundleError(f"leaves.jsonl line {number + 1}: leaf {item['index']} where "
                              f"{first + number} was expected (not contiguous)")
        try:
            data = base64.b64decode(item["leaf"], validate=True)
        except binascii.Error:
            raise BundleError(f"leaf {item['index']} is not base64") from None
        record = json.loads(data)
        if record.get("index") != item["index"]:
            raise BundleError(f"leaf {item['index']} says it is leaf {record.get('index')}")
        builder.append(leaf_hash(data))
        count += 1
        if ordered:
            ordered, last_position = _ordered(record, last_position)
    if previous is not None and first > previous.size:
        raise BundleError(f"the bundle starts at leaf {first}, after the previous checkpoint's "
                          f"{previous.size} leaves: leaves in between would go unseen")
    if builder.size != end:
        raise BundleError(f"leaves.jsonl has {builder.size - first} leaves; the manifest says "
                          f"{end - first} (truncated or padded)")
    expected = aligned_subtrees(end, checkpoint.size)
    if len(proof["right"]) != len(expected):
        raise BundleError("proof.json: wrong number of subtree roots right of the leaves")
    for (value, height), (_, wanted) in zip(proof["right"], expected, strict=True):
        if height != wanted:
            raise BundleError("proof.json: a right subtree has the wrong height")
        builder.append_subtree(_hex(value, "proof.right"), height)
    if builder.root() != checkpoint.root:
        raise BundleError("the leaves are not included in the checkpoint: the rebuilt root "
                          "differs (a leaf was edited, removed, added or reordered)")
    _check_previous(proof.get("previous"), previous, checkpoint)
    return Tree(checkpoint, count, ordered)


def _ordered(record: dict[str, Any], last: int) -> tuple[bool, int]:
    """Whether the entries `record` records are well-formed at strictly increasing integer
    positions after `last`, and the last of them."""
    try:
        for effect in record.get("effects", []):
            if effect[0] != "entry":
                continue
            position = effect[1]
            if type(position) is not int or position <= last:
                return False, last
            _ = effect[2]
            last = position
    except (KeyError, TypeError, IndexError, AttributeError):
        return False, last
    return True, last


def _recorded(bundle: Path) -> Iterator[tuple[Any, Any]]:
    """(position, digest) of every entry the leaves record, in leaf order (the leaves were
    checked by `check_tree`)."""
    for line in _lines(bundle / "leaves.jsonl"):
        record = json.loads(base64.b64decode(json.loads(line)["leaf"], validate=True))
        for effect in record.get("effects", []):
            if effect[0] == "entry":
                yield effect[1], effect[2]


def _check_previous(claimed: dict[str, Any] | None, previous: Checkpoint | None,
                    checkpoint: Checkpoint) -> None:
    if previous is None:
        return
    if claimed is None:
        raise BundleError("a previous checkpoint was given but the bundle has no consistency "
                          "proof from it")
    if claimed["tree_size"] != previous.size or _hex(claimed["root"], "previous root") != \
            previous.root:
        raise BundleError("the bundle's consistency proof starts from another checkpoint than "
                          "the one accepted before")
    try:
        verify_consistency(previous.size, checkpoint.size,
                           [_hex(h, "consistency") for h in claimed["consistency"]],
                           previous.root, checkpoint.root)
    except ProofError as error:
        raise BundleError(f"not consistent with the previous checkpoint (a fork or a "
                          f"rewrite): {error}") from None


@dataclass
class Line:
    position: int
    side: str
    amount: int
    currency: str
    after: int  # the account's posted credits minus debits right after this line


def _key(value: Any) -> str:
    """A value as the comparison of lines sees it: equal numbers alike (1 == 1.0 == True)."""
    if isinstance(value, bool) or (isinstance(value, float) and value.is_integer()):
        value = int(value)
    return repr(value)


def _line_digest_part(position: Any, side: Any, amount: Any) -> bytes:
    return f"{_key(position)}\x1f{_key(side)}\x1f{_key(amount)}\x1e".encode()


@dataclass
class AccountLines:
    """An account's posted lines in the entries, without keeping them: how many, the first,
    the balance after the last, and a digest of (position, side, amount) of each in order."""

    count: int = 0
    first: Line | None = None
    last_after: int = 0
    digest: Any = field(default_factory=hashlib.sha256)

    def add(self, line: Line) -> None:
        self.count += 1
        if self.first is None:
            self.first = line
        self.last_after = line.after
        self.digest.update(_line_digest_part(line.position, line.side, line.amount))


@dataclass
class Entries:
    """What `check_entries` keeps: the accounts' lines, and posted debits per currency up to
    the trial balance's position (when that could be read beforehand)."""

    by_account: dict[str, AccountLines]
    upto: int | None
    debits: dict[str, int]

    @property
    def lines(self) -> int:
        return sum(a.count for a in self.by_account.values())


def _upto(bundle: Path) -> int | None:
    """trial_balance.json's upto_position when it is an integer, else None (then
    `check_trial_balance` reads the entries again, and reports what is wrong in its turn)."""
    try:
        upto = json.loads((bundle / "trial_balance.json").read_bytes())["upto_position"]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    return upto if type(upto) is int else None


def _posted_lines(entry: dict[str, Any]) -> Iterator[tuple[str, Line]]:
    for _, account, side, amount, currency, effect, debits, credits, *_ in entry["postings"]:
        if effect == "post":
            yield account, Line(entry["position"], side, amount, currency, credits - debits)


def check_entries(bundle: Path, tree: Tree, complete: bool) -> Entries:
    """Every entry was recorded by an exported leaf and balances; when the bundle is not
    narrowed to some accounts, every entry the leaves recorded is present too."""
    recorded = _recorded(bundle)
    table: dict[Any, Any] | None = None
    seen: set[Any] = set()
    if not tree.ordered:  # a table of what the leaves record, as a bundle made by hand needs
        table = {position: digest for position, digest in recorded}
    head = None if table is not None else next(recorded, None)  # the next unmatched record
    first_missing: Any = None
    upto = _upto(bundle)
    result = Entries(defaultdict(AccountLines), upto, defaultdict(int))
    last_position = 0
    for number, line in enumerate(_lines(bundle / "entries.jsonl")):
        entry = json.loads(line)
        position = entry["position"]
        if position <= last_position:
            raise BundleError(f"entries.jsonl line {number + 1}: entry {position} is "
                              "out of order or duplicated")
        last_position = position
        digest = hashlib.sha256(json.dumps(entry, sort_keys=True, separators=(",", ":"),
                                           ensure_ascii=False).encode()).hexdigest()
        if table is not None:
            audited = table.get(position)
            seen.add(position)
        else:  # both in increasing position order: a record passed over is missing
            while head is not None and head[0] < position:
                first_missing = head[0] if first_missing is None else first_missing
                head = next(recorded, None)
            audited = None
            if head is not None and head[0] == position:
                audited, head = head[1], next(recorded, None)
        if audited != digest:
            raise BundleError(f"entries.jsonl line {number + 1}: entry {position} is "
                              "not the one an exported audit leaf recorded")
        net: dict[tuple[str, str], int] = defaultdict(int)
        for _, account, side, amount, currency, effect, debits, credits, *_ in entry["postings"]:
            if amount <= 0:
                raise BundleError(f"entry {position}: a posting is not positive")
            net[(effect, currency)] += amount if side == "D" else -amount
            if effect == "post":
                result.by_account[account].add(
                    Line(position, side, amount, currency, credits - debits))
                if upto is not None and position <= upto and side == "D":
                    result.debits[currency] += amount
        if any(net.values()):
            raise BundleError(f"entry {position}: postings do not balance")
    if table is not None:
        missing = sorted(set(table) - seen)
        first_missing = missing[0] if missing else None
    elif first_missing is None and head is not None:
        first_missing = head[0]
    if complete and first_missing is not None:
        raise BundleError(f"entry {first_missing} recorded by an exported audit leaf is missing "
                          "from entries.jsonl")
    return result


def check_statements(bundle: Path, entries: Entries, accounts: list[str]) -> int:
    """A statement for every account with posted lines (or every account the bundle was
    narrowed to); each in the postings' currency, adding up, and opening and closing at the
    balances the entries' running totals give."""
    by_account = entries.by_account
    present = {p.name.removesuffix(".xml"): p for p in (bundle / "statements").glob("*.xml")}
    wanted = set(accounts) if accounts else set(by_account)
    absent = sorted(wanted - set(present))
    if absent:
        raise BundleError(f"statements/{absent[0]}.xml is missing")
    for account_id, path in sorted(present.items()):
        tally = AddsUp()
        digest = hashlib.sha256()

        def read(line: StatementLine, tally: AddsUp = tally, digest: Any = digest) -> None:
            tally.add(line)
            digest.update(_line_digest_part(line.position, line.side, line.amount_minor))

        try:
            if path.stat().st_size <= SMALL_STATEMENT:  # one parse in memory; same checks
                statement = read_camt053(path.read_bytes())
                for line in statement.lines:
                    read(line)
            else:
                statement = scan_camt053(path, read)
            tally.check(statement)
        except StatementError as error:
            raise BundleError(f"statements/{path.name}: {error}") from None
        if statement.account_id != camt_account_id(account_id):
            raise BundleError(f"statements/{path.name}: the statement is for another account")
        lines = by_account.get(account_id, AccountLines())
        if digest.digest() != lines.digest.digest():
            raise BundleError(f"statements/{path.name}: lines do not match the entries")
        first = lines.first
        if first is not None:
            opening = first.after - (first.amount if first.side == "C" else -first.amount)
            if statement.currency != first.currency:
                raise BundleError(f"statements/{path.name}: currency {statement.currency} is "
                                  f"not the postings' {first.currency}")
            if (statement.opening_balance_minor, statement.closing_balance_minor) != (
                    opening, lines.last_after):
                raise BundleError(f"statements/{path.name}: opening or closing balance does not "
                                  "match the entries' running totals")
    return len(present)


def check_trial_balance(bundle: Path, entries: Entries, from_start: bool) -> None:
    """Balanced per currency; for a bundle of the whole log, also equal to the entries."""
    body = _json(bundle / "trial_balance.json")
    for row in body["currencies"]:
        if row["debits_posted"] != row["credits_posted"]:
            raise BundleError(f"trial_balance.json: {row['currency']} debits "
                              f"{row['debits_posted']} differ from credits "
                              f"{row['credits_posted']}")
    if not from_start:
        return
    if entries.upto is not None and entries.upto == body["upto_position"]:
        totals = dict(entries.debits)
    else:  # the position was no integer: compare as the entries come, as before
        sums: dict[str, int] = defaultdict(int)
        for line in _lines(bundle / "entries.jsonl"):
            for _, posted in _posted_lines(json.loads(line)):
                if posted.position <= body["upto_position"] and posted.side == "D":
                    sums[posted.currency] += posted.amount
        totals = dict(sums)
    claimed = {row["currency"]: row["debits_posted"] for row in body["currencies"]}
    if claimed != totals:
        raise BundleError("trial_balance.json does not match the entries")


def verify_bundle(bundle: Path, verifiers: list[Verifier],
                  previous_note: str | None = None) -> str:
    """Check everything; return a one-line summary or raise `BundleError`."""
    if not verifiers:
        raise BundleError("no pinned keys: pass the verifier keys you trust")
    previous = None
    if previous_note is not None:
        try:
            previous = verify_checkpoint(previous_note, verifiers)
        except NoteError as error:
            raise BundleError(f"the previous checkpoint: {error}") from None
    try:
        manifest = check_manifest(bundle, verifiers)
        tree = check_tree(bundle, manifest, verifiers, previous)
        accounts = list(manifest.get("accounts", []))
        entries = check_entries(bundle, tree, complete=not accounts)
        statements = check_statements(bundle, entries, accounts)
        check_trial_balance(bundle, entries, manifest["leaves"][0] == 0 and not accounts)
    except (KeyError, TypeError, ValueError, IndexError, OSError, AttributeError) as error:
        raise BundleError(f"malformed bundle: {type(error).__name__}: {error}") from None
    return (f"bundle verified: tree size {tree.checkpoint.size}, {tree.leaves} audit leaves, "
            f"{entries.lines} posted lines, {statements} statements")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="verify-bundle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--key", required=True, type=Path, help="file of pinned verifier keys")
    parser.add_argument("--previous", type=Path, help="a checkpoint accepted before")
    args = parser.parse_args(argv)
    try:
        verifiers = [Verifier.parse(line) for line in args.key.read_text().splitlines()
                     if line.strip()]
        previous = args.previous.read_text() if args.previous else None
        print(verify_bundle(args.bundle, verifiers, previous))
    except (OSError, NoteError) as error:
        print(f"verify-bundle: error: {error}", file=sys.stderr)
        return 2
    except BundleError as error:
        print(f"REFUSED: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
