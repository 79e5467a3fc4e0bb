"""Adversarial and malformed requests against a running server (SQLite and PostgreSQL).

Hypothesis generates hostile requests: random unicode and very long ids, names without their
collection prefix, path traversal, NUL and control characters, unknown and lowercase
currencies, amounts at the int64 extremes, mixed signs, nanos out of range, unset and
out-of-range enum numbers, huge metadata, timeout extremes, impossible dates, timestamps before
2000 or absurd, negative page sizes, garbage page tokens and random bytes on the wire.

For every example the property is the same:

- the call is refused with INVALID_ARGUMENT or RESOURCE_EXHAUSTED (or, where the request is
  structurally valid, every item fails with a business status) and never INTERNAL, UNKNOWN or a
  crash;
- the refusal carries a google.rpc.Status with ErrorInfo (domain peoplesbank.coop) and, for
  INVALID_ARGUMENT, at least one BadRequest field violation;
- nothing changed: every table is snapshotted before and after and compared. (A structurally
  valid request whose items all fail is recorded for idempotency: exactly one `requests` row and
  one audit leaf are added, and nothing else.)
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import date, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from google.type import money_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, inspect, text

from bank.app.paging import encode_token
from bank.domain.currency import is_known
from services.convert import TIMESTAMP_MAX_S, TIMESTAMP_MIN_S
from services.generated.peoplesbank.ledger.v1 import ledger_service_pb2 as pb
from tests.helpers import account, error_info, field_violations, item_reason, transfer

# -- oracles taken from the API contract (ledger_service.proto) ----------------------------------
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
CODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
OWNER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
NANOS = 10**9
# The documented range of request times (the bound keeps nanoseconds within int64).
TS_MIN_S, TS_MAX_S = TIMESTAMP_MIN_S, TIMESTAMP_MAX_S
assert TS_MAX_S < INT64_MAX // NANOS
NOW_S = 1_767_225_600  # the FixedClock of tests/conftest.py: 2026-01-01T00:00:00Z
TODAY = date(2026, 1, 1)
DOMAIN = "peoplesbank.coop"
ERROR_CODES_NEVER = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
REFUSED = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
METHOD = "/peoplesbank.ledger.v1.LedgerService/"
TELLER = "tess;teller;branch:preston"
MESSAGE_BYTES_MAX = 16 * 1024 * 1024

SETTINGS = settings(
    max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.filter_too_much])

TABLES = {
    "accounts": "account_id",
    "entries": "seq",
    "postings": "entry_seq, idx",
    "requests": "request_id",
    "audit_log": "idx",
    "ledger_head": "id",
}
# What recording a request (for idempotency and audit) touches; nothing else may change.
RECORDING_TABLES = {"requests", "audit_log", "ledger_head"}


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table: the ledger's own in key order, any other (approvals...) too."""
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        assert set(TABLES) <= tables
        rows = {table: [tuple(row) for row in conn.execute(
            text(f"SELECT * FROM {table} ORDER BY {key}"))]
            for table, key in TABLES.items()}
        for table in sorted(tables - set(TABLES)):
            rows[table] = sorted((tuple(row) for row in conn.execute(
                text(f"SELECT * FROM {table}"))), key=repr)
        return rows


def assert_unchanged(engine: Engine, before: dict[str, list[tuple[Any, ...]]]) -> None:
    after = snapshot(engine)
    assert after.keys() == before.keys()
    for table in before:
        assert after[table] == before[table], f"table {table} changed"


def is_name(value: str, collection: str) -> bool:
    prefix = f"{collection}/"
    return value.startswith(prefix) and ID_RE.fullmatch(value[len(prefix):]) is not None


def check_rich_refusal(error: grpc.RpcError, allowed: tuple[grpc.StatusCode, ...]) -> None:
    code = error.code()
    assert code not in ERROR_CODES_NEVER, f"{code}: {error.details()}"
    assert code in allowed, f"{code}: {error.details()}"
    status = rpc_status.from_call(error)
    assert status is not None, "the error carries no google.rpc.Status"
    info = error_info(error)
    assert info.domain == DOMAIN
    assert info.reason
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        assert field_violations(error), "INVALID_ARGUMENT without a BadRequest field violation"


def call_refused(method: Any, request: Any, allowed: tuple[grpc.StatusCode, ...] = REFUSED,
                 **kwargs: Any) -> grpc.RpcError:
    try:
        response = method(request, **kwargs)
    except grpc.RpcError as error:
        check_rich_refusal(error, allowed)
        return error
    pytest.fail(f"a malformed request was accepted: {str(response)[:500]}")


# -- seed ----------------------------------------------------------------------------------------
SEED_TRANSFER = "seed-1"
EXISTING_ACCOUNTS = ("cash", "alice", "empty", "closed", "euro")


@pytest.fixture
def seeded(ledger: Any) -> Any:
    """A ledger with a few accounts (one closed) and one posted transfer."""
    response = ledger.CreateAccounts(pb.CreateAccountsRequest(request_id="seed-accounts", accounts=[
        account("cash", "ASSET", owner=("BANK", "bank")),
        account("alice", no_overdraft=True),
        account("empty", no_overdraft=True, owner=("MEMBER", "m-2")),
        account("closed", owner=("MEMBER", "m-3")),
        account("euro", currency="EUR", owner=("MEMBER", "m-4")),
    ]))
    assert all(r.status.code == 0 for r in response.results)
    response = ledger.CreateTransfers(pb.CreateTransfersRequest(
        request_id="seed-transfers", transfers=[transfer(SEED_TRANSFER, "cash", "alice", 10_000)]))
    assert response.results[0].status.code == 0
    ledger.CloseAccount(pb.CloseAccountRequest(request_id="seed-close", name="accounts/closed"))
    return ledger


# -- strategies: hostile strings -----------------------------------------------------------------
NASTY = [
    "", " ", "  ", "\t", "-abc", ".hidden", "_x", ":x", "..", ".", "/", "//", "../../etc/passwd",
    "..\\..\\windows\\system32", "a/b", "a/../b", "%2e%2e%2f", "%00", "a\x00b", "\x00", "a\nb",
    "a\r\n", "a b", "a\tb", "\x1b[31m", "\x7f", "\u0085", "\u2028", "\ufeffabc", "abc\u200b",
    "\u202eabc", "\uff41\uff42\uff43", "\u0391\u0392\u0393",
    "\U0001d518\U0001d52b\U0001d526", "😀", "ß", "İ", "'; DROP TABLE accounts; --",
    "\" OR 1=1 --", "*", "?", "#", "a" * 65, "a" * 1_000, "9" * 10_000, "accounts/", "transfers/",
    "accounts/alice/", "/accounts/alice", "accounts//alice", "Accounts/alice", "ACCOUNTS/alice",
    "account/alice", "accounts/ alice", "accounts/alice ", " accounts/alice", "accounts/alice\n",
    "accounts/../alice", "accounts/./alice", "accounts/%61lice", "accounts/al ice",
    "accounts/\x00alice", "transfers/alice", "accounts/" + "a" * 65, "alice",
]

