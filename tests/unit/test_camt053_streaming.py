"""The streaming camt.053 writer and reader are the in-memory ones, part by part: the same bytes,
the same statement, the same refusals with the same messages."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from bank.offline import camt053
from bank.offline.camt053 import (
    LineTotals,
    Statement,
    StatementError,
    StatementLine,
    iter_camt053,
    read_camt053,
    scan_camt053,
    write_camt053,
)
from tests.unit.test_camt053 import line, statement


def totals_of(lines: list[StatementLine]) -> LineTotals:
    totals = LineTotals()
    for ln in lines:
        totals.add(ln.side, ln.amount_minor)
    return totals


def streamed(s: Statement) -> bytes:
    return b"".join(iter_camt053(replace(s, lines=[]), totals_of(s.lines), iter(s.lines)))


def many(n: int, description: str = "payment") -> list[StatementLine]:
    return [line(i + 1, "CD"[i % 3 == 0], 100 + i, f"{description} {i}") for i in range(n)]


@pytest.mark.parametrize("lines", [
    None, [], many(1), many(255), many(256), many(257), many(1_000),
    [line(1, "C", 5, "a\rb\r\nc & <d>"), line(2, "D", 7, "")],
    [line(1, "C", 10**17), line(2, "C", 10**17 - 1)],  # the summary would overflow: left out
])
def test_the_streamed_document_is_byte_for_byte_the_written_one(lines):
    s = statement(lines=lines)
    assert streamed(s) == write_camt053(s)


def test_a_line_the_schema_cannot_carry_is_refused_while_streaming():
    s = statement(lines=[*many(300), line(301, "X", 1)])
    with pytest.raises(StatementError, match=r"lines\[300\]\.side"):
        streamed(s)


def scan(path: Path) -> tuple[Statement, list[StatementLine]]:
    lines: list[StatementLine] = []
    head = scan_camt053(path, lines.append)
    return head, lines


@pytest.mark.parametrize("n", [0, 3, 2_000])
def test_scanning_a_file_reads_what_read_camt053_reads(tmp_path, n):
    s = statement(lines=many(n, "über & <caf\u00e9>") if n != 3 else None)
    path = tmp_path / "s.xml"
    path.write_bytes(write_camt053(s))
    head, lines = scan(path)
    whole = read_camt053(path.read_bytes())
    assert head.lines == []
    assert replace(head, lines=lines) == whole
    assert len(lines) == len(whole.lines) == len(s.lines)


def _big() -> bytes:
    """A document longer than the reader's chunk, so that damage can straddle a boundary."""
    doc = write_camt053(statement(lines=many(400, "x" * 200)))
    assert len(doc) > 2 * camt053._READ_CHUNK
    return doc


def _straddling(doc: bytes, chunk: int) -> bytes:
    """`doc` with a two-byte character in a description, across the first chunk boundary."""
    end = doc.rindex(b"xxxx", 0, chunk - 1) + 4  # just after the last run of x's before it
    doc = doc[:end] + b"x" * (chunk - 1 - end) + doc[end:]
    return doc[:chunk - 1] + "é".encode() + doc[chunk - 1:]


