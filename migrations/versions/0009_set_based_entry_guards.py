"""PostgreSQL: the two guards on every entry's insert check the whole statement at once.

The rules are unchanged (migration 0001's guards and 0003):

- postings of a recorded entry are closed: no posting may join an entry already inserted;
- an entry's postings (inserted just before it) number `posting_count` and balance per effect
  and currency.

Until now each was a row trigger: one PL/pgSQL call per posting and per entry, about a third of
the time PostgreSQL spent on a batch of 1,000 transfers (written with COPY). Here each is a
statement trigger over the statement's transition table: one call per COPY, which looks up
the rows it checks by primary key (`LATERAL`, so the plan cannot become a scan of the whole
table). The checks run at the end of the statement rather than per row; a statement that breaks
either rule still fails whole, and the transaction with it.

Each statement trigger also takes the ledger head's row (a no-op UPDATE, as every writer of
the application updates it), which the row triggers could not afford: so two transactions that
write postings and entries by hand are serialised, and a posting cannot join an entry that
another transaction recorded but had not committed when the check ran (READ COMMITTED waits
for it and then sees it; REPEATABLE READ fails with a serialisation error).

SQLite has no statement triggers; its row triggers stay as they are (SQLite has one writer at a
time).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

CLOSED = "postings of a recorded entry are closed"
# Take the ledger head's row for the rest of the transaction (see above).
SERIALISE = "UPDATE ledger_head SET next_seq = next_seq WHERE id = 1;"

UPGRADE = [
    "DROP TRIGGER postings_closed ON postings",
    "DROP FUNCTION bank_postings_closed()",
    f"""CREATE FUNCTION bank_postings_closed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          {SERIALISE}
          IF EXISTS (SELECT 1 FROM new_postings n,
                     LATERAL (SELECT 1 FROM entries e WHERE e.seq = n.entry_seq) found) THEN
            RAISE EXCEPTION '{CLOSED}' USING ERRCODE = 'integrity_constraint_violation';
          END IF;
          RETURN NULL;
        END $$""",
    "CREATE TRIGGER postings_closed AFTER INSERT ON postings "
    "REFERENCING NEW TABLE AS new_postings "
    "FOR EACH STATEMENT EXECUTE FUNCTION bank_postings_closed()",
    "DROP TRIGGER entries_balanced ON entries",
    "DROP FUNCTION bank_entry_balanced()",
    f"""CREATE FUNCTION bank_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
          bad text;
        BEGIN
          {SERIALISE}
          SELECT n.transfer_id INTO bad
            FROM new_entries n,
                 LATERAL (SELECT COALESCE(SUM(g.lines), 0) AS lines,
                                 COALESCE(bool_or(g.net <> 0), false) AS unbalanced
                            FROM (SELECT COUNT(*) AS lines,
                                         SUM(CASE p.side WHEN 'D' THEN p.amount
                                             ELSE -p.amount END) AS net
                                    FROM postings p WHERE p.entry_seq = n.seq
                                   GROUP BY p.effect, p.currency) g) s
           WHERE s.unbalanced OR s.lines <> n.posting_count
           LIMIT 1;
          IF FOUND THEN
            RAISE EXCEPTION 'entry % postings do not balance per currency', bad
              USING ERRCODE = 'check_violation';
          END IF;
          RETURN NULL;
        END $$""",
    "CREATE TRIGGER entries_balanced AFTER INSERT ON entries "
    "REFERENCING NEW TABLE AS new_entries "
    "FOR EACH STATEMENT EXECUTE FUNCTION bank_entry_balanced()",
]

# The row triggers of 0001 and 0003, as they were.
DOWNGRADE = [
    "DROP TRIGGER postings_closed ON postings",
    "DROP FUNCTION bank_postings_closed()",
    f"""CREATE FUNCTION bank_postings_closed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF EXISTS (SELECT 1 FROM entries WHERE seq = NEW.entry_seq) THEN
            RAISE EXCEPTION '{CLOSED}' USING ERRCODE = 'integrity_constraint_violation';
          END IF;
          RETURN NEW;
        END $$""",
    "CREATE TRIGGER postings_closed BEFORE INSERT ON postings "
    "FOR EACH ROW EXECUTE FUNCTION bank_postings_closed()",
    "DROP TRIGGER entries_balanced ON entries",
    "DROP FUNCTION bank_entry_balanced()",
    """CREATE FUNCTION bank_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF EXISTS (SELECT 1 FROM postings WHERE entry_seq = NEW.seq
                     GROUP BY effect, currency
                     HAVING SUM(CASE side WHEN 'D' THEN amount ELSE -amount END) <> 0)
             OR (SELECT COUNT(*) FROM postings WHERE entry_seq = NEW.seq) <> NEW.posting_count
          THEN
            RAISE EXCEPTION 'entry % postings do not balance per currency', NEW.transfer_id
              USING ERRCODE = 'check_violation';
          END IF;
          RETURN NULL;
        END $$""",
    "CREATE TRIGGER entries_balanced AFTER INSERT ON entries "
    "FOR EACH ROW EXECUTE FUNCTION bank_entry_balanced()",
]


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        for statement in UPGRADE:
            conn.execute(text(statement))


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        for statement in DOWNGRADE:
            conn.execute(text(statement))
