"""Read-side use cases on pools: a pool now, positions, statements, exports, a council's feed.

Statements are read as stored at the close (closed periods never change); exports add the
ledger balance of each capital account at the close and refuse (as a bug) a statement that
does not equal it to the penny.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

from bank.app.paging import decode_token, encode_token, page_size, position_str
from bank.app.pool_ledger import capital_account
from bank.app.pool_limits import reserve
from bank.app.pool_ports import StoredStatement, pool_store
from bank.app.pools import LoadedPool, load
from bank.app.ports import UnitOfWork
from bank.app.queries import Page
from bank.domain.entries import JournalEntry
from bank.domain.errors import NotFound, invalid
from bank.domain.invariants import ensure
from bank.domain.limits import WATCH_PAGE_SIZE_DEFAULT, WATCH_PAGE_SIZE_MAX
from bank.domain.pools import Position, Valuation
from bank.domain.pools.terms import PoolTerms


@dataclass(frozen=True, slots=True)
class PoolView:
    pool: LoadedPool
    valuation: Valuation
    created_ns: int
    reserve_minor: int
    reserve_target_minor: int


def get_pool(uow: UnitOfWork, pool_id: str) -> PoolView:
    """The pool rebuilt now. Raises `NotFound` POOL_NOT_FOUND."""
    with uow.read() as r:
        store = pool_store(r)
        pool = load(store, pool_id)
        record = store.get_pool(pool_id)
    assert record is not None
    held, target = reserve(pool)
    return PoolView(pool, pool.register.valuation(), record.created_ns, held, target)


@dataclass(frozen=True, slots=True)
class PositionView:
    position: Position
    units_micro: int
    capital_minor: int
    commitment_minor: int
    unfunded_minor: int


def list_positions(uow: UnitOfWork, pool_id: str, participant: str | None, size: int,
                   token: str) -> Page[PositionView]:
    """Positions in (participant, class) order: every participant x class of the terms."""
    query = {"m": "positions", "pool": pool_id, "participant": participant}
    limit = page_size(size)
    after = position_str(decode_token(token, query))
    view = get_pool(uow, pool_id)
    register, terms = view.pool.register, view.pool.terms
    rows = []
    for p in sorted(terms.participants, key=lambda p: p.participant_id):
        if participant is not None and p.participant_id != participant:
            continue
        for c in terms.unit_classes:
            key = f"{p.participant_id}:{c.class_id}"
            if key <= after:
                continue
            position = Position(p.participant_id, c.class_id)
            holding = register.holding(position)
            unfunded = register.unfunded_commitment_minor(position)
            rows.append(PositionView(position, holding.units_micro, holding.capital_minor,
                                     register.commitment_minor(position), unfunded))
    page = rows[:limit]
    more = len(rows) > limit
    last = page[-1].position if page else None
    return Page(page, encode_token(query, f"{last.participant_id}:{last.class_id}")
                if more and last else "")


def _statements(uow: UnitOfWork, pool_id: str, period: int,
                participant: str) -> tuple[list[StoredStatement], dict[str, int]]:
    with uow.read() as r:
        store = pool_store(r)
        if store.get_pool(pool_id) is None:
            raise NotFound("POOL_NOT_FOUND", f"no pool {pool_id!r}",
                           metadata={"pool": f"pools/{pool_id}"})
        found = store.statements(pool_id, period, participant)
        balances = {s.class_id: signed_balance_as_of(
            r.totals_as_of(capital_account(pool_id, participant, s.class_id), s.closed_ns))
            for s in found}
    if not found:
        raise NotFound("STATEMENT_NOT_FOUND", f"pool {pool_id} has no statement of period "
                       f"{period} for {participant!r}",
                       metadata={"statement": f"pools/{pool_id}/periods/{period}/statements/"
                                 f"{participant}"})
    for s in found:
        ensure(balances[s.class_id] == s.statement["closing_capital"],
               f"statement {pool_id}/{period}/{participant}/{s.class_id} does not equal the "
               "ledger")
    return found, balances


def signed_balance_as_of(totals: Any) -> int:
    """A capital (equity) account's balance from its totals: credits minus debits."""
    return int(totals.credits_posted - totals.debits_posted)


def get_statement(uow: UnitOfWork, pool_id: str, period: int,
                  participant: str) -> list[StoredStatement]:
    """A participant's statements (one per unit class) of a closed period. Raises `NotFound`
    POOL_NOT_FOUND or STATEMENT_NOT_FOUND."""
    return _statements(uow, pool_id, period, participant)[0]


EXPORT_FIELDS = ("unit_class", "start_date", "end_date", "opening_units", "opening_capital",
                 "contributions", "units_issued", "redemptions", "units_redeemed",
                 "distributions", "income", "fees", "losses", "recoveries", "closing_units",
                 "closing_capital", "nav", "capital_account", "ledger_balance_minor", "loans")


def export_statement(uow: UnitOfWork, pool_id: str, period: int, participant: str,
                     fmt: str) -> tuple[bytes, str]:
    """The statement as JSON or CSV (amounts in minor units, units in micro-units) with each
    capital account's ledger balance at the close; returns (content, hex SHA-256)."""
    found, balances = _statements(uow, pool_id, period, participant)
    rows = [{**{k: v for k, v in s.statement.items() if k not in ("participant", "class")},
             "unit_class": s.class_id,
             "capital_account": capital_account(pool_id, participant, s.class_id),
             "ledger_balance_minor": balances[s.class_id]} for s in found]
    if fmt == "json":
        body = {"pool": pool_id, "period": period, "participant": participant,
                "currency": _currency(uow, pool_id), "classes": rows}
        content = json.dumps(body, sort_keys=True, indent=1).encode()
    else:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "loans": ";".join(f"{loan}|{area}|{amount}"
                                                      for loan, area, amount in row["loans"])})
        content = out.getvalue().encode()
    return content, hashlib.sha256(content).hexdigest()


def _currency(uow: UnitOfWork, pool_id: str) -> str:
    return get_pool(uow, pool_id).pool.terms.currency


def owner_entries(uow: UnitOfWork, owner_id: str, after_seq: int,
                  size: int) -> list[JournalEntry]:
    """Entries touching accounts of `owner_id` after a position, with only those postings."""
    if after_seq < 0:
        raise invalid("after_position", "must not be negative")
    if not 0 <= size <= WATCH_PAGE_SIZE_MAX:
        raise invalid("page_size", f"must be between 0 and {WATCH_PAGE_SIZE_MAX}")
    with uow.read() as r:
        return pool_store(r).owner_entries(owner_id, after_seq, size or WATCH_PAGE_SIZE_DEFAULT)



def pool_terms(uow: UnitOfWork, pool_id: str) -> PoolTerms:
    """A pool's terms without replaying it. Raises `NotFound` POOL_NOT_FOUND."""
    with uow.read() as r:
        record = pool_store(r).get_pool(pool_id)
    if record is None:
        raise NotFound("POOL_NOT_FOUND", f"no pool {pool_id!r}",
                       metadata={"pool": f"pools/{pool_id}"})
    return PoolTerms.from_json(json.loads(record.terms_json))


def pool_participants(uow: UnitOfWork, pool_id: str) -> set[str]:
    """Participant ids of a pool (empty if there is no such pool), for scope checks."""
    with uow.read() as r:
        record = pool_store(r).get_pool(pool_id)
    if record is None:
        return set()
    return {p.participant_id for p in PoolTerms.from_json(json.loads(record.terms_json))
            .participants}
