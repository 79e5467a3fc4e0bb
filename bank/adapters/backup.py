"""Backups of the ledger database, and restoring them (`bank backup`, `bank restore`).

SQLite: an online backup with SQLite's backup API, safe while the server writes. The copy is
taken page by page inside one read transaction on the live database, so it is one consistent
snapshot (in WAL mode a reader never blocks writers, and writers never restart the copy); the
result is a single self-contained file (rollback journal mode), checked with
`PRAGMA integrity_check` before it is given its final name. Restoring copies a backup file into
place while the server is stopped; an existing database is replaced only when forced, and is
then kept beside it as `<name>.replaced-<UTC time>`.

PostgreSQL: a logical dump (`pg_dump --format=custom`, one consistent snapshot, writers are not
blocked) and `pg_restore` into a fresh, empty database, in a single transaction that stops at
the first error. The tools come from PATH or /usr/lib/postgresql/<version>/bin. Connection
parameters come from the SQLAlchemy URL (host, port, user, database); a password is handed to
the tools in the PGPASSWORD environment variable only, never on their command line.

Every file is written under a temporary name and renamed when complete, with mode 0600: a backup
holds the whole ledger. Errors the operator can fix raise `BackupError`; a tool or database that
fails raises `BackupFailed`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import NullPool

Progress = Callable[[str], None]

PG_ROOTS = ("/usr/lib/postgresql",)
SQLITE_HEADER = b"SQLite format 3\x00"
PGDMP_HEADER = b"PGDMP"
STEP_PAGES = 1024
BUSY_TIMEOUT_MS = 30_000
# libpq parameters that may appear in the URL's query, and the environment variable for each.
PG_QUERY_ENV = {"sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT",
                "sslkey": "PGSSLKEY", "connect_timeout": "PGCONNECT_TIMEOUT",
                "application_name": "PGAPPNAME", "host": "PGHOST", "port": "PGPORT"}


class BackupError(Exception):
    """A mistake the operator can fix: a missing or existing file, a wrong URL, no tools."""


class BackupFailed(Exception):
    """The database or a tool failed while backing up or restoring."""


@dataclass(frozen=True)
class Result:
    action: str  # "backup" or "restore"
    path: Path  # the backup file
    size: int  # bytes
    seconds: float
    database: str  # the URL, without any password

    def summary(self) -> str:
        if self.action == "backup":
            return (f"backup complete: {self.path} ({human_size(self.size)}) from "
                    f"{self.database} in {self.seconds:.1f} s")
        return (f"restore complete: {self.path} ({human_size(self.size)}) into "
                f"{self.database} in {self.seconds:.1f} s")


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _quiet(_line: str) -> None:
    pass


def backup(url: str, out: Path, progress: Progress = _quiet, *,
           step_pages: int = STEP_PAGES) -> Result:
    """Back up the database at `url` into the new file `out`; returns what was written."""
    parsed = _parse(url)
    if out.exists():
        raise BackupError(f"{out} already exists: choose a new file name")
    if not out.parent.is_dir():
        raise BackupError(f"the folder of {out} does not exist")
    started = time.monotonic()
    if parsed.get_backend_name() == "sqlite":
        _sqlite_backup(_sqlite_path(parsed), out, progress, step_pages)
    else:
        _pg_dump(parsed, out, progress)
    return Result("backup", out, out.stat().st_size, time.monotonic() - started, _shown(parsed))


def restore(url: str, source: Path, progress: Progress = _quiet, *, force: bool = False
            ) -> Result:
    """Restore the backup file `source` into the database at `url`.

    SQLite: the database file must not exist, unless `force` (the server must be stopped).
    PostgreSQL: the database must exist and be empty (`createdb`); `force` does not change that.
    """
    parsed = _parse(url)
    if not source.is_file():
        raise BackupError(f"no backup file at {source}")
    started = time.monotonic()
    if parsed.get_backend_name() == "sqlite":
        _sqlite_restore(source, _sqlite_path(parsed), progress, force)
    else:
        _pg_restore(parsed, source, progress)
    return Result("restore", source, source.stat().st_size, time.monotonic() - started,
                  _shown(parsed))


# -- URLs -----------------------------------------------------------------------------------------
def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise BackupError(f"not a database URL: {url!r}") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise BackupError(f"cannot back up a {parsed.get_backend_name()} database: the URL must "
                          "start with sqlite:/// or postgresql://")
    return parsed


def _shown(url: URL) -> str:
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up or restored")
    return Path(url.database)


# -- SQLite ---------------------------------------------------------------------------------------
def _connect(path: Path, mode: str) -> sqlite3.Connection:
    """Open an existing database file (never create one by accident)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True,
                           isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


