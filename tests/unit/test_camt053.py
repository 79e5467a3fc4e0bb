"""camt.053.001.08 statements: schema-valid output, exact amounts, round trips, safe reading."""

from __future__ import annotations

import string
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import xmlschema
from hypothesis import given, settings
from hypothesis import strategies as st

from bank.domain.currency import EXPONENTS
from bank.offline.camt053 import (
    DESCRIPTION_MAX,
    NAMESPACE,
    Statement,
    StatementError,
    StatementLine,
    check_adds_up,
    read_camt053,
    write_camt053,
)
from tests.helpers import CAMT053_XSD

XSD_NAME = "camt.053.001.08.xsd"
NS = {"c": NAMESPACE}


def _xsd_path() -> Path:
    """The official schema, copied into tests/data (see its README)."""
    assert CAMT053_XSD.is_file(), f"missing {CAMT053_XSD}"
    return CAMT053_XSD


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(_xsd_path()))


def assert_valid(schema: xmlschema.XMLSchema, document: bytes) -> None:
    errors = list(schema.iter_errors(document.decode("utf-8")))
    assert not errors, "\n".join(str(e) for e in errors[:3])


def line(position: int, side: str, amount: int, description: str = "payment") -> StatementLine:
    return StatementLine(
        entry_ref=f"E-{position:04d}",
        position=position,
        booking_date=date(2026, 3, 2),
        value_date=date(2026, 3, 3),
        side=side,
        amount_minor=amount,
        description=description,
    )


