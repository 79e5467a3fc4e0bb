"""Members: the public member record, wrapped data keys, connected-party groups, and guards.

Guards (triggers, both databases), on top of the CHECK constraints:

- members: never deleted; id, legal form, council area, accounts, creation time and the
  personal-data ciphertext never change; an erased member never changes again; a member can
  only be marked erased once its data key has been destroyed;
- member_keys: never deleted; a destroyed key (wrapped_key NULL) stays destroyed, and the row
  never changes again;
- connected_groups: append-only.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations import guards

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

LEGAL_FORMS = ("individual", "sole_trader", "partnership", "company", "cooperative",
               "community_benefit_society", "cic", "charity", "council")

# {ne} is the dialect's null-safe "differs" operator.
_MEMBER_CHANGE = """
    OLD.erased_ns IS NOT NULL
    OR NEW.member_id {ne} OLD.member_id OR NEW.legal_form {ne} OLD.legal_form
    OR NEW.council_area {ne} OLD.council_area OR NEW.share_account_id {ne} OLD.share_account_id
    OR NEW.deposit_account_id {ne} OLD.deposit_account_id OR NEW.created_ns {ne} OLD.created_ns
    OR NEW.personal_data {ne} OLD.personal_data
    OR (NEW.erased_ns IS NOT NULL AND EXISTS (SELECT 1 FROM member_keys k
        WHERE k.member_id = NEW.member_id AND k.wrapped_key IS NOT NULL))
"""
_KEY_CHANGE = """
    OLD.wrapped_key IS NULL OR NEW.member_id {ne} OLD.member_id
    OR NEW.created_ns {ne} OLD.created_ns
"""


def _sqlite_guards() -> list[str]:
    ne = "IS NOT"
    out = []
    for table in ("members", "member_keys"):
        out.append(f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} BEGIN "
                   f"SELECT RAISE(ABORT, '{table} rows are never deleted'); END")
    out.append(f"CREATE TRIGGER members_guard BEFORE UPDATE ON members WHEN "
               f"{_MEMBER_CHANGE.format(ne=ne)} BEGIN "
               f"SELECT RAISE(ABORT, 'member update breaks a member rule'); END")
    out.append(f"CREATE TRIGGER member_keys_guard BEFORE UPDATE ON member_keys WHEN "
               f"{_KEY_CHANGE.format(ne=ne)} BEGIN "
               f"SELECT RAISE(ABORT, 'a destroyed member key stays destroyed'); END")
    return out


def _pg_guards() -> list[str]:
    ne = "IS DISTINCT FROM"
    out = []
    for table in ("members", "member_keys"):
        out.append(f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
                   f"FOR EACH ROW EXECUTE FUNCTION bank_refuse()")
    out.append(f"""CREATE FUNCTION bank_member_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF {_MEMBER_CHANGE.format(ne=ne)} THEN
            RAISE EXCEPTION 'member % update breaks a member rule', OLD.member_id
              USING ERRCODE = 'check_violation';
          END IF;
          RETURN NEW;
        END $$""")
    out.append("CREATE TRIGGER members_guard BEFORE UPDATE ON members "
               "FOR EACH ROW EXECUTE FUNCTION bank_member_guard()")
    out.append(f"""CREATE FUNCTION bank_member_key_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF {_KEY_CHANGE.format(ne=ne)} THEN
            RAISE EXCEPTION 'member key % stays destroyed once destroyed',
              OLD.member_id USING ERRCODE = 'check_violation';
          END IF;
          RETURN NEW;
        END $$""")
    out.append("CREATE TRIGGER member_keys_guard BEFORE UPDATE ON member_keys "
               "FOR EACH ROW EXECUTE FUNCTION bank_member_key_guard()")
    return out


def upgrade() -> None:
    op.create_table(
        "connected_groups",
        sa.Column("group_id", sa.String(length=64), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("group_id", name=op.f("pk_connected_groups")),
    )
    op.create_table(
        "members",
        sa.Column("member_id", sa.String(length=48), nullable=False),
        sa.Column("legal_form", sa.String(length=32), nullable=False),
        sa.Column("council_area", sa.String(length=32), nullable=False),
        sa.Column("kyc_status", sa.String(length=16), nullable=False),
        sa.Column("share_account_id", sa.String(length=64), nullable=False),
        sa.Column("deposit_account_id", sa.String(length=64), nullable=True),
        sa.Column("connected_group_id", sa.String(length=64), nullable=True),
        sa.Column("personal_data", sa.LargeBinary(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
        sa.Column("erased_ns", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("legal_form IN (" + ", ".join(f"'{f}'" for f in LEGAL_FORMS) + ")",
                           name=op.f("ck_members_legal_form")),
        sa.CheckConstraint("kyc_status IN ('pending', 'verified', 'rejected', 'expired')",
                           name=op.f("ck_members_kyc_status")),
        sa.CheckConstraint("updated_ns >= created_ns AND (erased_ns IS NULL OR "
                           "erased_ns >= created_ns)", name=op.f("ck_members_times")),
        sa.ForeignKeyConstraint(["share_account_id"], ["accounts.account_id"],
                                name=op.f("fk_members_share_account_id_accounts")),
        sa.ForeignKeyConstraint(["deposit_account_id"], ["accounts.account_id"],
                                name=op.f("fk_members_deposit_account_id_accounts")),
        sa.ForeignKeyConstraint(["connected_group_id"], ["connected_groups.group_id"],
                                name=op.f("fk_members_connected_group_id_connected_groups")),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_members")),
        sa.UniqueConstraint("share_account_id", name=op.f("uq_members_share_account_id")),
        sa.UniqueConstraint("deposit_account_id", name=op.f("uq_members_deposit_account_id")),
    )
    op.create_index("ix_members_council_area", "members", ["council_area", "member_id"])
    op.create_index("ix_members_connected_group", "members", ["connected_group_id", "member_id"])
    op.create_table(
        "member_keys",
        sa.Column("member_id", sa.String(length=48), nullable=False),
        sa.Column("master_key_id", sa.String(length=16), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=True),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.Column("destroyed_ns", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("(wrapped_key IS NULL) = (destroyed_ns IS NOT NULL)",
                           name=op.f("ck_member_keys_destroyed")),
        sa.ForeignKeyConstraint(["member_id"], ["members.member_id"],
                                name=op.f("fk_member_keys_member_id_members")),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_keys")),
    )
    conn = op.get_bind()
    guards.create_append_only(conn, ("connected_groups",))
    statements = _pg_guards() if conn.dialect.name == "postgresql" else _sqlite_guards()
    for statement in statements:
        conn.execute(sa.text(statement))


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        for fn in ("bank_member_guard", "bank_member_key_guard"):
            conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {fn}() CASCADE")
        for table in ("members", "member_keys"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_delete ON {table}")
    else:
        for name in ("members_no_delete", "member_keys_no_delete", "members_guard",
                     "member_keys_guard"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
    guards.drop_append_only(conn, ("connected_groups",))
    op.drop_table("member_keys")
    op.drop_index("ix_members_connected_group", table_name="members")
    op.drop_index("ix_members_council_area", table_name="members")
    op.drop_table("members")
    op.drop_table("connected_groups")
