"""Ports of the pools use cases: what they need from storage beyond the ledger's own.

`bank.adapters.sql_pools.SqlPoolStore` implements it and is mixed into the SQL ledger, so the
transaction a command runs in (`Context.tx`) is also a `PoolStore`; `pool_store` says so to the
type checker and checks it at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from bank.app.ports import LedgerReader
from bank.domain.entries import JournalEntry
from bank.domain.invariants import ensure


@dataclass(frozen=True, slots=True)
class PoolRecord:
    pool_id: str
    terms_json: str
    created_ns: int


@dataclass(frozen=True, slots=True)
class PoolEvent:
    """One thing that happened to a pool, in order (`seq` 1, 2, ... per pool). The register is
    rebuilt by replaying these; `payload` holds the arguments and the outcome first computed,
    which the replay must reproduce exactly."""

    pool_id: str
    seq: int
    period_number: int
    kind: str
    payload: dict[str, Any]
    reference: str
    request_id: str
    recorded_ns: int


@dataclass(frozen=True, slots=True)
class ClosedPeriod:
    pool_id: str
    period_number: int
    start_date: str
    end_date: str
    summary: dict[str, Any]  # totals, valuation, NAV per class
    approval_id: str
    closed_ns: int


@dataclass(frozen=True, slots=True)
class StoredStatement:
    pool_id: str
    period_number: int
    participant_id: str
    class_id: str
    statement: dict[str, Any]
    closed_ns: int


class PoolStore(LedgerReader, Protocol):
    def get_pool(self, pool_id: str) -> PoolRecord | None: ...

    def list_pools(self, after_id: str, limit: int) -> list[PoolRecord]: ...

    def insert_pool(self, record: PoolRecord) -> None: ...

    def pool_events(self, pool_id: str) -> list[PoolEvent]:
        """Every event of the pool, in order."""
        ...

    def insert_pool_events(self, events: Sequence[PoolEvent]) -> None: ...

    def closed_periods(self, pool_id: str) -> list[ClosedPeriod]: ...

    def insert_closed_period(self, period: ClosedPeriod) -> None: ...

    def statements(self, pool_id: str, period_number: int,
                   participant_id: str | None) -> list[StoredStatement]: ...

    def insert_statements(self, statements: Sequence[StoredStatement]) -> None: ...

    def owner_entries(self, owner_id: str, after_seq: int, limit: int) -> list[JournalEntry]:
        """Entries after position `after_seq` with a posting on an account of `owner_id`,
        carrying only those postings."""
        ...


def pool_store(tx: object) -> PoolStore:
    """The transaction as a `PoolStore` (the SQL ledger is one; a fake must be too)."""
    ensure(hasattr(tx, "pool_events"), f"{type(tx).__name__} does not store pools")
    return cast(PoolStore, tx)
