"""Structural rules of transfers (`validate_specs`) and their canonical fingerprints."""

from __future__ import annotations

import json
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bank.domain.accounts import Side, Totals
from bank.domain.entries import (
    Effect,
    JournalEntry,
    Posting,
    PostingLine,
    TransferKind,
    TransferSpec,
    canonical_hash,
    imbalances,
    validate_specs,
)
from bank.domain.errors import InvalidArgument
from bank.domain.limits import AMOUNT_MINOR_MAX, POSTINGS_PER_ENTRY_MAX, TOTAL_MINOR_MAX

D, C = Side.DEBIT, Side.CREDIT


def line(account: str, side: Side, amount: int, currency: str = "GBP") -> PostingLine:
    return PostingLine(account, side, amount, currency)


def posted(tid: str = "t1", amount: int = 100, **kw) -> TransferSpec:
    return TransferSpec(tid, TransferKind.POSTED,
                        (line("cash", D, amount), line("alice", C, amount)), **kw)


def violations(specs: list[TransferSpec]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgument) as caught:
        validate_specs(specs)
    error = caught.value
    assert error.reason == "INVALID_FIELD"
    assert error.metadata["field"] == error.violations[0].field
    return [(v.field, v.description) for v in error.violations]


def fields(specs: list[TransferSpec]) -> list[str]:
    return [f for f, _ in violations(specs)]


def test_a_balanced_posted_transfer_is_valid():
    validate_specs([posted()])


def test_an_empty_batch_is_refused():
    assert fields([]) == ["transfers"]


def test_an_unbalanced_transfer_is_refused_naming_its_postings_and_the_difference():
    spec = TransferSpec("t1", TransferKind.POSTED, (line("cash", D, 100), line("alice", C, 90)))
    [(field, description)] = violations([posted("t0"), spec])
    assert field == "transfers[1].postings"
    assert "GBP" in description and "10" in description


def test_balance_is_checked_per_currency_not_in_total():
    spec = TransferSpec("fx", TransferKind.POSTED, (
        line("cash", D, 100, "GBP"), line("alice", C, 100, "EUR")))
    assert [d for _, d in violations([spec])] == [
        "debits and credits in EUR must balance (off by -100 minor units)",
        "debits and credits in GBP must balance (off by 100 minor units)",
    ]


def test_a_transfer_with_a_single_posting_is_refused():
    spec = TransferSpec("t1", TransferKind.POSTED, (line("cash", D, 100),))
    assert "transfers[0].postings" in fields([spec])


def test_a_transfer_with_too_many_postings_is_refused():
    many = tuple(line(f"a{i}", D if i % 2 else C, 1) for i in range(POSTINGS_PER_ENTRY_MAX + 2))
    assert fields([TransferSpec("t1", TransferKind.PENDING, many)]) == ["transfers[0].postings"]


def test_an_account_debited_and_credited_by_one_transfer_is_refused_at_the_second_posting():
    spec = TransferSpec("t1", TransferKind.POSTED, (
        line("cash", D, 100), line("alice", C, 50), line("cash", C, 50)))
    assert fields([spec]) == ["transfers[0].postings[2].account"]


def test_an_account_debited_twice_by_one_transfer_is_allowed():
    validate_specs([TransferSpec("t1", TransferKind.POSTED, (
        line("cash", D, 60), line("cash", D, 40), line("alice", C, 100)))])


@pytest.mark.parametrize("amount", [0, -5, AMOUNT_MINOR_MAX + 1])
def test_a_posting_amount_outside_the_allowed_range_is_refused_at_that_posting(amount):
    spec = TransferSpec("t1", TransferKind.POSTED, (
        line("cash", D, amount), line("alice", C, amount)))
    assert fields([spec]) == ["transfers[0].postings[0].amount", "transfers[0].postings[1].amount"]


def test_a_request_ending_in_an_open_linked_chain_is_refused_at_its_last_transfer():
    assert fields([posted("t1", linked=True), posted("t2", linked=True)]) == [
        "transfers[1].linked"]


