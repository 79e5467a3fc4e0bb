"""The `bank` command: run the server, manage the database, seed demo data, and talk to a
running server as a client.

User mistakes print one clear line (`bank: error: ...`) and exit 2; a server-side refusal
prints its status code and reason and exits 1. Nothing prints a stack trace for a user mistake.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

DEFAULT_DATABASE_URL = "sqlite:///var/ledger.db"
DEFAULT_SERVER = "127.0.0.1:50051"
DEFAULT_IDENTITY = "teller"
DEFAULT_PKI_DIR = "var/pki"
DEFAULT_KEYS_DIR = "var/keys"


class UserError(Exception):
    """A mistake by the person at the keyboard: one line, exit code 2."""


def database_url(args: argparse.Namespace) -> str:
    url: str = args.database_url or os.environ.get("BANK_DATABASE_URL") or DEFAULT_DATABASE_URL
    return url


def _with_folder(url: str) -> str:
    """Create an SQLite database's folder; name psycopg 3 as the PostgreSQL driver."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot create the folder of {path}: {error.strerror}") from None
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


@contextmanager
def _engine(args: argparse.Namespace) -> Iterator[Any]:
    """An engine for the command's database, disposed of when the command ends."""
    from bank.adapters.sql import make_engine
    from bank.settings import load

    url = load(overrides={"database_url": args.database_url}).effective_database_url
    engine = make_engine(_with_folder(url))
    try:
        yield engine
    finally:
        engine.dispose()


# -- server-side commands -------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from bank.adapters import migrate
    from bank.adapters.clock import SystemClock
    from bank.adapters.keys import KeyRing
    from bank.adapters.sql import SqlUnitOfWork, make_engine
    from bank.settings import SettingsError, load, redact
    from services.observability import configure_logging
    from services.server import start_server

    try:
        settings = load(args.config, overrides={
            "database_url": database_url(args) if args.database_url else None,
            "host": args.host, "port": args.port, "metrics_port": args.metrics_port,
            "pki_dir": args.pki_dir, "keys_dir": args.keys_dir,
            "log_format": args.log_format, "plaintext_dev": args.plaintext_dev or None})
    except SettingsError as error:
        raise UserError(str(error)) from None
    configure_logging(settings.log_level, settings.log_format)
    engine = make_engine(_with_folder(settings.effective_database_url))
    if args.no_migrate:
        current, head = migrate.current_revision(engine), migrate.head_revision(engine)
        if current != head:
            if current is None or migrate.is_known(engine, current):
                raise UserError(f"the database schema ({current or 'empty'}) is behind this "
                                f"code ({head}): run `bank db upgrade`")
            # A rolling upgrade: the schema was migrated ahead (backwards-compatibly) while
            # this older server restarts.
            logging.getLogger(__name__).warning(
                "database schema %s is newer than this code's %s; continuing", current, head)
    else:
        migrate.upgrade(engine)
    uow = SqlUnitOfWork(engine)
    if args.demo:
        _seed(uow)
    credentials, resolver = None, None
    if not settings.plaintext_dev:
        credentials, resolver = _tls(Path(settings.pki_dir))
    metrics = (settings.metrics_host, settings.metrics_port) if settings.metrics_port else None
    running = start_server(uow, host=settings.host, port=settings.port, clock=SystemClock(),
                           credentials=credentials, resolver=resolver,
                           keys=KeyRing(Path(settings.keys_dir)), metrics_address=metrics)
    _tune_gc()
    address = f"{settings.host}:{running.port}"
    flags = "" if address == DEFAULT_SERVER else f" --server {address}"
    if settings.plaintext_dev:
        flags += " --plaintext-dev --as 'you;teller'"
    print(f"People's Bank ledger serving on {address} (database {redact(settings.database_url)})")
    if metrics:
        print(f"Prometheus metrics on http://{settings.metrics_host}:{running.metrics_port}/metrics")
    if settings.plaintext_dev:
        print("DEVELOPMENT PLAINTEXT on loopback: callers name themselves with the "
              "x-bank-principal header (subject;role[;scope]).")
    else:
        print(f"mTLS: client certificates from the CA in {settings.pki_dir}/ca.pem; demo "
              f"identities in {settings.pki_dir}/clients/ ({', '.join(DEMO_NAMES)}).")
    print("Try, in another terminal:")
    print(f"  .venv/bin/bank{flags} account list")
    print(f"  .venv/bin/bank{flags} statement council-preston-capital")
    print(f"  .venv/bin/bank{flags} transfer m-0002-deposit m-0003-deposit 12.50")
    if not settings.plaintext_dev:
        print(f"  .venv/bin/bank{flags} --as regulator trial-balance")
    print("Press Ctrl-C to stop.", flush=True)
    stop = {"requested": False}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["requested"] = True
        print(f"\nstopping (signal {signum}); draining in-flight calls...", flush=True)
        running.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    running.wait()
    engine.dispose()
    print("stopped.")
    return 0