hostile_text = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=80),  # any unicode scalar value, controls and NUL included
    st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=80),
    st.text(alphabet="abcAZ09_.:-/\\ \x00\n%", max_size=80),
    st.integers(65, 20_000).map(lambda n: "x" * n),  # very long
    st.text(min_size=65, max_size=400),
)


def bad_ids() -> st.SearchStrategy[str]:
    return hostile_text.filter(lambda s: ID_RE.fullmatch(s) is None)


def valid_ids() -> st.SearchStrategy[str]:
    return st.from_regex(ID_RE, fullmatch=True)


def bad_names(collection: str) -> st.SearchStrategy[str]:
    prefixed = st.builds(lambda s: f"{collection}/{s}", hostile_text)
    wrong_prefix = st.builds(
        lambda p, s: f"{p}{s}",
        st.sampled_from(["", "/", f"{collection}", f"{collection}//", f"/{collection}/",
                         f"{collection.upper()}/", f"{collection[:-1]}/", "x/", "../",
                         f"{collection}/../", "transfers/" if collection == "accounts"
                         else "accounts/"]),
        st.one_of(valid_ids(), hostile_text))
    return st.one_of(hostile_text, prefixed, wrong_prefix).filter(
        lambda n: not is_name(n, collection))


bad_currencies = st.one_of(
    st.sampled_from(["", "gbp", "Gbp", "gBP", "XXX", "XAU", "XTS", "ZZZ", "GB", "GBPP", "GBP ",
                     " GBP", "G\x00P", "GBP\x00", "£", "€", "123", "\uff27\uff22\uff30",
                     "EURO", "usd"]),
    st.text(max_size=6),
).filter(lambda c: not is_known(c))

INT32_ENUM_JUNK = [INT32_MIN, -1, 99, 1_000, INT32_MAX]