def statement(currency: str = "GBP", lines: list[StatementLine] | None = None,
              opening: int = 10_000) -> Statement:
    lines = [line(1, "C", 12_345), line(2, "D", 2_000), line(5, "C", 1)] if lines is None \
        else lines
    net = sum(ln.amount_minor if ln.side == "C" else -ln.amount_minor for ln in lines)
    return Statement(
        statement_id="STMT-2026-03-0001",
        account_id="ACC-000123",
        currency=currency,
        exponent=EXPONENTS[currency],
        owner_name="Ada Lovelace",
        created=datetime(2026, 4, 1, 6, 30, tzinfo=UTC),
        from_time=datetime(2026, 3, 1, tzinfo=UTC),
        to_time=datetime(2026, 3, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        opening_balance_minor=opening,
        closing_balance_minor=opening + net,
        lines=lines,
    )


def texts(document: bytes, path: str) -> list[str]:
    return [e.text or "" for e in ET.fromstring(document).iterfind(path, NS)]


# --- Writing: schema, determinism, exact amounts ------------------------------------------


def test_the_document_validates_against_the_official_schema(schema: xmlschema.XMLSchema):
    assert_valid(schema, write_camt053(statement()))


def test_the_output_is_deterministic_utf8_with_a_declaration():
    first, second = write_camt053(statement()), write_camt053(statement())
    assert first == second
    assert first.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    root = ET.fromstring(first)
    assert root.tag == f"{{{NAMESPACE}}}Document"


def test_entries_carry_the_ledger_fields():
    doc = write_camt053(statement())
    assert texts(doc, ".//c:Ntry/c:NtryRef") == ["E-0001", "E-0002", "E-0005"]
    assert texts(doc, ".//c:Ntry/c:CdtDbtInd") == ["CRDT", "DBIT", "CRDT"]
    assert texts(doc, ".//c:Ntry/c:Sts/c:Cd") == ["BOOK"] * 3
    assert texts(doc, ".//c:Ntry/c:BkTxCd/c:Prtry/c:Cd") == ["LEDGER"] * 3
    assert texts(doc, ".//c:Ntry/c:NtryDtls/c:TxDtls/c:Refs/c:AcctSvcrRef") == [
        "E-0001", "E-0002", "E-0005"]
    assert texts(doc, ".//c:Bal/c:Tp/c:CdOrPrtry/c:Cd") == ["OPBD", "CLBD"]
    assert texts(doc, ".//c:Acct/c:Id/c:Othr/c:Id") == ["ACC-000123"]


@pytest.mark.parametrize(
    ("currency", "minor", "text"),
    [
        ("GBP", 12_345, "123.45"),
        ("GBP", 5, "0.05"),
        ("GBP", 100, "1.00"),
        ("GBP", 999_999_999_999_999_999, "9999999999999999.99"),
        ("JPY", 12_345, "12345"),
        ("JPY", 0, "0"),
        ("BHD", 12_345, "12.345"),
        ("BHD", 1, "0.001"),
        ("BHD", 1_000, "1.000"),
    ],
)
def test_amounts_are_exact_in_the_currency_exponent(schema: xmlschema.XMLSchema, currency: str,
                                                    minor: int, text: str):
    s = statement(currency, [line(1, "C", minor)], opening=0)
    doc = write_camt053(s)
    assert texts(doc, ".//c:Ntry/c:Amt") == [text]
    amt = ET.fromstring(doc).find(".//c:Ntry/c:Amt", NS)
    assert amt is not None and amt.get("Ccy") == currency
    assert_valid(schema, doc)
    assert read_camt053(doc) == s


def test_a_negative_balance_is_written_as_a_debit_of_its_absolute_value(
        schema: xmlschema.XMLSchema):
    s = statement("GBP", [line(1, "C", 250)], opening=-1_050)
    doc = write_camt053(s)
    assert texts(doc, ".//c:Bal/c:Amt") == ["10.50", "8.00"]
    assert texts(doc, ".//c:Bal/c:CdtDbtInd") == ["DBIT", "DBIT"]
    assert_valid(schema, doc)
    back = read_camt053(doc)
    assert (back.opening_balance_minor, back.closing_balance_minor) == (-1_050, -800)


def test_an_empty_statement_validates_and_round_trips(schema: xmlschema.XMLSchema):
    s = statement("GBP", [], opening=0)
    doc = write_camt053(s)
    assert_valid(schema, doc)
    assert read_camt053(doc) == s
    check_adds_up(read_camt053(doc))


def test_the_writer_refuses_what_the_schema_cannot_carry():
    good = statement()
    bad_statements = {
        "unknown currency": replace(good, currency="ZZZ"),
        "wrong exponent": replace(good, exponent=3),
        "naive datetime": replace(good, created=datetime(2026, 4, 1)),
        "id too long": replace(good, statement_id="S" * 36),
        "empty entry ref": replace(good, lines=[replace(good.lines[0], entry_ref="")]),
        "bad side": replace(good, lines=[replace(good.lines[0], side="X")]),
        "negative line": replace(good, lines=[replace(good.lines[0], amount_minor=-1)]),
        "NUL in text": replace(good, lines=[replace(good.lines[0], description="a\x00b")]),
        "19 digits": replace(good, opening_balance_minor=10**18),
        "period reversed": replace(good, from_time=good.to_time, to_time=good.from_time),
    }
    for name, bad in bad_statements.items():
        with pytest.raises(StatementError):
            write_camt053(bad)
            pytest.fail(f"accepted: {name}")


# --- Round trips -----------------------------------------------------------------------------


def test_write_then_read_gives_the_same_statement():
    s = statement()
    back = read_camt053(write_camt053(s))
    assert back == s
    assert back.created.utcoffset() == timedelta(0)


def test_special_characters_and_non_ascii_round_trip(schema: xmlschema.XMLSchema):
    description = "Tom & Jerry's <café> \"quoted\" — 東京 💷\r\nline two\ttab ]]> &amp;"
    s = replace(statement(), owner_name="Zoë O'Brien & Søn <Ltd>",
                lines=[line(1, "C", 12_345, description), line(2, "D", 2_000),
                       line(5, "C", 1)])
    doc = write_camt053(s)
    assert_valid(schema, doc)
    assert read_camt053(doc) == s


def test_a_long_description_is_truncated_to_the_schema_maximum(schema: xmlschema.XMLSchema):
    s = statement("GBP", [line(1, "C", 1, "é" * (DESCRIPTION_MAX + 20))], opening=0)
    doc = write_camt053(s)
    assert_valid(schema, doc)
    assert read_camt053(doc).lines[0].description == "é" * DESCRIPTION_MAX


def test_an_empty_description_is_left_out_and_reads_back_empty(schema: xmlschema.XMLSchema):
    s = statement("GBP", [line(1, "D", 7, "")], opening=7)
    doc = write_camt053(s)
    assert texts(doc, ".//c:AddtlNtryInf") == []
    assert_valid(schema, doc)
    assert read_camt053(doc) == s


def test_times_in_other_offsets_are_written_in_utc_and_read_back_equal():
    plus_two = timezone(timedelta(hours=2))
    s = replace(statement(), from_time=datetime(2026, 3, 1, 2, 0, tzinfo=plus_two))
    doc = write_camt053(s)
    assert texts(doc, ".//c:FrToDt/c:FrDtTm") == ["2026-03-01T00:00:00Z"]
    assert read_camt053(doc) == s


# --- check_adds_up ---------------------------------------------------------------------------


def test_a_correct_statement_adds_up():
    check_adds_up(statement())
    check_adds_up(read_camt053(write_camt053(statement("BHD"))))


def test_a_closing_balance_off_by_a_penny_is_rejected():
    s = statement()
    with pytest.raises(StatementError, match="off by 1 minor units"):
        check_adds_up(replace(s, closing_balance_minor=s.closing_balance_minor + 1))
    # ... also after a trip through the document, as the offline verifier sees it.
    doc = write_camt053(replace(s, closing_balance_minor=s.closing_balance_minor - 1))
    with pytest.raises(StatementError, match="does not add up"):
        check_adds_up(read_camt053(doc))


def test_lines_out_of_order_are_rejected():
    s = statement()
    swapped = [s.lines[1], s.lines[0], s.lines[2]]
    with pytest.raises(StatementError, match="out of order"):
        check_adds_up(replace(s, lines=swapped))
    with pytest.raises(StatementError, match="out of order"):
        duplicate = [s.lines[0], replace(s.lines[1], position=1), *s.lines[2:]]
        check_adds_up(replace(s, lines=duplicate))
    with pytest.raises(StatementError, match="out of order"):
        check_adds_up(read_camt053(write_camt053(replace(s, lines=swapped))))


# --- Reading refuses malformed and hostile documents ----------------------------------------


def test_a_document_with_a_doctype_or_entities_is_refused_before_parsing():
    billion_laughs = (
        b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>\n'
        b'<Document xmlns="' + NAMESPACE.encode() + b'">&lol2;</Document>'
    )
    with pytest.raises(StatementError, match="DOCTYPE"):
        read_camt053(billion_laughs)
    external = write_camt053(statement()).replace(
        b"<Document", b'<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n<Document', 1)
    with pytest.raises(StatementError, match="DOCTYPE"):
        read_camt053(external)
    utf16 = write_camt053(statement()).decode().replace("UTF-8", "UTF-16").encode("utf-16")
    with pytest.raises(StatementError):
        read_camt053(utf16)


def test_a_document_in_another_namespace_is_refused():
    doc = write_camt053(statement()).replace(
        NAMESPACE.encode(), b"urn:iso:std:iso:20022:tech:xsd:camt.053.001.02")
    with pytest.raises(StatementError, match="namespace"):
        read_camt053(doc)


@pytest.mark.parametrize("amount", [b"12x.45", b"abc", b"", b"-1.00", b"1e3", b"1.234"])
def test_a_non_numeric_or_inexact_amount_is_refused(amount: bytes):
    doc = write_camt053(statement())
    original = b'<Amt Ccy="GBP">123.45</Amt>'
    assert doc.count(original) == 1
    with pytest.raises(StatementError, match=r"Stmt/Ntry\[0\]/Amt"):
        read_camt053(doc.replace(original, b'<Amt Ccy="GBP">' + amount + b"</Amt>"))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (b"<Cd>BOOK</Cd>", b"<Cd>PDNG</Cd>", "only booked"),
        (b'<Amt Ccy="GBP">123.45', b'<Amt Ccy="EUR">123.45', "not the account currency"),
        (b"<CreDtTm>2026-04-01T06:30:00Z</CreDtTm></GrpHdr><Stmt><Id>STMT-2026-03-0001</Id>"
         b"<CreDtTm>2026-04-01T06:30:00Z",
         b"<CreDtTm>2026-04-01T06:30:00Z</CreDtTm></GrpHdr><Stmt><Id>STMT-2026-03-0001</Id>"
         b"<CreDtTm>2026-04-01T06:30:00", "UTC offset"),
        (b"<Ref>1</Ref>", b"<Ref>one</Ref>", "position"),
        (b"<NbOfNtries>3</NbOfNtries>", b"<NbOfNtries>4</NbOfNtries>", "NbOfNtries"),
        (b"<Cd>CLBD</Cd>", b"<Cd>CLAV</Cd>", "no CLBD"),
        (b"<BookgDt><Dt>2026-03-02</Dt>", b"<BookgDt><Dt>2026-02-30</Dt>", "not a valid date"),
        (b"</Document>", b"", "well-formed"),
    ],
)
def test_malformed_content_is_refused_with_a_precise_message(old: bytes, new: bytes,
                                                             message: str):
    doc = write_camt053(statement())
    assert old in doc
    with pytest.raises(StatementError, match=message):
        read_camt053(doc.replace(old, new, 1))


