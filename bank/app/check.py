"""The periodic ledger self-check, runnable against a live database (`bank check`).

It recomputes every account's totals from its postings (by effect and side), compares them
with the stored running totals and with each posting's recorded totals-after, checks that the
trial balance is zero per currency, that no balance limit is breached, and that change-feed
positions are dense. Problems are reported as data, all of them, not just the first.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from bank.app.ports import UnitOfWork
from bank.domain.accounts import Side, Totals
from bank.domain.entries import Effect

PROBLEMS_LISTED = 20  # entries out of time order named at most
PROGRESS_EVERY = 100_000


@dataclass
class CheckReport:
    accounts: int = 0
    postings: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _add(totals: list[int], side: Side, amount: int, effect: Effect) -> None:
    column = (0 if side is Side.DEBIT else 1) + (0 if effect is Effect.POST else 2)
    totals[column] += -amount if effect is Effect.RELEASE else amount


def check_ledger(uow: UnitOfWork, progress: Callable[[int], None] | None = None) -> CheckReport:
    report = CheckReport()
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    with uow.read() as r:
        head = r.head()
        for posting in r.iter_postings():
            running = sums[posting.account_id]
            _add(running, posting.side, posting.amount, posting.effect)
            if Totals(*running) != posting.totals_after:
                report.problems.append(
                    f"posting {posting.entry_seq}/{posting.index} on {posting.account_id}: "
                    f"recorded totals-after {posting.totals_after} but postings sum to "
                    f"{Totals(*running)}")
            report.postings += 1
            if progress and report.postings % PROGRESS_EVERY == 0:
                progress(report.postings)
        net: dict[str, int] = defaultdict(int)
        for account in r.iter_accounts():
            report.accounts += 1
            expected = Totals(*sums.get(account.account_id, [0, 0, 0, 0]))
            if account.totals != expected:
                report.problems.append(f"account {account.account_id}: stored totals "
                                       f"{account.totals} but postings sum to {expected}")
            breach = account.limit_breached(account.totals)
            if breach:
                report.problems.append(f"account {account.account_id}: {breach}")
            net[account.currency] += account.totals.debits_posted - account.totals.credits_posted
        report.problems += [f"trial balance off by {n} minor units in {c}"
                            for c, n in sorted(net.items()) if n]
        report.problems += [f"entry {seq} is not recorded after the entry before it"
                            for seq in r.entries_out_of_time_order(PROBLEMS_LISTED)]
        last = r.entries_after(head.next_seq - 2, 2) if head.next_seq > 1 else []
        if head.next_seq > 1 and (not last or last[-1].seq != head.next_seq - 1):
            report.problems.append(f"the ledger head says {head.next_seq - 1} entries but the "
                                   "last entry has another position")
    return report
