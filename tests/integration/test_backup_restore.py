"""Backups taken while the ledger is being written, restored into fresh databases, on SQLite and
PostgreSQL: the restored ledger and audit log verify, and a restored backup that is older than
(or forked from) the last checkpoint the operator kept is reported. Then `bank backup` and
`bank restore` end to end, and their refusals."""

from __future__ import annotations

import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import make_url

from bank.adapters.backup import (
    BackupError,
    BackupFailed,
    backup,
    find_tool,
    pg_connection,
    restore,
)
from bank.adapters.clock import SystemClock
from bank.adapters.keys import KeyRing
from bank.adapters.migrate import upgrade
from bank.adapters.sql import SqlUnitOfWork, make_engine
from bank.app.audit import sign_checkpoint, verify_audit
from bank.app.check import check_ledger
from bank.app.ports import Clock
from bank.app.restore_check import check_against_checkpoint
from bank.app.transfers import create_transfers
from bank.cli import main
from bank.demo import seed
from bank.domain.accounts import Side
from bank.domain.entries import PostingLine, TransferKind, TransferSpec
from bank.domain.identity import Principal, Role

pytestmark = pytest.mark.timeout(60)

TELLER = Principal("tess", Role.TELLER, "branch:preston")
LOAD_SECONDS = 2.0


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    ring = KeyRing(tmp_path / "keys")
    ring.rotate()
    return ring


def fresh_url(like: str, tmp_path: Path, request: pytest.FixtureRequest, name: str) -> str:
    """A new, empty database of the same kind as `like` (restore targets)."""
    if like.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'restored' / name}"
    databases = request.getfixturevalue("pg_databases")
    url: str = databases.create()
    return url


@contextmanager
def opened(url: str) -> Iterator[SqlUnitOfWork]:
    engine = make_engine(url)
    try:
        yield SqlUnitOfWork(engine)
    finally:
        engine.dispose()


def pay(uow: SqlUnitOfWork, clock: Clock, transfer_id: str, pence: int = 7) -> None:
    result = create_transfers(uow, clock, TELLER, str(uuid.uuid4()), [TransferSpec(
        transfer_id, TransferKind.POSTED, (
            PostingLine("bank-cash", Side.DEBIT, pence, "GBP"),
            PostingLine("m-0004-deposit", Side.CREDIT, pence, "GBP")))])
    assert result.items[0].error is None


def audit_size(uow: SqlUnitOfWork) -> int:
    with uow.read() as r:
        return r.head().audit_size


class Writer(threading.Thread):
    """Posts transfers one by one until told to stop."""

    def __init__(self, uow: SqlUnitOfWork, clock: Clock) -> None:
        super().__init__(daemon=True)
        self.uow, self.clock = uow, clock
        self.count = 0
        self.errors: list[BaseException] = []
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                pay(self.uow, self.clock, f"load-{uuid.uuid4().hex[:12]}")
                self.count += 1
        except BaseException as error:  # surfaced by the test
            self.errors.append(error)

    def wait_for(self, count: int, timeout_s: float = 15) -> None:
        deadline = time.monotonic() + timeout_s
        while self.count < count and not self.errors and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.errors == []
        assert self.count >= count, f"only {self.count} writes in {timeout_s} s"


