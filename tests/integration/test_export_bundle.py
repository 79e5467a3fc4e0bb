"""Regulator bundles: exported from real data, verified offline with only pinned keys, and
refused, with the precise reason, after each kind of tampering."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import xmlschema
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bank.adapters.keys import KeyRing
from bank.app.export import MANIFEST_ORIGIN, ExportSpec, export_bundle
from bank.app.transfers import create_transfers
from bank.demo import seed
from bank.domain.accounts import Side
from bank.domain.entries import PostingLine, TransferKind, TransferSpec
from bank.domain.identity import Principal, Role
from bank.offline.note import Signer
from bank.offline.verify import BundleError, main, verify_bundle
from tests.helpers import CAMT053_XSD

TELLER = Principal("tess", Role.TELLER, "branch:preston")
XSD = CAMT053_XSD


def write(uow, clock, signer, out: Path, spec: ExportSpec | None = None) -> Path:
    for path, chunk in export_bundle(uow, clock, signer, spec or ExportSpec()):
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("ab") as handle:
            handle.write(chunk)
    return out


def move(uow, clock, transfer_id: str, pence: int) -> None:
    clock.advance(1)
    create_transfers(uow, clock, TELLER, transfer_id, [TransferSpec(
        transfer_id, TransferKind.POSTED, (PostingLine("m-0002-deposit", Side.DEBIT, pence, "GBP"),
                                           PostingLine("m-0003-deposit", Side.CREDIT, pence,
                                                       "GBP")))])


@pytest.fixture
def ring(tmp_path) -> KeyRing:
    ring = KeyRing(tmp_path / "keys")
    ring.rotate()
    return ring


@pytest.fixture
def bundle(uow, clock, ring, tmp_path) -> Path:
    seed(uow, clock, say=lambda _line: None)
    move(uow, clock, "later-1", 250)
    return write(uow, clock, ring.active(), tmp_path / "bundle")


def resign(bundle: Path, signer: Signer) -> None:
    """Rewrite the manifest for the files as they are now and sign it (the bank lying)."""
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    manifest["files"] = {p.relative_to(bundle).as_posix(): hashlib.sha256(p.read_bytes())
                         .hexdigest() for p in sorted(bundle.rglob("*")) if p.is_file()
                         and p.name not in ("manifest.json", "manifest.sig")}
    data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    (bundle / "manifest.json").write_bytes(data)
    (bundle / "manifest.sig").write_text(
        signer.sign(f"{MANIFEST_ORIGIN}\n{hashlib.sha256(data).hexdigest()}\n"))


def refused(bundle: Path, ring: KeyRing, previous: str | None = None) -> str:
    with pytest.raises(BundleError) as caught:
        verify_bundle(bundle, ring.verifiers(), previous)
    return str(caught.value)


def test_a_bundle_from_real_data_verifies_with_only_the_pinned_key(bundle, ring, tmp_path,
                                                                    capsys):
    keys = tmp_path / "pinned.txt"
    keys.write_text("\n".join(v.encode() for v in ring.verifiers()) + "\n")
    assert main([str(bundle), "--key", str(keys)]) == 0
    assert capsys.readouterr().out.startswith("bundle verified: tree size")


def test_every_statement_validates_against_the_iso20022_schema(bundle):
    schema = xmlschema.XMLSchema(str(XSD))
    statements = sorted((bundle / "statements").glob("*.xml"))
    assert statements
    for path in statements:
        schema.validate(str(path))


def test_a_changed_file_is_refused(bundle, ring):
    path = bundle / "trial_balance.json"
    path.write_bytes(path.read_bytes().replace(b'"upto_position"', b'"upto_position" '))
    assert "trial_balance.json: SHA-256 does not match the manifest" in refused(bundle, ring)


def test_an_added_file_is_refused(bundle, ring):
    (bundle / "statements" / "extra.xml").write_text("<x/>")
    assert "file not in the manifest: statements/extra.xml" in refused(bundle, ring)


def test_a_removed_file_is_refused(bundle, ring):
    (bundle / "statements" / "m-0003-deposit.xml").unlink()
    assert "missing: statements/m-0003-deposit.xml" in refused(bundle, ring)


def test_swapped_statements_are_refused_even_when_re_signed(bundle, ring):
    a, b = (bundle / "statements" / "m-0002-deposit.xml",
            bundle / "statements" / "m-0003-deposit.xml")
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    assert "SHA-256 does not match" in refused(bundle, ring)
    resign(bundle, ring.active())
    assert "the statement is for another account" in refused(bundle, ring)


def test_a_forged_manifest_signature_is_refused(bundle, ring):
    impostor = Signer(ring.active().name, Ed25519PrivateKey.generate())
    resign(bundle, impostor)
    assert "manifest.sig: no signature by a pinned key" in refused(bundle, ring)


def test_a_signature_by_an_unknown_key_is_refused(bundle, ring):
    resign(bundle, Signer("someone-else", Ed25519PrivateKey.generate()))
    assert "no signature by a pinned key" in refused(bundle, ring)


def test_keys_shipped_inside_the_bundle_are_not_trusted(bundle, ring):
    impostor = Signer("bank-key", Ed25519PrivateKey.generate())
    (bundle / "pinned-keys.txt").write_text(impostor.verifier.encode())
    resign(bundle, impostor)
    assert "no signature by a pinned key" in refused(bundle, ring)


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_an_edited_leaf_is_refused(bundle, ring):
    path = bundle / "leaves.jsonl"
    lines = _lines(path)
    item = json.loads(lines[2])
    leaf = json.loads(base64.b64decode(item["leaf"]))
    leaf["principal"]["subject"] = "mallory"
    item["leaf"] = base64.b64encode(json.dumps(leaf).encode()).decode()
    lines[2] = json.dumps(item).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    resign(bundle, ring.active())
    assert "the leaves are not included in the checkpoint" in refused(bundle, ring)


def test_a_deleted_leaf_is_refused(bundle, ring):
    path = bundle / "leaves.jsonl"
    lines = _lines(path)
    del lines[1]
    path.write_bytes(b"".join(lines))
    resign(bundle, ring.active())
    assert "not contiguous" in refused(bundle, ring)


def test_reordered_leaves_are_refused(bundle, ring):
    path = bundle / "leaves.jsonl"
    lines = _lines(path)
    lines[1], lines[2] = lines[2], lines[1]
    path.write_bytes(b"".join(lines))
    resign(bundle, ring.active())
    assert "not contiguous" in refused(bundle, ring)


def test_a_truncated_tail_is_refused(bundle, ring):
    path = bundle / "leaves.jsonl"
    path.write_bytes(b"".join(_lines(path)[:-1]))
    resign(bundle, ring.active())
    assert "truncated or padded" in refused(bundle, ring)


def test_a_duplicated_entry_is_refused(bundle, ring):
    path = bundle / "entries.jsonl"
    lines = _lines(path)
    path.write_bytes(b"".join([*lines, lines[-1]]))
    resign(bundle, ring.active())
    assert "out of order or duplicated" in refused(bundle, ring)


def test_an_inserted_or_edited_entry_is_refused(bundle, ring):
    path = bundle / "entries.jsonl"
    lines = _lines(path)
    entry = json.loads(lines[0])
    entry["postings"][0][3] += 1
    entry["postings"][1][3] += 1
    lines[0] = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    resign(bundle, ring.active())
    assert "is not the one an exported audit leaf recorded" in refused(bundle, ring)


def test_a_statement_that_does_not_add_up_is_refused(bundle, ring):
    path = bundle / "statements" / "m-0003-deposit.xml"
    text = path.read_text()
    closing = text.index("CLBD")
    amount_start = text.index(">", text.index("<Amt", closing)) + 1
    amount_end = text.index("<", amount_start)
    text = text[:amount_start] + "999999.99" + text[amount_end:]
    path.write_text(text)
    resign(bundle, ring.active())
    assert "statements/m-0003-deposit.xml" in refused(bundle, ring)


def test_an_unbalanced_trial_balance_is_refused(bundle, ring):
    path = bundle / "trial_balance.json"
    body = json.loads(path.read_bytes())
    body["currencies"][0]["credits_posted"] += 1
    path.write_text(json.dumps(body))
    resign(bundle, ring.active())
    assert "trial_balance.json: GBP debits" in refused(bundle, ring)


def test_a_later_bundle_proves_it_extends_the_previous_checkpoint(uow, clock, ring, bundle,
                                                                  tmp_path):
    previous = (bundle / "checkpoint.txt").read_text()
    move(uow, clock, "later-2", 300)
    size = int(previous.split("\n")[1])
    second = write(uow, clock, ring.active(), tmp_path / "second",
                   ExportSpec(start_ns=clock.now_ns() - 10**9 // 2, previous_size=size))
    assert verify_bundle(second, ring.verifiers(), previous).startswith("bundle verified")


def test_a_fork_from_the_previous_checkpoint_is_refused(uow, clock, ring, bundle, tmp_path):
    previous = (bundle / "checkpoint.txt").read_text()
    size = int(previous.split("\n")[1])
    move(uow, clock, "later-2", 300)
    second = write(uow, clock, ring.active(), tmp_path / "second",
                   ExportSpec(previous_size=size - 1))
    assert "starts from another checkpoint" in refused(second, ring, previous)
    proof_path = second / "proof.json"
    proof = json.loads(proof_path.read_bytes())
    proof["previous"]["tree_size"] = size
    proof["previous"]["root"] = base64.b64decode(
        previous.split("\n")[2]).hex()
    proof_path.write_text(json.dumps(proof))
    resign(second, ring.active())
    assert "not consistent with the previous checkpoint" in refused(second, ring, previous)


def test_a_bundle_for_one_account_carries_only_its_entries(uow, clock, ring, bundle, tmp_path):
    one = write(uow, clock, ring.active(), tmp_path / "one",
                ExportSpec(accounts=("m-0003-deposit",)))
    assert [p.name for p in (one / "statements").glob("*.xml")] == ["m-0003-deposit.xml"]
    assert verify_bundle(one, ring.verifiers()).startswith("bundle verified")
    shutil.rmtree(one)


def test_a_dropped_entry_is_refused_even_when_re_signed(bundle, ring):
    path = bundle / "entries.jsonl"
    lines = _lines(path)
    path.write_bytes(b"".join(lines[:-1]))
    resign(bundle, ring.active())
    assert "missing from entries.jsonl" in refused(bundle, ring)


def test_a_dropped_statement_is_refused_even_when_re_signed(bundle, ring):
    (bundle / "statements" / "m-0002-deposit.xml").unlink()
    resign(bundle, ring.active())
    assert "statements/m-0002-deposit.xml is missing" in refused(bundle, ring)


def test_a_statement_with_a_made_up_opening_balance_is_refused(bundle, ring):
    path = bundle / "statements" / "m-0003-deposit.xml"
    text = path.read_text()
    for code in ("OPBD", "CLBD"):  # shift both balances: the statement still adds up
        at = text.index(code)
        start = text.index(">", text.index("<Amt", at)) + 1
        end = text.index("<", start)
        value = int(text[start:end].replace(".", "")) + 100_000_000
        text = text[:start] + f"{value // 100}.{value % 100:02d}" + text[end:]
    path.write_text(text)
    resign(bundle, ring.active())
    assert "opening or closing balance does not match" in refused(bundle, ring)


def test_a_balanced_but_made_up_trial_balance_is_refused(bundle, ring):
    path = bundle / "trial_balance.json"
    body = json.loads(path.read_bytes())
    body["currencies"][0]["debits_posted"] += 1
    body["currencies"][0]["credits_posted"] += 1
    path.write_text(json.dumps(body))
    resign(bundle, ring.active())
    assert "trial_balance.json does not match the entries" in refused(bundle, ring)
