"""SQL storage of members (mixed into `bank.adapters.sql.SqlLedger`).

Personal data arrives here already encrypted and leaves still encrypted: this module never sees
it in clear. Erasure is an UPDATE that NULLs the wrapped data key (the service's database role
may UPDATE a few columns but DELETE nothing); the triggers of migration 0005 keep a destroyed
key destroyed and an erased member unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.engine import Row

from bank.adapters import tables as t
from bank.app.ports import MemberFilter
from bank.domain.invariants import ensure
from bank.domain.members import KycStatus, LegalForm, Member, WrappedKey

_CHUNK = 500


def _member(row: Row[Any]) -> Member:
    m = row._mapping
    return Member(m["member_id"], LegalForm(m["legal_form"]), m["council_area"],
                  KycStatus(m["kyc_status"]), m["share_account_id"], m["deposit_account_id"],
                  m["connected_group_id"], m["created_ns"], m["updated_ns"], m["erased_ns"])


_PUBLIC = [c for c in t.members.c if c.name != "personal_data"]


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


class SqlMemberStore:
    """Member reads and writes over the ledger's connection and transaction."""

    conn: Connection

    def get_member(self, member_id: str) -> Member | None:
        row = self.conn.execute(select(*_PUBLIC).where(
            t.members.c.member_id == member_id)).one_or_none()
        return _member(row) if row is not None else None

    def get_member_secret(self, member_id: str) -> tuple[WrappedKey | None, bytes] | None:
        m, k = t.members.c, t.member_keys.c
        row = self.conn.execute(
            select(m.personal_data, k.master_key_id, k.wrapped_key)
            .select_from(t.members.outerjoin(t.member_keys, m.member_id == k.member_id))
            .where(m.member_id == member_id)).one_or_none()
        if row is None:
            return None
        key = (WrappedKey(row.master_key_id, bytes(row.wrapped_key))
               if row.wrapped_key is not None else None)
        return key, bytes(row.personal_data)

    def list_members(self, after_id: str, limit: int, flt: MemberFilter) -> list[Member]:
        c = t.members.c
        query = select(*_PUBLIC).where(c.member_id > after_id)
        if flt.council_area is not None:
            query = query.where(c.council_area == flt.council_area)
        if flt.legal_form is not None:
            query = query.where(c.legal_form == flt.legal_form)
        if flt.kyc_status is not None:
            query = query.where(c.kyc_status == flt.kyc_status)
        if flt.connected_group is not None:
            query = query.where(c.connected_group_id == flt.connected_group)
        rows = self.conn.execute(query.order_by(c.member_id).limit(limit))
        return [_member(row) for row in rows]

    def member_council_areas(self, member_ids: Sequence[str]) -> dict[str, str]:
        c = t.members.c
        found: dict[str, str] = {}
        for chunk in _chunks(sorted(set(member_ids))):
            for row in self.conn.execute(select(c.member_id, c.council_area)
                                         .where(c.member_id.in_(chunk))):
                found[row.member_id] = row.council_area
        return found

    def connected_group_exists(self, group_id: str) -> bool:
        c = t.connected_groups.c
        return self.conn.execute(select(c.group_id).where(
            c.group_id == group_id)).one_or_none() is not None

    def keys_to_rewrap(self, active_key_id: str, after_id: str, limit: int
                       ) -> list[tuple[str, WrappedKey]]:
        k = t.member_keys.c
        rows = self.conn.execute(
            select(k.member_id, k.master_key_id, k.wrapped_key)
            .where(k.member_id > after_id, k.wrapped_key.is_not(None),
                   k.master_key_id != active_key_id)
            .order_by(k.member_id).limit(limit))
        return [(r.member_id, WrappedKey(r.master_key_id, bytes(r.wrapped_key))) for r in rows]

    def insert_member(self, member: Member, key: WrappedKey, ciphertext: bytes) -> None:
        self.conn.execute(insert(t.members).values(
            member_id=member.member_id, legal_form=member.legal_form.value,
            council_area=member.council_area, kyc_status=member.kyc_status.value,
            share_account_id=member.share_account_id,
            deposit_account_id=member.deposit_account_id,
            connected_group_id=member.connected_group, personal_data=ciphertext,
            created_ns=member.created_ns, updated_ns=member.updated_ns,
            erased_ns=member.erased_ns))
        self.conn.execute(insert(t.member_keys).values(
            member_id=member.member_id, master_key_id=key.master_key_id,
            wrapped_key=key.wrapped, created_ns=member.created_ns, destroyed_ns=None))

    def save_member_state(self, member: Member) -> None:
        result = self.conn.execute(update(t.members).where(
            t.members.c.member_id == member.member_id).values(
            kyc_status=member.kyc_status.value, connected_group_id=member.connected_group,
            updated_ns=member.updated_ns, erased_ns=member.erased_ns))
        ensure(result.rowcount == 1, f"member {member.member_id} to update is missing")

    def insert_connected_group(self, group_id: str, created_ns: int) -> None:
        self.conn.execute(insert(t.connected_groups).values(group_id=group_id,
                                                            created_ns=created_ns))

    def destroy_member_key(self, member_id: str, at_ns: int) -> None:
        result = self.conn.execute(update(t.member_keys).where(
            t.member_keys.c.member_id == member_id,
            t.member_keys.c.wrapped_key.is_not(None)).values(wrapped_key=None,
                                                            destroyed_ns=at_ns))
        ensure(result.rowcount == 1, f"member {member_id} has no live data key to destroy")

    def save_wrapped_key(self, member_id: str, key: WrappedKey) -> None:
        result = self.conn.execute(update(t.member_keys).where(
            t.member_keys.c.member_id == member_id,
            t.member_keys.c.wrapped_key.is_not(None)).values(
            master_key_id=key.master_key_id, wrapped_key=key.wrapped))
        ensure(result.rowcount == 1, f"member {member_id} has no live data key to rewrap")
