"""Database-level guards (triggers) for SQLite and PostgreSQL, created by migration 0001.

Kept as data here so the migration stays short and both dialects are visibly the same rules:

1. history tables (entries, postings, requests, audit_log) refuse UPDATE and DELETE;
2. an entry refuses to be inserted unless its postings (inserted just before it) number
   `posting_count` and balance per effect and currency;
3. accounts refuse DELETE, changes to their identity (currency, type, owner, code, flags),
   decreasing posted totals, and reopening once closed;
4. the ledger head refuses DELETE and never moves backwards.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

APPEND_ONLY = ("entries", "postings", "requests", "audit_log")

_UNBALANCED = """
    SELECT 1 FROM postings WHERE entry_seq = {new}.seq
    GROUP BY effect, currency
    HAVING SUM(CASE side WHEN 'D' THEN amount ELSE -amount END) <> 0
"""
_COUNT = "(SELECT COUNT(*) FROM postings WHERE entry_seq = {new}.seq)"

_ACCOUNT_CHANGE = """
    NEW.account_id <> OLD.account_id OR NEW.currency <> OLD.currency
    OR NEW.account_type <> OLD.account_type OR NEW.owner_kind <> OLD.owner_kind
    OR NEW.owner_id <> OLD.owner_id OR NEW.code <> OLD.code
    OR NEW.debits_must_not_exceed_credits <> OLD.debits_must_not_exceed_credits
    OR NEW.credits_must_not_exceed_debits <> OLD.credits_must_not_exceed_debits
    OR NEW.created_ns <> OLD.created_ns
    OR NEW.debits_posted < OLD.debits_posted OR NEW.credits_posted < OLD.credits_posted
    OR (OLD.status = 'closed' AND NEW.status <> 'closed')
"""
_HEAD_BACKWARDS = """
    NEW.next_seq < OLD.next_seq OR NEW.audit_size < OLD.audit_size
    OR NEW.last_recorded_ns < OLD.last_recorded_ns
"""


def _sqlite_statements() -> list[str]:
    out = []
    for table in APPEND_ONLY:
        for op in ("UPDATE", "DELETE"):
            out.append(f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} BEGIN "
                       f"SELECT RAISE(ABORT, '{table} is append-only: {op} refused'); END")
    new = "NEW"
    out.append(f"CREATE TRIGGER entries_balanced AFTER INSERT ON entries "
               f"WHEN EXISTS ({_UNBALANCED.format(new=new)}) "
               f"OR {_COUNT.format(new=new)} <> NEW.posting_count BEGIN "
               f"SELECT RAISE(ABORT, 'entry postings do not balance per currency'); END")
    out.append("CREATE TRIGGER accounts_no_delete BEFORE DELETE ON accounts BEGIN "
               "SELECT RAISE(ABORT, 'accounts are never deleted; close them'); END")
    out.append(f"CREATE TRIGGER accounts_guard BEFORE UPDATE ON accounts WHEN {_ACCOUNT_CHANGE} "
               f"BEGIN SELECT RAISE(ABORT, 'account update breaks an account rule'); END")
    out.append("CREATE TRIGGER ledger_head_no_delete BEFORE DELETE ON ledger_head BEGIN "
               "SELECT RAISE(ABORT, 'the ledger head is never deleted'); END")
    out.append(f"CREATE TRIGGER ledger_head_forward BEFORE UPDATE ON ledger_head "
               f"WHEN {_HEAD_BACKWARDS} BEGIN "
               f"SELECT RAISE(ABORT, 'the ledger head never moves backwards'); END")
    return out


def _pg_statements() -> list[str]:
    out = ["""CREATE FUNCTION bank_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
              USING ERRCODE = 'integrity_constraint_violation'; END $$"""]
    for table in (*APPEND_ONLY, "accounts", "ledger_head"):
        ops = "UPDATE OR DELETE" if table in APPEND_ONLY else "DELETE"
        out.append(f"CREATE TRIGGER {table}_append_only BEFORE {ops} ON {table} "
                   f"FOR EACH ROW EXECUTE FUNCTION bank_refuse()")
    out.append(f"""CREATE FUNCTION bank_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF EXISTS ({_UNBALANCED.format(new="NEW")})
             OR {_COUNT.format(new="NEW")} <> NEW.posting_count THEN
            RAISE EXCEPTION 'entry % postings do not balance per currency', NEW.transfer_id
              USING ERRCODE = 'check_violation';
          END IF;
          RETURN NULL;
        END $$""")
    out.append("CREATE TRIGGER entries_balanced AFTER INSERT ON entries "
               "FOR EACH ROW EXECUTE FUNCTION bank_entry_balanced()")
    out.append(f"""CREATE FUNCTION bank_account_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF {_ACCOUNT_CHANGE} THEN
            RAISE EXCEPTION 'account % update breaks an account rule', OLD.account_id
              USING ERRCODE = 'check_violation';
          END IF;
          RETURN NEW;
        END $$""")
    out.append("CREATE TRIGGER accounts_guard BEFORE UPDATE ON accounts "
               "FOR EACH ROW EXECUTE FUNCTION bank_account_guard()")
    out.append(f"""CREATE FUNCTION bank_head_forward() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF {_HEAD_BACKWARDS} THEN
            RAISE EXCEPTION 'the ledger head never moves backwards'
              USING ERRCODE = 'check_violation';
          END IF;
          RETURN NEW;
        END $$""")
    out.append("CREATE TRIGGER ledger_head_forward BEFORE UPDATE ON ledger_head "
               "FOR EACH ROW EXECUTE FUNCTION bank_head_forward()")
    return out


def create_append_only(conn: Connection, tables: tuple[str, ...]) -> None:
    """Append-only triggers for tables added by later migrations."""
    postgres = conn.dialect.name == "postgresql"
    for table in tables:
        if postgres:
            conn.execute(text(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON "
                              f"{table} FOR EACH ROW EXECUTE FUNCTION bank_refuse()"))
            continue
        for op in ("UPDATE", "DELETE"):
            conn.execute(text(
                f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} BEGIN "
                f"SELECT RAISE(ABORT, '{table} is append-only: {op} refused'); END"))


def drop_append_only(conn: Connection, tables: tuple[str, ...]) -> None:
    for table in tables:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}"))
        else:
            for op in ("update", "delete"):
                conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{op}"))


def create(conn: Connection) -> None:
    statements = _pg_statements() if conn.dialect.name == "postgresql" else _sqlite_statements()
    for statement in statements:
        conn.execute(text(statement))  # text() escapes '%' for psycopg's placeholders


def drop(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        for fn in ("bank_refuse", "bank_entry_balanced", "bank_account_guard",
                   "bank_head_forward"):
            conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {fn}() CASCADE")
        return
    names = [f"{t}_no_{op}" for t in APPEND_ONLY for op in ("update", "delete")]
    names += ["entries_balanced", "accounts_no_delete", "accounts_guard",
              "ledger_head_no_delete", "ledger_head_forward"]
    for name in names:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
