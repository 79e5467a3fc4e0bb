"""The production roles (ops/deploy/postgres-roles.sql, applied by ops/deploy/apply_roles.py).

On a throw-away database: the service's use cases run normally as the application role, and
PostgreSQL itself, by privilege and before any trigger, refuses that role UPDATE and DELETE on
every history table, DELETE and TRUNCATE anywhere, UPDATE of anything but the running totals,
status and head counters, and DDL. The migrator role can run every migration, and tables it
creates later are readable and appendable (only) by the application role.

Roles are cluster-wide: each test makes its own pair with a unique suffix (so concurrent test
sessions, and real `bank_app`/`bank_migrator` roles on the same server, are never touched) and
drops them at teardown. With the local server's trust authentication passwords are not checked;
the application role still logs in as itself (a URL with its name and password), so every
privilege check below is PostgreSQL's, not a superuser's.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors
from sqlalchemy import create_engine, make_url, text

from bank.adapters import migrate
from bank.adapters.clock import FixedClock
from bank.adapters.keys import KeyRing
from bank.adapters.member_crypto import EnvelopeCipher, MasterKeyRing
from bank.adapters.sql import SqlUnitOfWork, make_engine
from bank.adapters.tables import APPEND_ONLY, metadata
from bank.app.accounts import AccountSpec, close_account, create_accounts
from bank.app.approvals import approve
from bank.app.audit import sign_checkpoint, verify_audit
from bank.app.check import check_ledger
from bank.app.members import (
    Application,
    get_member,
    onboard_member,
    request_erasure,
    rewrap_member_keys,
    set_connected_group,
    update_kyc_status,
)
from bank.app.queries import get_account, get_transfer, statement
from bank.app.transfers import create_transfers
from bank.domain.accounts import AccountType, OwnerKind, Side
from bank.domain.entries import PostingLine, TransferKind, TransferSpec
from bank.domain.identity import Principal, Role
from bank.domain.members import KycStatus, LegalForm, PersonalData

pytestmark = pytest.mark.postgresql

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "ops" / "deploy" / "apply_roles.py"
TELLER = Principal("tess.teller", Role.TELLER, "branch:preston")
TABLES = sorted(metadata.tables)


@dataclass
class Roles:
    admin_url: str  # the test database, as the superuser
    app: str
    migrator: str
    password_files: tuple[Path, Path]  # app, migrator

    def url(self, role: str) -> str:
        """The test database as `role`, with the password the runner set for it."""
        file = self.password_files[0 if role == self.app else 1]
        password = file.read_text().strip()
        return make_url(self.admin_url).set(username=role, password=password).render_as_string(
            hide_password=False)

    def apply(self) -> str:
        """Run the operator's command; returns what it printed."""
        done = subprocess.run(
            [sys.executable, str(RUNNER), self.admin_url, "--app-role", self.app,
             "--migrator-role", self.migrator, "--app-password-file", str(self.password_files[0]),
             "--migrator-password-file", str(self.password_files[1])],
            capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout


def _psycopg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture
def roles(pg_databases: Any, tmp_path: Path) -> Iterator[Roles]:
    admin_url: str = pg_databases.create()
    suffix = uuid.uuid4().hex[:10]
    app, migrator = f"bank_app_t{suffix}", f"bank_migrator_t{suffix}"
    files = []
    for name in ("app", "migrator"):
        path = tmp_path / f"{name}.password"
        path.write_text(secrets.token_urlsafe(24) + "\n")
        path.chmod(0o600)
        files.append(path)
    created = Roles(admin_url, app, migrator, (files[0], files[1]))
    yield created
    # Roles own objects and privileges in this database only; hand the objects back, drop the
    # privileges, then the roles. (The database itself is dropped with the session.)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        existing = [r for r in (app, migrator) if conn.execute(
            text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": r}).first()]
        for role in existing:
            conn.execute(text(f'REASSIGN OWNED BY "{role}" TO CURRENT_USER'))
            conn.execute(text(f'DROP OWNED BY "{role}"'))
        for role in existing:
            conn.execute(text(f'DROP ROLE "{role}"'))
    admin.dispose()


def _spec(account_id: str, no_overdraft: bool = False,
          account_type: AccountType = AccountType.LIABILITY) -> AccountSpec:
    return AccountSpec(account_id, "GBP", account_type, "2100", OwnerKind.MEMBER, "m-1",
                       debits_must_not_exceed_credits=no_overdraft)


def _transfer(transfer_id: str, debit: str, credit: str, pence: int) -> TransferSpec:
    return TransferSpec(transfer_id, TransferKind.POSTED,
                        (PostingLine(debit, Side.DEBIT, pence, "GBP"),
                         PostingLine(credit, Side.CREDIT, pence, "GBP")),
                        description="roles test")


def _refused(conn: psycopg.Connection[tuple[object, ...]], statement_sql: str) -> str:
    """`statement_sql` fails with insufficient_privilege (SQLSTATE 42501); returns the message."""
    with pytest.raises(errors.InsufficientPrivilege) as refusal:
        conn.execute(statement_sql.encode())
    return str(refusal.value)


def _member_lifecycle(uow: SqlUnitOfWork, clock: FixedClock, keys: Path) -> None:
    """Members need only the UPDATE grants of step 4: KYC, groups, key rewrap and erasure
    (crypto-shredding is an UPDATE; nothing is deleted)."""
    ring = MasterKeyRing(keys / "member-master")
    cipher = EnvelopeCipher(ring)
    onboard_member(uow, clock, cipher, TELLER, "req-member", Application(
        "m-9", LegalForm.COOPERATIVE, PersonalData("Roles Co-op", "PR1 2HE"), False))
    update_kyc_status(uow, clock, TELLER, "req-kyc", "m-9", KycStatus.VERIFIED)
    set_connected_group(uow, clock, TELLER, "req-group", "m-9", "g-1")
    ring.rotate()
    assert rewrap_member_keys(uow, clock, cipher, "req-rewrap") == 1
    erasure = request_erasure(uow, clock, TELLER, "req-erase", "m-9")
    approve(uow, clock, Principal("abe", Role.APPROVER), "req-approve", erasure.approval_id)
    assert get_member(uow, cipher, "m-9").member.erased


def _run_the_service(uow: SqlUnitOfWork, clock: FixedClock, keys: Path) -> None:
    """What `bank serve`, `bank audit sign|verify` and `bank check` do, through the use cases."""
    opened = create_accounts(uow, clock, TELLER, "req-open", [
        _spec("bank-cash", account_type=AccountType.ASSET), _spec("m-1-deposit", True),
        _spec("m-2-deposit", True), _spec("m-3-deposit", True)])
    assert [item.error for item in opened.items] == [None] * 4
    posted = create_transfers(uow, clock, TELLER, "req-fund", [
        _transfer("t-fund", "bank-cash", "m-1-deposit", 10_000),
        _transfer("t-pay", "m-1-deposit", "m-2-deposit", 1_250)])
    assert [item.error for item in posted.items] == [None, None]
    refused = create_transfers(uow, clock, TELLER, "req-overdraft", [
        _transfer("t-overdraft", "m-2-deposit", "m-1-deposit", 999_999)])
    assert refused.items[0].error is not None  # a business refusal, recorded (INSERT only)
    # A replay reads the stored outcome back.
    again = create_transfers(uow, clock, TELLER, "req-fund", [
        _transfer("t-fund", "bank-cash", "m-1-deposit", 10_000),
        _transfer("t-pay", "m-1-deposit", "m-2-deposit", 1_250)])
    assert again == posted
    # Closing updates the status column.
    close_account(uow, clock, TELLER, "req-close", "m-3-deposit")

    view = get_transfer(uow, "t-pay")
    assert view.entry.description == "roles test"
    assert [p.amount for p in view.entry.postings] == [1_250, 1_250]
    _, page = statement(uow, "m-2-deposit", 10, "", None, None)
    assert [line.balance_after for line in page.items] == [1_250]
    assert get_account(uow, "m-1-deposit").totals.credits_posted == 10_000
    assert get_account(uow, "m-3-deposit").status.value == "closed"

    ring = KeyRing(keys)
    checkpoint = sign_checkpoint(uow, clock, ring.ensure())
    assert checkpoint.tree_size == 4  # open, fund, the refusal, close; a replay adds none
    report = verify_audit(uow, ring.verifiers())
    assert report.ok, report.problems
    assert check_ledger(uow).ok
    _member_lifecycle(uow, clock, keys)
    assert verify_audit(uow, ring.verifiers()).ok


def test_the_service_runs_as_bank_app_and_the_database_refuses_it_everything_else(
        roles: Roles, tmp_path: Path) -> None:
    # The schema, built by the superuser (standing in for bank_migrator); then the roles, twice:
    # the second run must change nothing and succeed.
    superuser = make_engine(roles.admin_url)
    migrate.upgrade(superuser)
    first = roles.apply()
    assert roles.apply() == first
    assert f"passwords set for {roles.migrator}, {roles.app}" in first
    with superuser.connect() as conn:
        owners = {row[0]: row[1] for row in conn.execute(text(
            "SELECT relname, pg_get_userbyid(relowner) FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"))}
        verifiers = {row[0]: row[1] for row in conn.execute(text(
            "SELECT rolname, rolpassword FROM pg_authid WHERE rolname IN (:a, :m)"),
            {"a": roles.app, "m": roles.migrator})}
    assert owners == dict.fromkeys([*TABLES, "alembic_version"], roles.migrator)
    assert all(v.startswith("SCRAM-SHA-256$4096:") for v in verifiers.values()), verifiers
    assert len(verifiers) == 2

    app_engine = make_engine(roles.url(roles.app))
    try:
        with app_engine.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar_one() == roles.app
        # `bank serve --no-migrate` compares the schema's revision with the code's.
        assert migrate.current_revision(app_engine) == migrate.head_revision(app_engine)
        uow = SqlUnitOfWork(app_engine)
        _run_the_service(uow, FixedClock(), tmp_path / "keys")
    finally:
        app_engine.dispose()

    with psycopg.connect(_psycopg_url(roles.url(roles.app)), autocommit=True) as conn:
        # History: neither UPDATE nor DELETE, on every table, refused by privilege (the rows
        # exist, so a trigger would have had something to refuse; it never gets the chance).
        for table in APPEND_ONLY:
            column = next(iter(metadata.tables[table].columns)).name
            message = _refused(conn, f"UPDATE {table} SET {column} = {column}")
            assert f"permission denied for table {table}" in message
            message = _refused(conn, f"DELETE FROM {table}")
            assert f"permission denied for table {table}" in message
        # No DELETE and no TRUNCATE anywhere.
        for table in [*TABLES, "alembic_version"]:
            _refused(conn, f"TRUNCATE {table}")
            if table not in APPEND_ONLY:
                _refused(conn, f"DELETE FROM {table}")
        # UPDATE only of the running totals, the status and the head counters.
        for assignment in ("owner_id = owner_id", "currency = currency", "account_id = 'x'",
                           "debits_must_not_exceed_credits = false", "created_ns = 0"):
            _refused(conn, f"UPDATE accounts SET {assignment}")
        _refused(conn, "UPDATE ledger_head SET id = id")
        _refused(conn, "UPDATE alembic_version SET version_num = version_num")
        _refused(conn, "INSERT INTO alembic_version VALUES ('9999')")
        # No DDL of any kind.
        for ddl in ("CREATE TABLE public.sneaky (id int)", "CREATE TEMP TABLE sneaky (id int)",
                    "CREATE SCHEMA sneaky", "CREATE VIEW public.sneaky AS SELECT 1",
                    "CREATE FUNCTION public.sneaky() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                    "ALTER TABLE accounts ADD COLUMN sneaky int",
                    "ALTER TABLE entries DISABLE TRIGGER USER", "DROP TABLE requests",
                    "DROP TRIGGER entries_append_only ON entries",
                    "CREATE INDEX sneaky ON entries (description)"):
            _refused(conn, ddl)
        # Nor can it switch the triggers off for its session (what the tamper tests do).
        _refused(conn, "SET session_replication_role = replica")
        # GRANT by a non-owner is not an error, only a warning and a no-op: check it stayed one.
        conn.execute("GRANT DELETE ON entries TO PUBLIC")
        assert conn.execute(
            "SELECT has_table_privilege('public', 'entries', 'DELETE')").fetchone() == (False,)
        # What is allowed still is: the head lock and a counter update (rolled back here).
        with conn.transaction(force_rollback=True):
            conn.execute("SELECT * FROM ledger_head FOR UPDATE")
            conn.execute("UPDATE ledger_head SET audit_size = audit_size")

    # Behind the privileges the triggers still stand: even the owner cannot edit history.
    with psycopg.connect(_psycopg_url(roles.url(roles.migrator)), autocommit=True) as conn:
        for table in APPEND_ONLY:
            if conn.execute(f"SELECT count(*) FROM {table}".encode()).fetchone() != (0,):
                with pytest.raises(errors.IntegrityConstraintViolation, match="append-only"):
                    conn.execute(f"DELETE FROM {table}".encode())

    # Nothing the refused statements tried left a trace.
    uow = SqlUnitOfWork(superuser)
    assert check_ledger(uow).ok
    superuser.dispose()


def test_bank_migrator_runs_the_migrations_and_later_tables_are_append_only_for_bank_app(
        roles: Roles) -> None:
    # The order of docs/deployment.md: roles on the empty database, migrate as bank_migrator,
    # roles again.
    before = roles.apply()
    assert "no tables yet" in before
    migrator_engine = make_engine(roles.url(roles.migrator))
    app_engine = make_engine(roles.url(roles.app))
    try:
        migrate.upgrade(migrator_engine)
        assert migrate.current_revision(migrator_engine) == migrate.head_revision(migrator_engine)
        app_url = _psycopg_url(roles.url(roles.app))
        with psycopg.connect(app_url, autocommit=True) as conn:
            # Default privileges already let bank_app read and append, but not yet take the
            # head lock: that UPDATE grant is table-specific, hence "run it again".
            conn.execute("SELECT count(*) FROM entries")
            _refused(conn, "SELECT * FROM ledger_head FOR UPDATE")
        after = roles.apply()
        assert "accounts             SELECT, INSERT, UPDATE(some columns)" in after
        assert "entries              SELECT, INSERT\n" in after
        uow = SqlUnitOfWork(app_engine)
        clock = FixedClock()
        result = create_accounts(uow, clock, TELLER, "req-open", [_spec("m-9-deposit")])
        assert result.items[0].error is None

        # A later migration adds a table: bank_app may read and append to it at once, and do
        # nothing else to it, without this script being run again.
        with migrator_engine.begin() as conn:
            conn.execute(text("CREATE TABLE later_history (id bigint PRIMARY KEY, note text)"))
        with psycopg.connect(app_url, autocommit=True) as conn:
            conn.execute("INSERT INTO later_history VALUES (1, 'appended')")
            assert conn.execute("SELECT note FROM later_history").fetchone() == ("appended",)
            _refused(conn, "UPDATE later_history SET note = 'edited'")
            _refused(conn, "DELETE FROM later_history")
            _refused(conn, "TRUNCATE later_history")
            _refused(conn, "DROP TABLE later_history")
        # ...and the script's own check (step 6) still passes with it in place.
        roles.apply()
    finally:
        migrator_engine.dispose()
        app_engine.dispose()