def _damaged() -> list[tuple[str, bytes]]:
    doc = write_camt053(statement())
    big = _big()
    chunk = camt053._READ_CHUNK
    ntry = doc.index(b"<Ntry>")
    bal = doc.index(b"<Bal>")
    cases = [
        ("pending", doc.replace(b"<Cd>BOOK</Cd>", b"<Cd>PDNG</Cd>", 1)),
        ("currency", doc.replace(b'<Amt Ccy="GBP">123.45', b'<Amt Ccy="EUR">123.45', 1)),
        ("position", doc.replace(b"<Ref>1</Ref>", b"<Ref>one</Ref>", 1)),
        ("count", doc.replace(b"<NbOfNtries>3</NbOfNtries>", b"<NbOfNtries>4</NbOfNtries>", 1)),
        ("sum", doc.replace(b"<Sum>143.46</Sum>", b"<Sum>143.47</Sum>", 1)),
        ("no closing", doc.replace(b"<Cd>CLBD</Cd>", b"<Cd>CLAV</Cd>", 1)),
        ("date", doc.replace(b"<BookgDt><Dt>2026-03-02</Dt>", b"<BookgDt><Dt>2026-02-30</Dt>", 1)),
        ("truncated", doc.replace(b"</Document>", b"", 1)),
        ("junk after", doc + b"<x/>"),
        ("empty", b""),
        ("bom", b"\xef\xbb\xbf" + doc),
        ("doctype", doc.replace(b"<Document", b'<!DOCTYPE d [<!ENTITY x "y">]>\n<Document', 1)),
        ("entity late", big.replace(b"</Document>", b"<!--<!ENTITY x-->\n</Document>")),
        ("doctype across chunks", big[:chunk - 4] + b"<!DOCTYPE" + big[chunk - 4:]),
        ("latin-1", doc.replace(b'encoding="UTF-8"', b'encoding="ISO-8859-1"', 1)),
        ("utf-16", doc.decode().replace("UTF-8", "UTF-16").encode("utf-16")),
        ("bad byte", big[:chunk + 10] + b"\xff" + big[chunk + 10:]),
        ("cut sequence", big[:chunk - 1] + "é".encode()[:1] + big[chunk + 1:]),
        ("split sequence ok", _straddling(big, chunk)),
        ("entries before balances", doc[:bal] + doc[ntry:doc.index(b"</Stmt>")]
         + doc[bal:ntry] + doc[doc.index(b"</Stmt>"):]),
        ("two statements", doc.replace(b"</Stmt>", b"</Stmt><Stmt><Id>x</Id></Stmt>", 1)),
        ("second report", doc.replace(b"</BkToCstmrStmt>",
                                      b"</BkToCstmrStmt><BkToCstmrStmt>"
                                      + doc[doc.index(b"<GrpHdr>"):doc.index(b"</BkToCstmrStmt>")]
                                      .replace(b"123.45", b"999.99")
                                      + b"</BkToCstmrStmt>", 1)),
        ("nested entry", doc.replace(b"<Ntry>", b"<Ntry><Ntry></Ntry>", 1)),
        ("wrong root", doc.replace(b"<Document", b"<Documents", 1).replace(
            b"</Document>", b"</Documents>")),
        ("other namespace", doc.replace(camt053.NAMESPACE.encode(), b"urn:x")),
        ("big amount", big.replace(b'<Amt Ccy="GBP">1.01</Amt>', b'<Amt Ccy="GBP">1.011</Amt>')),
    ]
    return cases


@pytest.mark.parametrize(("name", "document"), _damaged(), ids=[n for n, _ in _damaged()])
def test_scanning_refuses_exactly_what_read_camt053_refuses(tmp_path, name, document):
    path = tmp_path / "s.xml"
    path.write_bytes(document)
    try:
        expected: object = read_camt053(document)
    except StatementError as error:
        expected = f"refused: {error}"
    try:
        head, lines = scan(path)
        got: object = replace(head, lines=lines)
    except StatementError as error:
        got = f"refused: {error}"
    assert got == expected


def test_the_damage_cases_are_refused_where_they_should_be():
    outcomes = {}
    for name, document in _damaged():
        try:
            read_camt053(document)
            outcomes[name] = "read"
        except StatementError as error:
            outcomes[name] = str(error)
    assert outcomes["split sequence ok"] == "read"
    assert outcomes["second report"] == "read"  # only the first report is read
    assert re.search("not valid UTF-8 at byte", outcomes["bad byte"])
    assert re.search("DOCTYPE", outcomes["doctype across chunks"])
    assert re.search("ENTITY", outcomes["entity late"])


def test_line_totals_count_only_credits_and_debits():
    totals = LineTotals()
    for side, amount in (("C", 5), ("D", 7), ("C", 1)):
        totals.add(side, amount)
    assert (totals.credit_count, totals.credits, totals.debit_count, totals.debits) == (
        2, 6, 1, 7)