# -- strategies: money ---------------------------------------------------------------------------
def gbp_money(pence: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="GBP", units=pence // 100, nanos=(pence % 100) * 10**7)


@st.composite
def bad_gbp_money(draw: Any) -> tuple[str, money_pb2.Money]:
    """A GBP amount that is never an acceptable posting amount."""
    kind = draw(st.sampled_from(["nanos_range", "mixed_sign", "precision", "zero", "negative",
                                 "too_large", "int64_extreme"]))
    units, nanos = 0, 0
    if kind == "nanos_range":
        units = draw(st.integers(0, 10**6))
        nanos = draw(st.one_of(st.integers(NANOS, INT32_MAX), st.integers(INT32_MIN, -NANOS)))
    elif kind == "mixed_sign":
        magnitude_u = draw(st.integers(1, INT64_MAX))
        magnitude_n = draw(st.integers(1, NANOS - 1))
        units, nanos = draw(st.sampled_from([(magnitude_u, -magnitude_n),
                                             (-magnitude_u, magnitude_n)]))
    elif kind == "precision":
        units = draw(st.integers(0, 10**6))
        nanos = draw(st.integers(1, NANOS - 1).filter(lambda n: n % 10**7 != 0))
    elif kind == "negative":
        units = -draw(st.integers(0, 2**63))
        nanos = -draw(st.integers(0, 99)) * 10**7
        assume(units or nanos)
    elif kind == "too_large":
        units = draw(st.integers(10**13, INT64_MAX))
        nanos = draw(st.integers(0, 99)) * 10**7
        assume(units * 100 + nanos // 10**7 > 10**15)
    elif kind == "int64_extreme":
        units = draw(st.sampled_from([INT64_MAX, INT64_MIN, INT64_MAX - 1, INT64_MIN + 1]))
        nanos = draw(st.sampled_from([0, 990_000_000, -990_000_000, NANOS - 1, -(NANOS - 1),
                                      INT32_MAX, INT32_MIN]))
    return kind, money_pb2.Money(currency_code="GBP", units=units, nanos=nanos)


# -- strategies: transfers -----------------------------------------------------------------------
# The server refuses control characters (Unicode category Cc) in free text and metadata.
safe_text = st.text(alphabet=st.characters(exclude_categories=("Cs", "Cc")), max_size=40)
small_metadata = st.dictionaries(st.text(alphabet="abcdefgh", min_size=1, max_size=8),
                                 safe_text.map(lambda s: s[:20]), max_size=4)


@st.composite
def good_transfer(draw: Any) -> pb.TransferInput:
    """A transfer that would be applied on its own: cash pays alice."""
    t = transfer(f"v-{draw(st.uuids()).hex}", "cash", "alice", draw(st.integers(1, 10**6)))
    t.description = draw(safe_text)
    t.metadata.update(draw(small_metadata))
    return t


def _date_is_acceptable(y: int, m: int, d: int) -> bool:
    try:
        value = date(y, m, d)
    except ValueError:
        return False
    return TODAY - timedelta(days=3_660) <= value <= TODAY + timedelta(days=366)


bad_dates = st.one_of(
    st.tuples(st.integers(INT32_MIN, INT32_MAX), st.integers(INT32_MIN, INT32_MAX),
              st.integers(INT32_MIN, INT32_MAX)),
    st.tuples(st.integers(0, 10_000), st.integers(0, 14), st.integers(0, 33)),
    st.sampled_from([(0, 0, 0), (2025, 2, 29), (2024, 2, 30), (2026, 4, 31), (2026, 0, 1),
                     (2026, 13, 1), (2026, 1, 0), (2026, 1, 32), (1999, 12, 31), (1, 1, 1),
                     (9999, 12, 31), (2015, 1, 1), (2027, 12, 31), (-1, 1, 1)]),
).filter(lambda ymd: not _date_is_acceptable(*ymd))


def _posting_index(draw: Any, t: pb.TransferInput) -> int:
    return draw(st.integers(0, len(t.postings) - 1))


def _money_defect(draw: Any, t: pb.TransferInput) -> str:
    kind, money = draw(bad_gbp_money())
    if draw(st.booleans()):
        for p in t.postings:  # every line: still balanced, only the amount is wrong
            p.amount.CopyFrom(money)
    else:
        t.postings[_posting_index(draw, t)].amount.CopyFrom(money)
    return f"money:{kind}:{money.units},{money.nanos}"


def _metadata_defect(draw: Any, t: pb.TransferInput) -> str:
    kind = draw(st.sampled_from(["keys", "empty_key", "long_key", "bytes", "huge"]))
    if kind == "keys":
        n = draw(st.integers(17, 200))
        t.metadata.update({f"k{i}": "v" for i in range(n)})
    elif kind == "empty_key":
        t.metadata[""] = draw(st.text(max_size=10))
    elif kind == "long_key":
        t.metadata[draw(st.text(min_size=65, max_size=300))] = "v"
    elif kind == "bytes":
        t.metadata["big"] = "x" * draw(st.integers(4_097, 20_000))
    else:
        t.metadata["huge"] = "\U0001F600" * draw(st.integers(10_000, 1_000_000))
    return f"metadata:{kind}"


def _description_defect(draw: Any, t: pb.TransferInput) -> str:
    if draw(st.booleans()):
        t.description = draw(st.one_of(st.text(min_size=257, max_size=600),
                                       st.integers(257, 200_000).map(lambda n: "d" * n)))
        return "description:long"
    control = draw(st.sampled_from([chr(c) for c in range(32) if c != 9]))
    prefix, suffix = draw(st.text(max_size=20)), draw(st.text(max_size=20))
    t.description = (prefix + control + suffix)[:256]
    return f"description:control:{ord(control)}"


def _postings_count_defect(draw: Any, t: pb.TransferInput) -> str:
    n = draw(st.sampled_from([0, 1, 65, 100]))
    del t.postings[:]
    if n == 1:
        t.postings.append(pb.Posting(account="accounts/cash", side=pb.SIDE_DEBIT,
                                     amount=gbp_money(100)))
    elif n > 1:
        t.postings.append(pb.Posting(account="accounts/alice", side=pb.SIDE_CREDIT,
                                     amount=gbp_money(100 * (n - 1))))
        t.postings.extend(pb.Posting(account="accounts/cash", side=pb.SIDE_DEBIT,
                                     amount=gbp_money(100)) for _ in range(n - 1))
    return f"postings:count:{n}"


def _hold_ref_defect(draw: Any, t: pb.TransferInput) -> str:
    kind = draw(st.sampled_from([pb.TRANSFER_KIND_POST_PENDING, pb.TRANSFER_KIND_VOID_PENDING]))
    t.kind = kind
    del t.postings[:]
    t.pending_transfer = draw(st.one_of(st.just(""), bad_names("transfers")))
    return f"pending_transfer:{t.pending_transfer[:40]!r}"


def _reversal_ref_defect(draw: Any, t: pb.TransferInput) -> str:
    t.kind = pb.TRANSFER_KIND_REVERSAL
    del t.postings[:]
    t.reverses_transfer = draw(st.one_of(st.just(""), bad_names("transfers")))
    return f"reverses_transfer:{t.reverses_transfer[:40]!r}"


TRANSFER_DEFECT_GROUPS = {
    "ids_and_names": ["transfer_id", "account", "hold_ref", "reversal_ref"],
    "money": ["currency", "money", "missing_amount"],
    "enums": ["side", "kind"],
    "timeouts_and_dates": ["timeout", "timeout_on_pending_out_of_range", "date"],
    "text_and_metadata": ["metadata", "description"],
    "structure": ["postings_count", "unbalanced", "both_sides", "pending_on_posted",
                  "reverses_on_posted", "void_with_postings"],
}
ALL_TRANSFER_DEFECTS = sorted(d for group in TRANSFER_DEFECT_GROUPS.values() for d in group)


def _apply_transfer_defect(draw: Any, t: pb.TransferInput,
                           choices: list[str] = ALL_TRANSFER_DEFECTS) -> str:
    """Make `t` malformed in one way that the API contract forbids; returns a label."""
    defect = draw(st.sampled_from(choices))
    needs_postings = defect in ("account", "currency", "money", "missing_amount", "side",
                                "unbalanced", "both_sides")
    if needs_postings and len(t.postings) < 2:
        defect = "transfer_id"
    if defect == "transfer_id":
        t.transfer_id = draw(bad_ids())
        return f"transfer_id:{t.transfer_id[:40]!r}"
    if defect == "account":
        j = _posting_index(draw, t)
        t.postings[j].account = draw(bad_names("accounts"))
        return f"postings[{j}].account:{t.postings[j].account[:40]!r}"
    if defect == "currency":
        currency = draw(bad_currencies)
        targets = range(len(t.postings)) if draw(st.booleans()) else [_posting_index(draw, t)]
        for j in targets:
            t.postings[j].amount.currency_code = currency
        return f"currency:{currency!r}"
    if defect == "money":
        return _money_defect(draw, t)
    if defect == "missing_amount":
        t.postings[_posting_index(draw, t)].ClearField("amount")
        return "missing_amount"
    if defect == "side":
        j = _posting_index(draw, t)
        t.postings[j].side = draw(st.sampled_from([0, 3, *INT32_ENUM_JUNK]))
        return f"side:{t.postings[j].side}"
    if defect == "kind":
        t.kind = draw(st.sampled_from([0, pb.TRANSFER_KIND_EXPIRE_PENDING, 7, 8,
                                       *INT32_ENUM_JUNK]))
        return f"kind:{t.kind}"
    if defect == "timeout":  # any timeout on a transfer that is not a hold, extremes included
        out_of_range = st.one_of(st.integers(INT64_MIN, -1), st.integers(7_776_001, INT64_MAX),
                                 st.sampled_from([INT64_MIN, INT64_MAX]))
        t.timeout_seconds = draw(out_of_range if t.kind == pb.TRANSFER_KIND_PENDING
                                 else st.one_of(out_of_range, st.integers(1, 7_776_000)))
        return f"timeout:{t.timeout_seconds}"
    if defect == "timeout_on_pending_out_of_range":
        t.kind = pb.TRANSFER_KIND_PENDING
        t.timeout_seconds = draw(st.one_of(st.integers(INT64_MIN, -1),
                                           st.integers(7_776_001, INT64_MAX)))
        return f"pending_timeout:{t.timeout_seconds}"
    if defect == "date":
        y, m, d = draw(bad_dates)
        t.effective_date.year, t.effective_date.month, t.effective_date.day = y, m, d
        return f"date:{y}-{m}-{d}"
    if defect == "metadata":
        return _metadata_defect(draw, t)
    if defect == "description":
        return _description_defect(draw, t)
    if defect == "postings_count":
        if t.kind not in (pb.TRANSFER_KIND_POSTED, pb.TRANSFER_KIND_PENDING):
            t.kind = pb.TRANSFER_KIND_POSTED
        return _postings_count_defect(draw, t)
    if defect == "unbalanced":
        t.postings[1].amount.units += draw(st.integers(1, 10**6))
        return "unbalanced"
    if defect == "both_sides":
        t.postings[1].account = t.postings[0].account
        return "both_sides"
    # Each defect stands on its own, so that a later one never repairs an earlier one.
    if defect == "pending_on_posted":
        t.kind = pb.TRANSFER_KIND_POSTED
        t.pending_transfer = f"transfers/{SEED_TRANSFER}"
        return "pending_on_posted"
    if defect == "reverses_on_posted":
        t.kind = pb.TRANSFER_KIND_POSTED
        t.reverses_transfer = f"transfers/{SEED_TRANSFER}"
        return "reverses_on_posted"
    if defect == "hold_ref":
        return _hold_ref_defect(draw, t)
    if defect == "reversal_ref":
        return _reversal_ref_defect(draw, t)
    # void_with_postings
    t.kind = pb.TRANSFER_KIND_VOID_PENDING
    t.pending_transfer = "transfers/some-hold"
    if not t.postings:
        t.postings.extend(transfer("x", "cash", "alice", 1).postings)
    return "void_with_postings"


@st.composite
def malformed_transfers_request(draw: Any, group: str | None = None) -> pb.CreateTransfersRequest:
    """1-4 transfers, the others valid, at least one defect (from `group` first, if given)."""
    n = draw(st.integers(1, 4))
    transfers = [draw(good_transfer()) for _ in range(n)]
    labels = []
    request_id = draw(st.uuids()).hex
    batch_defect = None
    if group == "batch" or (group is None and draw(st.integers(0, 3)) == 0):
        batch_defect = draw(st.sampled_from(["request_id", "last_linked", "empty"]))
    if batch_defect == "request_id":
        request_id = draw(bad_ids())
        labels.append(f"request_id:{request_id[:40]!r}")
    elif batch_defect == "last_linked":
        for t in transfers:
            t.linked = True
        labels.append("last_linked")
    elif batch_defect == "empty":
        transfers = []
        labels.append("empty")
    if transfers and group not in (None, "batch"):
        i = draw(st.integers(0, n - 1))
        labels.append(f"[{i}]" + _apply_transfer_defect(draw, transfers[i],
                                                        TRANSFER_DEFECT_GROUPS[group]))
    if transfers and (not labels or draw(st.booleans())):
        for i in draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=2)):
            labels.append(f"[{i}]" + _apply_transfer_defect(draw, transfers[i]))
    note(f"defects: {labels}")
    for label in labels:
        event(label.split("]")[-1].split(":")[0])
    return pb.CreateTransfersRequest(request_id=request_id, transfers=transfers)


