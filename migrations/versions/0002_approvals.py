"""Maker-checker approvals: pending operations and their single decision, both append-only.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations import guards

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("approvals", "approval_decisions")


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("approval_id", sa.String(length=64), nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("payload_json", sa.Text(), nullable=False),
        sa.Column("payload_sha256", sa.String(length=64), nullable=False),
        sa.Column("maker_subject", sa.String(length=128), nullable=False),
        sa.Column("maker_role", sa.String(length=16), nullable=False),
        sa.Column("maker_scope", sa.String(length=128), nullable=False),
        sa.Column("maker_request_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.Column("expires_ns", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("expires_ns > created_ns",
                           name=op.f("ck_approvals_expires_after_creation")),
        sa.PrimaryKeyConstraint("approval_id", name=op.f("pk_approvals")),
    )
    op.create_index("ix_approvals_created", "approvals", ["created_ns"])
    op.create_table(
        "approval_decisions",
        sa.Column("approval_id", sa.String(length=64), nullable=False),
        sa.Column("approved", sa.Boolean(), nullable=False),
        sa.Column("checker_subject", sa.String(length=128), nullable=False),
        sa.Column("checker_role", sa.String(length=16), nullable=False),
        sa.Column("checker_scope", sa.String(length=128), nullable=False),
        sa.Column("decided_ns", sa.BigInteger(), nullable=False),
        sa.Column("note", sa.String(length=256), nullable=False),
        sa.Column("outcome_json", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["approval_id"], ["approvals.approval_id"],
                                name=op.f("fk_approval_decisions_approval_id_approvals")),
        sa.PrimaryKeyConstraint("approval_id", name=op.f("pk_approval_decisions")),
    )
    guards.create_append_only(op.get_bind(), TABLES)


def downgrade() -> None:
    guards.drop_append_only(op.get_bind(), TABLES)
    op.drop_table("approval_decisions")
    op.drop_index("ix_approvals_created", table_name="approvals")
    op.drop_table("approvals")