@contextmanager
def _new_private_file(final: Path) -> Iterator[Path]:
    """A new, empty file of mode 0600 beside `final`, renamed to it when the block succeeds
    and removed when it fails."""
    partial = final.with_name(f".{final.name}.partial-{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        yield partial
        _fsync(partial)
        os.replace(partial, final)
        _fsync_folder(final.parent)
    finally:
        with suppress(FileNotFoundError):
            partial.unlink()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    with suppress(OSError):  # not every file system lets a folder be fsynced
        _fsync(folder)


def _integrity(conn: sqlite3.Connection, what: str) -> None:
    rows = conn.execute("PRAGMA integrity_check").fetchall()
    if rows != [("ok",)]:
        raise BackupFailed(f"{what} fails SQLite's integrity check: {rows[0][0]}")


def _sqlite_backup(source: Path, out: Path, progress: Progress, step_pages: int) -> None:
    if not source.is_file():
        raise BackupError(f"no SQLite database at {source}")
    with closing(_connect(source, "rw")) as src, _new_private_file(out) as partial:
        mode = src.execute("PRAGMA journal_mode").fetchone()[0]
        if mode != "wal":
            progress(f"{source} is in {mode} journal mode, not WAL: writers wait while the "
                     "backup runs")
        src.execute("BEGIN")  # one read transaction: every step copies the same snapshot
        try:
            pages = src.execute("PRAGMA page_count").fetchone()[0]
            page_size = src.execute("PRAGMA page_size").fetchone()[0]
            progress(f"copying {pages} pages ({human_size(pages * page_size)}) of {source} "
                     "from one consistent snapshot")
            shown, copied = [0], [0]

            def step(_status: int, remaining: int, total: int) -> None:
                if total - remaining < copied[0]:  # cannot happen while the snapshot is held
                    progress("the database changed under the copy: SQLite restarted it")
                    shown[0] = 0
                copied[0] = total - remaining
                done = (total - remaining) * 100 // max(total, 1)
                if done >= shown[0] + 10 or remaining == 0:
                    shown[0] = done
                    progress(f"copied {total - remaining}/{total} pages ({done}%)")

            with closing(sqlite3.connect(partial, isolation_level=None)) as dst:
                src.backup(dst, pages=step_pages, progress=step)
                # A single self-contained file: no -wal beside it to lose.
                dst.execute("PRAGMA journal_mode = DELETE")
                progress("checking the copy (PRAGMA integrity_check)")
                _integrity(dst, "the backup")
        finally:
            src.execute("ROLLBACK")


def _sidecars(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal")]


def _check_sqlite_backup(source: Path) -> None:
    with source.open("rb") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        kind = "a PostgreSQL dump" if header.startswith(PGDMP_HEADER) else "not an SQLite file"
        raise BackupError(f"{source} is {kind}: an SQLite database restores only from an "
                          "SQLite backup")
    try:
        with closing(_connect(source, "ro")) as conn:
            _integrity(conn, f"{source}")
            tables = {row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as error:
        raise BackupError(f"{source} is not a readable SQLite database: {error}") from None
    if not {"ledger_head", "audit_log", "alembic_version"} <= tables:
        raise BackupError(f"{source} is an SQLite database but not a backup of the ledger")


def _set_aside(target: Path, progress: Progress) -> Path:
    """Move an existing database out of the way, refusing when something still has it open."""
    try:
        with closing(_connect(target, "rw")) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # fold any WAL into the file
    except sqlite3.DatabaseError as error:  # not a database (any more): nothing to fold in
        progress(f"{target} does not open as a database ({error}); replacing it anyway")
    # When the last connection closes, SQLite removes the WAL; if it is still there, another
    # process (a running server) has the database open.
    if target.with_name(target.name + "-wal").exists():
        raise BackupError(f"{target} is in use (is the server running?): stop it before "
                          "restoring")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = target.with_name(f"{target.name}.replaced-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = target.with_name(f"{target.name}.replaced-{stamp}-{n}")
    os.replace(target, aside)
    for sidecar in _sidecars(target):
        with suppress(FileNotFoundError):
            sidecar.unlink()
    progress(f"kept the database it replaces as {aside}")
    return aside


def _sqlite_restore(source: Path, target: Path, progress: Progress, force: bool) -> None:
    if source.resolve() == target.resolve():
        raise BackupError("the backup file is the database itself")
    existing = [p for p in (target, *_sidecars(target)) if p.exists()]
    if existing and not force:
        raise BackupError(f"{existing[0]} exists: stop the server, and restore with --force to "
                          "replace the database (it is kept beside it)")
    progress(f"checking the backup file {source} (PRAGMA integrity_check)")
    _check_sqlite_backup(source)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BackupError(f"cannot create the folder of {target}: {error.strerror}") from None
    with _new_private_file(target) as partial:
        progress(f"copying {human_size(source.stat().st_size)} to {target}")
        with source.open("rb") as src, partial.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        with closing(_connect(partial, "rw")) as conn:
            _integrity(conn, "the restored copy")
        if target.exists():
            _set_aside(target, progress)
        else:
            for sidecar in _sidecars(target):  # stale files of a database that is gone
                sidecar.unlink(missing_ok=True)


# -- PostgreSQL -----------------------------------------------------------------------------------
def find_tool(name: str, roots: tuple[str, ...] = PG_ROOTS) -> str:
    """A PostgreSQL client program: on PATH, else the newest under <root>/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates: list[tuple[tuple[int, ...], Path]] = []
    for root in roots:
        for binary in Path(root).glob(f"*/bin/{name}"):
            version = tuple(int(n) for n in re.findall(r"\d+", binary.parent.parent.name))
            if os.access(binary, os.X_OK):
                candidates.append((version, binary))
    if not candidates:
        places = " or ".join(f"{root}/*/bin" for root in roots)
        raise BackupError(f"{name} not found on PATH or under {places}: install the "
                          "PostgreSQL client tools (Debian: apt-get install postgresql-client)")
    return str(max(candidates)[1])


def pg_connection(url: URL) -> tuple[list[str], dict[str, str]]:
    """Command-line connection options and environment for the libpq tools."""
    if not url.database:
        raise BackupError("the PostgreSQL URL names no database")
    args = ["--no-password"]  # never prompt: fail with a clear message instead
    if url.host:
        args.append(f"--host={url.host}")
    if url.port:
        args.append(f"--port={url.port}")
    if url.username:
        args.append(f"--username={url.username}")
    env = dict(os.environ)
    env.pop("PGPASSWORD", None)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    for key, value in url.query.items():
        if key not in PG_QUERY_ENV:
            raise BackupError(f"the database URL parameter {key!r} is not supported for "
                              f"backups (supported: {', '.join(sorted(PG_QUERY_ENV))})")
        env[PG_QUERY_ENV[key]] = value if isinstance(value, str) else value[-1]
    return args, env


def _run(command: list[str], env: dict[str, str], progress: Progress,
         show: Callable[[str], str | None]) -> None:
    """Run a tool, passing the interesting lines of its stderr to `progress`."""
    tail: list[str] = []
    with subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, errors="replace") as process:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.rstrip()
            tail = [*tail[-19:], line]
            shown = show(line)
            if shown:
                progress(shown)
        code = process.wait()
    if code != 0:
        problems = [line for line in tail if "error" in line.lower() or "fatal" in line.lower()]
        detail = (problems or tail or ["no output"])[-1]
        raise BackupFailed(f"{Path(command[0]).name} failed (exit {code}): {detail}")


_DUMPING = re.compile(r'dumping contents of table "?([^"]+)"?')
_RESTORING = re.compile(r'processing data for table "?([^"]+)"?')


def _pg_dump(url: URL, out: Path, progress: Progress) -> None:
    tool = find_tool("pg_dump")
    args, env = pg_connection(url)
    progress(f"pg_dump of database {url.database} ({tool})")
    with _new_private_file(out) as partial:
        command = [tool, "--format=custom", "--verbose", *args, f"--file={partial}",
                   f"--dbname={url.database}"]

        def show(line: str) -> str | None:
            match = _DUMPING.search(line)
            return f"dumped table {match.group(1)}" if match else None

        _run(command, env, progress, show)
        progress("checking the dump (pg_restore --list)")
        _run([find_tool("pg_restore"), "--list", str(partial)], env, _quiet, lambda _: None)


def _pg_restore(url: URL, source: Path, progress: Progress) -> None:
    with source.open("rb") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if not header.startswith(PGDMP_HEADER):
        kind = "an SQLite backup" if header == SQLITE_HEADER else "not a pg_dump custom archive"
        raise BackupError(f"{source} is {kind}: a PostgreSQL database restores only from "
                          "`bank backup` of a PostgreSQL database (pg_dump --format=custom)")
    tool = find_tool("pg_restore")
    args, env = pg_connection(url)
    _require_empty(url)
    progress(f"pg_restore into database {url.database}, in one transaction ({tool})")
    command = [tool, "--verbose", "--exit-on-error", "--single-transaction", *args,
               f"--dbname={url.database}", str(source)]

    def show(line: str) -> str | None:
        match = _RESTORING.search(line)
        return f"restored table {match.group(1)}" if match else None

    _run(command, env, progress, show)


def _require_empty(url: URL) -> None:
    engine = create_engine(url.set(drivername="postgresql+psycopg"), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            count = conn.execute(text(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'"
            )).scalar_one()
    except DBAPIError as error:
        detail = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        if getattr(error.orig, "sqlstate", None) == "3D000" or "does not exist" in detail:
            raise BackupError(f"database {url.database} does not exist: create it first "
                              f"(createdb {url.database}) and restore into it") from None
        raise BackupFailed(f"cannot connect to database {url.database}: {detail}") from None
    finally:
        engine.dispose()
    if count:
        raise BackupError(f"database {url.database} is not empty ({count} relations): restore "
                          "into a fresh database made with createdb")