DEMO_NAMES = ("teller", "loan-officer", "approver", "approver-2", "council-preston",
              "council-lancaster", "regulator", "auditor", "operator")


def _tls(pki_dir: Path) -> tuple[Any, Any]:
    """mTLS credentials; on a fresh machine, create the development CA and demo identities."""
    from bank.adapters.pki import Pki
    from services.server import tls_credentials

    # Only a folder with no CA at all gets the development PKI: existing (production) material,
    # whose CA key is rightly absent from the host, is used as it is and never touched.
    if not (pki_dir / "ca.pem").exists():
        created = Pki(pki_dir).ensure_demo()
        print(f"Created development PKI in {pki_dir}: {', '.join(created)}", flush=True)
    return tls_credentials(pki_dir)


# Allocations between collections of the youngest generation (CPython's default is 700). A
# 1,000-transfer batch allocates hundreds of thousands of objects, and at the default every
# few hundred set off a collection; measured in-process on PostgreSQL, a group of 2,000
# transfers cost the writer 333 ms of CPU at the default, 292 ms at this, 279 ms with no
# collector at all.
GC_GEN0_THRESHOLD = 20_000


def _tune_gc() -> None:
    """For a long-running server: what is alive once it is serving (modules, descriptors, the
    engine) will live as long as the process, so the collector stops scanning it (`freeze`),
    and young objects are collected less often."""
    gc.collect()
    # Anything frozen that later becomes garbage in a cycle is never collected: start-up
    # objects are meant to live as long as the process, so that is a few at most.
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, older, oldest)


def _seed(uow: Any) -> None:
    from bank.adapters.clock import SystemClock
    from bank.demo import seed

    print("Seeding demo data (idempotent)...", flush=True)
    count = seed(uow, SystemClock(), say=lambda line: print(line, flush=True))
    print(f"Demo data ready: {count} transfers.")


def cmd_db(args: argparse.Namespace) -> int:
    from bank.adapters import migrate

    with _engine(args) as engine:
        if args.db_command == "upgrade":
            before = migrate.current_revision(engine)
            migrate.upgrade(engine)
            print(f"database at revision {migrate.current_revision(engine)} "
                  f"(was {before or 'empty'})")
            return 0
        current, head = migrate.current_revision(engine), migrate.head_revision(engine)
        print(f"current {current or 'empty'}, latest {head}"
              + ("" if current == head else ": run `bank db upgrade`"))
        return 0 if current == head else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from bank.adapters import migrate
    from bank.adapters.sql import SqlUnitOfWork

    with _engine(args) as engine:
        migrate.upgrade(engine)
        _seed(SqlUnitOfWork(engine))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from bank.adapters.keys import KeyRing
    from bank.adapters.sql import SqlUnitOfWork

    ring = KeyRing(Path(args.keys_dir))
    if args.audit_command == "rotate-key":
        signer = ring.rotate()
        print(f"new active signing key {signer.name}; pin its verifier key:")
        print(signer.verifier.encode())
        return 0
    if args.audit_command == "keys":
        for verifier in ring.verifiers():
            print(verifier.encode())
        return 0
    with _engine(args) as engine:
        return _audit_on_database(args, SqlUnitOfWork(engine), ring)


def _audit_on_database(args: argparse.Namespace, uow: Any, ring: Any) -> int:
    from bank.adapters.clock import SystemClock
    from bank.app.audit import sign_checkpoint, verify_audit

    if args.audit_command == "export":
        return _export(args, uow, ring)
    if args.audit_command == "sign":
        checkpoint = sign_checkpoint(uow, SystemClock(), ring.ensure())
        print(checkpoint.note, end="")
        return 0
    verifiers = ring.verifiers()
    trusted = _read_trusted(args.trusted_checkpoint) if args.trusted_checkpoint else None
    print(f"verifying the audit log with {len(verifiers)} pinned key(s)...", flush=True)
    report = verify_audit(uow, verifiers, progress=lambda line: print(f"  {line}", flush=True))
    if trusted is not None:
        from bank.app.restore_check import check_against_checkpoint

        for problem in check_against_checkpoint(uow, trusted, verifiers):
            report.add(problem)
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    print(f"{report.leaves} audit leaves, {report.checkpoints} checkpoints, {report.entries} "
          f"entries: " + ("audit log verified" if report.ok
                          else f"{len(report.problems)} problems"))
    return 0 if report.ok else 1