def test_a_backup_under_load_restores_to_a_verified_ledger_and_an_older_one_is_detected(
        database_url, uow, clock, ring, tmp_path, request):
    seed(uow, clock, say=lambda _line: None)
    before = sign_checkpoint(uow, clock, ring.active())
    verifiers = ring.verifiers()
    writer = Writer(uow, clock)
    started = time.monotonic()
    writer.start()
    try:
        writer.wait_for(5)
        lines: list[str] = []

        def slow_progress(line: str) -> None:  # stretch the backup so writes land during it
            lines.append(line)
            time.sleep(0.02)

        at_start = writer.count
        result = backup(database_url, tmp_path / "ledger.backup", slow_progress, step_pages=2)
        during = writer.count - at_start
        writer.wait_for(writer.count + 5)
        time.sleep(max(0.0, LOAD_SECONDS - (time.monotonic() - started)))
    finally:
        writer.stop.set()
        writer.join(timeout=30)
    assert writer.errors == []
    assert during > 0, "no transfer was committed while the backup ran"
    assert lines, "the backup showed no progress"
    assert not any("restarted" in line for line in lines), lines
    assert result.path == tmp_path / "ledger.backup"
    assert result.size == result.path.stat().st_size > 0
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o600
    assert str(result.path) in result.summary() and " in " in result.summary()
    assert not list(tmp_path.glob(".*partial*"))

    restored_url = fresh_url(database_url, tmp_path, request, "restored.db")
    restore(restored_url, result.path)
    with opened(restored_url) as restored:
        report = verify_audit(restored, verifiers)
        assert report.ok, report.problems
        assert report.checkpoints == 1
        assert check_ledger(restored).ok
        assert check_against_checkpoint(restored, before.note, verifiers) == []
        size = audit_size(restored)
        assert before.tree_size < size < audit_size(uow)
        # The backup is one snapshot: exactly the first `size` leaves of the live log.
        snapshot = sign_checkpoint(restored, clock, ring.active())
        assert check_against_checkpoint(uow, snapshot.note, verifiers) == []

    # Later, the operator keeps a checkpoint of the grown log; then the old backup is restored.
    after = sign_checkpoint(uow, clock, ring.active())
    older_url = fresh_url(database_url, tmp_path, request, "older.db")
    restore(older_url, result.path)
    with opened(older_url) as older:
        assert verify_audit(older, verifiers).ok  # on its own, an old backup looks fine
        assert check_against_checkpoint(older, after.note, verifiers) == [
            f"restored log has {size} leaves but the last signed checkpoint covers "
            f"{after.tree_size}: this backup is older than the checkpoint"]
        # Carrying on from the old backup writes a different history: a fork.
        for n in range(after.tree_size - size):
            pay(older, clock, f"after-restore-{n}")
        assert audit_size(older) == after.tree_size
        assert check_against_checkpoint(older, after.note, verifiers) == [
            f"the restored log's first {after.tree_size} leaves hash to a different root than "
            "the last signed checkpoint: the restored history is forked from it"]
        assert check_against_checkpoint(older, "not a note\n", verifiers)[0].startswith(
            "the trusted checkpoint does not verify with the pinned keys")


# -- the commands ---------------------------------------------------------------------------------
def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str, text: str) -> None:
    assert err.startswith("bank: error: ") and err.count("\n") == 1, err
    assert text in err, err