def test_a_closed_linked_chain_is_valid():
    validate_specs([posted("t1", linked=True), posted("t2")])


@pytest.mark.parametrize("kind", [TransferKind.VOID_PENDING, TransferKind.REVERSAL])
def test_voids_and_reversals_may_not_carry_postings(kind):
    spec = TransferSpec("t1", kind, posted().postings,
                        pending_id="h1" if kind is TransferKind.VOID_PENDING else None,
                        reverses_id="t0" if kind is TransferKind.REVERSAL else None)
    assert fields([spec]) == ["transfers[0].postings"]


def test_a_client_cannot_ask_for_an_expiry():
    assert fields([TransferSpec("t1", TransferKind.EXPIRE_PENDING)]) == ["transfers[0].kind"]
    spec = TransferSpec("t1", TransferKind.EXPIRE_PENDING, pending_id="h1")
    assert fields([spec])[0] == "transfers[0].kind"


@pytest.mark.parametrize("kind", [TransferKind.POST_PENDING, TransferKind.VOID_PENDING])
def test_posting_or_voiding_a_hold_requires_the_pending_transfer(kind):
    assert fields([TransferSpec("t1", kind)]) == ["transfers[0].pending_transfer"]


def test_a_pending_transfer_is_refused_on_a_posted_transfer():
    assert fields([posted(pending_id="h1")]) == ["transfers[0].pending_transfer"]


def test_a_reversal_requires_the_id_of_what_it_reverses():
    assert fields([TransferSpec("r1", TransferKind.REVERSAL)]) == [
        "transfers[0].reverses_transfer"]


def test_a_reverses_id_is_refused_on_anything_but_a_reversal():
    assert fields([posted(reverses_id="t0")]) == ["transfers[0].reverses_transfer"]


def test_a_timeout_is_only_allowed_on_a_pending_transfer():
    assert fields([posted(timeout_seconds=60)]) == ["transfers[0].timeout_seconds"]
    validate_specs([TransferSpec("h1", TransferKind.PENDING, posted().postings,
                                 timeout_seconds=60)])


def test_posting_a_hold_for_less_must_still_balance():
    spec = TransferSpec("p1", TransferKind.POST_PENDING,
                        (line("cash", D, 60), line("alice", C, 50)), pending_id="h1")
    assert fields([spec]) == ["transfers[0].postings"]


def test_every_violation_of_a_batch_is_reported_in_request_order():
    bad = [
        posted("t0"),
        TransferSpec("t1", TransferKind.POSTED, (line("cash", D, 0), line("cash", C, 0))),
        TransferSpec("t2", TransferKind.REVERSAL, posted().postings, linked=True),
    ]
    assert fields(bad) == [
        "transfers[1].postings[0].amount",
        "transfers[1].postings[1].amount",
        "transfers[1].postings[1].account",
        "transfers[2].postings",
        "transfers[2].reverses_transfer",
        "transfers[2].linked",
    ]


def test_the_error_message_names_the_first_violation_and_counts_the_rest():
    with pytest.raises(InvalidArgument) as caught:
        validate_specs([posted(timeout_seconds=5, pending_id="h")])
    assert caught.value.message.startswith("transfers[0].pending_transfer:")
    assert caught.value.message.endswith("(and 1 more)")


def test_imbalances_lists_only_currencies_that_do_not_balance():
    assert imbalances([(D, 5, "GBP"), (C, 5, "GBP"), (D, 7, "EUR")]) == {"EUR": 7}
    assert imbalances([]) == {}


def test_the_fingerprint_depends_on_content_not_on_the_linked_flag():
    assert posted().fingerprint() == posted().fingerprint()
    assert posted().fingerprint() == posted(linked=True).fingerprint()
    assert posted().fingerprint() != posted(amount=101).fingerprint()
    assert posted().fingerprint() != posted(description="rent").fingerprint()
    assert posted().fingerprint() != posted(effective_date=date(2026, 1, 2)).fingerprint()