# -- properties: CreateTransfers -----------------------------------------------------------------
RPC_TIMEOUTS = st.sampled_from([15.0, 15.0, 15.0, None, 3_600.0, 10.0**8])


@pytest.mark.parametrize("group", [*TRANSFER_DEFECT_GROUPS, "batch"])
@settings(SETTINGS, max_examples=40)
@given(data=st.data(), rpc_timeout=RPC_TIMEOUTS)
def test_malformed_transfers_are_refused_and_change_nothing(seeded, engine, group, data,
                                                            rpc_timeout):
    request = data.draw(malformed_transfers_request(group), label="request")
    before = snapshot(engine)
    call_refused(seeded.CreateTransfers, request, timeout=rpc_timeout)
    assert_unchanged(engine, before)


@SETTINGS
@given(request=malformed_transfers_request(),
       rpc_timeout=st.floats(min_value=1e-6, max_value=0.01))
def test_malformed_transfers_with_a_tiny_deadline_change_nothing(seeded, engine, request,
                                                                 rpc_timeout):
    before = snapshot(engine)
    try:
        response = seeded.CreateTransfers(request, timeout=rpc_timeout)
    except grpc.RpcError as error:
        if error.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
            check_rich_refusal(error, REFUSED)
    else:
        pytest.fail(f"a malformed request was accepted: {str(response)[:500]}")
    assert_unchanged(engine, before)


@st.composite
def failing_transfer(draw: Any) -> tuple[str, pb.TransferInput]:
    """A structurally valid transfer that cannot be applied to the seeded ledger."""
    tid = f"b-{draw(st.uuids()).hex}"
    pence = draw(st.integers(1, 10**6))
    kind = draw(st.sampled_from(["unknown_account", "closed", "currency", "overdraft",
                                 "post_unknown_hold", "void_unknown_hold", "reverse_unknown",
                                 "reuse_seed_id", "hold_on_closed", "reverse_itself"]))
    if kind == "unknown_account":
        ghost = "nx-" + draw(valid_ids())[:60]
        t = draw(st.sampled_from([transfer(tid, "cash", ghost, pence),
                                  transfer(tid, ghost, "alice", pence)]))
    elif kind == "closed":
        t = draw(st.sampled_from([transfer(tid, "cash", "closed", pence),
                                  transfer(tid, "closed", "alice", pence)]))
    elif kind == "currency":  # EUR lines on GBP accounts, or GBP lines on the EUR account
        t = transfer(tid, "cash", draw(st.sampled_from(["alice", "euro"])), pence)
        currency = "EUR" if t.postings[1].account == "accounts/alice" else "GBP"
        for p in t.postings:
            p.amount.currency_code = currency
    elif kind == "overdraft":
        t = transfer(tid, "empty", "cash", pence)
    elif kind == "hold_on_closed":
        t = transfer(tid, "cash", "closed", pence, kind="PENDING",
                     timeout_seconds=draw(st.integers(0, 7_776_000)))
    elif kind in ("post_unknown_hold", "void_unknown_hold"):
        t = pb.TransferInput(transfer_id=tid, kind=pb.TRANSFER_KIND_POST_PENDING
                             if kind == "post_unknown_hold" else pb.TRANSFER_KIND_VOID_PENDING,
                             pending_transfer=f"transfers/nx-{draw(st.uuids()).hex}")
    elif kind == "reverse_unknown":
        t = pb.TransferInput(transfer_id=tid, kind=pb.TRANSFER_KIND_REVERSAL,
                             reverses_transfer=f"transfers/nx-{draw(st.uuids()).hex}")
    elif kind == "reverse_itself":  # a transfer that does not exist yet cannot be reversed
        t = pb.TransferInput(transfer_id=tid, kind=pb.TRANSFER_KIND_REVERSAL,
                             reverses_transfer=f"transfers/{tid}")
    else:  # reuse_seed_id: the seeded transfer's id with other content
        t = transfer(SEED_TRANSFER, "cash", "alice", 10_000 + pence)
    t.description = draw(safe_text)
    return kind, t


