"""ISO 20022 camt.053.001.08 (Bank-to-Customer Statement): write and read account statements.

Regulators receive export bundles whose account statements are camt.053.001.08 documents; an
offline verifier reads them back and checks that they add up. Standard library only
(`xml.etree.ElementTree`), plus the project's ISO 4217 exponent table from the domain.

Mapping of a `Statement` to the document (element order follows the XSD sequences):

    Document/BkToCstmrStmt
      GrpHdr/MsgId = statement_id, GrpHdr/CreDtTm = created
      Stmt/Id = statement_id, Stmt/CreDtTm = created, Stmt/FrToDt = from_time .. to_time
      Stmt/Acct: Id/Othr/Id = account_id, Ccy = currency, Ownr/Nm = owner_name (if any)
      Stmt/Bal OPBD (dated from_time, UTC) and CLBD (dated to_time, UTC)
      Stmt/TxsSummry: counts and sums of all, credit and debit entries (left out only when a
        sum would not fit the schema's 18 digits)
      Stmt/Ntry per line: NtryRef = entry_ref, Amt, CdtDbtInd, Sts/Cd BOOK, BookgDt/Dt,
        ValDt/Dt, AcctSvcrRef = entry_ref, BkTxCd/Prtry (LEDGER, peoplesbank.coop),
        NtryDtls/TxDtls/Refs: AcctSvcrRef = entry_ref and Prtry (Tp "LedgerPosition",
        Ref = position), AddtlNtryInf = description (first 500 characters; left out if empty)

Amounts are written from integer minor units with exactly `exponent` decimal places (no floats);
balances carry their sign in CdtDbtInd (CRDT for zero and above, DBIT below zero).

Datetimes must be timezone-aware; they are written in UTC with a `Z` suffix (microseconds only
when non-zero) and read back as UTC datetimes, so a round trip gives equal datetimes.

`read_camt053` accepts only what `write_camt053` can express (one statement, booked entries, a
known currency, UTF-8) and raises `StatementError` naming the offending element otherwise. It
refuses any document containing a DOCTYPE or ENTITY declaration before parsing it.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

from bank.domain.currency import EXPONENTS

__all__ = [
    "BANK_TX_CODE",
    "BANK_TX_CODE_ISSUER",
    "DESCRIPTION_MAX",
    "NAMESPACE",
    "POSITION_REF_TYPE",
    "AddsUp",
    "LineTotals",
    "Statement",
    "StatementError",
    "StatementLine",
    "check_adds_up",
    "iter_camt053",
    "read_camt053",
    "scan_camt053",
    "write_camt053",
]

NAMESPACE = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"
BANK_TX_CODE = "LEDGER"
BANK_TX_CODE_ISSUER = "peoplesbank.coop"
POSITION_REF_TYPE = "LedgerPosition"
DESCRIPTION_MAX = 500  # Max500Text
_MAX35 = 35  # Max35Text: MsgId, Stmt/Id, NtryRef, references
_MAX34 = 34  # Max34Text: GenericAccountIdentification1/Id
_MAX140 = 140  # Max140Text: PartyIdentification135/Nm
_AMOUNT_DIGITS = 18  # ActiveOrHistoricCurrencyAndAmount: totalDigits 18 ...
_AMOUNT_FRACTION_MAX = 5  # ... fractionDigits 5
_AMOUNT_LIMIT = 10**_AMOUNT_DIGITS  # an amount's minor units must stay below this

_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_SIDES = {"C": "CRDT", "D": "DBIT"}
_INDICATORS = {"CRDT": "C", "DBIT": "D"}

# Characters XML 1.0 can carry; anything else cannot be written, even escaped.
_XML_CHARS = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")
_DECIMAL = re.compile(r"\+?([0-9]*)(?:\.([0-9]*))?", re.ASCII)
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", re.ASCII)
_DATETIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)
_ENCODING = re.compile(rb"""\A<\?xml[^>]*?\sencoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_XML_SPACE = " \t\r\n"


