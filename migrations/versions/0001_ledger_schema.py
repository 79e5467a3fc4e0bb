"""Ledger schema: accounts, entries, postings, requests, audit log, and their guards.

The guards hold even if the application has a bug: CHECK constraints (positive amounts, totals
within balance limits), triggers that refuse UPDATE and DELETE of history, a trigger that refuses
an unbalanced entry, and account rules (identity fields immutable, posted totals never decrease,
a closed account stays closed).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations import guards

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('accounts',
    sa.Column('account_id', sa.String(length=64), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('account_type', sa.String(length=16), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('owner_kind', sa.String(length=16), nullable=False),
    sa.Column('owner_id', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('debits_must_not_exceed_credits', sa.Boolean(), nullable=False),
    sa.Column('credits_must_not_exceed_debits', sa.Boolean(), nullable=False),
    sa.Column('debits_posted', sa.BigInteger(), nullable=False),
    sa.Column('credits_posted', sa.BigInteger(), nullable=False),
    sa.Column('debits_pending', sa.BigInteger(), nullable=False),
    sa.Column('credits_pending', sa.BigInteger(), nullable=False),
    sa.Column('created_ns', sa.BigInteger(), nullable=False),
    sa.Column('closed_ns', sa.BigInteger(), nullable=True),
    sa.CheckConstraint("account_type IN ('asset', 'liability', 'equity', 'income', 'expense')", name=op.f('ck_accounts_account_type')),
    sa.CheckConstraint("owner_kind IN ('bank', 'member', 'council', 'pool')", name=op.f('ck_accounts_owner_kind')),
    sa.CheckConstraint("status <> 'closed' OR (debits_posted = credits_posted AND debits_pending = 0 AND credits_pending = 0)", name=op.f('ck_accounts_closed_at_zero')),
    sa.CheckConstraint("status IN ('open', 'frozen', 'closed')", name=op.f('ck_accounts_status')),
    sa.CheckConstraint('NOT (debits_must_not_exceed_credits AND credits_must_not_exceed_debits)', name=op.f('ck_accounts_one_limit_flag')),
    sa.CheckConstraint('NOT credits_must_not_exceed_debits OR credits_posted + credits_pending <= debits_posted', name=op.f('ck_accounts_no_excess_credit')),
    sa.CheckConstraint('NOT debits_must_not_exceed_credits OR debits_posted + debits_pending <= credits_posted', name=op.f('ck_accounts_no_overdraft')),
    sa.CheckConstraint('debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0 AND credits_pending >= 0', name=op.f('ck_accounts_totals_non_negative')),
    sa.PrimaryKeyConstraint('account_id', name=op.f('pk_accounts'))
    )
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.create_index('ix_accounts_owner', ['owner_kind', 'owner_id', 'account_id'], unique=False)

    op.create_table('audit_log',
    sa.Column('idx', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('recorded_ns', sa.BigInteger(), nullable=False),
    sa.Column('leaf', sa.LargeBinary(), nullable=False),
    sa.Column('leaf_hash', sa.LargeBinary(length=32), nullable=False),
    sa.CheckConstraint('idx >= 0', name=op.f('ck_audit_log_index_non_negative')),
    sa.PrimaryKeyConstraint('idx', name=op.f('pk_audit_log'))
    )
    op.create_table('entries',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('transfer_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('recorded_ns', sa.BigInteger(), nullable=False),
    sa.Column('effective_date', sa.Date(), nullable=False),
    sa.Column('pending_id', sa.String(length=64), nullable=True),
    sa.Column('reverses_id', sa.String(length=64), nullable=True),
    sa.Column('expires_ns', sa.BigInteger(), nullable=False),
    sa.Column('description', sa.String(length=256), nullable=False),
    sa.Column('metadata_json', sa.Text(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('posting_count', sa.SmallInteger(), nullable=False),
    sa.CheckConstraint("(pending_id IS NOT NULL) = (kind IN ('post_pending', 'void_pending', 'expire_pending'))", name=op.f('ck_entries_pending_ref')),
    sa.CheckConstraint("(reverses_id IS NOT NULL) = (kind = 'reversal')", name=op.f('ck_entries_reversal_ref')),
    sa.CheckConstraint("kind IN ('posted', 'pending', 'post_pending', 'void_pending', 'expire_pending', 'reversal')", name=op.f('ck_entries_kind')),
    sa.CheckConstraint('expires_ns >= 0', name=op.f('ck_entries_expires_non_negative')),
    sa.CheckConstraint('posting_count >= 2', name=op.f('ck_entries_two_postings')),
    sa.ForeignKeyConstraint(['pending_id'], ['entries.transfer_id'], name=op.f('fk_entries_pending_id_entries')),
    sa.ForeignKeyConstraint(['reverses_id'], ['entries.transfer_id'], name=op.f('fk_entries_reverses_id_entries')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_entries')),
    sa.UniqueConstraint('pending_id', name=op.f('uq_entries_pending_id')),
    sa.UniqueConstraint('recorded_ns', name=op.f('uq_entries_recorded_ns')),
    sa.UniqueConstraint('reverses_id', name=op.f('uq_entries_reverses_id')),
    sa.UniqueConstraint('transfer_id', name=op.f('uq_entries_transfer_id'))
    )
    with op.batch_alter_table('entries', schema=None) as batch_op:
        batch_op.create_index('ix_entries_expiry', ['expires_ns', 'kind'], unique=False)

    op.create_table('ledger_head',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('next_seq', sa.BigInteger(), nullable=False),
    sa.Column('last_recorded_ns', sa.BigInteger(), nullable=False),
    sa.Column('audit_size', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_ledger_head_single_row')),
    sa.CheckConstraint('next_seq >= 1 AND audit_size >= 0 AND last_recorded_ns >= 0', name=op.f('ck_ledger_head_non_negative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_head'))
    )
    op.create_table('requests',
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('method', sa.String(length=64), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('outcome_json', sa.Text(), nullable=False),
    sa.Column('recorded_ns', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('request_id', name=op.f('pk_requests'))
    )
    op.create_table('postings',
    sa.Column('entry_seq', sa.BigInteger(), nullable=False),
    sa.Column('idx', sa.SmallInteger(), autoincrement=False, nullable=False),
    sa.Column('account_id', sa.String(length=64), nullable=False),
    sa.Column('side', sa.String(length=1), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('effect', sa.String(length=8), nullable=False),
    sa.Column('recorded_ns', sa.BigInteger(), nullable=False),
    sa.Column('debits_posted_after', sa.BigInteger(), nullable=False),
    sa.Column('credits_posted_after', sa.BigInteger(), nullable=False),
    sa.Column('debits_pending_after', sa.BigInteger(), nullable=False),
    sa.Column('credits_pending_after', sa.BigInteger(), nullable=False),
    sa.CheckConstraint("effect IN ('post', 'reserve', 'release')", name=op.f('ck_postings_effect')),
    sa.CheckConstraint("side IN ('D', 'C')", name=op.f('ck_postings_side')),
    sa.CheckConstraint('amount > 0', name=op.f('ck_postings_amount_positive')),
    sa.CheckConstraint('debits_posted_after >= 0 AND credits_posted_after >= 0 AND debits_pending_after >= 0 AND credits_pending_after >= 0', name=op.f('ck_postings_totals_after_non_negative')),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.account_id'], name=op.f('fk_postings_account_id_accounts')),
    sa.ForeignKeyConstraint(['entry_seq'], ['entries.seq'], name=op.f('fk_postings_entry_seq_entries'), initially='DEFERRED', deferrable=True),
    sa.PrimaryKeyConstraint('entry_seq', 'idx', name=op.f('pk_postings'))
    )
    with op.batch_alter_table('postings', schema=None) as batch_op:
        batch_op.create_index('ix_postings_as_of', ['account_id', 'recorded_ns'], unique=False)
        batch_op.create_index('ix_postings_statement', ['account_id', 'effect', 'entry_seq', 'idx'], unique=False)
    op.bulk_insert(sa.table('ledger_head', sa.column('id', sa.Integer),
                            sa.column('next_seq', sa.BigInteger),
                            sa.column('last_recorded_ns', sa.BigInteger),
                            sa.column('audit_size', sa.BigInteger)),
                   [{'id': 1, 'next_seq': 1, 'last_recorded_ns': 0, 'audit_size': 0}])
    guards.create(op.get_bind())


def downgrade() -> None:
    guards.drop(op.get_bind())
    with op.batch_alter_table('postings', schema=None) as batch_op:
        batch_op.drop_index('ix_postings_statement')
        batch_op.drop_index('ix_postings_as_of')

    op.drop_table('postings')
    op.drop_table('requests')
    op.drop_table('ledger_head')
    with op.batch_alter_table('entries', schema=None) as batch_op:
        batch_op.drop_index('ix_entries_expiry')

    op.drop_table('entries')
    op.drop_table('audit_log')
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_index('ix_accounts_owner')

    op.drop_table('accounts')
