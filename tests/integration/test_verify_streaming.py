"""The offline verifier streams: entries are matched to the leaves by a merge when the leaves
record them in increasing position order (always, for a bundle the bank made), and by a table
otherwise. Both ways must find the same things and refuse with the same reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bank.offline import verify
from bank.offline.verify import BundleError, Tree, check_entries, verify_bundle
from tests.integration import test_export_bundle as exported
from tests.integration.test_export_bundle import refused, resign

ring, bundle = exported.ring, exported.bundle  # the same fixtures: a bundle from real data


def entries_both_ways(bundle: Path, complete: bool = True) -> list[object]:
    outcomes: list[object] = []
    for ordered in (True, False):
        tree = Tree(checkpoint=None, leaves=0, ordered=ordered)  # type: ignore[arg-type]
        try:
            found = check_entries(bundle, tree, complete)
            outcomes.append((found.lines, found.upto, dict(found.debits), {
                account: (lines.count, lines.first, lines.last_after, lines.digest.hexdigest())
                for account, lines in found.by_account.items()}))
        except BundleError as error:
            outcomes.append(f"refused: {error}")
    return outcomes


def test_the_leaves_of_a_real_bundle_record_entries_in_order(bundle, ring):
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    assert verify.check_tree(bundle, manifest, ring.verifiers(), None).ordered
    assert verify._ordered({"effects": [["entry", 3, "x"], ["entry", 2, "y"]]}, 0) == (False, 3)
    assert verify._ordered({"effects": [["entry", 3, "x"]]}, 3)[0] is False
    assert verify._ordered({"effects": [["entry", 4.0, "x"]]}, 3)[0] is False
    assert verify._ordered({"effects": [["entry", 4]]}, 3)[0] is False
    assert verify._ordered({"effects": [["account", "a", "h"], ["entry", 4, "x"]]}, 3) == (
        True, 4)


def test_merge_and_table_agree_on_a_good_bundle(bundle):
    merged, tabled = entries_both_ways(bundle)
    assert merged == tabled
    assert not isinstance(merged, str)


@pytest.mark.parametrize("damage", ["drop first", "drop middle", "drop last", "edit"])
def test_merge_and_table_refuse_alike(bundle, damage):
    path = bundle / "entries.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    middle = len(lines) // 2
    if damage == "drop first":
        del lines[0]
    elif damage == "drop middle":
        del lines[middle]
    elif damage == "drop last":
        del lines[-1]
    else:
        entry = json.loads(lines[middle])
        entry["description"] += "!"
        lines[middle] = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    merged, tabled = entries_both_ways(bundle)
    assert merged == tabled
    assert isinstance(merged, str) and merged.startswith("refused: ")
    if damage.startswith("drop"):
        assert "missing from entries.jsonl" in merged
        assert entries_both_ways(bundle, complete=False)[0] != merged  # narrowed: allowed


def test_a_trial_balance_position_that_is_no_integer_is_compared_as_before(bundle, ring):
    path = bundle / "trial_balance.json"
    body = json.loads(path.read_bytes())
    body["upto_position"] = str(body["upto_position"])
    path.write_text(json.dumps(body))
    resign(bundle, ring.active())
    assert "malformed bundle: TypeError: '<=' not supported" in refused(bundle, ring)
    body["upto_position"] = float(int(body["upto_position"]))
    path.write_text(json.dumps(body))
    resign(bundle, ring.active())
    assert verify_bundle(bundle, ring.verifiers()).startswith("bundle verified")


@pytest.mark.parametrize("damage", ["none", "closing", "opening and closing", "line"])
def test_statements_read_whole_or_streamed_give_the_same_verdict(bundle, ring, monkeypatch,
                                                                  damage):
    path = bundle / "statements" / "m-0003-deposit.xml"
    text = path.read_text()
    codes = {"closing": ("CLBD",), "opening and closing": ("OPBD", "CLBD")}.get(damage, ())
    for code in codes:  # move the balance by a pound
        at = text.index(code)
        start = text.index(">", text.index("<Amt", at)) + 1
        end = text.index("<", start)
        value = int(text[start:end].replace(".", "")) + 100
        text = text[:start] + f"{value // 100}.{value % 100:02d}" + text[end:]
    if damage == "line":
        text = text.replace("<CdtDbtInd>CRDT</CdtDbtInd><Sts>",
                            "<CdtDbtInd>DBIT</CdtDbtInd><Sts>", 1)
    path.write_text(text)
    resign(bundle, ring.active())
    verdicts = []
    for small in (verify.SMALL_STATEMENT, 0):
        monkeypatch.setattr(verify, "SMALL_STATEMENT", small)
        try:
            verdicts.append(verify_bundle(bundle, ring.verifiers()))
        except BundleError as error:
            verdicts.append(f"refused: {error}")
    assert verdicts[0] == verdicts[1]
    assert verdicts[0].startswith("bundle verified" if damage == "none" else "refused")