def test_the_fingerprint_ignores_the_order_of_metadata():
    a = posted(metadata=(("a", "1"), ("b", "2")))
    b = posted(metadata=(("b", "2"), ("a", "1")))
    assert a.fingerprint() == b.fingerprint()


# -- the canonical form an entry's audit digest commits to -----------------------------------------

_text = st.text(max_size=12)  # quotes, backslashes, control characters, non-ASCII
_totals = st.builds(Totals, *[st.integers(0, TOTAL_MINOR_MAX)] * 4)


@st.composite
def _entries(draw: st.DrawFn) -> JournalEntry:
    seq = draw(st.integers(1, 2**62))
    postings = tuple(
        Posting(seq, i, draw(_text), draw(st.sampled_from(Side)), draw(st.integers(1, 2**62)),
                draw(_text), draw(st.sampled_from(Effect)), draw(_totals))
        for i in range(draw(st.integers(0, 4))))
    return JournalEntry(
        seq=seq, transfer_id=draw(_text), kind=draw(st.sampled_from(TransferKind)),
        recorded_ns=draw(st.integers(0, 2**63 - 1)),
        effective_date=draw(st.dates()), postings=postings,
        pending_id=draw(st.none() | _text), reverses_id=draw(st.none() | _text),
        expires_ns=draw(st.integers(0, 2**63 - 1)), description=draw(_text),
        metadata=tuple(draw(st.lists(st.tuples(_text, _text), max_size=3))),
        fingerprint=draw(_text), request_id=draw(_text))


@settings(max_examples=500, deadline=None)
@given(_entries())
def test_an_entrys_canonical_json_is_json_dumps_of_its_canonical_form(entry):
    """The digest's hand-written JSON must be byte for byte what `canonical_hash` hashes (and
    what exports and the offline verifier recompute from `canonical()`)."""
    expected = json.dumps(entry.canonical(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False)
    assert entry.canonical_json() == expected
    assert entry.digest() == canonical_hash(entry.canonical())


@st.composite
def _specs(draw: st.DrawFn) -> TransferSpec:
    return TransferSpec(
        transfer_id=draw(_text), kind=draw(st.sampled_from(TransferKind)),
        postings=tuple(draw(st.lists(st.builds(
            PostingLine, _text, st.sampled_from(Side), st.integers(-(2**63), 2**63),
            _text), max_size=4))),
        pending_id=draw(st.none() | _text), reverses_id=draw(st.none() | _text),
        effective_date=draw(st.none() | st.dates()), description=draw(_text),
        metadata=tuple(draw(st.lists(st.tuples(_text, _text), max_size=3))),
        timeout_seconds=draw(st.integers(0, 2**40)), linked=draw(st.booleans()))


@settings(max_examples=500, deadline=None)
@given(_specs())
def test_a_transfers_fingerprint_is_the_canonical_hash_of_its_body(spec):
    """The fingerprint's hand-written JSON must hash exactly as `canonical_hash(_body())`:
    stored fingerprints decide whether a replayed transfer id means the same transfer."""
    assert spec.fingerprint() == canonical_hash(spec._body())


def test_an_amount_or_timeout_that_is_not_a_plain_int_is_refused():
    """A bool is an int to Python but not to a fingerprint's canonical JSON (true, not 1): only
    Python callers could send one, and they are refused like anyone else."""
    assert fields([posted(amount=True)]) == ["transfers[0].postings[0].amount",
                                             "transfers[0].postings[1].amount"]
    hold = TransferSpec("h", TransferKind.PENDING, (line("cash", D, 5), line("alice", C, 5)),
                        timeout_seconds=True)
    assert fields([hold]) == ["transfers[0].timeout_seconds"]
    negative = TransferSpec("h", TransferKind.PENDING, (line("cash", D, 5), line("alice", C, 5)),
                            timeout_seconds=-1)
    assert fields([negative]) == ["transfers[0].timeout_seconds"]
