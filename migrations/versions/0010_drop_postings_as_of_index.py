"""Drop ix_postings_as_of: balance-as-of and statement windows use positions instead.

Recorded times increase with entry positions, so "the account's last posting recorded at or
before T" is its last posting at or before the last position recorded by T (found through
uq_entries_recorded_ns), which ix_postings_statement answers with one seek per effect. The
index on (account_id, recorded_ns) was one more B-tree written for every posting: about a
quarter of SQLite's time writing a batch of transfers.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_postings_as_of", table_name="postings")


def downgrade() -> None:
    op.create_index("ix_postings_as_of", "postings", ["account_id", "recorded_ns"])
