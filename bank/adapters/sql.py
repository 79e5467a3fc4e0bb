"""SQL storage: engine set-up, the unit of work and the ledger repository (SQLAlchemy Core; the
statements of the write path through the driver's cursor, see `SqlLedger._raw`).

Concurrency. Every write transaction first locks the single `ledger_head` row (`SELECT ... FOR
UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite). Writers are therefore serialised, which
gives dense entry positions and audit indices in commit order, strictly increasing recorded
times, and no lost update or overdraft through a race, with one lock order for every process
and so no deadlock. The cost of serialising is shared by batching (several transfers per
transaction). Serialisation failures and deadlocks, should the engine report them anyway, become
`Aborted`, which `bank.app.unit.run_command` retries a bounded number of times.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    case,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import DBAPIError, OperationalError, StatementError

from bank.adapters import tables as t
from bank.adapters.sql_loans import SqlLoanStore
from bank.adapters.sql_members import SqlMemberStore
from bank.adapters.sql_pools import SqlPoolStore
from bank.app.ports import (
    AccountFilter,
    AuditLeaf,
    Head,
    PostedLine,
    StoredCheckpoint,
    StoredRequest,
)
from bank.domain.accounts import Account, AccountStatus, AccountType, OwnerKind, Side, Totals
from bank.domain.approvals import Approval, Decision
from bank.domain.entries import Effect, JournalEntry, Posting, TransferKind
from bank.domain.errors import Aborted, DeadlineExceeded, Unavailable
from bank.domain.identity import Principal, Role
from bank.domain.invariants import ensure

log = logging.getLogger(__name__)

IN_CLAUSE_CHUNK = 500  # keys per IN (...) list in SQLAlchemy queries
POOL_SIZE = 10
AUDIT_FETCH = 256  # audit leaves per fetch when streaming the log


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for `url` (sqlite:///path or postgresql+psycopg://...), configured for us."""
    if url.startswith("sqlite"):
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False,
                                                             "timeout": 30})
        _configure_sqlite(engine)
        return engine
    engine = create_engine(url, echo=echo, pool_size=POOL_SIZE, max_overflow=POOL_SIZE,
                           pool_pre_ping=True)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's events issue BEGIN, so writers can ask for BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        mode = "IMMEDIATE" if connection.get_execution_options().get("bank_write") else "DEFERRED"
        connection.exec_driver_sql(f"BEGIN {mode}")


class SqlUnitOfWork:
    """Opens read and write transactions on one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"

    @contextmanager
    def write(self, timeout_s: float | None = None) -> Iterator[SqlLedger]:
        try:
            with self._write(timeout_s) as ledger:
                yield ledger
        except Unavailable as error:
            if timeout_s is None or self.is_postgres or error.reason != "DATABASE_LOCKED":
                raise
            # SQLite waited for its write lock exactly as long as the caller's deadline allowed.
            raise DeadlineExceeded("DEADLINE_EXCEEDED", "the ledger stayed locked past the "
                                   "deadline; nothing was changed") from error

    @contextmanager
    def _write(self, timeout_s: float | None) -> Iterator[SqlLedger]:
        with _translated(), self.engine.connect() as conn:
            conn = conn.execution_options(bank_write=True)
            if not self.is_postgres:  # wait for SQLite's write lock no longer than the caller
                ms = int(max(timeout_s, 0.001) * 1000) if timeout_s is not None else 30_000
                conn.connection.dbapi_connection.execute(  # type: ignore[union-attr]
                    f"PRAGMA busy_timeout = {ms}")
            with conn.begin():
                self._set_timeout(conn, timeout_s)
                yield SqlLedger(conn, self.is_postgres)

    @contextmanager
    def read(self, timeout_s: float | None = None) -> Iterator[SqlLedger]:
        with _translated(), self.engine.connect() as conn, conn.begin():
            self._set_timeout(conn, timeout_s)
            yield SqlLedger(conn, self.is_postgres)

    def _set_timeout(self, conn: Connection, timeout_s: float | None) -> None:
        """Propagate the caller's remaining deadline to the database (PostgreSQL)."""
        if self.is_postgres and timeout_s is not None:
            ms = str(max(1, int(timeout_s * 1000)))
            # Both as SET LOCAL would (is_local = true), in one round trip, through the driver.
            SqlLedger(conn, is_postgres=True)._raw(_SET_TIMEOUTS, (ms, ms))


# PostgreSQL SQLSTATEs that mean "try again": serialisation failure, deadlock, lock timeout
# is NOT here (it means the deadline passed), admin shutdown / connection failures are.
_RETRYABLE = {"40001", "40P01"}
_UNAVAILABLE = {"57P01", "57P02", "57P03", "08000", "08003", "08006", "08001", "08004"}


@contextmanager
def _translated() -> Iterator[None]:
    """Map driver errors that are not bugs to domain errors (ABORTED / UNAVAILABLE)."""
    try:
        yield
    except DBAPIError as error:
        code = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
        if code in _RETRYABLE:
            raise Aborted("CONCURRENCY_CONFLICT", "the transaction conflicted with another; "
                          "retry with the same request_id") from error
        if code in ("57014", "55P03"):  # statement or lock timeout: the deadline passed
            raise DeadlineExceeded("DEADLINE_EXCEEDED", "the database did not finish within "
                                   "the deadline; nothing was changed") from error
        if isinstance(error, OperationalError) and "database is locked" in str(error):
            raise Unavailable("DATABASE_LOCKED", "the database stayed locked by another writer; "
                              "retry with the same request_id") from error
        if error.connection_invalidated or code in _UNAVAILABLE or _connect_failed(error):
            raise Unavailable("DATABASE_UNAVAILABLE", "the database is unavailable; retry "
                              "with the same request_id") from error
        raise


