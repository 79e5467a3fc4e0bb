"""How pool events land on the ledger: the accounts of a pool and the entries of each event.

A pool keeps its own books inside the ledger (accounts owned by `pool/<pool_id>`), beside the
bank's. The pool's assets are held with the bank, so the bank owes the pool exactly what the
pool's cash, loan participations and accrued interest add up to (`pool:<id>:due`, a liability
of the bank); every event keeps `due == cash + loans + interest`.

    pool:<id>:cash          asset      1600  the pool's cash (never below zero)
    pool:<id>:loans         asset      1610  its share of loan principal
    pool:<id>:interest      asset      1620  its share of accrued interest
    pool:<id>:provisions    asset      1690  provisions against them (contra: credit balance)
    pool:<id>:fees          liability  2600  servicing fees charged and not yet paid
    pool:<id>:due           liability  2610  the bank's side: what it holds for the pool
    pool:<id>:income        income     4600  the open period's income, allocated at the close
    pool:<id>:recoveries    income     4610  releases and recoveries, back to who bore the loss
    pool:<id>:losses        expense    5600  the open period's losses, allocated at the close
    pool:<id>:cap:<p>:<c>   equity     3600  participant p's capital account in unit class c
                                             (owned by the participant: council:<area>, ...)
    bank:pool-interest      expense    5700  interest the bank passes to pools
    bank:pool-recoveries    expense    5710  recoveries the bank passes to pools
    bank:pool-losses-borne  income     4710  losses that pools bore instead of the bank
    bank:pool-servicing     income     4700  servicing fees the pools paid the bank

Entries (Dr / Cr; "settlement" is the participant's own account, e.g. its deposit):

    subscribe, capital call  Dr settlement / Cr due;  Dr cash / Cr capital
    redeem, distribute       Dr capital / Cr cash;    Dr due / Cr settlement  (one per holder)
    fund a loan              Dr loans / Cr cash
    principal repaid         Dr cash / Cr loans
    interest accrued         Dr interest / Cr income;  Dr bank:pool-interest / Cr due
    interest received        Dr cash / Cr interest
    provision / release      Dr losses / Cr provisions;  Dr provisions / Cr recoveries
    charge-off               Dr provisions (what they cover) + Dr losses (the rest)
                             / Cr loans + Cr interest;  Dr due / Cr bank:pool-losses-borne
    recovery                 Dr cash / Cr recoveries (up to the loss) + Cr income (beyond);
                             Dr bank:pool-recoveries / Cr due
    servicing fee paid       Dr fees / Cr cash;  Dr due / Cr bank:pool-servicing
    period close, per        income: Dr income / Cr capital;  fee: Dr capital / Cr fees;
      position and part      loss: Dr capital / Cr losses;  recovery: Dr recoveries / Cr capital

A commitment moves no money and posts nothing. Every entry carries the pool, the event number,
its kind, the period and (for corrections) the reference in its metadata.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bank.app.accounts import AccountSpec
from bank.domain.accounts import Account, AccountType, OwnerKind, Side
from bank.domain.entries import PostingLine, TransferKind, TransferSpec
from bank.domain.pools.terms import PoolTerms

BANK_POOL_INTEREST = "bank:pool-interest"
BANK_POOL_RECOVERIES = "bank:pool-recoveries"
BANK_POOL_LOSSES = "bank:pool-losses-borne"
BANK_POOL_SERVICING = "bank:pool-servicing"

# name -> (type, code, flag): flag "asset" = credits may not exceed debits (never negative),
# "liability" = debits may not exceed credits.
_POOL_ACCOUNTS: dict[str, tuple[AccountType, str, str]] = {
    "cash": (AccountType.ASSET, "1600", "asset"),
    "loans": (AccountType.ASSET, "1610", "asset"),
    "interest": (AccountType.ASSET, "1620", "asset"),
    "provisions": (AccountType.ASSET, "1690", "liability"),
    "fees": (AccountType.LIABILITY, "2600", "liability"),
    "due": (AccountType.LIABILITY, "2610", "liability"),
    "income": (AccountType.INCOME, "4600", ""),
    "recoveries": (AccountType.INCOME, "4610", ""),
    "losses": (AccountType.EXPENSE, "5600", ""),
}
_BANK_ACCOUNTS = ((BANK_POOL_INTEREST, AccountType.EXPENSE, "5700"),
                  (BANK_POOL_RECOVERIES, AccountType.EXPENSE, "5710"),
                  (BANK_POOL_LOSSES, AccountType.INCOME, "4710"),
                  (BANK_POOL_SERVICING, AccountType.INCOME, "4700"))
CAPITAL_CODE = "3600"


def pool_account(pool_id: str, name: str) -> str:
    return f"pool:{pool_id}:{name}"


def capital_account(pool_id: str, participant_id: str, class_id: str) -> str:
    return f"pool:{pool_id}:cap:{participant_id}:{class_id}"


def account_specs(terms: PoolTerms) -> list[AccountSpec]:
    """Every account a pool needs, opened when it is created: its own, a capital account per
    participant and class, and the bank's pass-through accounts (shared by all pools)."""
    currency, pool_id = terms.currency, terms.pool_id
    specs = [AccountSpec(pool_account(pool_id, name), currency, kind, code, OwnerKind.POOL,
                         pool_id, debits_must_not_exceed_credits=flag == "liability",
                         credits_must_not_exceed_debits=flag == "asset")
             for name, (kind, code, flag) in _POOL_ACCOUNTS.items()]
    specs[list(_POOL_ACCOUNTS).index("due")] = AccountSpec(
        pool_account(pool_id, "due"), currency, AccountType.LIABILITY, "2610", OwnerKind.BANK,
        "bank", debits_must_not_exceed_credits=True)
    for participant in terms.participants:
        owner_kind, owner_id = participant.owner
        specs += [AccountSpec(capital_account(pool_id, participant.participant_id, c.class_id),
                              currency, AccountType.EQUITY, CAPITAL_CODE, OwnerKind(owner_kind),
                              owner_id) for c in terms.unit_classes]
    specs += [AccountSpec(account_id, currency, kind, code, OwnerKind.BANK, "bank")
              for account_id, kind, code in _BANK_ACCOUNTS]
    return specs