def _time_arg(value: str | None, flag: str) -> int | None:
    from datetime import UTC, datetime

    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"{flag}: not an ISO date or time: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp()) * 1_000_000_000


def _export(args: argparse.Namespace, uow: Any, ring: Any) -> int:
    from bank.adapters.clock import SystemClock
    from bank.app.export import ExportSpec, export_bundle
    from bank.offline.checkpoint import Checkpoint

    out = Path(args.out) if args.out else None
    if out is None:
        raise UserError("--out DIR is required for export")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty")
    previous = None
    if args.previous:
        text = Path(args.previous).read_text()
        previous = Checkpoint.parse(text.split("\n\n")[0] + "\n").size
    spec = ExportSpec(_time_arg(args.start, "--from"), _time_arg(args.end, "--to"),
                      tuple(args.account or ()), previous)
    written: dict[str, Any] = {}
    try:
        for path, chunk in export_bundle(uow, SystemClock(), ring.ensure(), spec,
                                         progress=lambda line: print(f"  {line}", flush=True)):
            if path not in written:
                target = out / path
                target.parent.mkdir(parents=True, exist_ok=True)
                written[path] = target.open("wb")
            written[path].write(chunk)
    finally:
        for handle in written.values():
            handle.close()
    print(f"wrote {len(written)} files to {out}; verify offline with:")
    print("  .venv/bin/bank audit keys > pinned-keys.txt")
    print(f"  python -m bank.offline.verify {out} --key pinned-keys.txt")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from bank.adapters.sql import SqlUnitOfWork
    from bank.app.check import check_ledger

    with _engine(args) as engine:
        report = check_ledger(SqlUnitOfWork(engine),
                              progress=lambda n: print(f"  checked {n} postings", flush=True))
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    print(f"checked {report.accounts} accounts and {report.postings} postings: "
          + ("ledger consistent" if report.ok else f"{len(report.problems)} problems"))
    return 0 if report.ok else 1


def cmd_backup(args: argparse.Namespace) -> int:
    """`bank backup --out FILE` and `bank restore --from FILE [--force]`."""
    from bank.adapters.backup import BackupError, BackupFailed, backup, restore
    from bank.settings import load

    def say(line: str) -> None:
        print(f"  {line}", flush=True)

    # As for the engine: the password, if any, comes from BANK_DATABASE_PASSWORD_FILE.
    url = load(overrides={"database_url": args.database_url}).effective_database_url
    try:
        if args.command == "backup":
            result = backup(url, Path(args.out), say)
        else:
            result = restore(url, Path(args.source), say, force=args.force)
            say("check it before serving: bank audit verify --trusted-checkpoint FILE "
                "(the last checkpoint you kept), then bank check")
    except BackupError as error:
        raise UserError(str(error)) from None
    except BackupFailed as error:
        print(f"bank: error: {error}", file=sys.stderr)
        return 1
    print(result.summary())
    return 0