_COPY_POSTINGS = (
    "COPY postings (entry_seq, idx, account_id, side, amount, currency, effect, recorded_ns, "
    "debits_posted_after, credits_posted_after, debits_pending_after, credits_pending_after) "
    "FROM STDIN")
_COPY_ENTRIES = (
    "COPY entries (seq, transfer_id, kind, recorded_ns, effective_date, pending_id, "
    "reverses_id, expires_ns, description, metadata_json, fingerprint, request_id, "
    "posting_count) FROM STDIN")


_SQLITE_INSERT_POSTINGS = (
    "INSERT INTO postings (entry_seq, idx, account_id, side, amount, currency, effect, "
    "recorded_ns, debits_posted_after, credits_posted_after, debits_pending_after, "
    "credits_pending_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_SQLITE_INSERT_ENTRIES = (
    "INSERT INTO entries (seq, transfer_id, kind, recorded_ns, effective_date, pending_id, "
    "reverses_id, expires_ns, description, metadata_json, fingerprint, request_id, "
    "posting_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
# The writes every command ends with, through the driver (`%s` becomes `?` on SQLite): a
# command commits in a few hundred microseconds, and SQLAlchemy's per-statement work was most of
# that.
_HEAD = "SELECT next_seq, last_recorded_ns, audit_size FROM ledger_head WHERE id = 1"
_SAVE_HEAD = ("UPDATE ledger_head SET next_seq = %s, last_recorded_ns = %s, audit_size = %s "
              "WHERE id = 1")
_REQUESTS_BY_ID = ("SELECT request_id, method, fingerprint, outcome_json, recorded_ns "
                   "FROM requests WHERE request_id {keys}")
_INSERT_REQUESTS = ("INSERT INTO requests (request_id, method, fingerprint, outcome_json, "
                    "recorded_ns) VALUES (%s, %s, %s, %s, %s)")
_INSERT_AUDIT = "INSERT INTO audit_log (idx, recorded_ns, leaf, leaf_hash) VALUES (%s, %s, %s, %s)"
# PostgreSQL: many rows in one statement, one array per column, sent in binary (`%b`: psycopg
# encodes a text array element by element with regular expressions, 5-10 times the cost).
_PG_INSERT_REQUESTS = (
    "INSERT INTO requests (request_id, method, fingerprint, outcome_json, recorded_ns) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::bigint[])")
_PG_INSERT_AUDIT = (
    "INSERT INTO audit_log (idx, recorded_ns, leaf, leaf_hash) "
    "SELECT * FROM unnest(%b::bigint[], %b::bigint[], %b::bytea[], %b::bytea[])")
_PG_SAVE_TOTALS = (
    "UPDATE accounts SET debits_posted = v.dp, credits_posted = v.cp, debits_pending = v.dq, "
    "credits_pending = v.cq FROM (SELECT unnest(%b::text[]) AS id, unnest(%b::bigint[]) AS dp, "
    "unnest(%b::bigint[]) AS cp, unnest(%b::bigint[]) AS dq, unnest(%b::bigint[]) AS cq) AS v "
    "WHERE accounts.account_id = v.id")
_PIPELINED = "(one of the pipelined writes)"
_SET_TIMEOUTS = ("SELECT set_config('statement_timeout', %s, true), "
                 "set_config('lock_timeout', %s, true)")
_SQLITE_SAVE_TOTALS = (
    "UPDATE accounts SET debits_posted = ?, credits_posted = ?, debits_pending = ?, "
    "credits_pending = ? WHERE account_id = ?")


def _connect_failed(error: DBAPIError) -> bool:
    """PostgreSQL refused or dropped a new connection (down, starting, shutting down): the
    driver raises OperationalError with no SQLSTATE, and SQLAlchemy does not flag it."""
    return (isinstance(error, OperationalError) and getattr(error.orig, "sqlstate", None) is None
            and type(error.orig).__module__.startswith("psycopg"))


def _chunks(items: Sequence[Any], size: int = IN_CLAUSE_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _account(row: Row[Any]) -> Account:
    m = row._mapping
    return Account(
        m["account_id"], m["currency"], AccountType(m["account_type"]), m["code"],
        OwnerKind(m["owner_kind"]), m["owner_id"], AccountStatus(m["status"]),
        bool(m["debits_must_not_exceed_credits"]), bool(m["credits_must_not_exceed_debits"]),
        Totals(m["debits_posted"], m["credits_posted"], m["debits_pending"],
               m["credits_pending"]),
        m["created_ns"])


# The columns `_account_of` reads, in its order (a batch reads thousands of accounts: by
# position, with the enums looked up in dicts, is several times cheaper than by name).
_ACCOUNT_COLUMNS = tuple(t.accounts.c[name] for name in (
    "account_id", "currency", "account_type", "code", "owner_kind", "owner_id", "status",
    "debits_must_not_exceed_credits", "credits_must_not_exceed_debits", "debits_posted",
    "credits_posted", "debits_pending", "credits_pending", "created_ns"))
_ACCOUNTS_BY_ID = ("SELECT " + ", ".join(c.name for c in _ACCOUNT_COLUMNS)
                   + " FROM accounts WHERE account_id {keys}")
# Which of a list of keys (transfer_id, pending_id or reverses_id) some entry has.
_KEY_PRESENT = "SELECT {column} FROM entries WHERE {column} {{keys}}"
_LAST_OF_EFFECT = (
    "SELECT * FROM (SELECT entry_seq, idx, debits_posted_after, credits_posted_after, "
    "debits_pending_after, credits_pending_after FROM postings "
    "WHERE account_id = :account AND effect = '{effect}' AND entry_seq <= (SELECT seq FROM "
    "entries WHERE recorded_ns <= :at ORDER BY recorded_ns DESC LIMIT 1) "
    "ORDER BY entry_seq DESC, idx DESC LIMIT 1) AS last_{effect}")
# `totals_as_of`: the account's last posting of each effect up to the last position recorded
# by then, and of those three the last.
_TOTALS_AS_OF = text(
    "SELECT debits_posted_after, credits_posted_after, debits_pending_after, "
    "credits_pending_after FROM ("
    + " UNION ALL ".join(_LAST_OF_EFFECT.format(effect=e.value) for e in Effect)
    + ") AS last_lines ORDER BY entry_seq DESC, idx DESC LIMIT 1")
_STATEMENT_COLUMNS = (
    "p.entry_seq, p.idx, p.account_id, p.side, p.amount, p.currency, p.debits_posted_after, "
    "p.credits_posted_after, p.debits_pending_after, p.credits_pending_after, e.transfer_id, "
    "e.kind, e.recorded_ns, e.effective_date, e.pending_id, e.reverses_id, e.expires_ns, "
    "e.description, e.metadata_json, e.fingerprint, e.request_id")


# The first position recorded at or after a time (uq_entries_recorded_ns).
_FIRST_SEQ_AT = "(SELECT seq FROM entries WHERE recorded_ns >= :{} ORDER BY recorded_ns LIMIT 1)"


def _statement_page(first: bool, end: bool) -> Any:
    """A statement page: the account's posted lines after a position, each with its entry, in
    one statement.

    A time window [from, to) is a window of positions (recorded times increase with
    positions), found in the same statement, so on the same snapshot: no line committed after
    the window's end was looked up can slip in. The page is cut first (a row comparison, so both
    databases seek ix_postings_statement to its start), then joined to its entries by key:
    joined before the cut, PostgreSQL chose a merge join that walked `entries` from the first
    position.
    """
    return text(
        f"SELECT {_STATEMENT_COLUMNS} FROM (SELECT * FROM postings "
        "WHERE account_id = :account AND effect = 'post' "
        "AND (entry_seq, idx) > (:after_seq, :after_index)"
        # Nothing recorded at or after `from`: NULL, so no line.
        + (f" AND entry_seq >= {_FIRST_SEQ_AT.format('from_ns')}" if first else "")
        # Nothing recorded at or after `to`: every position is before it.
        + (f" AND entry_seq < COALESCE({_FIRST_SEQ_AT.format('to_ns')}, {2**63 - 1})"
           if end else "")
        + " ORDER BY entry_seq, idx LIMIT :limit) AS p "
        "JOIN entries e ON e.seq = p.entry_seq ORDER BY p.entry_seq, p.idx")


_STATEMENT_PAGES = {(first, end): _statement_page(first, end)
                    for first in (False, True) for end in (False, True)}
_ACCOUNT_TYPES = {k.value: k for k in AccountType}
_OWNER_KINDS = {k.value: k for k in OwnerKind}
_ACCOUNT_STATUSES = {k.value: k for k in AccountStatus}


def _account_of(row: Sequence[Any]) -> Account:
    """An account from a row of `_ACCOUNT_COLUMNS`."""
    (account_id, currency, account_type, code, owner_kind, owner_id, status, no_overdraft,
     no_excess_credit, debits_posted, credits_posted, debits_pending, credits_pending,
     created_ns) = row
    return Account(
        account_id, currency, _ACCOUNT_TYPES[account_type], code, _OWNER_KINDS[owner_kind],
        owner_id, _ACCOUNT_STATUSES[status], bool(no_overdraft), bool(no_excess_credit),
        Totals(debits_posted, credits_posted, debits_pending, credits_pending), created_ns)


def _posting(row: Row[Any]) -> Posting:
    m = row._mapping
    return Posting(m["entry_seq"], m["idx"], m["account_id"], Side(m["side"]), m["amount"],
                   m["currency"], Effect(m["effect"]),
                   Totals(m["debits_posted_after"], m["credits_posted_after"],
                          m["debits_pending_after"], m["credits_pending_after"]))


def _entry(row: Row[Any], postings: tuple[Posting, ...]) -> JournalEntry:
    m = row._mapping
    return JournalEntry(
        seq=m["seq"], transfer_id=m["transfer_id"], kind=TransferKind(m["kind"]),
        recorded_ns=m["recorded_ns"], effective_date=m["effective_date"], postings=postings,
        pending_id=m["pending_id"], reverses_id=m["reverses_id"], expires_ns=m["expires_ns"],
        description=m["description"],
        metadata=tuple((k, v) for k, v in json.loads(m["metadata_json"])),
        fingerprint=m["fingerprint"], request_id=m["request_id"])


def _statement_line(row: Sequence[Any]) -> tuple[Posting, JournalEntry]:
    """A row of `_STATEMENT_PAGES`: a posted line, and its entry (without its postings)."""
    (seq, index, account_id, side, amount, currency, debits_posted, credits_posted,
     debits_pending, credits_pending, transfer_id, kind, recorded_ns, effective_date, pending_id,
     reverses_id, expires_ns, description, metadata_json, fingerprint, request_id) = row
    posting = Posting(seq, index, account_id, _SIDES[side], amount, currency, Effect.POST,
                      Totals(debits_posted, credits_posted, debits_pending, credits_pending))
    if isinstance(effective_date, str):  # SQLite keeps dates as ISO 8601 text
        effective_date = date.fromisoformat(effective_date)
    entry = JournalEntry(
        seq=seq, transfer_id=transfer_id, kind=_KINDS[kind], recorded_ns=recorded_ns,
        effective_date=effective_date, postings=(), pending_id=pending_id,
        reverses_id=reverses_id, expires_ns=expires_ns, description=description,
        metadata=tuple((k, v) for k, v in json.loads(metadata_json)), fingerprint=fingerprint,
        request_id=request_id)
    return posting, entry


_SIDES = {s.value: s for s in Side}
_KINDS = {k.value: k for k in TransferKind}


def _metadata_json(metadata: tuple[tuple[str, str], ...]) -> str:
    return json.dumps([list(kv) for kv in metadata]) if metadata else "[]"


def _totals_row(totals: Totals, suffix: str = "") -> dict[str, int]:
    return {f"debits_posted{suffix}": totals.debits_posted,
            f"credits_posted{suffix}": totals.credits_posted,
            f"debits_pending{suffix}": totals.debits_pending,
            f"credits_pending{suffix}": totals.credits_pending}


class SqlLedger(SqlMemberStore, SqlLoanStore, SqlPoolStore):
    """The ledger repository over one connection inside one transaction."""

    def __init__(self, conn: Connection, is_postgres: bool) -> None:
        self.conn = conn
        self.is_postgres = is_postgres
        self._pipelined = False  # inside `write_behind` (PostgreSQL)

    def _in(self, column: Any, keys: Sequence[Any]) -> Any:
        return column.in_(keys)

    def _chunked(self, keys: Sequence[Any]) -> Iterator[Sequence[Any]]:
        return _chunks(keys, IN_CLAUSE_CHUNK)

    # -- head and requests ----------------------------------------------------------------------
    def head(self) -> Head:
        return self._head(_HEAD)

    def lock_head(self) -> Head:
        return self._head(_HEAD + " FOR UPDATE" if self.is_postgres else _HEAD)

    def _head(self, statement: str) -> Head:
        rows = self._raw(statement, fetch=True)
        ensure(bool(rows), "the ledger head row is missing: run `bank db upgrade`")
        return Head(*rows[0])

    def save_head(self, head: Head) -> None:
        self._raw(_SAVE_HEAD, (head.next_seq, head.last_recorded_ns, head.audit_size))

    def find_request(self, request_id: str) -> StoredRequest | None:
        return self.find_requests([request_id]).get(request_id)

    def save_request(self, request: StoredRequest) -> None:
        self.save_requests([request])

    def find_requests(self, request_ids: Sequence[str]) -> dict[str, StoredRequest]:
        rows = self._rows_by_key(_REQUESTS_BY_ID, sorted(set(request_ids)))
        return {row[0]: StoredRequest(*row) for row in rows}

    def save_requests(self, requests: Sequence[StoredRequest]) -> None:
        if not requests:
            return
        if self.is_postgres:
            self._raw(_PG_INSERT_REQUESTS, [
                [r.request_id for r in requests], [r.method for r in requests],
                [r.fingerprint for r in requests], [r.outcome_json for r in requests],
                [r.recorded_ns for r in requests]])
        else:
            self._raw_executemany(_INSERT_REQUESTS, [
                (r.request_id, r.method, r.fingerprint, r.outcome_json, r.recorded_ns)
                for r in requests])

    def append_audit(self, leaves: Sequence[AuditLeaf]) -> None:
        if not leaves:
            return
        if self.is_postgres:
            self._raw(_PG_INSERT_AUDIT, [
                [leaf.index for leaf in leaves], [leaf.recorded_ns for leaf in leaves],
                [leaf.leaf for leaf in leaves], [leaf.leaf_hash for leaf in leaves]])
        else:
            self._raw_executemany(_INSERT_AUDIT, [
                (leaf.index, leaf.recorded_ns, leaf.leaf, leaf.leaf_hash) for leaf in leaves])

    @contextmanager
    def write_behind(self) -> Iterator[None]:
        """Writes made inside reach the database together (PostgreSQL: one pipeline, so one
        round trip instead of one per statement). A database error among them is raised by a
        later write of the block or when it ends, whichever comes first, labelled as one of
        the pipelined writes (not as the statement that happened to raise it); the transaction
        must then be rolled back. Other databases: as without."""
        if not self.is_postgres:
            yield
            return
        raw: Any = self.conn.connection.dbapi_connection
        self._pipelined = True
        try:
            with raw.pipeline():
                yield
        except self.conn.dialect.loaded_dbapi.Error as error:
            raise self._driver_error(_PIPELINED, error, raw, None) from error
        finally:
            self._pipelined = False

    # -- approvals ------------------------------------------------------------------------------
    def _approvals_query(self) -> Any:
        a, d = t.approvals, t.approval_decisions
        return select(a, d.c.approved, d.c.checker_subject, d.c.checker_role,
                      d.c.checker_scope, d.c.decided_ns, d.c.note, d.c.outcome_json).select_from(
            a.outerjoin(d, a.c.approval_id == d.c.approval_id))

    def get_approval(self, approval_id: str) -> tuple[Approval, Decision | None] | None:
        row = self.conn.execute(self._approvals_query().where(
            t.approvals.c.approval_id == approval_id)).one_or_none()
        return _approval(row) if row is not None else None

    def list_approvals(self, before_created_ns: int, limit: int
                       ) -> list[tuple[Approval, Decision | None]]:
        rows = self.conn.execute(self._approvals_query()
                                 .where(t.approvals.c.created_ns < before_created_ns)
                                 .order_by(t.approvals.c.created_ns.desc()).limit(limit))
        return [_approval(row) for row in rows]

    def insert_approval(self, approval: Approval) -> None:
        self.conn.execute(insert(t.approvals).values(
            approval_id=approval.approval_id, operation=approval.operation,
            payload_json=approval.payload_json, payload_sha256=approval.payload_sha256,
            maker_subject=approval.maker.subject, maker_role=approval.maker.role.value,
            maker_scope=approval.maker.scope, maker_request_id=approval.maker_request_id,
            reason=approval.reason, created_ns=approval.created_ns,
            expires_ns=approval.expires_ns))

    def insert_decision(self, decision: Decision) -> None:
        self.conn.execute(insert(t.approval_decisions).values(
            approval_id=decision.approval_id, approved=decision.approved,
            checker_subject=decision.checker.subject, checker_role=decision.checker.role.value,
            checker_scope=decision.checker.scope, decided_ns=decision.decided_ns,
            note=decision.note, outcome_json=decision.outcome_json))

    # -- accounts -------------------------------------------------------------------------------
    def get_account(self, account_id: str) -> Account | None:
        row = self.conn.execute(
            select(t.accounts).where(t.accounts.c.account_id == account_id)).one_or_none()
        return _account(row) if row is not None else None

    def get_accounts(self, account_ids: Sequence[str]) -> list[Account]:
        # A batch reads thousands of accounts: through the driver, by key list (SQLAlchemy's
        # expanded IN lists and row processing cost three times the query itself).
        rows = self._rows_by_key(_ACCOUNTS_BY_ID, sorted(set(account_ids)))
        return list(map(_account_of, rows))

    def list_accounts(self, after_id: str, limit: int, flt: AccountFilter) -> list[Account]:
        c = t.accounts.c
        query = select(t.accounts).where(c.account_id > after_id)
        if flt.owner_kind:
            query = query.where(c.owner_kind == flt.owner_kind)
        if flt.owner_id:
            query = query.where(c.owner_id == flt.owner_id)
        if flt.currency:
            query = query.where(c.currency == flt.currency)
        if flt.owner_ids is not None:
            query = query.where(c.owner_id.in_(flt.owner_ids))
        rows = self.conn.execute(query.order_by(c.account_id).limit(limit))
        return [_account(row) for row in rows]

    def iter_accounts(self) -> Iterator[Account]:
        for row in self.conn.execute(select(t.accounts).order_by(t.accounts.c.account_id)):
            yield _account(row)

    def insert_accounts(self, accounts: Sequence[Account]) -> None:
        if not accounts:
            return
        self.conn.execute(insert(t.accounts), [{
            "account_id": a.account_id, "currency": a.currency,
            "account_type": a.account_type.value, "code": a.code,
            "owner_kind": a.owner_kind.value, "owner_id": a.owner_id, "status": a.status.value,
            "debits_must_not_exceed_credits": a.debits_must_not_exceed_credits,
            "credits_must_not_exceed_debits": a.credits_must_not_exceed_debits,
            "created_ns": a.created_ns, "closed_ns": None, **_totals_row(a.totals),
        } for a in accounts])

    def save_account_totals(self, accounts: Sequence[Account]) -> None:
        if not accounts:
            return
        if self.is_postgres:  # one statement for the batch (writers hold the head lock already)
            ordered = sorted(accounts, key=lambda a: a.account_id)
            self._raw(_PG_SAVE_TOTALS, [
                [a.account_id for a in ordered], [a.totals.debits_posted for a in ordered],
                [a.totals.credits_posted for a in ordered],
                [a.totals.debits_pending for a in ordered],
                [a.totals.credits_pending for a in ordered]])
            return
        # SQLite: the driver's executemany with plain tuples (SQLAlchemy's per-row parameter
        # processing cost more than the update itself).
        self._raw_executemany(_SQLITE_SAVE_TOTALS, [
            (a.totals.debits_posted, a.totals.credits_posted, a.totals.debits_pending,
             a.totals.credits_pending, a.account_id) for a in accounts])

    def set_account_status(self, account_id: str, status: AccountStatus, at_ns: int) -> None:
        values: dict[str, Any] = {"status": status.value}
        if status is AccountStatus.CLOSED:
            values["closed_ns"] = at_ns
        self.conn.execute(update(t.accounts).where(t.accounts.c.account_id == account_id)
                          .values(**values))

    # -- entries --------------------------------------------------------------------------------
    def insert_entries(self, entries: Sequence[JournalEntry]) -> None:
        if not entries:
            return
        # Postings first: the entry's insert trigger checks that its postings balance. (Enum
        # `_value_` rather than `.value` in these per-row loops: a plain attribute, no descriptor.)
        if self.is_postgres:
            self._copy_entries(entries)
            return
        # SQLite: the driver's executemany with plain tuples, the same values SQLAlchemy would
        # bind (its Date type stores ISO 8601 text), without its per-row parameter processing.
        self._raw_executemany(_SQLITE_INSERT_POSTINGS, [
            (p.entry_seq, p.index, p.account_id, p.side._value_, p.amount, p.currency,
             p.effect._value_, e.recorded_ns, p.totals_after.debits_posted,
             p.totals_after.credits_posted, p.totals_after.debits_pending,
             p.totals_after.credits_pending) for e in entries for p in e.postings])
        self._raw_executemany(_SQLITE_INSERT_ENTRIES, [
            (e.seq, e.transfer_id, e.kind._value_, e.recorded_ns, e.effective_date.isoformat(),
             e.pending_id, e.reverses_id, e.expires_ns, e.description,
             _metadata_json(e.metadata), e.fingerprint, e.request_id,
             len(e.postings)) for e in entries])

    def _rows_by_key(self, statement: str, keys: Sequence[str]) -> list[tuple[Any, ...]]:
        """Rows of `statement` (`... WHERE <key> {keys}`) for every key, through the driver:
        one `= ANY(array)` parameter on PostgreSQL, planned for its values (not prepared: a
        generic plan of a key list can be a sequential scan); IN lists of
        `IN_CLAUSE_CHUNK` keys on SQLite."""
        if not keys:
            return []
        raw: Any = self.conn.connection.dbapi_connection
        dbapi_error = self.conn.dialect.loaded_dbapi.Error
        cursor = raw.cursor()
        found: list[tuple[Any, ...]] = []
        try:
            if self.is_postgres:
                statement = statement.format(keys="= ANY(%b)")  # binary: see _PG_INSERT_AUDIT
                cursor.execute(statement, (list(keys),), prepare=False)
                found = cursor.fetchall()
            else:
                template = statement
                for chunk in _chunks(keys):
                    statement = template.format(keys=f"IN ({', '.join('?' * len(chunk))})")
                    cursor.execute(statement, chunk)
                    found.extend(cursor.fetchall())
        except dbapi_error as error:
            raise self._driver_error(statement, error, raw, cursor) from error
        finally:
            cursor.close()
        return found

    def _driver_error(self, statement: str, error: Any, raw: Any, cursor: Any,
                      ismulti: bool = False) -> StatementError:
        """A driver error raised through the raw cursor, wrapped as SQLAlchemy wraps its own
        (so `_translated` sees the same), a lost connection flagged as SQLAlchemy flags it."""
        dialect = self.conn.dialect
        wrapped: StatementError = DBAPIError.instance(
            statement, None, error, dialect.loaded_dbapi.Error,
            connection_invalidated=dialect.is_disconnect(error, raw, cursor), dialect=dialect,
            ismulti=ismulti)
        return wrapped

    def _raw(self, statement: str, params: Sequence[Any] = (), fetch: bool = False
             ) -> list[tuple[Any, ...]]:
        """One statement through this transaction's driver connection (`%s` placeholders, `?`
        on SQLite), its rows if `fetch`; errors wrapped as SQLAlchemy wraps its own (so
        `_translated` sees the same)."""
        return self._through_driver(statement, params, fetch=fetch, many=False)

    def _raw_executemany(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        """One statement for each of `rows` (SQLite bulk writes), as `_raw`."""
        self._through_driver(statement, rows, fetch=False, many=True)

    def _through_driver(self, statement: str, params: Sequence[Any], *, fetch: bool,
                        many: bool) -> list[tuple[Any, ...]]:
        raw: Any = self.conn.connection.dbapi_connection
        dbapi_error = self.conn.dialect.loaded_dbapi.Error
        if not self.is_postgres:
            statement = statement.replace("%s", "?")
        cursor = raw.cursor()
        try:
            if many:
                cursor.executemany(statement, params)
                return []
            cursor.execute(statement, params)
            return cursor.fetchall() if fetch else []
        except dbapi_error as error:
            label = _PIPELINED if self._pipelined else statement
            raise self._driver_error(label, error, raw, cursor, ismulti=many) from error
        finally:
            cursor.close()

    def _copy_entries(self, entries: Sequence[JournalEntry]) -> None:
        """PostgreSQL: stream a batch's postings and entries with COPY (one round trip each,
        rows encoded by psycopg's C code); constraints and row triggers still apply."""
        raw: Any = self.conn.connection.dbapi_connection
        with raw.cursor() as cursor:
            with cursor.copy(_COPY_POSTINGS) as copy:
                for e in entries:
                    for p in e.postings:
                        after = p.totals_after
                        copy.write_row((
                            p.entry_seq, p.index, p.account_id, p.side._value_, p.amount,
                            p.currency, p.effect._value_, e.recorded_ns, after.debits_posted,
                            after.credits_posted, after.debits_pending, after.credits_pending))
            with cursor.copy(_COPY_ENTRIES) as copy:
                for e in entries:
                    copy.write_row((
                        e.seq, e.transfer_id, e.kind._value_, e.recorded_ns, e.effective_date,
                        e.pending_id, e.reverses_id, e.expires_ns, e.description,
                        _metadata_json(e.metadata), e.fingerprint,
                        e.request_id, len(e.postings)))

    def _entries_where(self, condition: Any, order_limit: int | None = None) -> list[JournalEntry]:
        query = select(t.entries).where(condition).order_by(t.entries.c.seq)
        if order_limit is not None:
            query = query.limit(order_limit)
        rows = list(self.conn.execute(query))
        if not rows:
            return []
        seqs = [row.seq for row in rows]
        by_entry: dict[int, list[Posting]] = {s: [] for s in seqs}
        for chunk in self._chunked(seqs):
            postings = self.conn.execute(
                select(t.postings).where(self._in(t.postings.c.entry_seq, chunk))
                .order_by(t.postings.c.entry_seq, t.postings.c.idx))
            for p in postings:
                by_entry[p.entry_seq].append(_posting(p))
        return [_entry(row, tuple(by_entry[row.seq])) for row in rows]

    def _entries_by(self, column: Any, keys: Sequence[str]) -> dict[str, JournalEntry]:
        found: dict[str, JournalEntry] = {}
        # Most keys of a batch name no entry (new transfer ids): find the few that do with one
        # cheap query through the driver, and load whole entries for those alone.
        present = [row[0] for row in self._rows_by_key(
            _KEY_PRESENT.format(column=column.name), sorted(set(keys)))]
        for chunk in self._chunked(sorted(present)):
            for entry in self._entries_where(self._in(column, chunk)):
                key = {t.entries.c.transfer_id: entry.transfer_id,
                       t.entries.c.pending_id: entry.pending_id,
                       t.entries.c.reverses_id: entry.reverses_id}[column]
                assert key is not None
                found[key] = entry
        return found

    def get_entries(self, transfer_ids: Sequence[str]) -> dict[str, JournalEntry]:
        return self._entries_by(t.entries.c.transfer_id, transfer_ids)

    def get_resolutions(self, pending_ids: Sequence[str]) -> dict[str, JournalEntry]:
        return self._entries_by(t.entries.c.pending_id, pending_ids)

    def get_reversals(self, transfer_ids: Sequence[str]) -> dict[str, JournalEntry]:
        return self._entries_by(t.entries.c.reverses_id, transfer_ids)

    def entries_after(self, after_seq: int, limit: int) -> list[JournalEntry]:
        return self._entries_where(t.entries.c.seq > after_seq, limit)

    def expired_holds(self, now_ns: int, limit: int) -> list[JournalEntry]:
        e = t.entries.c
        resolved = select(t.entries.c.pending_id).where(t.entries.c.pending_id.is_not(None))
        condition = and_(e.kind == "pending", e.expires_ns > 0, e.expires_ns <= now_ns,
                         e.transfer_id.not_in(resolved.scalar_subquery()))
        return self._entries_where(condition, limit)

    def statement(self, account_id: str, after_seq: int, after_index: int, limit: int,
                  from_ns: int | None, to_ns: int | None) -> list[tuple[Posting, JournalEntry]]:
        params: dict[str, Any] = {"account": account_id, "after_seq": after_seq,
                                  "after_index": after_index, "limit": limit,
                                  "from_ns": from_ns, "to_ns": to_ns}
        query = _STATEMENT_PAGES[(from_ns is not None, to_ns is not None)]
        return [_statement_line(row) for row in self.conn.execute(query, params)]

    def iter_posted_lines(self, first_seq: int, last_seq: int, account_id: str | None = None
                          ) -> Generator[PostedLine, None, None]:
        p, e, a = t.postings.c, t.entries.c, t.accounts.c
        query = (select(t.postings, e.recorded_ns.label("entry_recorded_ns"), e.transfer_id,
                        e.effective_date, e.description, a.currency.label("account_currency"),
                        a.owner_kind, a.owner_id)
                 .join(t.entries, e.seq == p.entry_seq)
                 .join(t.accounts, a.account_id == p.account_id)
                 .where(p.effect == "post", p.entry_seq >= first_seq, p.entry_seq <= last_seq))
        if account_id is not None:
            query = query.where(p.account_id == account_id)
        # The order of ix_postings_statement (effect is fixed), which PostgreSQL can walk;
        # SQLite may sort the period's lines instead (its sorter spills to disk when big).
        result = self.conn.execution_options(yield_per=2_000).execute(
            query.order_by(p.account_id, p.effect, p.entry_seq, p.idx))
        try:
            for row in result:
                m = row._mapping
                yield PostedLine(_posting(row), m["transfer_id"], m["entry_recorded_ns"],
                                 m["effective_date"], m["description"], m["account_currency"],
                                 m["owner_kind"], m["owner_id"])
        finally:
            result.close()

    def totals_as_of(self, account_id: str, as_of_ns: int) -> Totals:
        """The totals after the account's last posting recorded at or before `as_of_ns`.

        Recorded times increase with entry positions (the engine gives each entry the next
        position and a later time, under the head lock), so that is the account's last posting
        at or before the last position recorded by then (uq_entries_recorded_ns): one seek of
        ix_postings_statement per effect, the three in one statement.
        """
        row = self.conn.execute(_TOTALS_AS_OF, {"account": account_id, "at": as_of_ns}).first()
        return Totals(*row) if row is not None else Totals()

    def trial_balance(self) -> list[tuple[str, str, int, int]]:
        # Summed in Python: SQLite's SUM() fails on int64 overflow, and the sum over many
        # accounts can exceed what one account's total may hold.
        c = t.accounts.c
        sums: dict[tuple[str, str], list[int]] = {}
        for row in self.conn.execution_options(yield_per=5_000).execute(
                select(c.currency, c.account_type, c.debits_posted, c.credits_posted)):
            pair = sums.setdefault((row[0], row[1]), [0, 0])
            pair[0] += row[2]
            pair[1] += row[3]
        return [(currency, kind, d, k) for (currency, kind), (d, k) in sorted(sums.items())]

    def iter_entries(self) -> Iterator[JournalEntry]:
        """Streams entries with their postings (two ordered cursors merged, constant memory)."""
        entries = self.conn.execution_options(yield_per=2_000).execute(
            select(t.entries).order_by(t.entries.c.seq))
        postings = iter(self.iter_postings())
        pending: Posting | None = next(postings, None)
        for row in entries:
            lines: list[Posting] = []
            while pending is not None and pending.entry_seq <= row.seq:
                if pending.entry_seq == row.seq:
                    lines.append(pending)
                pending = next(postings, None)
            yield _entry(row, tuple(lines))

    def iter_audit(self, start: int = 0, stop: int | None = None
                   ) -> Generator[AuditLeaf, None, None]:
        a = t.audit_log.c
        query = select(t.audit_log).where(a.idx >= start).order_by(a.idx)
        if stop is not None:
            query = query.where(a.idx < stop)
        # Fetched a few hundred at a time: a leaf of a 1,000-transfer batch is ~100 kB.
        result = self.conn.execution_options(yield_per=AUDIT_FETCH).execute(query)
        try:
            for row in result:
                yield AuditLeaf(row.idx, row.recorded_ns, bytes(row.leaf), bytes(row.leaf_hash))
        finally:
            result.close()

    def checkpoints(self) -> list[StoredCheckpoint]:
        rows = self.conn.execute(select(t.checkpoints).order_by(t.checkpoints.c.seq))
        return [StoredCheckpoint(r.seq, r.tree_size, bytes(r.root_hash), r.note, r.key_name,
                                 r.created_ns) for r in rows]

    def audit_index_at(self, recorded_ns: int) -> int:
        a = t.audit_log.c
        return int(self.conn.execute(select(func.count()).select_from(t.audit_log)
                                     .where(a.recorded_ns < recorded_ns)).scalar_one())

    def posted_sums(self, upto_seq: int) -> list[tuple[str, int, int]]:
        # Per account in SQL (bounded by the account's own int64 totals), then in Python.
        p = t.postings.c
        debit = func.sum(case((p.side == "D", p.amount), else_=0))
        credit = func.sum(case((p.side == "C", p.amount), else_=0))
        rows = self.conn.execute(
            select(p.currency, debit, credit).where(p.effect == "post", p.entry_seq <= upto_seq)
            .group_by(p.account_id, p.currency))
        sums: dict[str, list[int]] = {}
        for row in rows:
            pair = sums.setdefault(row[0], [0, 0])
            pair[0] += int(row[1])
            pair[1] += int(row[2])
        return [(currency, d, k) for currency, (d, k) in sorted(sums.items())]

    def insert_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        self.conn.execute(insert(t.checkpoints).values(
            seq=checkpoint.seq, tree_size=checkpoint.tree_size, root_hash=checkpoint.root_hash,
            note=checkpoint.note, key_name=checkpoint.key_name,
            created_ns=checkpoint.created_ns))

    def iter_postings(self) -> Iterator[Posting]:
        result = self.conn.execution_options(yield_per=5_000).execute(
            select(t.postings).order_by(t.postings.c.entry_seq, t.postings.c.idx))
        for row in result:
            yield _posting(row)

    def entries_out_of_time_order(self, limit: int) -> list[int]:
        rows = self.conn.execute(text(
            "SELECT seq FROM (SELECT seq, recorded_ns, LAG(recorded_ns) OVER (ORDER BY seq) "
            "AS before_ns FROM entries) AS ordered WHERE recorded_ns <= before_ns "
            "ORDER BY seq LIMIT :limit"), {"limit": limit})
        return [row[0] for row in rows]


def _approval(row: Row[Any]) -> tuple[Approval, Decision | None]:
    m = row._mapping
    approval = Approval(
        m["approval_id"], m["operation"], m["payload_json"], m["payload_sha256"],
        Principal(m["maker_subject"], Role(m["maker_role"]), m["maker_scope"]),
        m["maker_request_id"], m["reason"], m["created_ns"], m["expires_ns"])
    if m["decided_ns"] is None:
        return approval, None
    return approval, Decision(
        m["approval_id"], bool(m["approved"]),
        Principal(m["checker_subject"], Role(m["checker_role"]), m["checker_scope"]),
        m["decided_ns"], m["note"], m["outcome_json"])