# --- Property: any statement survives the round trip ------------------------------------------

_REF_CHARS = string.ascii_letters + string.digits + "-_./:"
_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cn"))
    | st.sampled_from("\t\n\r<>&\"'"),
    max_size=DESCRIPTION_MAX + 20,
)
_AWARE = st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30),
                      timezones=st.integers(-14 * 60, 14 * 60).map(
                          lambda m: timezone(timedelta(minutes=m))))
_DATES = st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31))


@st.composite
def statements(draw: st.DrawFn) -> Statement:
    currency = draw(st.sampled_from(["GBP", "JPY", "BHD", "EUR", "KWD"]))
    n = draw(st.integers(0, 12))
    gaps = draw(st.lists(st.integers(1, 10**6), min_size=n, max_size=n))
    positions = [sum(gaps[: i + 1]) for i in range(n)]
    lines = [
        StatementLine(
            entry_ref=draw(st.text(_REF_CHARS, min_size=1, max_size=35)),
            position=position,
            booking_date=draw(_DATES),
            value_date=draw(_DATES),
            side=draw(st.sampled_from("CD")),
            amount_minor=draw(st.integers(0, 10**15)),
            description=draw(_TEXT),
        )
        for position in positions
    ]
    times = sorted(draw(st.lists(_AWARE, min_size=2, max_size=2)))
    opening = draw(st.integers(-(10**16), 10**16))
    net = sum(ln.amount_minor if ln.side == "C" else -ln.amount_minor for ln in lines)
    return Statement(
        statement_id=draw(st.text(_REF_CHARS, min_size=1, max_size=35)),
        account_id=draw(st.text(_REF_CHARS, min_size=1, max_size=34)),
        currency=currency,
        exponent=EXPONENTS[currency],
        owner_name=draw(st.text(st.characters(codec="utf-8",
                                              exclude_categories=("Cs", "Cc", "Cn")),
                                max_size=140)),
        created=draw(_AWARE).astimezone(UTC),
        from_time=times[0],
        to_time=times[1],
        opening_balance_minor=opening,
        closing_balance_minor=opening + net,
        lines=lines,
    )


@settings(max_examples=50, deadline=None)
@given(statements())
def test_any_statement_round_trips_validates_and_adds_up(schema: xmlschema.XMLSchema,
                                                         s: Statement):
    doc = write_camt053(s)
    assert_valid(schema, doc)
    back = read_camt053(doc)
    expected = replace(s, lines=[replace(ln, description=ln.description[:DESCRIPTION_MAX])
                                 for ln in s.lines])
    assert back == expected
    assert write_camt053(back) == doc
    check_adds_up(back)
