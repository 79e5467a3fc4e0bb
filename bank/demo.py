"""Demo data: a small region's bank, councils and members, with realistic entries.

Seeded through the same use cases as any client (so every demo change is audited), as the
`demo-seeder` teller. Running it twice changes nothing: request ids are fixed.
"""

from __future__ import annotations

from collections.abc import Callable

from bank.app.accounts import AccountSpec, create_accounts
from bank.app.approvals import approve, get_approval
from bank.app.ports import Clock, UnitOfWork
from bank.app.transfers import create_transfers
from bank.domain.accounts import AccountType, OwnerKind, Side
from bank.domain.entries import PostingLine, TransferKind, TransferSpec
from bank.domain.errors import FailedPrecondition
from bank.domain.identity import Principal, Role

SEEDER = Principal("demo-seeder", Role.TELLER, "branch:preston")
# Council capital is large enough to need a second approver (maker-checker), as in real life.
SEEDER_APPROVER = Principal("demo-approver", Role.APPROVER, "branch:preston")
COUNCILS = ("preston", "lancaster", "blackburn")
MEMBERS = (("m-0001", "Ribble Valley Bakery Co-operative"), ("m-0002", "Moor Lane Cycles Ltd"),
           ("m-0003", "Fishergate Community Café CIC"), ("m-0004", "A. Patel (sole trader)"))

BANK_ACCOUNTS = (
    ("bank-cash", AccountType.ASSET, "1000"),
    ("bank-loans", AccountType.ASSET, "1200"),
    ("bank-share-capital", AccountType.EQUITY, "3000"),
    ("bank-interest-income", AccountType.INCOME, "4000"),
    ("bank-fee-income", AccountType.INCOME, "4100"),
)


def _accounts() -> list[AccountSpec]:
    specs = [AccountSpec(i, "GBP", t, c, OwnerKind.BANK, "bank") for i, t, c in BANK_ACCOUNTS]
    specs += [AccountSpec(f"council-{c}-capital", "GBP", AccountType.LIABILITY, "2500",
                          OwnerKind.COUNCIL, f"council:{c}", True) for c in COUNCILS]
    specs += [AccountSpec(f"{m}-deposit", "GBP", AccountType.LIABILITY, "2100",
                          OwnerKind.MEMBER, m, True) for m, _ in MEMBERS]
    return specs


def _t(tid: str, debit: str, credit: str, pence: int, description: str,
       kind: TransferKind = TransferKind.POSTED, timeout: int = 0) -> TransferSpec:
    return TransferSpec(tid, kind, (PostingLine(debit, Side.DEBIT, pence, "GBP"),
                                    PostingLine(credit, Side.CREDIT, pence, "GBP")),
                        description=description, timeout_seconds=timeout)


def _transfers() -> list[list[TransferSpec]]:
    capital = [_t(f"demo-capital-{c}", "bank-cash", f"council-{c}-capital", pence,
                  f"{c.title()} council pool capital")
               for c, pence in zip(COUNCILS, (100_000_000, 60_000_000, 40_000_000), strict=True)]
    deposits = [_t(f"demo-deposit-{m}", "bank-cash", f"{m}-deposit", 250_000 + 125_050 * i,
                   f"Opening deposit: {name}") for i, (m, name) in enumerate(MEMBERS)]
    fees = [_t("demo-fee-m-0002", "m-0002-deposit", "bank-fee-income", 1_500,
               "Account fee, November")]
    hold = [_t("demo-hold-m-0001", "m-0001-deposit", "bank-cash", 40_000,
               "Card authorisation: Lancaster Wholesale", TransferKind.PENDING, timeout=86_400)]
    return [capital, deposits, fees, hold]


def _approve_once(uow: UnitOfWork, clock: Clock, n: int, approval_id: str) -> None:
    try:
        approve(uow, clock, SEEDER_APPROVER, f"demo-approve-{n}", approval_id,
                "demo data: council pool capital")
    except FailedPrecondition as error:  # approved by an earlier run of the demo
        if error.reason != "APPROVAL_ALREADY_DECIDED":
            raise


def seed(uow: UnitOfWork, clock: Clock, say: Callable[[str], None] = print) -> int:
    """Seed the demo region; returns the number of transfers applied or already present."""
    accounts = _accounts()
    create_accounts(uow, clock, SEEDER, "demo-accounts", accounts)
    say(f"  opened {len(accounts)} accounts (bank, 3 councils, {len(MEMBERS)} members)")
    count = 0
    for n, batch in enumerate(_transfers(), start=1):
        result = create_transfers(uow, clock, SEEDER, f"demo-transfers-{n}", batch)
        if result.approval_id:
            say(f"  batch {n} needs a second approver: approvals/{result.approval_id}")
            _approve_once(uow, clock, n, result.approval_id)
            view = get_approval(uow, clock, result.approval_id)
            assert view.result is not None
            result = view.result
            say(f"  approved by {SEEDER_APPROVER.subject}")
        failed = [i for i in result.items if i.error is not None]
        if failed:
            raise RuntimeError(f"demo batch {n} failed: {failed[0].error!r}")
        count += len(batch)
        say(f"  posted batch {n}/4 ({len(batch)} transfers)")
    return count
