"""Ports: what the use cases need from storage and the outside world.

Adapters implement these (SQL in `bank.adapters.sql`, dicts in `tests/fakes.py`).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from bank.domain.accounts import Account, AccountStatus, Totals
from bank.domain.approvals import Approval, Decision
from bank.domain.entries import JournalEntry, Posting
from bank.domain.members import Member, WrappedKey


@dataclass(frozen=True, slots=True)
class Head:
    """The ledger head row: read under lock by every write, so writes are serialised."""

    next_seq: int
    last_recorded_ns: int
    audit_size: int


@dataclass(frozen=True, slots=True)
class StoredRequest:
    request_id: str
    method: str
    fingerprint: str
    outcome_json: str
    recorded_ns: int


@dataclass(frozen=True, slots=True)
class AuditLeaf:
    index: int
    recorded_ns: int
    leaf: bytes  # canonical bytes of who, what, when, request and outcome
    leaf_hash: bytes  # SHA-256(0x00 || leaf), RFC 6962


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    seq: int
    tree_size: int
    root_hash: bytes
    note: str
    key_name: str
    created_ns: int


@dataclass(frozen=True, slots=True)
class PostedLine:
    """A posted line as an account statement shows it: the posting, what it needs of the
    entry (its recorded time is the entry's) and of the account."""

    posting: Posting
    transfer_id: str
    recorded_ns: int
    effective_date: date
    description: str
    account_currency: str
    owner_kind: str
    owner_id: str


@dataclass(frozen=True, slots=True)
class AccountFilter:
    owner_kind: str | None = None
    owner_id: str | None = None
    currency: str | None = None
    owner_ids: tuple[str, ...] | None = None  # restrict to these owners (council scope)


@dataclass(frozen=True, slots=True)
class MemberFilter:
    council_area: str | None = None
    legal_form: str | None = None
    kyc_status: str | None = None
    connected_group: str | None = None


class MemberCipher(Protocol):
    """Envelope encryption of members' personal data (`bank.adapters.member_crypto`).
    Data that fails to authenticate raises `InvariantViolation`."""

    def seal_new(self, member_id: str, plaintext: bytes) -> tuple[WrappedKey, bytes]:
        """A new data key for the member, wrapped, and `plaintext` encrypted under it."""
        ...

    def open(self, member_id: str, key: WrappedKey, ciphertext: bytes) -> bytes: ...

    def rewrap(self, member_id: str, key: WrappedKey) -> WrappedKey:
        """The same data key wrapped under the active master key."""
        ...

    def digest(self, member_id: str, plaintext: bytes) -> str:
        """A keyed digest of personal data, for request fingerprints."""
        ...

    def active_master_key_id(self) -> str: ...


class LedgerReader(Protocol):
    def get_account(self, account_id: str) -> Account | None: ...

    def get_accounts(self, account_ids: Sequence[str]) -> list[Account]: ...

    def list_accounts(self, after_id: str, limit: int, flt: AccountFilter) -> list[Account]: ...

    def get_entries(self, transfer_ids: Sequence[str]) -> dict[str, JournalEntry]: ...

    def get_resolutions(self, pending_ids: Sequence[str]) -> dict[str, JournalEntry]: ...

    def get_reversals(self, transfer_ids: Sequence[str]) -> dict[str, JournalEntry]: ...

    def statement(self, account_id: str, after_seq: int, after_index: int, limit: int,
                  from_ns: int | None, to_ns: int | None) -> list[tuple[Posting, JournalEntry]]:
        """Posted lines of an account in order, after posting (`after_seq`, `after_index`)."""
        ...

    def iter_posted_lines(self, first_seq: int, last_seq: int, account_id: str | None = None
                          ) -> Generator[PostedLine, None, None]:
        """Posted lines of the entries at positions first_seq..last_seq (only `account_id`'s
        when given), grouped by account in the database's order of account ids, each account's
        in position order; streamed."""
        ...

    def totals_as_of(self, account_id: str, as_of_ns: int) -> Totals:
        """The account's totals right after the last posting recorded at or before `as_of_ns`."""
        ...

    def trial_balance(self) -> list[tuple[str, str, int, int]]:
        """Rows of (currency, account type, posted debits, posted credits)."""
        ...

    def entries_after(self, after_seq: int, limit: int) -> list[JournalEntry]: ...

    def expired_holds(self, now_ns: int, limit: int) -> list[JournalEntry]: ...

    def head(self) -> Head: ...

    def get_approval(self, approval_id: str) -> tuple[Approval, Decision | None] | None: ...

    def list_approvals(self, before_created_ns: int, limit: int
                       ) -> list[tuple[Approval, Decision | None]]:
        """Newest first, created strictly before `before_created_ns`."""
        ...

    def iter_postings(self) -> Iterator[Posting]:
        """Every posting in recording order (for the ledger self-check)."""
        ...

    def entries_out_of_time_order(self, limit: int) -> list[int]:
        """Positions (up to `limit`) whose entry is not recorded strictly after the entry just
        before it: none in a sound ledger (balance-as-of and statement windows rely on it)."""
        ...

    def iter_accounts(self) -> Iterator[Account]: ...

    def iter_entries(self) -> Iterator[JournalEntry]:
        """Every entry with its postings, in position order (streamed)."""
        ...

    def iter_audit(self, start: int = 0, stop: int | None = None
                   ) -> Generator[AuditLeaf, None, None]:
        """Audit leaves with index in [start, stop), in index order (streamed)."""
        ...

    def checkpoints(self) -> list[StoredCheckpoint]: ...

    def audit_index_at(self, recorded_ns: int) -> int:
        """How many audit leaves were recorded before `recorded_ns`."""
        ...

    def get_member(self, member_id: str) -> Member | None: ...

    def get_member_secret(self, member_id: str) -> tuple[WrappedKey | None, bytes] | None:
        """The member's wrapped data key (None once erased) and personal-data ciphertext."""
        ...

    def list_members(self, after_id: str, limit: int, flt: MemberFilter) -> list[Member]: ...

    def member_council_areas(self, member_ids: Sequence[str]) -> dict[str, str]: ...

    def connected_group_exists(self, group_id: str) -> bool: ...

    def keys_to_rewrap(self, active_key_id: str, after_id: str, limit: int
                       ) -> list[tuple[str, WrappedKey]]:
        """Live data keys not wrapped under `active_key_id`, by member id after `after_id`."""
        ...

    def posted_sums(self, upto_seq: int) -> list[tuple[str, int, int]]:
        """(currency, posted debits, posted credits) over entries up to position `upto_seq`."""
        ...


class LedgerWriter(LedgerReader, Protocol):
    def lock_head(self) -> Head: ...

    def save_head(self, head: Head) -> None: ...

    def find_request(self, request_id: str) -> StoredRequest | None: ...

    def save_request(self, request: StoredRequest) -> None: ...

    def find_requests(self, request_ids: Sequence[str]) -> dict[str, StoredRequest]:
        """The stored requests among `request_ids`, by id (one query per chunk)."""
        ...

    def save_requests(self, requests: Sequence[StoredRequest]) -> None: ...

    def insert_accounts(self, accounts: Sequence[Account]) -> None: ...

    def save_account_totals(self, accounts: Sequence[Account]) -> None: ...

    def set_account_status(self, account_id: str, status: AccountStatus, at_ns: int) -> None: ...

    def insert_entries(self, entries: Sequence[JournalEntry]) -> None: ...

    def append_audit(self, leaves: Sequence[AuditLeaf]) -> None: ...

    def write_behind(self) -> AbstractContextManager[None]:
        """Writes made inside may reach the database together (one round trip); an error of
        one of them is raised by a later one or when the block ends at the latest. Only writes
        belong inside."""

    def insert_approval(self, approval: Approval) -> None: ...

    def insert_decision(self, decision: Decision) -> None: ...

    def insert_checkpoint(self, checkpoint: StoredCheckpoint) -> None: ...

    def insert_member(self, member: Member, key: WrappedKey, ciphertext: bytes) -> None: ...

    def save_member_state(self, member: Member) -> None:
        """Store the mutable fields: KYC status, connected group, updated and erased times."""
        ...

    def insert_connected_group(self, group_id: str, created_ns: int) -> None: ...

    def destroy_member_key(self, member_id: str, at_ns: int) -> None:
        """Crypto-shredding: the wrapped data key is overwritten with NULL, for good."""
        ...

    def save_wrapped_key(self, member_id: str, key: WrappedKey) -> None: ...


class UnitOfWork(Protocol):
    """Opens transactions. A write transaction commits when its block ends without error."""

    def write(self, timeout_s: float | None = None) -> AbstractContextManager[LedgerWriter]: ...

    def read(self, timeout_s: float | None = None) -> AbstractContextManager[LedgerReader]: ...


class Clock(Protocol):
    def now_ns(self) -> int: ...

    def business_date(self) -> date: ...