@st.composite
def failing_batch(draw: Any) -> tuple[list[str], list[pb.TransferInput]]:
    items = draw(st.lists(failing_transfer(), min_size=1, max_size=5))
    labels, transfers = [], []
    for kind, t in items:
        if draw(st.booleans()):
            # A valid transfer linked to a failing one fails with it.
            labels.append("linked_valid")
            valid = draw(good_transfer())
            valid.linked = True
            transfers.append(valid)
        labels.append(kind)
        transfers.append(t)
    return labels, transfers


@SETTINGS
@given(batch=failing_batch())
def test_structurally_valid_transfers_that_cannot_apply_fail_per_item(seeded, engine, batch):
    labels, transfers = batch
    note(f"items: {labels}")
    before = snapshot(engine)
    request_id = str(uuid.uuid4())
    response = seeded.CreateTransfers(pb.CreateTransfersRequest(request_id=request_id,
                                                                transfers=transfers))
    assert len(response.results) == len(transfers)
    for label, result in zip(labels, response.results, strict=True):
        code = grpc.StatusCode.OK
        for candidate in grpc.StatusCode:
            if candidate.value[0] == result.status.code:
                code = candidate
        assert code not in (grpc.StatusCode.OK, *ERROR_CODES_NEVER), (label, result)
        assert code not in REFUSED, (label, result)
        assert item_reason(result.status), (label, result)
        assert result.position == 0
        event(f"{label} -> {item_reason(result.status)}")
    after = snapshot(engine)
    for table in set(before) - RECORDING_TABLES:
        assert after[table] == before[table], f"table {table} changed"
    new_requests = [row for row in after["requests"] if row not in before["requests"]]
    assert [row[0] for row in new_requests] == [request_id]
    assert after["audit_log"][:len(before["audit_log"])] == before["audit_log"]
    assert len(after["audit_log"]) == len(before["audit_log"]) + 1
    (head_before,), (head_after,) = before["ledger_head"], after["ledger_head"]
    # ledger_head columns: id, next_seq, last_recorded_ns, audit_size
    assert head_after[1] == head_before[1]
    assert head_after[3] == head_before[3] + 1
    # A replay returns the same failures and records nothing more.
    again = seeded.CreateTransfers(pb.CreateTransfersRequest(request_id=request_id,
                                                             transfers=transfers))
    assert again == response
    assert_unchanged(engine, after)


# -- properties: CreateAccounts ------------------------------------------------------------------
ACCOUNT_TYPES = [pb.ACCOUNT_TYPE_ASSET, pb.ACCOUNT_TYPE_LIABILITY, pb.ACCOUNT_TYPE_EQUITY,
                 pb.ACCOUNT_TYPE_INCOME, pb.ACCOUNT_TYPE_EXPENSE]
OWNER_KINDS = [pb.OWNER_KIND_BANK, pb.OWNER_KIND_MEMBER, pb.OWNER_KIND_COUNCIL,
               pb.OWNER_KIND_POOL]


@st.composite
def good_account(draw: Any) -> pb.Account:
    flags = draw(st.sampled_from([(False, False), (True, False), (False, True)]))
    return pb.Account(
        account_id=f"new-{draw(st.uuids()).hex}",
        currency_code=draw(st.sampled_from(["GBP", "EUR", "JPY", "BHD", "CLF"])),
        type=draw(st.sampled_from(ACCOUNT_TYPES)), code=draw(st.from_regex(CODE_RE,
                                                                           fullmatch=True)),
        owner_kind=draw(st.sampled_from(OWNER_KINDS)),
        owner_id=draw(st.from_regex(OWNER_RE, fullmatch=True)),
        debits_must_not_exceed_credits=flags[0], credits_must_not_exceed_debits=flags[1])


OUTPUT_ONLY_SETTERS = {
    "name": lambda a: setattr(a, "name", f"accounts/{a.account_id}"),
    "state": lambda a: setattr(a, "state", pb.Account.STATE_OPEN),
    "state_junk": lambda a: setattr(a, "state", 99),
    "debits_posted": lambda a: a.debits_posted.SetInParent(),
    "credits_posted": lambda a: a.credits_posted.CopyFrom(gbp_money(100)),
    "debits_pending": lambda a: a.debits_pending.SetInParent(),
    "credits_pending": lambda a: a.credits_pending.SetInParent(),
    "balance": lambda a: a.balance.CopyFrom(gbp_money(10**9)),
    "available_balance": lambda a: a.available_balance.SetInParent(),
    "create_time": lambda a: a.create_time.CopyFrom(timestamp_pb2.Timestamp(seconds=1)),
}


ACCOUNT_DEFECTS = ["account_id", "currency", "type", "code", "owner_kind", "owner_id",
                   "both_flags", "output_only"]


def _apply_account_defect(draw: Any, a: pb.Account, choices: list[str] = ACCOUNT_DEFECTS) -> str:
    defect = draw(st.sampled_from(choices))
    if defect == "account_id":
        a.account_id = draw(bad_ids())
        return f"account_id:{a.account_id[:40]!r}"
    if defect == "currency":
        a.currency_code = draw(bad_currencies)
        return f"currency:{a.currency_code!r}"
    if defect == "type":
        a.type = draw(st.sampled_from([0, 6, 7, *INT32_ENUM_JUNK]))
        return f"type:{a.type}"
    if defect == "code":
        a.code = draw(hostile_text.filter(lambda s: CODE_RE.fullmatch(s) is None))
        return f"code:{a.code[:40]!r}"
    if defect == "owner_kind":
        a.owner_kind = draw(st.sampled_from([0, 5, *INT32_ENUM_JUNK]))
        return f"owner_kind:{a.owner_kind}"
    if defect == "owner_id":
        a.owner_id = draw(hostile_text.filter(lambda s: OWNER_RE.fullmatch(s) is None))
        return f"owner_id:{a.owner_id[:40]!r}"
    if defect == "both_flags":
        a.debits_must_not_exceed_credits = a.credits_must_not_exceed_debits = True
        return "both_flags"
    field = draw(st.sampled_from(sorted(OUTPUT_ONLY_SETTERS)))
    OUTPUT_ONLY_SETTERS[field](a)
    return f"output_only:{field}"