def signed_balance(account: Account) -> int:
    """Balance on the account type's normal side (a contra account shows negative)."""
    return account.totals.balance(account.account_type.normal_side)


Lines = list[tuple[str, int]]  # (account, signed amount): positive debits, negative credits


def entry(transfer_id: str, currency: str, lines: Iterable[tuple[str, int]], description: str,
          metadata: dict[str, str]) -> TransferSpec | None:
    """One balanced entry from signed lines, netted per account; None if nothing moves."""
    net: dict[str, int] = {}
    for account_id, amount in lines:
        net[account_id] = net.get(account_id, 0) + amount
    postings = tuple(PostingLine(a, Side.DEBIT if n > 0 else Side.CREDIT, abs(n), currency)
                     for a, n in net.items() if n)
    if not postings:
        return None
    return TransferSpec(transfer_id, TransferKind.POSTED, postings, description=description,
                        metadata=tuple(sorted(metadata.items())))


class EntryBuilder:
    """Builds the entries of one pool event, numbered `pool:<id>:<event>[:n]`."""

    def __init__(self, terms: PoolTerms, seq: int, kind: str, period: int,
                 reference: str, loan_id: str = "") -> None:
        self.terms = terms
        self.seq = seq
        self.specs: list[TransferSpec] = []
        self.metadata = {"pool": terms.pool_id, "event": str(seq), "kind": kind,
                         "period": str(period)}
        if reference:
            self.metadata["reference"] = reference
        if loan_id:
            self.metadata["loan"] = loan_id

    def a(self, name: str) -> str:
        return pool_account(self.terms.pool_id, name)

    def cap(self, participant_id: str, class_id: str) -> str:
        return capital_account(self.terms.pool_id, participant_id, class_id)

    def settlement(self, participant_id: str) -> str:
        participant = self.terms.participant(participant_id)
        assert participant is not None, participant_id
        return participant.settlement_account_id

    def add(self, description: str, lines: Lines, **extra: str) -> None:
        transfer_id = f"pool:{self.terms.pool_id}:{self.seq}:{len(self.specs) + 1}"
        spec = entry(transfer_id, self.terms.currency, lines, description[:256],
                     {**self.metadata, **extra})
        if spec is not None:
            self.specs.append(spec)

    def money_in(self, participant_id: str, class_id: str, amount: int, what: str) -> None:
        self.add(f"{what}: {participant_id} {class_id}", [
            (self.settlement(participant_id), amount), (self.a("due"), -amount),
            (self.a("cash"), amount), (self.cap(participant_id, class_id), -amount)],
            participant=participant_id, unit_class=class_id)

    def money_out(self, participant_id: str, class_id: str, amount: int, what: str) -> None:
        self.add(f"{what}: {participant_id} {class_id}", [
            (self.cap(participant_id, class_id), amount), (self.a("cash"), -amount),
            (self.a("due"), amount), (self.settlement(participant_id), -amount)],
            participant=participant_id, unit_class=class_id)


def event_entries(terms: PoolTerms, seq: int, period: int, kind: str, args: dict[str, Any],
                  outcome: dict[str, Any], reference: str) -> list[TransferSpec]:
    """The entries of one event (see the module docstring); [] for a commitment."""
    b = EntryBuilder(terms, seq, kind, period, reference, args.get("loan", ""))
    amount = args.get("amount", 0)
    if kind == "commit":
        pass  # a promise to pay: no money moves until a capital call
    elif kind == "subscribe":
        b.money_in(args["participant"], args["class"], amount, "subscription")
    elif kind == "call":
        for participant, part, _units, _nav in outcome["parts"]:
            b.money_in(participant, args["class"], part, "capital call")
    elif kind in ("redeem", "settle"):
        b.money_out(args["participant"], args["class"], outcome["amount"], "redemption")
    elif kind == "distribute":
        for participant, part in outcome["parts"]:
            b.money_out(participant, args["class"], part, "distribution")
    elif kind == "pay_fee":
        b.add("servicing fee paid", [(b.a("fees"), amount), (b.a("cash"), -amount),
                                     (b.a("due"), amount), (BANK_POOL_SERVICING, -amount)])
    elif kind == "close":
        _close_entries(b, outcome)
    else:
        _loan_entries(b, kind, args, outcome)
    return b.specs


