"""Use cases on accounts: open in batches, close at zero balance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bank.app.ports import Clock, Head, UnitOfWork
from bank.app.unit import Command, Context, run_command
from bank.domain.accounts import Account, AccountStatus, AccountType, OwnerKind
from bank.domain.entries import canonical_hash
from bank.domain.errors import AlreadyExists, FailedPrecondition, LedgerError, NotFound
from bank.domain.identity import Principal


@dataclass(frozen=True, slots=True)
class AccountSpec:
    account_id: str
    currency: str
    account_type: AccountType
    code: str
    owner_kind: OwnerKind
    owner_id: str
    debits_must_not_exceed_credits: bool = False
    credits_must_not_exceed_debits: bool = False

    def as_account(self, created_ns: int) -> Account:
        return Account(self.account_id, self.currency, self.account_type, self.code,
                       self.owner_kind, self.owner_id, AccountStatus.OPEN,
                       self.debits_must_not_exceed_credits, self.credits_must_not_exceed_debits,
                       created_ns=created_ns)

    def as_body(self) -> list[Any]:
        return [self.account_id, self.currency, self.account_type.value, self.code,
                self.owner_kind.value, self.owner_id, self.debits_must_not_exceed_credits,
                self.credits_must_not_exceed_debits]


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One item of a batch: `error` is None on success (or an identical replay)."""

    index: int
    entity_id: str
    error: LedgerError | None
    position: int = 0  # entry position in the change feed (transfers only)
    recorded_ns: int = 0

    def to_json(self) -> list[Any]:
        return [self.index, self.entity_id, self.error.to_record() if self.error else None,
                self.position, self.recorded_ns]

    @staticmethod
    def from_json(data: list[Any]) -> ItemResult:
        index, entity_id, error, position, recorded_ns = data
        return ItemResult(index, entity_id, LedgerError.from_record(error) if error else None,
                          position, recorded_ns)


@dataclass(frozen=True, slots=True)
class BatchResult:
    items: tuple[ItemResult, ...]
    approval_id: str = ""  # set when the batch waits for a second approver instead of running

    def to_json(self) -> dict[str, Any]:
        return {"items": [item.to_json() for item in self.items], "approval": self.approval_id}

    @staticmethod
    def from_json(data: dict[str, Any]) -> BatchResult:
        return BatchResult(tuple(ItemResult.from_json(item) for item in data["items"]),
                           data.get("approval", ""))


@dataclass(frozen=True, slots=True)
class AccountRef:
    account_id: str

    def to_json(self) -> dict[str, Any]:
        return {"account_id": self.account_id}

    @staticmethod
    def from_json(data: dict[str, Any]) -> AccountRef:
        return AccountRef(data["account_id"])


def create_accounts(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                    specs: list[AccountSpec], timeout_s: float | None = None) -> BatchResult:
    """Open accounts; an identical existing account counts as success, a different one fails.

    Specs must already be validated (`services` does it at the edge). Raises `AlreadyExists`
    (REQUEST_ID_REUSED) for a conflicting replay.
    """
    command = Command("CreateAccounts", request_id, principal,
                      {"accounts": [spec.as_body() for spec in specs]})

    def handler(ctx: Context) -> tuple[BatchResult, Head]:
        items, new = plan_accounts(ctx, specs)
        insert_accounts(ctx, new)
        return BatchResult(items), ctx.head

    return run_command(uow, clock, command, handler, BatchResult.from_json, timeout_s)


def plan_accounts(ctx: Context, specs: list[AccountSpec]
                  ) -> tuple[tuple[ItemResult, ...], list[Account]]:
    """One result per spec, and the accounts to insert; writes nothing. An identical
    existing account is a success; one with a different definition is ACCOUNT_ID_REUSED."""
    existing = {a.account_id: a for a in ctx.tx.get_accounts([s.account_id for s in specs])}
    new: dict[str, Account] = {}
    items = []
    for index, spec in enumerate(specs):
        wanted = spec.as_account(ctx.now_ns)
        found = new.get(spec.account_id) or existing.get(spec.account_id)
        error = None
        if found is None:
            new[spec.account_id] = wanted
        elif not found.same_definition(wanted):
            error = AlreadyExists(
                "ACCOUNT_ID_REUSED",
                f"account {spec.account_id!r} already exists with a different definition",
                metadata={"account_id": spec.account_id})
        items.append(ItemResult(index, spec.account_id, error))
    return tuple(items), list(new.values())


def insert_accounts(ctx: Context, accounts: list[Account]) -> None:
    """Insert planned accounts in the command's transaction, recording them for the audit."""
    ctx.tx.insert_accounts(accounts)
    ctx.effects.extend(["account", a.account_id, canonical_hash(a.definition())]
                       for a in accounts)


def close_account(uow: UnitOfWork, clock: Clock, principal: Principal, request_id: str,
                  account_id: str, timeout_s: float | None = None) -> AccountRef:
    """Close an account whose posted balance is zero and which has no pending holds.

    Raises `NotFound`, or `FailedPrecondition` (ACCOUNT_ALREADY_CLOSED, BALANCE_NOT_ZERO).
    """
    command = Command("CloseAccount", request_id, principal, {"account_id": account_id})

    def handler(ctx: Context) -> tuple[AccountRef, Head]:
        account = ctx.tx.get_account(account_id)
        if account is None:
            raise NotFound("ACCOUNT_NOT_FOUND", f"no account {account_id!r}",
                           metadata={"account_id": account_id})
        if account.status is AccountStatus.CLOSED:
            raise FailedPrecondition("ACCOUNT_ALREADY_CLOSED", f"{account_id!r} is closed",
                                     metadata={"account_id": account_id})
        if not account.is_zero():
            raise FailedPrecondition(
                "BALANCE_NOT_ZERO",
                f"account {account_id!r} can only be closed at a zero balance with no holds",
                metadata={"account_id": account_id})
        ctx.tx.set_account_status(account_id, AccountStatus.CLOSED, ctx.now_ns)
        ctx.effects.append(["close", account_id])
        return AccountRef(account_id), ctx.head

    return run_command(uow, clock, command, handler, AccountRef.from_json, timeout_s)