@st.composite
def malformed_accounts_request(draw: Any, defect: str) -> pb.CreateAccountsRequest:
    """1-4 accounts, the others valid, at least one defect (`defect` first)."""
    accounts = draw(st.lists(good_account(), min_size=1, max_size=4))
    labels = []
    request_id = draw(st.uuids()).hex
    if defect == "request_id":
        request_id = draw(bad_ids())
        labels.append(f"request_id:{request_id[:40]!r}")
    elif defect == "empty":
        accounts = []
        labels.append("empty")
    else:
        i = draw(st.integers(0, len(accounts) - 1))
        labels.append(f"[{i}]" + _apply_account_defect(draw, accounts[i], [defect]))
    if accounts and draw(st.booleans()):
        for i in draw(st.lists(st.integers(0, len(accounts) - 1), min_size=1, max_size=2)):
            labels.append(f"[{i}]" + _apply_account_defect(draw, accounts[i]))
    note(f"defects: {labels}")
    return pb.CreateAccountsRequest(request_id=request_id, accounts=accounts)


@pytest.mark.parametrize("defect", [*ACCOUNT_DEFECTS, "request_id", "empty"])
@settings(SETTINGS, max_examples=15)
@given(data=st.data())
def test_malformed_accounts_are_refused_and_change_nothing(seeded, engine, defect, data):
    request = data.draw(malformed_accounts_request(defect), label="request")
    before = snapshot(engine)
    call_refused(seeded.CreateAccounts, request)
    assert_unchanged(engine, before)


@SETTINGS
@given(data=st.data())
def test_reusing_an_account_id_with_another_definition_fails_per_item(seeded, engine, data):
    existing = data.draw(st.sampled_from(EXISTING_ACCOUNTS))
    a = data.draw(good_account())
    a.account_id = existing
    before = snapshot(engine)
    current = seeded.GetAccount(pb.GetAccountRequest(name=f"accounts/{existing}"))
    identical = (a.currency_code, a.type, a.code, a.owner_kind, a.owner_id,
                 a.debits_must_not_exceed_credits, a.credits_must_not_exceed_debits) == (
        current.currency_code, current.type, current.code, current.owner_kind,
        current.owner_id, current.debits_must_not_exceed_credits,
        current.credits_must_not_exceed_debits)
    assume(not identical)
    response = seeded.CreateAccounts(pb.CreateAccountsRequest(request_id=str(uuid.uuid4()),
                                                              accounts=[a]))
    assert response.results[0].status.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert item_reason(response.results[0].status) == "ACCOUNT_ID_REUSED"
    after = snapshot(engine)
    for table in set(before) - RECORDING_TABLES:
        assert after[table] == before[table], f"table {table} changed"
    assert len(after["audit_log"]) == len(before["audit_log"]) + 1


# -- properties: reads ---------------------------------------------------------------------------
@st.composite
def bad_timestamps(draw: Any) -> timestamp_pb2.Timestamp:
    seconds = draw(st.one_of(st.integers(INT64_MIN, TS_MIN_S - 1),
                             st.integers(TS_MAX_S + 1, INT64_MAX),
                             st.sampled_from([0, -1, TS_MIN_S - 1, TS_MAX_S + 1, INT64_MIN,
                                              INT64_MAX]),
                             st.integers(TS_MIN_S, TS_MAX_S)))
    nanos = draw(st.integers(0, NANOS - 1))
    if TS_MIN_S <= seconds <= TS_MAX_S:  # the seconds are fine: break the nanos instead
        nanos = draw(st.one_of(st.integers(INT32_MIN, -1), st.integers(NANOS, INT32_MAX)))
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def good_timestamps(max_s: int = TS_MAX_S) -> st.SearchStrategy[timestamp_pb2.Timestamp]:
    return st.builds(timestamp_pb2.Timestamp, seconds=st.integers(TS_MIN_S, max_s),
                     nanos=st.integers(0, NANOS - 1))


def good_account_names() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from([f"accounts/{a}" for a in EXISTING_ACCOUNTS]),
                     valid_ids().map(lambda s: f"accounts/{s}"))


def _random_json() -> st.SearchStrategy[Any]:
    return st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                        lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                        max_leaves=6)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


garbage_tokens = st.one_of(
    st.sampled_from(["x", "=", "====", "%%%", "null", "e30", "W10", "bnVsbA", "\x00",
                     _b64(b'{"q":"0000000000000000","p":[0,0]}'), _b64(b'{"p":[0,0]}'),
                     _b64(b'{"q":null}'), _b64(b"\xff\xfe\xfd"), _b64(b"[1,2]"), "a" * 513]),
    st.text(min_size=1, max_size=100),
    st.binary(min_size=1, max_size=100).map(_b64),
    st.builds(lambda q, p: _b64(json.dumps({"q": q, "p": p}).encode()),
              st.text(max_size=20), _random_json()),
    _random_json().map(lambda body: _b64(json.dumps(body).encode())),
    st.integers(513, 100_000).map(lambda n: "A" * n),
    # A genuine token, but for another query: the filters changed between pages.
    st.builds(lambda a: encode_token({"m": "statement", "a": a, "f": None, "t": None}, [1, 0]),
              st.sampled_from(["someone-else", "cash"])),
)


@SETTINGS
@given(name=bad_names("accounts"))
def test_get_account_with_a_malformed_name_is_invalid_argument(seeded, engine, name):
    before = snapshot(engine)
    error = call_refused(seeded.GetAccount, pb.GetAccountRequest(name=name),
                         allowed=(grpc.StatusCode.INVALID_ARGUMENT,))
    assert field_violations(error) == ["name"]
    assert_unchanged(engine, before)


@SETTINGS
@given(account_id=valid_ids().filter(lambda s: s not in EXISTING_ACCOUNTS))
def test_get_account_with_a_well_formed_unknown_name_is_not_found(seeded, engine, account_id):
    before = snapshot(engine)
    error = call_refused(seeded.GetAccount, pb.GetAccountRequest(name=f"accounts/{account_id}"),
                         allowed=(grpc.StatusCode.NOT_FOUND,))
    assert error_info(error).reason == "ACCOUNT_NOT_FOUND"
    assert_unchanged(engine, before)


