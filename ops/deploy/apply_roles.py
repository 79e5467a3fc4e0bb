"""Apply ops/deploy/postgres-roles.sql to one database, idempotently, in one transaction.

    sudo -u postgres /opt/peoplesbank/.venv/bin/python ops/deploy/apply_roles.py \
        postgresql:///peoplesbank \
        [--app-password-file FILE] [--migrator-password-file FILE] \
        [--app-role bank_app] [--migrator-role bank_migrator]

Connect as a superuser (over the local socket with peer authentication, as above, or with a URL
naming the user). Run it once before the first `bank db upgrade` and again after every
migration; every run converges to the same privileges and checks them (see the SQL file).

Passwords: `--*-password-file FILE` reads the password from FILE (its first line; the file must
not be readable by group or others) and sets it as a SCRAM-SHA-256 verifier computed here, on
the client, by libpq (the same as psql's \\password): the plain password never reaches the server
and so never its logs. Without the option the role's password is left as it is.

`--app-role` / `--migrator-role` use other role names (several environments on one cluster,
tests that must not touch the real roles): every whole word `bank_app` / `bank_migrator` in the
SQL is replaced. The names must be plain lower-case identifiers.

Exit status 0 when applied (the privileges of the application role are printed), 1 when
PostgreSQL refused (nothing was changed), 2 for a usage mistake. Needs only psycopg (installed
in the service's venv).
"""

from __future__ import annotations

import argparse
import re
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

SQL_FILE = Path(__file__).with_name("postgres-roles.sql")
DEFAULT_APP, DEFAULT_MIGRATOR = "bank_app", "bank_migrator"
ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")


class UsageError(Exception):
    pass


def role_sql(app_role: str = DEFAULT_APP, migrator_role: str = DEFAULT_MIGRATOR) -> str:
    """The SQL file with the two role names substituted."""
    names = {DEFAULT_APP: app_role, DEFAULT_MIGRATOR: migrator_role}
    for name in names.values():
        if not ROLE_NAME.fullmatch(name):
            raise UsageError(f"role name {name!r}: use lower-case letters, digits and _")
    if app_role == migrator_role:
        raise UsageError("the application and migrator roles must differ")
    pattern = re.compile(r"\b(bank_app|bank_migrator)\b")
    return pattern.sub(lambda m: names[m.group(1)], SQL_FILE.read_text())


def read_password(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        lines = path.read_text().splitlines()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); "
                         "chmod 600 it")
    password = lines[0].strip() if lines else ""
    if len(password) < 16:
        raise UsageError(f"{path}: the password must be at least 16 characters")
    return password


def conninfo(url: str) -> str:
    """libpq accepts postgresql:// URLs; also take SQLAlchemy's postgresql+psycopg://."""
    return re.sub(r"^postgres(ql)?\+\w+://", "postgresql://", url)


def apply(url: str, app_role: str = DEFAULT_APP, migrator_role: str = DEFAULT_MIGRATOR,
          passwords: dict[str, str] | None = None,
          say: Callable[[str], None] = print) -> list[str]:
    """Apply the roles SQL (and set passwords, by role name) in one transaction; returns the
    application role's privileges per table, as lines."""
    script = role_sql(app_role, migrator_role)
    with psycopg.connect(conninfo(url)) as conn:
        conn.add_notice_handler(lambda notice: say(f"notice: {notice.message_primary}"))
        conn.execute(script.encode())  # no parameters: simple protocol, many statements
        for role, password in (passwords or {}).items():
            verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(),
                                                    b"scram-sha-256")
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(verifier.decode())))
        rows = conn.execute(
            "SELECT c.relname, "
            + ", ".join(f"has_table_privilege(%(role)s, c.oid, '{p}')" for p in PRIVILEGES)
            + ", has_any_column_privilege(%(role)s, c.oid, 'UPDATE') "
            "FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace "
            "AND c.relkind IN ('r', 'p') ORDER BY c.relname", {"role": app_role}).fetchall()
    lines = []
    for name, *flags in rows:
        granted = [p for p, on in zip(PRIVILEGES, flags, strict=False) if on]
        if flags[-1] and "UPDATE" not in granted:
            granted.append("UPDATE(some columns)")
        lines.append(f"  {name:<20} {', '.join(granted) or '-'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="the ledger database, as a superuser: "
                        "postgresql:///peoplesbank or postgresql://postgres@host/peoplesbank")
    parser.add_argument("--app-role", default=DEFAULT_APP)
    parser.add_argument("--migrator-role", default=DEFAULT_MIGRATOR)
    parser.add_argument("--app-password-file", type=Path)
    parser.add_argument("--migrator-password-file", type=Path)
    args = parser.parse_args(argv)
    try:
        passwords = {}
        if args.migrator_password_file:
            passwords[args.migrator_role] = read_password(args.migrator_password_file)
        if args.app_password_file:
            passwords[args.app_role] = read_password(args.app_password_file)
        lines = apply(args.url, args.app_role, args.migrator_role, passwords)
    except UsageError as error:
        print(f"apply_roles: error: {error}", file=sys.stderr)
        return 2
    except psycopg.Error as error:
        print(f"apply_roles: PostgreSQL refused, nothing changed: {error}".rstrip(),
              file=sys.stderr)
        return 1
    database = psycopg.conninfo.conninfo_to_dict(conninfo(args.url)).get("dbname", "?")
    print(f"roles {args.migrator_role} (owner, migrations) and {args.app_role} (service) "
          f"applied to database {database}"
          + (f"; passwords set for {', '.join(passwords)}" if passwords else ""))
    print(f"{args.app_role} may:")
    print("\n".join(lines) if lines else "  (no tables yet: run this again after migrating)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
