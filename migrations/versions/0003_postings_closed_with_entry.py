"""Postings of a recorded entry are closed: no posting may join an entry already inserted.

Postings are written just before their entry, whose insert trigger checks that they balance;
this trigger refuses a posting for an entry that already exists, so a recorded entry can never
be extended (and unbalanced) afterwards.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

MESSAGE = "postings of a recorded entry are closed"


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"""CREATE FUNCTION bank_postings_closed() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
              IF EXISTS (SELECT 1 FROM entries WHERE seq = NEW.entry_seq) THEN
                RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'integrity_constraint_violation';
              END IF;
              RETURN NEW;
            END $$"""))
        conn.execute(text("CREATE TRIGGER postings_closed BEFORE INSERT ON postings "
                          "FOR EACH ROW EXECUTE FUNCTION bank_postings_closed()"))
    else:
        conn.execute(text(
            "CREATE TRIGGER postings_closed BEFORE INSERT ON postings "
            "WHEN EXISTS (SELECT 1 FROM entries WHERE seq = NEW.entry_seq) "
            f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"))


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        conn.execute(text("DROP FUNCTION IF EXISTS bank_postings_closed() CASCADE"))
    else:
        conn.execute(text("DROP TRIGGER IF EXISTS postings_closed"))
