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
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bank.domain.audit import leaf_hash
from bank.domain.merkle import ProofError, RootBuilder, aligned_subtrees, verify_consistency
from bank.offline.camt053 import StatementError, camt_account_id, check_adds_up, read_camt053
from bank.offline.checkpoint import Checkpoint, verify_checkpoint
from bank.offline.note import NoteError, Verifier, open_note

FORMAT = "peoplesbank-audit-export/1"
MANIFEST_ORIGIN = "peoplesbank.coop/export/v1"
SIGNED = ("manifest.json", "manifest.sig")
REQUIRED = ("checkpoint.txt", "proof.json", "leaves.jsonl", "entries.jsonl", "trial_balance.json")


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
        if hashlib.sha256((bundle / name).read_bytes()).hexdigest() != digest:
            raise BundleError(f"{name}: SHA-256 does not match the manifest (file changed)")
    return manifest


def check_tree(bundle: Path, manifest: dict[str, Any], verifiers: list[Verifier],
               previous: Checkpoint | None) -> tuple[Checkpoint, list[dict[str, Any]]]:
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
    records = []
    for number, line in enumerate((bundle / "leaves.jsonl").read_bytes().splitlines()):
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
        records.append(record)
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
    return checkpoint, records


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


def check_entries(bundle: Path, records: list[dict[str, Any]],
                  complete: bool) -> dict[str, list[Line]]:
    """Every entry was recorded by an exported leaf and balances; when the bundle is not
    narrowed to some accounts, every entry the leaves recorded is present too."""
    audited = {e[1]: e[2] for r in records for e in r.get("effects", []) if e[0] == "entry"}
    by_account: dict[str, list[Line]] = defaultdict(list)
    seen: set[int] = set()
    last_position = 0
    for number, line in enumerate((bundle / "entries.jsonl").read_bytes().splitlines()):
        entry = json.loads(line)
        if entry["position"] <= last_position:
            raise BundleError(f"entries.jsonl line {number + 1}: entry {entry['position']} is "
                              "out of order or duplicated")
        last_position = entry["position"]
        digest = hashlib.sha256(json.dumps(entry, sort_keys=True, separators=(",", ":"),
                                           ensure_ascii=False).encode()).hexdigest()
        if audited.get(entry["position"]) != digest:
            raise BundleError(f"entries.jsonl line {number + 1}: entry {entry['position']} is "
                              "not the one an exported audit leaf recorded")
        seen.add(entry["position"])
        net: dict[tuple[str, str], int] = defaultdict(int)
        for _, account, side, amount, currency, effect, debits, credits, *_ in entry["postings"]:
            if amount <= 0:
                raise BundleError(f"entry {entry['position']}: a posting is not positive")
            net[(effect, currency)] += amount if side == "D" else -amount
            if effect == "post":
                by_account[account].append(Line(entry["position"], side, amount, currency,
                                                credits - debits))
        if any(net.values()):
            raise BundleError(f"entry {entry['position']}: postings do not balance")
    missing = sorted(set(audited) - seen)
    if complete and missing:
        raise BundleError(f"entry {missing[0]} recorded by an exported audit leaf is missing "
                          "from entries.jsonl")
    return by_account


def check_statements(bundle: Path, by_account: dict[str, list[Line]],
                     accounts: list[str]) -> int:
    """A statement for every account with posted lines (or every account the bundle was
    narrowed to); each in the postings' currency, adding up, and opening and closing at the
    balances the entries' running totals give."""
    present = {p.name.removesuffix(".xml"): p for p in (bundle / "statements").glob("*.xml")}
    wanted = set(accounts) if accounts else set(by_account)
    absent = sorted(wanted - set(present))
    if absent:
        raise BundleError(f"statements/{absent[0]}.xml is missing")
    for account_id, path in sorted(present.items()):
        try:
            statement = read_camt053(path.read_bytes())
            check_adds_up(statement)
        except StatementError as error:
            raise BundleError(f"statements/{path.name}: {error}") from None
        if statement.account_id != camt_account_id(account_id):
            raise BundleError(f"statements/{path.name}: the statement is for another account")
        lines = by_account.get(account_id, [])
        if [(s.position, s.side, s.amount_minor) for s in statement.lines] != [
                (x.position, x.side, x.amount) for x in lines]:
            raise BundleError(f"statements/{path.name}: lines do not match the entries")
        if lines:
            first = lines[0]
            opening = first.after - (first.amount if first.side == "C" else -first.amount)
            if statement.currency != first.currency:
                raise BundleError(f"statements/{path.name}: currency {statement.currency} is "
                                  f"not the postings' {first.currency}")
            if (statement.opening_balance_minor, statement.closing_balance_minor) != (
                    opening, lines[-1].after):
                raise BundleError(f"statements/{path.name}: opening or closing balance does not "
                                  "match the entries' running totals")
    return len(present)


def check_trial_balance(bundle: Path, by_account: dict[str, list[Line]],
                        from_start: bool) -> None:
    """Balanced per currency; for a bundle of the whole log, also equal to the entries."""
    body = _json(bundle / "trial_balance.json")
    for row in body["currencies"]:
        if row["debits_posted"] != row["credits_posted"]:
            raise BundleError(f"trial_balance.json: {row['currency']} debits "
                              f"{row['debits_posted']} differ from credits "
                              f"{row['credits_posted']}")
    if not from_start:
        return
    totals: dict[str, int] = defaultdict(int)
    for lines in by_account.values():
        for line in lines:
            if line.position <= body["upto_position"] and line.side == "D":
                totals[line.currency] += line.amount
    claimed = {row["currency"]: row["debits_posted"] for row in body["currencies"]}
    if claimed != dict(totals):
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
        checkpoint, records = check_tree(bundle, manifest, verifiers, previous)
        accounts = list(manifest.get("accounts", []))
        by_account = check_entries(bundle, records, complete=not accounts)
        statements = check_statements(bundle, by_account, accounts)
        check_trial_balance(bundle, by_account, manifest["leaves"][0] == 0 and not accounts)
    except (KeyError, TypeError, ValueError, IndexError, OSError, AttributeError) as error:
        raise BundleError(f"malformed bundle: {type(error).__name__}: {error}") from None
    return (f"bundle verified: tree size {checkpoint.size}, {len(records)} audit leaves, "
            f"{sum(map(len, by_account.values()))} posted lines, {statements} statements")


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
