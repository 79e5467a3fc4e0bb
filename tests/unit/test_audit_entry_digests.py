"""The audit verifier's per-entry digests: what the log records is matched against the
ledger's entries in a compact array, and every way a leaf can record an entry wrongly is
named (outside the ledger's entries, a malformed digest, the same entry twice)."""

from __future__ import annotations

from bank.app.audit import AuditReport, _EntryDigests

A, B = "ab" * 32, "cd" * 32


def test_recorded_digests_are_found_and_the_missing_ones_listed_in_order():
    report = AuditReport()
    digests = _EntryDigests(limit=10)
    for seq, digest in ((1, A), (2, B), (7, A)):
        digests.record(0, seq, digest, report)
    assert report.problems == []
    assert (digests.get(1), digests.get(7), digests.get(3), digests.get(50)) == (A, A, None, None)
    assert list(digests.missing()) == [2]


def test_a_leaf_recording_an_entry_wrongly_is_named():
    report = AuditReport()
    digests = _EntryDigests(limit=5)
    digests.record(3, 0, A, report)
    digests.record(4, 5, A, report)
    digests.record(5, "1", A, report)
    digests.record(6, 1, "xyz", report)
    digests.record(7, 2, A, report)
    digests.record(8, 2, B, report)
    assert report.problems == [
        "audit leaf 3 records entry 0, outside the ledger's entries 1 to 4",
        "audit leaf 4 records entry 5, outside the ledger's entries 1 to 4",
        "audit leaf 5 records entry '1', outside the ledger's entries 1 to 4",
        "audit leaf 6 records entry 1 with a malformed digest",
        "audit leaf 8 records entry 2 a second time",
    ]
    assert digests.get(2) == B