class StatementError(ValueError):
    """A statement that cannot be written, a document that cannot be read, or one that does
    not add up."""


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One booked entry on the statement.

    `side` is "D" or "C" from the account holder's point of view; `amount_minor` is the
    absolute amount in minor units (>= 0). `position` orders the lines (strictly increasing).
    """

    entry_ref: str
    position: int
    booking_date: date
    value_date: date
    side: str
    amount_minor: int
    description: str


@dataclass(frozen=True, slots=True)
class Statement:
    """An account statement for one account and currency over [from_time, to_time].

    `opening_balance_minor` and `closing_balance_minor` are signed in minor units with credit
    positive (the ISO convention from the account holder's view): zero or above is written as
    CRDT, below zero as DBIT with the absolute amount. `created` is in UTC; all datetimes must
    be timezone-aware.
    """

    statement_id: str
    account_id: str
    currency: str
    exponent: int
    owner_name: str
    created: datetime
    from_time: datetime
    to_time: datetime
    opening_balance_minor: int
    closing_balance_minor: int
    lines: list[StatementLine] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Writing


def write_camt053(statement: Statement) -> bytes:
    """The statement as a complete camt.053.001.08 Document: UTF-8 with an XML declaration.

    Deterministic: the same statement always gives the same bytes. Raises `StatementError` for
    anything the schema cannot carry (identifiers too long or empty, an unknown currency or an
    exponent that is not its ISO 4217 one, naive datetimes, negative or oversized amounts,
    characters XML cannot represent). Descriptions longer than 500 characters are truncated.
    """
    root, stmt, exponent = _document(statement)
    lines = [_checked_line(line, i) for i, line in enumerate(statement.lines)]
    totals = LineTotals()
    for line, _ in lines:
        totals.add(line.side, line.amount_minor)
    _write_summary(stmt, totals, exponent)
    return b"".join((_head(root), *_entries(lines, statement.currency, exponent), _TAIL))


def iter_camt053(statement: Statement, totals: LineTotals,
                 lines: Iterable[StatementLine]) -> Iterator[bytes]:
    """The same bytes as `write_camt053`, in parts, for a statement too long to hold: the
    lines come from `lines` (`statement.lines` is ignored) and `totals` must be theirs (the
    transaction summary precedes the entries in the document). A line that cannot be written
    raises `StatementError` part way through."""
    root, stmt, exponent = _document(statement)
    _write_summary(stmt, totals, exponent)
    yield _head(root)
    batch: list[tuple[StatementLine, str]] = []
    written = 0
    for index, line in enumerate(lines):
        batch.append(_checked_line(line, index))
        if len(batch) == _ENTRY_BATCH:
            yield from _entries(batch, statement.currency, exponent, written)
            written += len(batch)
            batch = []
    yield from _entries(batch, statement.currency, exponent, written)
    yield _TAIL


@dataclass(slots=True)
class LineTotals:
    """Counts and sums of a statement's credit and debit lines (its TxsSummry)."""

    credit_count: int = 0
    credits: int = 0
    debit_count: int = 0
    debits: int = 0

    def add(self, side: str, amount_minor: int) -> None:
        if side == "C":
            self.credit_count += 1
            self.credits += amount_minor
        elif side == "D":
            self.debit_count += 1
            self.debits += amount_minor


def _count(totals: LineTotals) -> int:
    return totals.credit_count + totals.debit_count


_ENTRY_BATCH = 256
_TAIL_TEXT = "</Stmt></BkToCstmrStmt></Document>"
_TAIL = _TAIL_TEXT.encode()


def _document(s: Statement) -> tuple[ET.Element, ET.Element, int]:
    """The document up to its balances (checked), its Stmt element and the exponent."""
    exponent = _check_currency(s.currency, s.exponent)
    statement_id = _text(s.statement_id, "statement_id", _MAX35)
    account_id = _text(s.account_id, "account_id", _MAX34)
    owner_name = _text(s.owner_name, "owner_name", _MAX140, required=False)
    created = _format_datetime(s.created, "created")
    from_time = _utc(s.from_time, "from_time")
    to_time = _utc(s.to_time, "to_time")
    if from_time > to_time:
        raise StatementError(f"from_time {s.from_time.isoformat()} is after to_time "
                             f"{s.to_time.isoformat()}")

    # Built with plain tag names under an explicit default-namespace declaration: ElementTree's
    # `default_namespace` option refuses the unqualified Ccy attribute.
    root = ET.Element("Document", {"xmlns": NAMESPACE})
    report = _sub(root, "BkToCstmrStmt")
    header = _sub(report, "GrpHdr")
    _sub(header, "MsgId", statement_id)
    _sub(header, "CreDtTm", created)

    stmt = _sub(report, "Stmt")
    _sub(stmt, "Id", statement_id)
    _sub(stmt, "CreDtTm", created)
    period = _sub(stmt, "FrToDt")
    _sub(period, "FrDtTm", _format_datetime(from_time, "from_time"))
    _sub(period, "ToDtTm", _format_datetime(to_time, "to_time"))
    acct = _sub(stmt, "Acct")
    _sub(_sub(_sub(acct, "Id"), "Othr"), "Id", account_id)
    _sub(acct, "Ccy", s.currency)
    if owner_name:
        _sub(_sub(acct, "Ownr"), "Nm", owner_name)

    for code, minor, day, what in (
        ("OPBD", s.opening_balance_minor, from_time.date(), "opening_balance_minor"),
        ("CLBD", s.closing_balance_minor, to_time.date(), "closing_balance_minor"),
    ):
        _check_int(minor, what)
        bal = _sub(stmt, "Bal")
        _sub(_sub(_sub(bal, "Tp"), "CdOrPrtry"), "Cd", code)
        _sub(bal, "Amt", _format_amount(abs(minor), exponent, what), {"Ccy": s.currency})
        _sub(bal, "CdtDbtInd", "CRDT" if minor >= 0 else "DBIT")
        _sub(_sub(bal, "Dt"), "Dt", day.isoformat())
    return root, stmt, exponent


def _serialised(element: ET.Element) -> str:
    # ElementTree escapes CR in attributes but not in text, where a parser would turn it into
    # LF. The serializer itself never emits CR, so every raw CR here comes from text content.
    return ET.tostring(element, encoding="unicode").replace("\r", "&#13;")


def _head(root: ET.Element) -> bytes:
    """The declaration and the document up to where the entries go (before the Stmt ends)."""
    body = _serialised(root)
    assert body.endswith(_TAIL_TEXT)
    return _DECLARATION + body[:-len(_TAIL_TEXT)].encode("utf-8")


def _entries(lines: list[tuple[StatementLine, str]], currency: str, exponent: int,
             first_index: int = 0) -> Iterator[bytes]:
    """The Ntry elements of `lines` (checked), serialised as they are inside the document."""
    if not lines:
        return
    holder = ET.Element("_")
    for index, (line, description) in enumerate(lines, first_index):
        where = f"lines[{index}]"
        ntry = _sub(holder, "Ntry")
        _sub(ntry, "NtryRef", line.entry_ref)
        _sub(ntry, "Amt", _format_amount(line.amount_minor, exponent, f"{where}.amount_minor"),
             {"Ccy": currency})
        _sub(ntry, "CdtDbtInd", _SIDES[line.side])
        _sub(_sub(ntry, "Sts"), "Cd", "BOOK")
        _sub(_sub(ntry, "BookgDt"), "Dt", line.booking_date.isoformat())
        _sub(_sub(ntry, "ValDt"), "Dt", line.value_date.isoformat())
        _sub(ntry, "AcctSvcrRef", line.entry_ref)
        tx_code = _sub(_sub(ntry, "BkTxCd"), "Prtry")
        _sub(tx_code, "Cd", BANK_TX_CODE)
        _sub(tx_code, "Issr", BANK_TX_CODE_ISSUER)
        refs = _sub(_sub(_sub(ntry, "NtryDtls"), "TxDtls"), "Refs")
        _sub(refs, "AcctSvcrRef", line.entry_ref)
        prtry = _sub(refs, "Prtry")
        _sub(prtry, "Tp", POSITION_REF_TYPE)
        _sub(prtry, "Ref", str(line.position))
        if description:
            _sub(ntry, "AddtlNtryInf", description)
    body = _serialised(holder)
    assert body.startswith("<_>") and body.endswith("</_>")
    yield body[3:-4].encode("utf-8")


def _write_summary(stmt: ET.Element, totals: LineTotals, exponent: int) -> None:
    credits, debits = totals.credits, totals.debits
    total, net = credits + debits, credits - debits
    if max(total, abs(net)) >= _AMOUNT_LIMIT:
        return  # TxsSummry is optional; its sums are limited to 18 digits
    summary = _sub(stmt, "TxsSummry")
    all_entries = _sub(summary, "TtlNtries")
    _sub(all_entries, "NbOfNtries", str(_count(totals)))
    _sub(all_entries, "Sum", _format_amount(total, exponent, "TxsSummry"))
    net_entry = _sub(all_entries, "TtlNetNtry")
    _sub(net_entry, "Amt", _format_amount(abs(net), exponent, "TxsSummry"))
    _sub(net_entry, "CdtDbtInd", "CRDT" if net >= 0 else "DBIT")
    for tag, count, amount in (("TtlCdtNtries", totals.credit_count, credits),
                               ("TtlDbtNtries", totals.debit_count, debits)):
        part = _sub(summary, tag)
        _sub(part, "NbOfNtries", str(count))
        _sub(part, "Sum", _format_amount(amount, exponent, "TxsSummry"))


def _checked_line(line: StatementLine, index: int) -> tuple[StatementLine, str]:
    where = f"lines[{index}]"
    _text(line.entry_ref, f"{where}.entry_ref", _MAX35)
    _check_int(line.position, f"{where}.position")
    if line.position < 0 or len(str(line.position)) > _MAX35:
        raise StatementError(f"{where}.position must be between 0 and {10**_MAX35 - 1}, "
                             f"got {line.position}")
    if line.side not in _SIDES:
        raise StatementError(f"{where}.side must be 'D' or 'C', got {line.side!r}")
    _check_int(line.amount_minor, f"{where}.amount_minor")
    for attr in ("booking_date", "value_date"):
        value = getattr(line, attr)
        if not isinstance(value, date) or isinstance(value, datetime):
            raise StatementError(f"{where}.{attr} must be a date, got {value!r}")
    if not isinstance(line.description, str):
        raise StatementError(f"{where}.description must be a str, got {line.description!r}")
    description = _text(line.description[:DESCRIPTION_MAX], f"{where}.description",
                        DESCRIPTION_MAX, required=False)
    return line, description


def _check_currency(currency: str, exponent: int) -> int:
    if currency not in EXPONENTS:
        raise StatementError(f"unknown currency {currency!r}: expected an ISO 4217 code")
    if exponent != EXPONENTS[currency]:
        raise StatementError(f"exponent {exponent!r} does not match {currency}'s ISO 4217 "
                             f"minor unit ({EXPONENTS[currency]})")
    if not 0 <= exponent <= _AMOUNT_FRACTION_MAX:
        raise StatementError(f"{currency} has {exponent} decimal places; camt.053 amounts "
                             f"allow at most {_AMOUNT_FRACTION_MAX}")
    return exponent


def _check_int(value: object, what: str) -> None:
    if type(value) is not int:
        raise StatementError(f"{what} must be an int, got {value!r}")


def _text(value: object, what: str, max_len: int, *, required: bool = True) -> str:
    if not isinstance(value, str):
        raise StatementError(f"{what} must be a str, got {type(value).__name__}")
    if required and not value:
        raise StatementError(f"{what} must not be empty")
    if len(value) > max_len:
        raise StatementError(f"{what} is {len(value)} characters long; the schema allows "
                             f"at most {max_len}")
    if not _XML_CHARS.fullmatch(value):
        bad = next(c for c in value if not _XML_CHARS.fullmatch(c))
        raise StatementError(f"{what} contains U+{ord(bad):04X}, which XML cannot carry")
    return value


def _format_amount(minor: int, exponent: int, what: str) -> str:
    """`minor` (>= 0) minor units as a decimal with exactly `exponent` places: 12345 -> 123.45."""
    _check_int(minor, what)
    if minor < 0:
        raise StatementError(f"{what} must not be negative, got {minor}")
    if minor >= _AMOUNT_LIMIT:
        raise StatementError(f"{what} has more than {_AMOUNT_DIGITS} digits: {minor}")
    if exponent == 0:
        return str(minor)
    digits = str(minor).rjust(exponent + 1, "0")
    return f"{digits[:-exponent]}.{digits[-exponent:]}"


def _utc(value: object, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise StatementError(f"{what} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise StatementError(f"{what} must be timezone-aware, got {value.isoformat()}")
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise StatementError(f"{what} is out of range in UTC: {value.isoformat()}") from exc


def _format_datetime(value: object, what: str) -> str:
    return _utc(value, what).replace(tzinfo=None).isoformat() + "Z"


def _q(tag: str) -> str:
    return f"{{{NAMESPACE}}}{tag}"


def _sub(parent: ET.Element, tag: str, text: str | None = None,
         attrib: dict[str, str] | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib or {})
    if text is not None:
        element.text = text
    return element


# --------------------------------------------------------------------------------------------
# Reading


def read_camt053(data: bytes) -> Statement:
    """Parse a camt.053.001.08 document written by `write_camt053` back into a `Statement`.

    Refuses (with `StatementError`) documents that are not UTF-8, that contain a DOCTYPE or
    ENTITY declaration (checked before any parsing), that are not well-formed, that are in
    another namespace, or whose content is malformed: missing elements, non-numeric amounts,
    amounts in another currency or finer than its minor unit, entries that are not booked, a
    transaction summary that disagrees with the entries, and so on. Lines are returned in
    document order; `check_adds_up` checks their order and the balances.
    """
    head, stmt = _read_head(_parse(data))
    lines = [_read_entry(ntry, f"Stmt/Ntry[{i}]", head.currency, head.exponent)
             for i, ntry in enumerate(stmt.findall(_q("Ntry")))]
    summary = stmt.find(_q("TxsSummry"))
    if summary is not None:
        totals = LineTotals()
        for line in lines:
            totals.add(line.side, line.amount_minor)
        _check_summary(summary, totals, head.currency, head.exponent)
    head.lines.extend(lines)
    return head


def scan_camt053(path: Path, on_line: Callable[[StatementLine], None]) -> Statement:
    """`read_camt053` of the file at `path`, for a statement of any length: the same checks
    with the same errors, in the same order, but each line is passed to `on_line` in document
    order as it is read (the returned statement has no lines). Memory does not grow with the
    number of entries; the file is read three times (checks on the raw bytes, the document
    without its entries, then the entries)."""
    _check_raw(path)
    head, stmt = _read_head(_skeleton(path))
    totals = LineTotals()
    for i, ntry in enumerate(_statement_entries(path)):
        line = _read_entry(ntry, f"Stmt/Ntry[{i}]", head.currency, head.exponent)
        totals.add(line.side, line.amount_minor)
        on_line(line)
    summary = stmt.find(_q("TxsSummry"))
    if summary is not None:
        _check_summary(summary, totals, head.currency, head.exponent)
    return head


def _read_head(root: ET.Element) -> tuple[Statement, ET.Element]:
    """Everything but the entries and the summary check: a statement without lines, and its
    Stmt element."""
    if root.tag != _q("Document"):
        raise StatementError(f"root element is {root.tag!r}; expected Document in namespace "
                             f"{NAMESPACE}")
    report = _one(root, "BkToCstmrStmt", "Document")
    header = _one(report, "GrpHdr", "BkToCstmrStmt")
    statements = report.findall(_q("Stmt"))
    if len(statements) != 1:
        raise StatementError(f"expected exactly one Stmt, found {len(statements)}")
    stmt = statements[0]

    statement_id = _string(_one(stmt, "Id", "Stmt"), "Stmt/Id")
    created_el = stmt.find(_q("CreDtTm"))
    if created_el is None:
        created = _datetime(_one(header, "CreDtTm", "GrpHdr"), "GrpHdr/CreDtTm")
    else:
        created = _datetime(created_el, "Stmt/CreDtTm")
    period = _one(stmt, "FrToDt", "Stmt")
    from_time = _datetime(_one(period, "FrDtTm", "Stmt/FrToDt"), "Stmt/FrToDt/FrDtTm")
    to_time = _datetime(_one(period, "ToDtTm", "Stmt/FrToDt"), "Stmt/FrToDt/ToDtTm")
    if from_time > to_time:
        raise StatementError("Stmt/FrToDt: FrDtTm is after ToDtTm")

    acct = _one(stmt, "Acct", "Stmt")
    account_id = _account_id(_one(acct, "Id", "Stmt/Acct"))
    currency = _token(_one(acct, "Ccy", "Stmt/Acct"), "Stmt/Acct/Ccy")
    if currency not in EXPONENTS:
        raise StatementError(f"Stmt/Acct/Ccy: unknown currency {currency[:8]!r}")
    exponent = EXPONENTS[currency]
    owner = acct.find(f"{_q('Ownr')}/{_q('Nm')}")
    owner_name = "" if owner is None else owner.text or ""

    balances: dict[str, int] = {}
    for i, bal in enumerate(stmt.findall(_q("Bal"))):
        where = f"Stmt/Bal[{i}]"
        tp = _one(bal, "Tp", where)
        code_el = _one(_one(tp, "CdOrPrtry", f"{where}/Tp"), "Cd", f"{where}/Tp/CdOrPrtry",
                       hint="a proprietary balance type is not supported")
        code = _token(code_el, f"{where}/Tp/CdOrPrtry/Cd")
        if code not in ("OPBD", "CLBD"):
            continue  # other balance types (available, interim...) are not part of the check
        if code in balances:
            raise StatementError(f"{where}: more than one {code} balance")
        minor = _amount(_one(bal, "Amt", where), f"{where}/Amt", currency, exponent)
        if _indicator(_one(bal, "CdtDbtInd", where), f"{where}/CdtDbtInd") == "D":
            minor = -minor
        balances[code] = minor
    for code in ("OPBD", "CLBD"):
        if code not in balances:
            raise StatementError(f"Stmt: no {code} balance")

    return Statement(
        statement_id=statement_id,
        account_id=account_id,
        currency=currency,
        exponent=exponent,
        owner_name=owner_name,
        created=created,
        from_time=from_time,
        to_time=to_time,
        opening_balance_minor=balances["OPBD"],
        closing_balance_minor=balances["CLBD"],
        lines=[],
    ), stmt


_READ_CHUNK = 1 << 16
_BOM = b"\xef\xbb\xbf"
_MARKERS = ("<!DOCTYPE", "<!ENTITY")


def _check_raw(path: Path) -> None:
    """`_parse`'s checks before parsing, over the file in chunks: the declared encoding, UTF-8
    throughout (naming the first bad byte's offset), no DTD or entity declaration."""
    with path.open("rb") as handle:
        pending = handle.read(_READ_CHUNK)
        while b">" not in pending and (more := handle.read(_READ_CHUNK)):
            pending += more  # the declaration's encoding attribute ends before its first ">"
        pending = pending.removeprefix(_BOM)
        declared = _ENCODING.match(pending)
        if declared and declared.group(1).lower() not in (b"utf-8", b"utf8"):
            encoding = declared.group(1).decode("ascii")
            raise StatementError(f"document declares encoding {encoding!r}; only UTF-8 is "
                                 "accepted")
        offset, tail, found = 0, "", set[str]()
        while True:
            chunk = handle.read(_READ_CHUNK)
            data = pending + chunk
            cut = _utf8_boundary(data) if chunk else len(data)
            try:
                text = data[:cut].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise StatementError(f"document is not valid UTF-8 at byte "
                                     f"{offset + exc.start}") from exc
            window = tail + text
            found.update(marker for marker in _MARKERS if marker in window)
            tail = window[-(max(map(len, _MARKERS)) - 1):]
            offset, pending = offset + cut, data[cut:]
            if not chunk:
                break
    for marker in _MARKERS:
        if marker in found:
            raise StatementError(f"document contains {marker}: DTDs and entity declarations "
                                 "are refused")


def _utf8_boundary(data: bytes) -> int:
    """Where to cut `data` so that no UTF-8 sequence that may go on in the next chunk is cut."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:  # a lead byte: is its sequence complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) - back if need > back else len(data)
    return len(data)


def _pull(path: Path) -> Iterator[tuple[str, ET.Element]]:
    """(event, element) for "start" and "end", parsing the file in chunks, as `_parse` does."""
    parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
    try:
        with path.open("rb") as handle:
            chunk = handle.read(_READ_CHUNK).removeprefix(_BOM)
            while chunk:
                parser.feed(chunk)
                yield from parser.read_events()  # type: ignore[misc]
                chunk = handle.read(_READ_CHUNK)
        parser.close()
        yield from parser.read_events()  # type: ignore[misc]
    except ET.ParseError as exc:
        raise StatementError(f"document is not well-formed XML: {exc}") from exc


def _is_entry(stack: list[ET.Element], element: ET.Element) -> bool:
    """Whether `element`, just ended, is a Ntry child of a Stmt of a BkToCstmrStmt."""
    return (len(stack) == 3 and element.tag == _q("Ntry") and stack[2].tag == _q("Stmt")
            and stack[1].tag == _q("BkToCstmrStmt"))


def _skeleton(path: Path) -> ET.Element:
    """The document without the Ntry elements of its statements."""
    stack: list[ET.Element] = []
    root: ET.Element | None = None
    for event, element in _pull(path):
        if event == "start":
            root = element if root is None else root
            stack.append(element)
            continue
        stack.pop()
        if _is_entry(stack, element):
            stack[-1].remove(element)
    assert root is not None  # an empty document is not well-formed
    return root


def _statement_entries(path: Path) -> Iterator[ET.Element]:
    """The Ntry elements of the statement `_read_head` reads (in the first BkToCstmrStmt), in
    document order, each dropped from the tree once the caller is done with it."""
    stack: list[ET.Element] = []
    report: ET.Element | None = None
    for event, element in _pull(path):
        if event == "start":
            stack.append(element)
            if report is None and len(stack) == 2 and element.tag == _q("BkToCstmrStmt"):
                report = element
            continue
        stack.pop()
        if _is_entry(stack, element) and stack[1] is report:
            yield element
            stack[-1].remove(element)
        elif len(stack) == 3 and stack[1] is not report:
            stack[-1].remove(element)  # other reports are not read: do not keep them


def _parse(data: bytes) -> ET.Element:
    if not isinstance(data, bytes | bytearray):
        raise StatementError(f"expected bytes, got {type(data).__name__}")
    body = bytes(data).removeprefix(b"\xef\xbb\xbf")
    declared = _ENCODING.match(body)
    if declared and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        encoding = declared.group(1).decode("ascii")
        raise StatementError(f"document declares encoding {encoding!r}; only UTF-8 is accepted")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StatementError(f"document is not valid UTF-8 at byte {exc.start}") from exc
    for marker in ("<!DOCTYPE", "<!ENTITY"):
        if marker in text:
            raise StatementError(f"document contains {marker}: DTDs and entity declarations "
                                 "are refused")
    try:
        return ET.fromstring(body)
    except ET.ParseError as exc:
        raise StatementError(f"document is not well-formed XML: {exc}") from exc


def _read_entry(ntry: ET.Element, where: str, currency: str, exponent: int) -> StatementLine:
    entry_ref = _string(_one(ntry, "NtryRef", where), f"{where}/NtryRef")
    amount = _amount(_one(ntry, "Amt", where), f"{where}/Amt", currency, exponent)
    side = _indicator(_one(ntry, "CdtDbtInd", where), f"{where}/CdtDbtInd")
    status = _token(_one(_one(ntry, "Sts", where), "Cd", f"{where}/Sts",
                         hint="a proprietary status is not supported"), f"{where}/Sts/Cd")
    if status != "BOOK":
        raise StatementError(f"{where}/Sts/Cd is {status!r}; only booked (BOOK) entries are "
                             "supported")
    booking = _date(_one(_one(ntry, "BookgDt", where), "Dt", f"{where}/BookgDt"),
                    f"{where}/BookgDt/Dt")
    value = _date(_one(_one(ntry, "ValDt", where), "Dt", f"{where}/ValDt"),
                  f"{where}/ValDt/Dt")
    positions = [
        prtry for prtry in ntry.iterfind(f"{_q('NtryDtls')}/{_q('TxDtls')}/{_q('Refs')}/"
                                         f"{_q('Prtry')}")
        if (prtry.findtext(_q("Tp")) or "") == POSITION_REF_TYPE
    ]
    if len(positions) != 1:
        raise StatementError(f"{where}: expected exactly one NtryDtls/TxDtls/Refs/Prtry with "
                             f"Tp {POSITION_REF_TYPE!r}, found {len(positions)}")
    ref_where = f"{where}/NtryDtls/TxDtls/Refs/Prtry/Ref"
    position_text = _token(_one(positions[0], "Ref", ref_where.removesuffix("/Ref")), ref_where)
    if not re.fullmatch(r"[0-9]{1,35}", position_text, re.ASCII):
        raise StatementError(f"{ref_where}: position {position_text[:40]!r} is not a "
                             "non-negative integer")
    info = ntry.find(_q("AddtlNtryInf"))
    return StatementLine(
        entry_ref=entry_ref,
        position=int(position_text),
        booking_date=booking,
        value_date=value,
        side=side,
        amount_minor=amount,
        description="" if info is None else info.text or "",
    )


def _check_summary(summary: ET.Element, totals: LineTotals, currency: str,
                   exponent: int) -> None:
    credits, debits = totals.credits, totals.debits
    expected = {
        "TtlNtries": (_count(totals), credits + debits),
        "TtlCdtNtries": (totals.credit_count, credits),
        "TtlDbtNtries": (totals.debit_count, debits),
    }
    for tag, (count, total) in expected.items():
        where = f"Stmt/TxsSummry/{tag}"
        part = summary.find(_q(tag))
        if part is None:
            continue
        number = part.find(_q("NbOfNtries"))
        if number is not None:
            text = _token(number, f"{where}/NbOfNtries")
            if not re.fullmatch(r"[0-9]{1,15}", text, re.ASCII) or int(text) != count:
                raise StatementError(f"{where}/NbOfNtries is {text[:20]!r} but the statement "
                                     f"has {count} such entries")
        sum_el = part.find(_q("Sum"))
        if sum_el is not None:
            found = _amount(sum_el, f"{where}/Sum", None, exponent)
            if found != total:
                raise StatementError(f"{where}/Sum is {sum_el.text!r} but the entries add up "
                                     f"to {_format_amount(total, exponent, where)} {currency}")
        net_el = part.find(_q("TtlNetNtry"))
        if net_el is not None and tag == "TtlNtries":
            net_where = f"{where}/TtlNetNtry"
            net = _amount(_one(net_el, "Amt", net_where), f"{net_where}/Amt", None, exponent)
            if _indicator(_one(net_el, "CdtDbtInd", net_where), f"{net_where}/CdtDbtInd") == "D":
                net = -net
            if net != credits - debits:
                raise StatementError(f"{net_where} is {net} minor units but credits minus "
                                     f"debits is {credits - debits}")


def _one(parent: ET.Element, tag: str, where: str, *, hint: str = "") -> ET.Element:
    element = parent.find(_q(tag))
    if element is None:
        raise StatementError(f"{where}: missing {tag}" + (f" ({hint})" if hint else ""))
    return element


def _string(element: ET.Element, where: str) -> str:
    text = element.text or ""
    if not text:
        raise StatementError(f"{where} is empty")
    return text


def _token(element: ET.Element, where: str) -> str:
    return (element.text or "").strip(_XML_SPACE)


def _indicator(element: ET.Element, where: str) -> str:
    text = _token(element, where)
    if text not in _INDICATORS:
        raise StatementError(f"{where} must be CRDT or DBIT, got {text[:20]!r}")
    return _INDICATORS[text]


def _account_id(ident: ET.Element) -> str:
    other = ident.find(f"{_q('Othr')}/{_q('Id')}")
    if other is not None:
        return _string(other, "Stmt/Acct/Id/Othr/Id")
    iban = ident.find(_q("IBAN"))
    if iban is not None:
        return _token(iban, "Stmt/Acct/Id/IBAN")
    raise StatementError("Stmt/Acct/Id: missing Othr/Id (or IBAN)")


def _amount(element: ET.Element, where: str, currency: str | None, exponent: int) -> int:
    """Exact minor units of a non-negative decimal amount; `currency` checks the Ccy attribute."""
    if currency is not None:
        ccy = element.get("Ccy")
        if ccy is None:
            raise StatementError(f"{where}: missing Ccy attribute")
        if ccy != currency:
            raise StatementError(f"{where} is in {ccy[:8]!r}, not the account currency "
                                 f"{currency}")
    text = _token(element, where)
    match = _DECIMAL.fullmatch(text) if len(text) <= 64 else None
    if match is None or not (match.group(1) or match.group(2)):
        raise StatementError(f"{where}: {text[:40]!r} is not a non-negative decimal amount")
    whole, fraction = match.group(1), match.group(2) or ""
    significant = whole.lstrip("0") + fraction.rstrip("0")
    if len(significant) > _AMOUNT_DIGITS:
        raise StatementError(f"{where}: {text!r} has more than {_AMOUNT_DIGITS} digits")
    if fraction[exponent:].strip("0"):
        raise StatementError(f"{where}: {text!r} is finer than the minor unit "
                             f"({exponent} decimal places)")
    return int((whole or "0") + fraction[:exponent].ljust(exponent, "0"))


def _date(element: ET.Element, where: str) -> date:
    text = _token(element, where)
    match = _DATE.fullmatch(text)
    if match is None:
        raise StatementError(f"{where}: {text[:40]!r} is not a date (YYYY-MM-DD)")
    try:
        return date(*(int(g) for g in match.groups()))
    except ValueError as exc:
        raise StatementError(f"{where}: {text!r} is not a valid date: {exc}") from exc


def _datetime(element: ET.Element, where: str) -> datetime:
    """An xs:dateTime with a UTC offset, converted to UTC. Naive times are ambiguous: refused."""
    text = _token(element, where)
    match = _DATETIME.fullmatch(text)
    if match is None:
        raise StatementError(f"{where}: {text[:40]!r} is not a date-time with a UTC offset "
                             "(YYYY-MM-DDThh:mm:ss[.ffffff](Z|+hh:mm))")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    fraction = fraction or ""
    if fraction[6:].strip("0"):
        raise StatementError(f"{where}: {text!r} is more precise than microseconds")
    micro = int(fraction[:6].ljust(6, "0"))
    try:
        if offset == "Z":
            tz = UTC
        else:
            hours, minutes = int(offset[1:3]), int(offset[4:6])
            if hours > 14 or minutes > 59 or (hours == 14 and minutes):
                raise ValueError(f"UTC offset {offset} out of range")
            sign = -1 if offset[0] == "-" else 1
            tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
        parsed = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                          micro, tzinfo=tz)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise StatementError(f"{where}: {text!r} is not a valid date-time: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Checking


def check_adds_up(statement: Statement) -> None:
    """Raise `StatementError` unless the lines are in strictly increasing position order and
    opening + credits - debits == closing (balances signed with credit positive)."""
    tally = AddsUp()
    for line in statement.lines:
        tally.add(line)
    tally.check(statement)


class AddsUp:
    """`check_adds_up` for lines that arrive one at a time: `add` each line, then `check` the
    statement (its own lines are not looked at) for the same error `check_adds_up` raises."""

    __slots__ = ("_count", "_credits", "_debits", "_previous", "_problem")

    def __init__(self) -> None:
        self._count = self._credits = self._debits = 0
        self._previous: int | None = None
        self._problem: str | None = None

    def add(self, line: StatementLine) -> None:
        i = self._count
        self._count += 1
        if self._problem is not None:
            return
        previous = self._previous
        if previous is not None and line.position <= previous:
            self._problem = (f"lines out of order: line {i} ({line.entry_ref!r}) has "
                             f"position {line.position} after position {previous}")
            return
        self._previous = line.position
        if line.amount_minor < 0:
            self._problem = (f"line {i} ({line.entry_ref!r}) has a negative amount "
                             f"{line.amount_minor}")
        elif line.side == "C":
            self._credits += line.amount_minor
        elif line.side == "D":
            self._debits += line.amount_minor
        else:
            self._problem = (f"line {i} ({line.entry_ref!r}) has side {line.side!r}; "
                             "expected 'D' or 'C'")

    def check(self, statement: Statement) -> None:
        if self._problem is not None:
            raise StatementError(self._problem)
        credits, debits = self._credits, self._debits
        expected = statement.opening_balance_minor + credits - debits
        if expected != statement.closing_balance_minor:
            raise StatementError(
                f"statement {statement.statement_id!r} does not add up: opening "
                f"{statement.opening_balance_minor} + credits {credits} - debits {debits} = "
                f"{expected}, but closing is {statement.closing_balance_minor} "
                f"(off by {statement.closing_balance_minor - expected} minor units)")


def camt_ref(reference: str, fallback: str) -> str:
    """`reference` when it fits a Max35Text, else `fallback` (which must)."""
    return reference if len(reference) <= _MAX35 else fallback


def camt_account_id(account_id: str) -> str:
    """The ledger's account id when it fits the schema's 34 characters, else `H` and the first
    33 hex digits of its SHA-256 (statement files are also named by the full id)."""
    if len(account_id) <= _MAX34:
        return account_id
    return "H" + hashlib.sha256(account_id.encode()).hexdigest()[:_MAX34 - 1]