def _read_trusted(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise UserError(f"--trusted-checkpoint: cannot read {path}: {reason}") from None


# -- client commands ------------------------------------------------------------------------------
def parse_amount(text: str, currency: str) -> tuple[int, int]:
    """'12.50' -> (units, nanos) for google.type.Money; refuses more decimals than the currency."""
    from bank.domain.currency import EXPONENTS
    from bank.domain.limits import AMOUNT_MINOR_MAX

    if currency not in EXPONENTS:
        raise UserError(f"unknown currency {currency!r}")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise UserError(f"not an amount: {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise UserError(f"the amount must be a positive number, not {text!r}")
    if -value.as_tuple().exponent > EXPONENTS[currency]:  # type: ignore[operator]
        raise UserError(f"{currency} has {EXPONENTS[currency]} decimal places: {text!r}")
    if value * 10 ** EXPONENTS[currency] > AMOUNT_MINOR_MAX:
        raise UserError(f"the amount must be at most {AMOUNT_MINOR_MAX} minor units of {currency}")
    units = int(value)
    nanos = int((value - units) * 1_000_000_000)
    return units, nanos


def main(argv: Sequence[str] | None = None) -> int:
    from bank import client, loan_client, member_client
    from bank.adapters.keys import SigningKeyError
    from bank.adapters.member_crypto import MasterKeyError
    from bank.adapters.pki import PkiError
    from bank.settings import SettingsError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("BANK_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers = {"serve": cmd_serve, "db": cmd_db, "demo": cmd_demo, "check": cmd_check,
                "audit": cmd_audit, "backup": cmd_backup, "restore": cmd_backup,
                **client.COMMANDS, **member_client.COMMANDS,
                **loan_client.COMMANDS}
    try:
        return int(handlers[args.command](args))
    except (UserError, SettingsError, SigningKeyError, PkiError, MasterKeyError) as error:
        print(f"bank: error: {error}", file=sys.stderr)
        return 2
    except client.ServerRefused as error:
        print(f"bank: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # a clear line for operational failures (database down, ...)
        if os.environ.get("BANK_DEBUG"):
            raise
        print(f"bank: error: {type(error).__name__}: {str(error).splitlines()[0][:300]} "
              "(set BANK_DEBUG=1 for details)", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    from bank import client, loan_client, member_client

    parser = argparse.ArgumentParser(prog="bank", description="People's Bank core ledger")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: $BANK_DATABASE_URL or "
                        f"{DEFAULT_DATABASE_URL})")
    parser.add_argument("--server", default=os.environ.get("BANK_SERVER", DEFAULT_SERVER),
                        help=f"server address for client commands (default {DEFAULT_SERVER})")
    parser.add_argument("--as", dest="identity",
                        default=os.environ.get("BANK_IDENTITY", DEFAULT_IDENTITY),
                        help="client certificate name under PKI_DIR/clients (default "
                        f"{DEFAULT_IDENTITY!r}); with --plaintext-dev, subject;role[;scope]")
    parser.add_argument("--pki-dir", default=os.environ.get("BANK_PKI_DIR", DEFAULT_PKI_DIR),
                        help=f"development PKI folder (default {DEFAULT_PKI_DIR})")
    parser.add_argument("--plaintext-dev", action="store_true",
                        help="development only: no TLS, loopback only, identity by header")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--config", help="a TOML settings file (see bank/settings.py)")
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 50051)")
    serve.add_argument("--metrics-port", type=int,
                       help="Prometheus metrics port on 127.0.0.1 (default 9464; 0 turns off)")
    serve.add_argument("--log-format", choices=["json", "text"],
                       help="log format (default json)")
    serve.add_argument("--demo", action="store_true", help="seed demo data first (idempotent)")
    serve.add_argument("--keys-dir", help=f"checkpoint signing keys (default {DEFAULT_KEYS_DIR})")
    serve.add_argument("--no-migrate", action="store_true",
                       help="only check that migrations are applied, do not apply them")

    db = sub.add_parser("db", help="database schema")
    db.add_argument("db_command", choices=["upgrade", "current"])
    sub.add_parser("demo", help="seed demo data into the database (idempotent)")
    sub.add_parser("check", help="verify account totals against postings and the trial balance")
    audit = sub.add_parser("audit", help="audit log: checkpoints, keys, self-check")
    audit.add_argument("audit_command",
                       choices=["sign", "verify", "keys", "rotate-key", "export"],
                       help="sign a checkpoint; verify the log and the ledger against it; "
                       "print verifier keys; rotate the signing key; export a bundle")
    audit.add_argument("--out", help="export: the bundle folder to create")
    audit.add_argument("--from", dest="start", help="export: period start (ISO date/time, UTC)")
    audit.add_argument("--to", dest="end", help="export: period end, exclusive")
    audit.add_argument("--account", action="append", help="export: only these accounts")
    audit.add_argument("--previous", help="export: a checkpoint file from an earlier export, "
                       "to prove consistency from")
    audit.add_argument("--keys-dir", default=os.environ.get("BANK_KEYS_DIR", DEFAULT_KEYS_DIR),
                       help=f"checkpoint signing keys (default {DEFAULT_KEYS_DIR})")
    audit.add_argument("--trusted-checkpoint", metavar="FILE",
                       help="verify: a signed checkpoint kept outside the database (`bank audit "
                       "sign` output); fail if the log is older than it or forked from it")
    backup = sub.add_parser("backup", help="online backup of the database into a new file")
    backup.add_argument("--out", required=True, metavar="FILE", help="the backup file to create")
    restore = sub.add_parser("restore", help="restore a backup file (server stopped; "
                             "PostgreSQL: into a fresh empty database)")
    restore.add_argument("--from", dest="source", required=True, metavar="FILE",
                         help="a file made by `bank backup`")
    restore.add_argument("--force", action="store_true",
                         help="SQLite: replace an existing database (kept beside it)")
    client.add_parsers(sub)
    member_client.add_parsers(sub)
    loan_client.add_parsers(sub)
    return parser


def new_request_id() -> str:
    return str(uuid.uuid4())


if __name__ == "__main__":
    sys.exit(main())