def test_backup_and_restore_commands_on_sqlite(tmp_path, capsys):
    live, keys = f"sqlite:///{tmp_path / 'var' / 'ledger.db'}", tmp_path / "keys"
    restored = f"sqlite:///{tmp_path / 'restored' / 'ledger.db'}"
    file, kept = tmp_path / "ledger-backup.db", tmp_path / "checkpoint.txt"
    assert run(capsys, "--database-url", live, "demo")[0] == 0
    code, note, _ = run(capsys, "--database-url", live, "audit", "sign", "--keys-dir", keys)
    assert code == 0
    kept.write_text(note)

    code, out, _ = run(capsys, "--database-url", live, "backup", "--out", file)
    assert code == 0, out
    assert out.splitlines()[-1].startswith(f"backup complete: {file} (")
    assert "copied" in out
    assert file.read_bytes()[18:20] == b"\x01\x01"  # a single file, not WAL mode
    code, _, err = run(capsys, "--database-url", live, "backup", "--out", file)
    assert code == 2
    one_error_line(err, f"{file} already exists")

    code, out, _ = run(capsys, "--database-url", restored, "restore", "--from", file)
    assert code == 0, out
    assert out.splitlines()[-1].startswith(f"restore complete: {file} (")
    code, out, _ = run(capsys, "--database-url", restored, "audit", "verify", "--keys-dir", keys,
                       "--trusted-checkpoint", kept)
    assert code == 0, out
    assert "audit log verified" in out
    assert run(capsys, "--database-url", restored, "check")[0] == 0

    # More business, a newer checkpoint kept; then the old backup is restored over it.
    with opened(live) as uow:
        for n in range(3):
            pay(uow, SystemClock(), f"later-{n}")
    code, note, _ = run(capsys, "--database-url", live, "audit", "sign", "--keys-dir", keys)
    kept.write_text(note)
    code, _, err = run(capsys, "--database-url", restored, "restore", "--from", file)
    assert code == 2
    one_error_line(err, "exists: stop the server, and restore with --force")
    code, out, _ = run(capsys, "--database-url", restored, "restore", "--from", file, "--force")
    assert code == 0, out
    assert "kept the database it replaces as" in out
    assert len(list((tmp_path / "restored").glob("ledger.db.replaced-*"))) == 1
    code, out, _ = run(capsys, "--database-url", restored, "audit", "verify", "--keys-dir", keys,
                       "--trusted-checkpoint", kept)
    assert code == 1
    assert "PROBLEM: restored log has 6 leaves but the last signed checkpoint covers 9: this " \
           "backup is older than the checkpoint" in out

    # Mistakes at the keyboard: one line, exit 2, nothing changed.
    code, _, err = run(capsys, "--database-url", restored, "restore", "--from",
                       tmp_path / "missing.db", "--force")
    assert code == 2
    one_error_line(err, f"no backup file at {tmp_path / 'missing.db'}")
    code, _, err = run(capsys, "--database-url", restored, "restore", "--from", kept, "--force")
    assert code == 2
    one_error_line(err, "is not an SQLite file")
    code, _, err = run(capsys, "--database-url", restored, "audit", "verify", "--keys-dir", keys,
                       "--trusted-checkpoint", tmp_path / "no-such-checkpoint.txt")
    assert code == 2
    one_error_line(err, "--trusted-checkpoint: cannot read")
    code, _, err = run(capsys, "--database-url", f"sqlite:///{tmp_path / 'nothing.db'}",
                       "backup", "--out", tmp_path / "x.db")
    assert code == 2
    one_error_line(err, "no SQLite database at")


@pytest.mark.postgresql
def test_backup_and_restore_commands_on_postgresql(pg_databases, tmp_path, capsys):
    live, restored, keys = pg_databases.create(), pg_databases.create(), tmp_path / "keys"
    file, kept = tmp_path / "ledger.pgdump", tmp_path / "checkpoint.txt"
    assert run(capsys, "--database-url", live, "demo")[0] == 0
    code, note, _ = run(capsys, "--database-url", live, "audit", "sign", "--keys-dir", keys)
    kept.write_text(note)

    code, out, _ = run(capsys, "--database-url", live, "backup", "--out", file)
    assert code == 0, out
    assert "dumped table public.audit_log" in out
    assert out.splitlines()[-1].startswith(f"backup complete: {file} (")
    assert file.read_bytes().startswith(b"PGDMP")

    code, out, _ = run(capsys, "--database-url", restored, "restore", "--from", file)
    assert code == 0, out
    assert "restored table public.audit_log" in out
    assert out.splitlines()[-1].startswith(f"restore complete: {file} (")
    code, out, _ = run(capsys, "--database-url", restored, "audit", "verify", "--keys-dir", keys,
                       "--trusted-checkpoint", kept)
    assert code == 0, out
    assert run(capsys, "--database-url", restored, "check")[0] == 0

    code, _, err = run(capsys, "--database-url", restored, "restore", "--from", file, "--force")
    assert code == 2
    one_error_line(err, "is not empty")
    missing = live.rpartition("/")[0] + f"/bank_test_missing_{uuid.uuid4().hex[:8]}"
    code, _, err = run(capsys, "--database-url", missing, "restore", "--from", file)
    assert code == 2
    one_error_line(err, "does not exist: create it first (createdb")
    sqlite_backup = tmp_path / "sqlite.db"
    sqlite_backup.write_bytes(b"SQLite format 3\x00" + bytes(100))
    code, _, err = run(capsys, "--database-url", pg_databases.create(), "restore", "--from",
                       sqlite_backup)
    assert code == 2
    one_error_line(err, "is an SQLite backup")


