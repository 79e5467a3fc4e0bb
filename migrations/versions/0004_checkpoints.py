"""Signed checkpoints of the audit log (append-only).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations import guards

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "checkpoints",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("key_name", sa.String(length=64), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("tree_size >= 0 AND seq >= 1", name=op.f("ck_checkpoints_non_negative")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_checkpoints")),
    )
    guards.create_append_only(op.get_bind(), ("checkpoints",))


def downgrade() -> None:
    guards.drop_append_only(op.get_bind(), ("checkpoints",))
    op.drop_table("checkpoints")