def _loan_entries(b: EntryBuilder, kind: str, args: dict[str, Any],
                  outcome: dict[str, Any]) -> None:
    if kind == "participation":
        for item, (used, _recovered) in zip(args["items"], outcome["items"], strict=True):
            b.add(f"participation in {item['loan']} ({item['entry']})",
                  participation_lines(b, item, used), loan=item["loan"],
                  loan_entry=item["entry"], split=item["split"])
        return
    loan = args["loan"]
    names = {"charge_off": "charge-off of", "recover": "recovery on",
             "accrue": "interest accrued on"}
    b.add(f"{names.get(kind, kind)} {loan}", _flow_lines(
        b, kind, args.get("amount", 0), args.get("principal", 0), args.get("interest", 0),
        outcome.get("from_provision", 0), outcome.get("applied", 0)))


# movement -> (debit, credit) among the pool's own accounts
_SIMPLE_FLOWS = {
    "fund": ("loans", "cash"), "buy_principal": ("loans", "cash"),
    "repay": ("cash", "loans"), "sell_principal": ("cash", "loans"),
    "receive": ("cash", "interest"), "sell_income": ("cash", "interest"),
    "reverse_receipt": ("interest", "cash"), "buy_income": ("interest", "cash"),
    "provide": ("losses", "provisions"), "release": ("provisions", "recoveries")}


def _flow_lines(b: EntryBuilder, kind: str, amount: int, principal: int = 0,
                interest: int = 0, covered: int = 0, applied: int = 0) -> Lines:
    if kind in _SIMPLE_FLOWS:
        debit, credit = _SIMPLE_FLOWS[kind]
        return [(b.a(debit), amount), (b.a(credit), -amount)]
    if kind == "accrue":
        return [(b.a("interest"), amount), (b.a("income"), -amount),
                (BANK_POOL_INTEREST, amount), (b.a("due"), -amount)]
    if kind == "reverse_accrual":
        return [(b.a("income"), amount), (b.a("interest"), -amount),
                (b.a("due"), amount), (BANK_POOL_INTEREST, -amount)]
    if kind == "charge_off":
        total = principal + interest
        return [(b.a("provisions"), covered), (b.a("losses"), total - covered),
                (b.a("loans"), -principal), (b.a("interest"), -interest),
                (b.a("due"), total), (BANK_POOL_LOSSES, -total)]
    if kind == "recover":
        return [(b.a("cash"), amount), (b.a("recoveries"), -applied),
                (b.a("income"), applied - amount), (BANK_POOL_RECOVERIES, amount),
                (b.a("due"), -amount)]
    raise AssertionError(f"no entries for pool event kind {kind!r}")


def participation_lines(b: EntryBuilder, item: dict[str, Any], used: int) -> Lines:
    """The pool's lines for its part of one booking of a loan (`bank.domain.pools
    .participation`): each flow as the event of the same name would post it, a write-off as
    one charge-off using `used` of the provision."""
    lines: Lines = []
    written = {"write_off_principal": 0, "write_off_income": 0}
    for movement, _bps, amount in item["flows"]:
        if movement in written:
            written[movement] += amount
        elif movement != "provision_used":
            lines += _flow_lines(b, movement, amount, applied=amount)
    if written["write_off_principal"] + written["write_off_income"]:
        lines += _flow_lines(b, "charge_off", 0, written["write_off_principal"],
                             written["write_off_income"], used)
    return lines


def _close_entries(b: EntryBuilder, outcome: dict[str, Any]) -> None:
    for s in outcome["statements"]:
        participant, class_id = s["participant"], s["class"]
        cap = b.cap(participant, class_id)
        tags = {"participant": participant, "unit_class": class_id}
        b.add(f"period income: {participant} {class_id}",
              [(b.a("income"), s["income"]), (cap, -s["income"])], part="income", **tags)
        b.add(f"servicing fee: {participant} {class_id}",
              [(cap, s["fees"]), (b.a("fees"), -s["fees"])], part="fee", **tags)
        b.add(f"loss: {participant} {class_id}",
              [(cap, s["losses"]), (b.a("losses"), -s["losses"])], part="loss", **tags)
        b.add(f"recovery: {participant} {class_id}",
              [(b.a("recoveries"), s["recoveries"]), (cap, -s["recoveries"])],
              part="recovery", **tags)