@st.composite
def malformed_statement_request(draw: Any) -> pb.ListAccountEntriesRequest:
    defects = draw(st.sets(st.sampled_from(["account", "page_size", "page_token", "start_time",
                                            "end_time", "range"]), min_size=1))
    note(f"defects: {sorted(defects)}")
    request = pb.ListAccountEntriesRequest(
        account=draw(bad_names("accounts") if "account" in defects else good_account_names()),
        page_size=draw(st.integers(INT32_MIN, -1) if "page_size" in defects
                       else st.one_of(st.integers(0, 2_000), st.just(INT32_MAX))))
    if "page_token" in defects:
        request.page_token = draw(garbage_tokens)
    for field in ("start_time", "end_time"):
        if field in defects:
            getattr(request, field).CopyFrom(draw(bad_timestamps()))
    if "range" in defects:  # both valid, but the range is empty or reversed
        start = draw(good_timestamps())
        end = draw(good_timestamps(max_s=start.seconds))
        assume((end.seconds, end.nanos) <= (start.seconds, start.nanos))
        if "start_time" not in defects:
            request.start_time.CopyFrom(start)
        if "end_time" not in defects:
            request.end_time.CopyFrom(end)
    return request


@SETTINGS
@given(request=malformed_statement_request())
def test_malformed_statement_requests_are_invalid_argument(seeded, engine, request):
    before = snapshot(engine)
    call_refused(seeded.ListAccountEntries, request,
                 allowed=(grpc.StatusCode.INVALID_ARGUMENT,))
    assert_unchanged(engine, before)


@st.composite
def malformed_balance_request(draw: Any) -> pb.GetAccountBalanceRequest:
    defects = draw(st.sets(st.sampled_from(["account", "as_of_time", "future"]), min_size=1))
    note(f"defects: {sorted(defects)}")
    request = pb.GetAccountBalanceRequest(
        account=draw(bad_names("accounts") if "account" in defects else good_account_names()))
    if "as_of_time" in defects:
        request.as_of_time.CopyFrom(draw(bad_timestamps()))
    elif "future" in defects:
        request.as_of_time.CopyFrom(timestamp_pb2.Timestamp(
            seconds=draw(st.integers(NOW_S + 1, TS_MAX_S)), nanos=draw(st.integers(0, NANOS - 1))))
    elif draw(st.booleans()):
        request.as_of_time.CopyFrom(draw(good_timestamps(max_s=NOW_S - 1)))
    return request


@SETTINGS
@given(request=malformed_balance_request())
def test_malformed_balance_requests_are_invalid_argument(seeded, engine, request):
    before = snapshot(engine)
    call_refused(seeded.GetAccountBalance, request, allowed=(grpc.StatusCode.INVALID_ARGUMENT,))
    assert_unchanged(engine, before)


@st.composite
def malformed_list_accounts_request(draw: Any) -> pb.ListAccountsRequest:
    defects = draw(st.sets(st.sampled_from(["page_size", "page_token", "owner_kind", "owner_id",
                                            "currency_code"]), min_size=1))
    note(f"defects: {sorted(defects)}")
    request = pb.ListAccountsRequest(
        page_size=draw(st.integers(INT32_MIN, -1) if "page_size" in defects
                       else st.integers(0, 2_000)))
    if "page_token" in defects:
        request.page_token = draw(garbage_tokens)
    if "owner_kind" in defects:
        request.owner_kind = draw(st.sampled_from([5, *INT32_ENUM_JUNK]))
    if "owner_id" in defects:
        request.owner_id = draw(hostile_text.filter(
            lambda s: s != "" and OWNER_RE.fullmatch(s) is None))
    if "currency_code" in defects:
        request.currency_code = draw(bad_currencies.filter(bool))
    return request


@SETTINGS
@given(request=malformed_list_accounts_request())
def test_malformed_list_accounts_requests_are_invalid_argument(seeded, engine, request):
    before = snapshot(engine)
    call_refused(seeded.ListAccounts, request, allowed=(grpc.StatusCode.INVALID_ARGUMENT,))
    assert_unchanged(engine, before)


# -- forged page tokens and the whole documented time range --------------------------------------
def forged_positions() -> st.SearchStrategy[Any]:
    """Positions that no page the server issued could contain."""
    not_an_int = st.one_of(st.none(), st.text(alphabet="abc-+ x", max_size=5),
                           st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                           st.lists(st.integers(), max_size=2))
    return st.one_of(
        st.integers(), st.text(alphabet=st.characters(exclude_characters="\x00"), max_size=10),
        st.none(), st.floats(allow_nan=False), st.booleans(),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        st.lists(st.integers(), max_size=1), st.lists(st.integers(), min_size=3, max_size=4),
        st.tuples(not_an_int, st.integers()).map(list),
        st.tuples(st.integers(), not_an_int).map(list),
        st.tuples(st.integers(INT64_MAX + 1, 2**80), st.integers(0, 10)).map(list),
        st.tuples(st.integers(-(2**80), INT64_MIN - 1), st.integers(0, 10)).map(list),
        st.text(min_size=129, max_size=2_000),
    )


STATEMENT_QUERY = {"m": "statement", "a": "alice", "f": None, "t": None}
ACCOUNTS_QUERY = {"m": "accounts", "kind": None, "owner": None, "cur": None, "owners": None}


def _list_with_token(ledger: Any, method: str, position: Any) -> None:
    """A page token with the right digest (anyone can compute it) and a forged position."""
    try:
        if method == "statement":
            ledger.ListAccountEntries(pb.ListAccountEntriesRequest(
                account="accounts/alice", page_token=encode_token(STATEMENT_QUERY, position)))
        else:
            ledger.ListAccounts(pb.ListAccountsRequest(
                page_token=encode_token(ACCOUNTS_QUERY, position)))
    except grpc.RpcError as error:
        check_rich_refusal(error, (grpc.StatusCode.INVALID_ARGUMENT,))


@SETTINGS
@given(position=forged_positions(), method=st.sampled_from(["statement", "accounts"]))
def test_forged_page_tokens_are_refused_cleanly(seeded, engine, position, method):
    """Either harmless (a position the server could have issued) or INVALID_ARGUMENT."""
    before = snapshot(engine)
    _list_with_token(seeded, method, position)
    assert_unchanged(engine, before)


@SETTINGS
@given(position=st.text(max_size=10).map(lambda s: s + "\x00"),
       prefix=st.text(alphabet="abcm0", max_size=5))