# -- refusals -------------------------------------------------------------------------------------
def test_a_forced_sqlite_restore_refuses_a_database_in_use(tmp_path):
    live = f"sqlite:///{tmp_path / 'ledger.db'}"
    with opened(live) as uow:
        upgrade(uow.engine)
        backup(live, tmp_path / "b.db")
        with uow.engine.connect(), pytest.raises(  # the server's pool holds the database open
                BackupError, match=r"is in use \(is the server running\?\)"):
            restore(live, tmp_path / "b.db", force=True)
    assert not list(tmp_path.glob("ledger.db.replaced-*"))
    assert not list(tmp_path.glob(".*partial*"))


def test_backup_refuses_what_it_cannot_back_up(tmp_path):
    with pytest.raises(BackupError, match="in-memory SQLite database"):
        backup("sqlite://", tmp_path / "x")
    with pytest.raises(BackupError, match="cannot back up a mysql database"):
        backup("mysql://u@h/db", tmp_path / "x")
    with pytest.raises(BackupError, match=r"the folder of .* does not exist"):
        backup(f"sqlite:///{tmp_path / 'x.db'}", tmp_path / "no" / "such" / "folder" / "b")


def test_missing_postgresql_tools_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BackupError) as caught:
        find_tool("pg_dump", roots=(str(tmp_path / "postgresql"),))
    assert str(caught.value) == (
        f"pg_dump not found on PATH or under {tmp_path / 'postgresql'}/*/bin: install the "
        "PostgreSQL client tools (Debian: apt-get install postgresql-client)")
    for version in ("9.6", "13", "16"):  # the newest installed version wins
        binary = tmp_path / "postgresql" / version / "bin" / "pg_dump"
        binary.parent.mkdir(parents=True)
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
    assert find_tool("pg_dump", roots=(str(tmp_path / "postgresql"),)) == str(
        tmp_path / "postgresql" / "16" / "bin" / "pg_dump")


def fake_pg_dump(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: str) -> Path:
    """A pg_dump first on PATH that records its arguments and PGPASSWORD, then fails."""
    log = tmp_path / "pg_dump.log"
    fake = tmp_path / "bin" / "pg_dump"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$FAKE_LOG"\n'
                    'echo "PGPASSWORD=$PGPASSWORD" >> "$FAKE_LOG"\n'
                    f'echo "pg_dump: error: {error}" >&2\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(log))
    return log


def test_the_password_reaches_pg_dump_only_through_its_environment(tmp_path, monkeypatch):
    log = fake_pg_dump(tmp_path, monkeypatch, "connection refused (fake)")
    url = "postgresql://alice:s3cret@db.example:6543/ledger?sslmode=require"
    with pytest.raises(BackupFailed, match=r"pg_dump failed \(exit 1\): .*connection refused"):
        backup(url, tmp_path / "ledger.pgdump")
    recorded = log.read_text().splitlines()
    argv, environment = recorded[:-1], recorded[-1]
    assert environment == "PGPASSWORD=s3cret"
    assert not any("s3cret" in arg for arg in argv)
    assert {"--host=db.example", "--port=6543", "--username=alice", "--dbname=ledger",
            "--format=custom", "--no-password"} <= set(argv)
    assert not (tmp_path / "ledger.pgdump").exists()
    assert not list(tmp_path.glob(".*partial*"))
    args, env = pg_connection(make_url(url))
    assert env["PGSSLMODE"] == "require" and "s3cret" not in " ".join(args)


def test_the_command_hands_over_the_password_file_and_reports_a_failed_tool(tmp_path, capsys,
                                                                          monkeypatch):
    log = fake_pg_dump(tmp_path, monkeypatch, "server closed the connection (fake)")
    secret = tmp_path / "db-password"
    secret.write_text("from-the-file\n")
    secret.chmod(0o600)
    monkeypatch.setenv("BANK_DATABASE_PASSWORD_FILE", str(secret))
    code, _, err = run(capsys, "--database-url", "postgresql://bank_app@db.example/ledger",
                       "backup", "--out", tmp_path / "ledger.pgdump")
    assert code == 1
    one_error_line(err, "pg_dump failed (exit 1): pg_dump: error: server closed the connection")
    recorded = log.read_text().splitlines()
    assert recorded[-1] == "PGPASSWORD=from-the-file"
    assert not any("from-the-file" in arg for arg in recorded[:-1])
