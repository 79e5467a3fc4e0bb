"""SQL storage of lending pools (mixed into `bank.adapters.sql.SqlLedger`).

Every pool table is append-only (migration 0007): terms, events, closed periods and
statements are written once and read many times.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import Connection, insert, select

from bank.adapters import tables as t
from bank.app.pool_ports import ClosedPeriod, PoolEvent, PoolRecord, StoredStatement
from bank.domain.accounts import Side, Totals
from bank.domain.entries import Effect, JournalEntry, Posting, TransferKind


def _json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


class SqlPoolStore:
    """Pool reads and writes over the ledger's connection and transaction."""

    conn: Connection

    def get_pool(self, pool_id: str) -> PoolRecord | None:
        row = self.conn.execute(select(t.pools).where(t.pools.c.pool_id == pool_id)).one_or_none()
        return PoolRecord(row.pool_id, row.terms_json, row.created_ns) if row else None

    def list_pools(self, after_id: str, limit: int) -> list[PoolRecord]:
        c = t.pools.c
        rows = self.conn.execute(select(t.pools).where(c.pool_id > after_id)
                                 .order_by(c.pool_id).limit(limit))
        return [PoolRecord(r.pool_id, r.terms_json, r.created_ns) for r in rows]

    def insert_pool(self, record: PoolRecord) -> None:
        self.conn.execute(insert(t.pools).values(pool_id=record.pool_id,
                                                 terms_json=record.terms_json,
                                                 created_ns=record.created_ns))

    def pool_events(self, pool_id: str) -> list[PoolEvent]:
        c = t.pool_events.c
        rows = self.conn.execute(select(t.pool_events).where(c.pool_id == pool_id)
                                 .order_by(c.seq))
        return [PoolEvent(r.pool_id, r.seq, r.period_number, r.kind, json.loads(r.payload_json),
                          r.reference, r.request_id, r.recorded_ns) for r in rows]

    def insert_pool_events(self, events: Sequence[PoolEvent]) -> None:
        for e in events:  # one by one: the density trigger reads the rows before each
            self.conn.execute(insert(t.pool_events).values(
                pool_id=e.pool_id, seq=e.seq, period_number=e.period_number, kind=e.kind,
                payload_json=_json(e.payload), reference=e.reference, request_id=e.request_id,
                recorded_ns=e.recorded_ns))

    def closed_periods(self, pool_id: str) -> list[ClosedPeriod]:
        c = t.pool_periods.c
        rows = self.conn.execute(select(t.pool_periods).where(c.pool_id == pool_id)
                                 .order_by(c.period_number))
        return [ClosedPeriod(r.pool_id, r.period_number, r.start_date.isoformat(),
                             r.end_date.isoformat(), json.loads(r.summary_json), r.approval_id,
                             r.closed_ns) for r in rows]

    def insert_closed_period(self, period: ClosedPeriod) -> None:
        self.conn.execute(insert(t.pool_periods).values(
            pool_id=period.pool_id, period_number=period.period_number,
            start_date=date.fromisoformat(period.start_date),
            end_date=date.fromisoformat(period.end_date), summary_json=_json(period.summary),
            approval_id=period.approval_id, closed_ns=period.closed_ns))

    def statements(self, pool_id: str, period_number: int,
                   participant_id: str | None) -> list[StoredStatement]:
        c = t.pool_statements.c
        query = select(t.pool_statements).where(c.pool_id == pool_id,
                                                c.period_number == period_number)
        if participant_id is not None:
            query = query.where(c.participant_id == participant_id)
        rows = self.conn.execute(query.order_by(c.participant_id, c.class_id))
        return [StoredStatement(r.pool_id, r.period_number, r.participant_id, r.class_id,
                                json.loads(r.statement_json), r.closed_ns) for r in rows]

    def insert_statements(self, statements: Sequence[StoredStatement]) -> None:
        if statements:
            self.conn.execute(insert(t.pool_statements), [{
                "pool_id": s.pool_id, "period_number": s.period_number,
                "participant_id": s.participant_id, "class_id": s.class_id,
                "closing_units_micro": s.statement["closing_units"],
                "closing_capital_minor": s.statement["closing_capital"],
                "statement_json": _json(s.statement), "closed_ns": s.closed_ns}
                for s in statements])

    def owner_entries(self, owner_id: str, after_seq: int, limit: int) -> list[JournalEntry]:
        p, a, e = t.postings.c, t.accounts.c, t.entries.c
        join = t.postings.join(t.accounts, a.account_id == p.account_id)
        owned = select(t.postings).select_from(join).where(a.owner_id == owner_id,
                                                           p.entry_seq > after_seq)
        seqs = [row[0] for row in self.conn.execute(
            select(p.entry_seq).select_from(join)
            .where(a.owner_id == owner_id, p.entry_seq > after_seq)
            .group_by(p.entry_seq).order_by(p.entry_seq).limit(limit))]
        if not seqs:
            return []
        lines: dict[int, list[Posting]] = {s: [] for s in seqs}
        for r in self.conn.execute(owned.where(p.entry_seq.in_(seqs))
                                   .order_by(p.entry_seq, p.idx)):
            lines[r.entry_seq].append(Posting(
                r.entry_seq, r.idx, r.account_id, Side(r.side), r.amount, r.currency,
                Effect(r.effect), Totals(r.debits_posted_after, r.credits_posted_after,
                                         r.debits_pending_after, r.credits_pending_after)))
        headers = self.conn.execute(select(t.entries).where(e.seq.in_(seqs)).order_by(e.seq))
        return [JournalEntry(
            seq=h.seq, transfer_id=h.transfer_id, kind=TransferKind(h.kind),
            recorded_ns=h.recorded_ns, effective_date=h.effective_date,
            postings=tuple(lines[h.seq]), pending_id=h.pending_id, reverses_id=h.reverses_id,
            expires_ns=h.expires_ns, description=h.description,
            metadata=tuple((k, v) for k, v in json.loads(h.metadata_json)),
            fingerprint=h.fingerprint, request_id=h.request_id) for h in headers]
