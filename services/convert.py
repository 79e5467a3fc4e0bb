"""Protos <-> domain, with every field validated at the edge.

Each parser names the offending field by its path in the request (`transfers[3].postings[0]
.amount.nanos`), collects every violation of a request, and raises them together as one
INVALID_ARGUMENT. Output-only fields set by a client are refused rather than ignored.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, timedelta

from google.protobuf import timestamp_pb2
from google.rpc import status_pb2
from google.type import date_pb2, money_pb2

from bank.app.accounts import AccountSpec
from bank.app.queries import StatementLine, TransferView, TrialBalanceRow
from bank.app.transfers import RESERVED_TRANSFER_PREFIX
from bank.domain import limits
from bank.domain.accounts import Account, AccountStatus, AccountType, OwnerKind, Side, Totals
from bank.domain.currency import is_known
from bank.domain.entries import (
    Effect,
    JournalEntry,
    PostingLine,
    TransferKind,
    TransferSpec,
    TransferState,
)
from bank.domain.errors import (
    FieldViolation,
    InvalidArgument,
    LedgerError,
    LimitExceeded,
    ViolationCollector,
)
from bank.domain.money import from_units_nanos, to_units_nanos
from services.errors import OK_STATUS, to_status
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb

ID_RE = re.compile(limits.ID_PATTERN)
CODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
OWNER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
TIMESTAMP_MIN_S = 946_684_800  # 2000-01-01T00:00:00Z
TIMESTAMP_MAX_S = 7_258_118_399  # 2199-12-31T23:59:59Z: nanoseconds stay within int64

ACCOUNT_TYPES = {AccountType.ASSET: pb.ACCOUNT_TYPE_ASSET,
                 AccountType.LIABILITY: pb.ACCOUNT_TYPE_LIABILITY,
                 AccountType.EQUITY: pb.ACCOUNT_TYPE_EQUITY,
                 AccountType.INCOME: pb.ACCOUNT_TYPE_INCOME,
                 AccountType.EXPENSE: pb.ACCOUNT_TYPE_EXPENSE}
OWNER_KINDS = {OwnerKind.BANK: pb.OWNER_KIND_BANK, OwnerKind.MEMBER: pb.OWNER_KIND_MEMBER,
               OwnerKind.COUNCIL: pb.OWNER_KIND_COUNCIL, OwnerKind.POOL: pb.OWNER_KIND_POOL}
SIDES = {Side.DEBIT: pb.SIDE_DEBIT, Side.CREDIT: pb.SIDE_CREDIT}
KINDS = {TransferKind.POSTED: pb.TRANSFER_KIND_POSTED,
         TransferKind.PENDING: pb.TRANSFER_KIND_PENDING,
         TransferKind.POST_PENDING: pb.TRANSFER_KIND_POST_PENDING,
         TransferKind.VOID_PENDING: pb.TRANSFER_KIND_VOID_PENDING,
         TransferKind.EXPIRE_PENDING: pb.TRANSFER_KIND_EXPIRE_PENDING,
         TransferKind.REVERSAL: pb.TRANSFER_KIND_REVERSAL}
EFFECTS = {Effect.POST: pb.RecordedPosting.EFFECT_POST,
           Effect.RESERVE: pb.RecordedPosting.EFFECT_RESERVE,
           Effect.RELEASE: pb.RecordedPosting.EFFECT_RELEASE}
ACCOUNT_STATES = {AccountStatus.OPEN: pb.Account.STATE_OPEN,
                  AccountStatus.FROZEN: pb.Account.STATE_FROZEN,
                  AccountStatus.CLOSED: pb.Account.STATE_CLOSED}
TRANSFER_STATES = {TransferState.POSTED: pb.Transfer.STATE_POSTED,
                   TransferState.PENDING: pb.Transfer.STATE_PENDING,
                   TransferState.PENDING_POSTED: pb.Transfer.STATE_PENDING_POSTED,
                   TransferState.PENDING_VOIDED: pb.Transfer.STATE_PENDING_VOIDED,
                   TransferState.PENDING_EXPIRED: pb.Transfer.STATE_PENDING_EXPIRED}


def _reverse(table: dict[object, int]) -> dict[int, object]:
    return {v: k for k, v in table.items()}


# -- ids and names --------------------------------------------------------------------------------
def check_id(value: str, field: str, v: ViolationCollector) -> str:
    if not value:
        v.add(field, "is required")
    elif not ID_RE.fullmatch(value):
        v.add(field, "must be 1-64 characters of [A-Za-z0-9_.:-], starting with a letter or digit")
    return value


def request_id(value: str, v: ViolationCollector) -> str:
    return check_id(value, "request_id", v)


def parse_name(value: str, collection: str, field: str, v: ViolationCollector) -> str:
    """`accounts/{id}` -> id; adds a violation (and returns "") when malformed."""
    prefix = f"{collection}/"
    if not value:
        v.add(field, "is required")
        return ""
    if not value.startswith(prefix) or not ID_RE.fullmatch(value[len(prefix):]):
        v.add(field, f"must be {collection}/{{id}} with an id of 1-64 characters of "
              "[A-Za-z0-9_.:-]")
        return ""
    return value[len(prefix):]


def name_or_raise(value: str, collection: str, field: str) -> str:
    v = ViolationCollector()
    result = parse_name(value, collection, field, v)
    v.raise_if_any()
    return result


# -- money, dates, times --------------------------------------------------------------------------
def money_in(m: money_pb2.Money, field: str, v: ViolationCollector) -> tuple[str, int] | None:
    try:
        money = from_units_nanos(m.currency_code, m.units, m.nanos, field)
    except InvalidArgument as error:
        for violation in error.violations:
            v.add(violation.field, violation.description)
        return None
    return money.currency, money.minor


def money_out(minor: int, currency: str) -> money_pb2.Money:
    units, nanos = to_units_nanos(minor, currency)
    return money_pb2.Money(currency_code=currency, units=units, nanos=nanos)


def date_in(d: date_pb2.Date, field: str, v: ViolationCollector, today: date) -> date | None:
    try:
        value = date(d.year, d.month, d.day)
    except ValueError:
        v.add(field, "must be a full, valid calendar date (year, month and day)")
        return None
    if not (today - timedelta(days=limits.EFFECTIVE_DATE_PAST_DAYS_MAX) <= value
            <= today + timedelta(days=limits.EFFECTIVE_DATE_FUTURE_DAYS_MAX)):
        v.add(field, f"must be within {limits.EFFECTIVE_DATE_PAST_DAYS_MAX} days before and "
              f"{limits.EFFECTIVE_DATE_FUTURE_DAYS_MAX} days after the business date")
        return None
    return value


def date_out(d: date) -> date_pb2.Date:
    return date_pb2.Date(year=d.year, month=d.month, day=d.day)


def timestamp_in(ts: timestamp_pb2.Timestamp, field: str, v: ViolationCollector) -> int | None:
    if not TIMESTAMP_MIN_S <= ts.seconds <= TIMESTAMP_MAX_S or not 0 <= ts.nanos < 10**9:
        v.add(field, "must be a valid time between 2000-01-01 and 2199-12-31")
        return None
    return ts.seconds * 1_000_000_000 + ts.nanos


def timestamp_out(ns: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def text_in(value: str, field: str, length_max: int, v: ViolationCollector) -> str:
    if len(value) > length_max:
        v.add(field, f"must be at most {length_max} characters")
    elif _has_control(value):
        v.add(field, "must not contain control characters")
    return value


def _has_control(value: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in value)


def metadata_in(items: dict[str, str], field: str,
                v: ViolationCollector) -> tuple[tuple[str, str], ...]:
    if len(items) > limits.METADATA_KEYS_MAX:
        v.add(field, f"must have at most {limits.METADATA_KEYS_MAX} keys")
    size = 0
    for key, value in sorted(items.items()):
        if not key or len(key) > limits.METADATA_KEY_LENGTH_MAX:
            v.add(f"{field}[{key[:40]!r}]",
                  f"keys must be 1-{limits.METADATA_KEY_LENGTH_MAX} characters")
        elif _has_control(key) or _has_control(value):
            v.add(f"{field}[{key[:40]!r}]", "keys and values must not contain control characters")
        size += len(key.encode()) + len(value.encode())
    if size > limits.METADATA_BYTES_MAX:
        v.add(field, f"must be at most {limits.METADATA_BYTES_MAX} bytes in all")
    return tuple(sorted(items.items()))


def batch_size(count: int, field: str, count_max: int) -> None:
    if count > count_max:
        raise LimitExceeded("BATCH_TOO_LARGE", f"{field}: at most {count_max} per request, "
                            f"got {count}", metadata={"field": field, "limit": str(count_max)},
                            violations=(FieldViolation(field,
                                                       f"must have at most {count_max} items"),))


# -- accounts -------------------------------------------------------------------------------------
_ACCOUNT_OUTPUT_ONLY = ("name", "state", "debits_posted", "credits_posted", "debits_pending",
                        "credits_pending", "balance", "available_balance", "create_time")
_TYPE_IN = _reverse(ACCOUNT_TYPES)  # type: ignore[arg-type]
_OWNER_IN = _reverse(OWNER_KINDS)  # type: ignore[arg-type]


def account_spec_in(a: pb.Account, path: str, v: ViolationCollector) -> AccountSpec | None:
    before = len(v.violations)
    check_id(a.account_id, f"{path}.account_id", v)
    if not a.currency_code:
        v.add(f"{path}.currency_code", "is required")
    elif not is_known(a.currency_code):
        v.add(f"{path}.currency_code", "must be a known ISO 4217 currency code")
    account_type = _TYPE_IN.get(a.type)
    if account_type is None:
        v.add(f"{path}.type", "is required: ASSET, LIABILITY, EQUITY, INCOME or EXPENSE")
    if not CODE_RE.fullmatch(a.code):
        v.add(f"{path}.code", "must be 1-32 characters of [A-Za-z0-9_.-]")
    owner_kind = _OWNER_IN.get(a.owner_kind)
    if owner_kind is None:
        v.add(f"{path}.owner_kind", "is required: BANK, MEMBER, COUNCIL or POOL")
    if not OWNER_RE.fullmatch(a.owner_id):
        v.add(f"{path}.owner_id", "must be 1-128 characters of [A-Za-z0-9_.:-]")
    if a.debits_must_not_exceed_credits and a.credits_must_not_exceed_debits:
        v.add(f"{path}.credits_must_not_exceed_debits", "cannot be set together with "
              "debits_must_not_exceed_credits")
    present = {descriptor.name for descriptor, _ in a.ListFields()}
    for name in _ACCOUNT_OUTPUT_ONLY:
        if name in present:
            v.add(f"{path}.{name}", "is output only and must not be set")
    if len(v.violations) > before:
        return None
    return AccountSpec(a.account_id, a.currency_code, account_type,  # type: ignore[arg-type]
                       a.code, owner_kind, a.owner_id,  # type: ignore[arg-type]
                       a.debits_must_not_exceed_credits, a.credits_must_not_exceed_debits)


def account_out(a: Account) -> pb.Account:
    t, c, side = a.totals, a.currency, a.account_type.normal_side
    return pb.Account(
        name=f"accounts/{a.account_id}", account_id=a.account_id, currency_code=c,
        type=ACCOUNT_TYPES[a.account_type], code=a.code, owner_kind=OWNER_KINDS[a.owner_kind],
        owner_id=a.owner_id, debits_must_not_exceed_credits=a.debits_must_not_exceed_credits,
        credits_must_not_exceed_debits=a.credits_must_not_exceed_debits,
        state=ACCOUNT_STATES[a.status], debits_posted=money_out(t.debits_posted, c),
        credits_posted=money_out(t.credits_posted, c),
        debits_pending=money_out(t.debits_pending, c),
        credits_pending=money_out(t.credits_pending, c),
        balance=money_out(t.balance(side), c), available_balance=money_out(t.available(side), c),
        create_time=timestamp_out(a.created_ns))


def balance_out(a: Account, totals: Totals, as_of_ns: int) -> pb.AccountBalance:
    c, side = a.currency, a.account_type.normal_side
    return pb.AccountBalance(
        account=f"accounts/{a.account_id}", as_of_time=timestamp_out(as_of_ns),
        debits_posted=money_out(totals.debits_posted, c),
        credits_posted=money_out(totals.credits_posted, c),
        debits_pending=money_out(totals.debits_pending, c),
        credits_pending=money_out(totals.credits_pending, c),
        balance=money_out(totals.balance(side), c),
        available_balance=money_out(totals.available(side), c))


# -- transfers ------------------------------------------------------------------------------------
_KIND_IN = _reverse(KINDS)  # type: ignore[arg-type]
_SIDE_IN = _reverse(SIDES)  # type: ignore[arg-type]


def transfer_spec_in(t: pb.TransferInput, path: str, v: ViolationCollector,
                     today: date) -> TransferSpec | None:
    before = len(v.violations)
    check_id(t.transfer_id, f"{path}.transfer_id", v)
    if t.transfer_id.startswith(RESERVED_TRANSFER_PREFIX):
        v.add(f"{path}.transfer_id", f"ids starting with {RESERVED_TRANSFER_PREFIX!r} are "
              "reserved for the server")
    kind = _KIND_IN.get(t.kind)
    if kind is None:
        v.add(f"{path}.kind", "is required: POSTED, PENDING, POST_PENDING, VOID_PENDING or "
              "REVERSAL")
    if len(t.postings) > limits.POSTINGS_PER_ENTRY_MAX:
        v.add(f"{path}.postings", f"must have at most {limits.POSTINGS_PER_ENTRY_MAX} postings")
    lines = []
    for j, p in enumerate(t.postings[:limits.POSTINGS_PER_ENTRY_MAX]):
        account = parse_name(p.account, "accounts", f"{path}.postings[{j}].account", v)
        side = _SIDE_IN.get(p.side)
        if side is None:
            v.add(f"{path}.postings[{j}].side", "is required: DEBIT or CREDIT")
        if not p.HasField("amount"):
            v.add(f"{path}.postings[{j}].amount", "is required")
            continue
        money = money_in(p.amount, f"{path}.postings[{j}].amount", v)
        if money is not None and account and side is not None:
            lines.append(PostingLine(account, side, money[1], money[0]))  # type: ignore[arg-type]
    pending = (parse_name(t.pending_transfer, "transfers", f"{path}.pending_transfer", v)
               if t.pending_transfer else None)
    reverses = (parse_name(t.reverses_transfer, "transfers", f"{path}.reverses_transfer", v)
                if t.reverses_transfer else None)
    effective = (date_in(t.effective_date, f"{path}.effective_date", v, today)
                 if t.HasField("effective_date") else None)
    description = text_in(t.description, f"{path}.description", limits.DESCRIPTION_LENGTH_MAX, v)
    metadata = metadata_in(dict(t.metadata), f"{path}.metadata", v)
    if not 0 <= t.timeout_seconds <= limits.PENDING_TIMEOUT_SECONDS_MAX:
        v.add(f"{path}.timeout_seconds",
              f"must be between 0 and {limits.PENDING_TIMEOUT_SECONDS_MAX}")
    if len(v.violations) > before:
        return None
    return TransferSpec(t.transfer_id, kind, tuple(lines), pending, reverses,  # type: ignore[arg-type]
                        effective, description, metadata, t.timeout_seconds, t.linked)


def _ref(transfer_id: str | None) -> str:
    return f"transfers/{transfer_id}" if transfer_id else ""


def transfer_out(view: TransferView) -> pb.Transfer:
    message = entry_out(view.entry)
    message.state = TRANSFER_STATES[view.state]
    message.resolved_by = _ref(view.resolved_by)
    message.reversed_by = _ref(view.reversed_by)
    return message


def entry_out(e: JournalEntry) -> pb.Transfer:
    message = pb.Transfer(
        name=_ref(e.transfer_id), kind=KINDS[e.kind], pending_transfer=_ref(e.pending_id),
        reverses_transfer=_ref(e.reverses_id), effective_date=date_out(e.effective_date),
        description=e.description, metadata=dict(e.metadata),
        record_time=timestamp_out(e.recorded_ns), position=e.seq,
        postings=[pb.RecordedPosting(account=f"accounts/{p.account_id}", side=SIDES[p.side],
                                     amount=money_out(p.amount, p.currency),
                                     effect=EFFECTS[p.effect]) for p in e.postings])
    if e.expires_ns:
        message.expire_time.CopyFrom(timestamp_out(e.expires_ns))
    return message


def statement_line_out(line: StatementLine, currency: str) -> pb.AccountEntry:
    p, e = line.posting, line.entry
    return pb.AccountEntry(
        transfer=_ref(e.transfer_id), position=e.seq, side=SIDES[p.side],
        amount=money_out(p.amount, currency), balance_after=money_out(line.balance_after, currency),
        record_time=timestamp_out(e.recorded_ns), effective_date=date_out(e.effective_date),
        description=e.description)


def trial_balance_out(rows: list[TrialBalanceRow]) -> pb.TrialBalance:
    totals: dict[str, list[int]] = {}
    out = pb.TrialBalance()
    for row in rows:
        out.rows.append(pb.TrialBalance.Row(
            currency_code=row.currency, type=ACCOUNT_TYPES[AccountType(row.account_type)],
            debits_posted=money_out(row.debits_posted, row.currency),
            credits_posted=money_out(row.credits_posted, row.currency)))
        pair = totals.setdefault(row.currency, [0, 0])
        pair[0] += row.debits_posted
        pair[1] += row.credits_posted
    for currency, (debits, credits) in sorted(totals.items()):
        out.totals.append(pb.TrialBalance.CurrencyTotal(
            currency_code=currency, debits_posted=money_out(debits, currency),
            credits_posted=money_out(credits, currency)))
    return out


def item_status(error: LedgerError | None) -> status_pb2.Status:
    """OK, or the rich status of one failed item of a batch."""
    return OK_STATUS if error is None else to_status(error)