def test_a_forged_account_position_with_nul_is_refused_cleanly(seeded, engine, position,
                                                               prefix):
    before = snapshot(engine)
    _list_with_token(seeded, "accounts", prefix + position)
    assert_unchanged(engine, before)


@SETTINGS
@given(start=st.none() | good_timestamps(), end=st.none() | good_timestamps(),
       page_size=st.one_of(st.integers(0, 2_000), st.integers(0, INT32_MAX)))
def test_any_documented_time_range_is_accepted_by_statements(seeded, engine, start, end,
                                                             page_size):
    """Valid but extreme: any time in the documented range, any non-negative page size."""
    if start is not None and end is not None:
        assume((start.seconds, start.nanos) < (end.seconds, end.nanos))
    request = pb.ListAccountEntriesRequest(account="accounts/alice", page_size=page_size)
    if start is not None:
        request.start_time.CopyFrom(start)
    if end is not None:
        request.end_time.CopyFrom(end)
    before = snapshot(engine)
    page = seeded.ListAccountEntries(request)
    assert all(e.transfer == f"transfers/{SEED_TRANSFER}" for e in page.entries)
    assert_unchanged(engine, before)


@SETTINGS
@given(as_of=good_timestamps(max_s=NOW_S - 1), name=good_account_names())
def test_any_documented_past_time_is_accepted_by_balances(seeded, engine, as_of, name):
    before = snapshot(engine)
    try:
        balance = seeded.GetAccountBalance(pb.GetAccountBalanceRequest(account=name,
                                                                       as_of_time=as_of))
    except grpc.RpcError as error:
        check_rich_refusal(error, (grpc.StatusCode.NOT_FOUND,))
        assert name.removeprefix("accounts/") not in EXISTING_ACCOUNTS
    else:
        assert balance.account == name
    assert_unchanged(engine, before)


# -- random bytes on the wire --------------------------------------------------------------------
RAW_METHODS = {
    "CreateTransfers": pb.CreateTransfersRequest,
    "CreateAccounts": pb.CreateAccountsRequest,
    "GetAccount": pb.GetAccountRequest,
    "ListAccountEntries": pb.ListAccountEntriesRequest,
    "GetAccountBalance": pb.GetAccountBalanceRequest,
    "ListAccounts": pb.ListAccountsRequest,
    "CloseAccount": pb.CloseAccountRequest,
}
RAW_ALLOWED = {
    # Requests whose every field may be absent: garbage that happens to parse may be valid.
    "ListAccounts": (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OK),
}


def raw_call(channel: grpc.Channel, method: str, payload: bytes) -> None:
    call = channel.unary_unary(METHOD + method, request_serializer=None,
                               response_deserializer=None)
    call(payload, timeout=15, metadata=[("x-bank-principal", TELLER)])


def _parses(message_class: Any, payload: bytes) -> bool:
    try:
        message_class.FromString(payload)
    except Exception:
        return False
    return True


def _refusal_of_raw(channel: grpc.Channel, method: str, payload: bytes) -> None:
    allowed = RAW_ALLOWED.get(method, REFUSED)
    try:
        raw_call(channel, method, payload)
    except grpc.RpcError as error:
        check_rich_refusal(error, allowed)
        return
    assert grpc.StatusCode.OK in allowed, "random bytes were accepted as a request"


@SETTINGS
@given(method=st.sampled_from(sorted(RAW_METHODS)), payload=st.binary(max_size=512))
def test_random_bytes_that_parse_are_refused_cleanly(seeded, engine, channel, method, payload):
    assume(_parses(RAW_METHODS[method], payload))
    before = snapshot(engine)
    _refusal_of_raw(channel, method, payload)
    assert_unchanged(engine, before)


@SETTINGS
@given(method=st.sampled_from(sorted(RAW_METHODS)), payload=st.binary(min_size=1, max_size=512))
def test_random_bytes_are_refused_cleanly(seeded, engine, channel, method, payload):
    before = snapshot(engine)
    _refusal_of_raw(channel, method, payload)
    assert_unchanged(engine, before)


# -- size limits ---------------------------------------------------------------------------------
def test_a_message_over_16_mib_is_resource_exhausted_and_changes_nothing(seeded, engine,
                                                                         channel):
    before = snapshot(engine)
    big = transfer("big", "cash", "alice", 100)
    big.description = "x" * (MESSAGE_BYTES_MAX + 1024)
    request = pb.CreateTransfersRequest(request_id="too-big", transfers=[big])
    assert request.ByteSize() > MESSAGE_BYTES_MAX
    with pytest.raises(grpc.RpcError) as caught:
        seeded.CreateTransfers(request, timeout=60)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_unchanged(engine, before)
    # The server is still serving after refusing it.
    assert seeded.GetAccount(pb.GetAccountRequest(name="accounts/alice")).account_id == "alice"


def test_a_message_just_under_the_limit_is_refused_by_validation_not_transport(seeded, engine):
    before = snapshot(engine)
    big = transfer("big", "cash", "alice", 100)
    big.metadata["k"] = "x" * (MESSAGE_BYTES_MAX - 4096)
    error = call_refused(seeded.CreateTransfers,
                         pb.CreateTransfersRequest(request_id="nearly-too-big", transfers=[big]),
                         allowed=(grpc.StatusCode.INVALID_ARGUMENT,), timeout=60)
    assert "transfers[0].metadata" in field_violations(error)
    assert_unchanged(engine, before)


def test_too_many_transfers_is_resource_exhausted_with_details(seeded, engine):
    before = snapshot(engine)
    transfers = [transfer(f"n{i}", "cash", "alice", 1) for i in range(8_001)]
    error = call_refused(seeded.CreateTransfers,
                         pb.CreateTransfersRequest(request_id="too-many", transfers=transfers),
                         allowed=(grpc.StatusCode.RESOURCE_EXHAUSTED,), timeout=60)
    assert error_info(error).reason == "BATCH_TOO_LARGE"
    assert_unchanged(engine, before)


def test_too_many_accounts_is_resource_exhausted_with_details(seeded, engine):
    before = snapshot(engine)
    accounts = [account(f"n{i}") for i in range(1_001)]
    error = call_refused(seeded.CreateAccounts,
                         pb.CreateAccountsRequest(request_id="too-many", accounts=accounts),
                         allowed=(grpc.StatusCode.RESOURCE_EXHAUSTED,), timeout=60)
    assert error_info(error).reason == "BATCH_TOO_LARGE"
    status = rpc_status.from_call(error)
    assert any(d.Is(error_details_pb2.BadRequest.DESCRIPTOR) for d in status.details)
    assert_unchanged(engine, before)
