"""Group commit (issue 7): many CreateTransfers requests in one transaction, on both databases.

The reference is running the same requests one after another: a group must give every
request the result it would have had, leave the same balances and entries, write one audit
leaf and one stored outcome per request, and keep each request's failures to itself.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from bank.adapters.clock import FixedClock
from bank.adapters.sql import SqlUnitOfWork
from bank.app import group_commit
from bank.app.accounts import AccountSpec, BatchResult, create_accounts
from bank.app.audit import verify_audit
from bank.app.group_commit import GroupCommitter, TransferRequest, create_transfers_group
from bank.app.queries import get_account
from bank.app.transfers import create_transfers
from bank.domain.accounts import AccountType, OwnerKind, Side
from bank.domain.entries import PostingLine, TransferKind, TransferSpec
from bank.domain.errors import AlreadyExists, DeadlineExceeded, InvariantViolation, LedgerError
from bank.domain.identity import Principal, Role
from bank.domain.ledger import BatchPosting
from bank.domain.limits import AMOUNT_MINOR_MAX

TELLER = Principal("alice-teller", Role.TELLER, "branch:preston")
MEMBERS = [f"m{i}" for i in range(6)]


def _open(uow: SqlUnitOfWork, clock: FixedClock) -> None:
    specs = [AccountSpec("cash", "GBP", AccountType.ASSET, "1000", OwnerKind.BANK, "bank")] + [
        AccountSpec(m, "GBP", AccountType.LIABILITY, "2000", OwnerKind.MEMBER, m,
                    debits_must_not_exceed_credits=True) for m in MEMBERS]
    create_accounts(uow, clock, TELLER, "open", specs)
    fund = [TransferSpec(f"fund-{m}", TransferKind.POSTED, postings=(
        PostingLine("cash", Side.DEBIT, 10_000, "GBP"),
        PostingLine(m, Side.CREDIT, 10_000, "GBP"))) for m in MEMBERS]
    create_transfers(uow, clock, TELLER, "fund", fund)


def _move(transfer_id: str, src: str, dst: str, pence: int, linked: bool = False,
          kind: TransferKind = TransferKind.POSTED) -> TransferSpec:
    return TransferSpec(transfer_id, kind, linked=linked, postings=(
        PostingLine(src, Side.DEBIT, pence, "GBP"), PostingLine(dst, Side.CREDIT, pence, "GBP")))


def _random_requests(rng: random.Random, n: int) -> list[TransferRequest]:
    """Transfers that sometimes overdraw, reuse transfer ids, form linked pairs, or repeat a
    request id (same content, or different content)."""
    requests: list[TransferRequest] = []
    for i in range(n):
        roll = rng.random()
        if requests and roll < 0.1:  # the same request again
            requests.append(rng.choice(requests))
            continue
        specs = []
        for j in range(rng.randint(1, 3)):
            src, dst = rng.sample(MEMBERS, 2)
            tid = f"t{rng.randint(0, n)}" if rng.random() < 0.1 else f"t{i}-{j}"
            specs.append(_move(tid, src, dst, rng.randint(1, 6_000)))
        if len(specs) > 1 and rng.random() < 0.3:
            specs[0] = _move(specs[0].transfer_id, *[p.account_id for p in specs[0].postings],
                             specs[0].postings[0].amount, linked=True)
        request_id = f"r{rng.randint(0, n)}" if requests and roll < 0.15 else f"r{i}"
        requests.append(TransferRequest(TELLER, request_id, specs))
    return requests


def _outcome_view(outcome: BatchResult | BaseException) -> object:
    if isinstance(outcome, LedgerError):
        return ("error", outcome.reason)
    assert isinstance(outcome, BatchResult), outcome
    return [(i.entity_id, i.error.reason if i.error else None, i.position)
            for i in outcome.items]


def _sequential(uow: SqlUnitOfWork, clock: FixedClock,
                requests: list[TransferRequest]) -> list[object]:
    views = []
    for r in requests:
        try:
            views.append(_outcome_view(
                create_transfers(uow, clock, r.principal, r.request_id, r.specs)))
        except LedgerError as error:
            views.append(_outcome_view(error))
    return views


def _state(uow: SqlUnitOfWork) -> tuple[object, ...]:
    with uow.read() as r:
        head = r.head()
        accounts = [(a.account_id, a.totals) for a in r.iter_accounts()]
        entries = [(e.seq, e.transfer_id, e.request_id, e.postings) for e in r.iter_entries()]
    return head.next_seq, head.audit_size, accounts, [
        (seq, tid, rid, tuple((p.account_id, p.side, p.amount, p.totals_after) for p in ps))
        for seq, tid, rid, ps in entries]


def _fresh(engine_url: str) -> SqlUnitOfWork:
    from bank.adapters.migrate import upgrade
    from bank.adapters.sql import make_engine
    engine = make_engine(engine_url)
    upgrade(engine)
    return SqlUnitOfWork(engine)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_group_equals_the_same_requests_run_one_by_one(
        database_url: str, seed: int, request: pytest.FixtureRequest) -> None:
    rng = random.Random(seed)
    requests = _random_requests(rng, 60)
    if database_url.startswith("sqlite"):
        other_url = database_url.replace(".db", f"-seq{seed}.db")
    else:
        other_url = request.getfixturevalue("pg_databases").create()
    grouped, sequential = _fresh(database_url), _fresh(other_url)
    clock_g, clock_s = FixedClock(), FixedClock()
    _open(grouped, clock_g)
    _open(sequential, clock_s)

    outcomes = create_transfers_group(grouped, clock_g, requests)
    expected = _sequential(sequential, clock_s, requests)

    assert [_outcome_view(o) for o in outcomes] == expected
    assert any(v != ("error", "REQUEST_ID_REUSED") and isinstance(v, list)
               and any(reason == "EXCEEDS_CREDITS" for _, reason, _ in v) for v in expected), \
        "the random requests should include an overdraft"
    assert _state(grouped) == _state(sequential)
    report = verify_audit(grouped, [])
    assert report.problems == []
    for uow in (grouped, sequential):
        uow.engine.dispose()


def test_a_request_id_twice_in_one_group_runs_once(uow: SqlUnitOfWork,
                                                   clock: FixedClock) -> None:
    _open(uow, clock)
    same = TransferRequest(TELLER, "dup", [_move("d1", "m0", "m1", 500)])
    different = TransferRequest(TELLER, "dup", [_move("d2", "m0", "m1", 700)])
    first, again, clash = create_transfers_group(uow, clock, [same, same, different])
    assert isinstance(first, BatchResult) and isinstance(again, BatchResult)
    assert first == again
    assert isinstance(clash, AlreadyExists) and clash.reason == "REQUEST_ID_REUSED"
    assert get_account(uow, "m1").totals.credits_posted == 10_500
    # Later, alone or in a group, the stored outcome is replayed exactly.
    (later,) = create_transfers_group(uow, clock, [same])
    assert later == first
    assert create_transfers(uow, clock, TELLER, "dup", same.specs) == first
    with uow.read() as r:
        assert r.head().audit_size == 3  # open, fund, dup once: replays add no leaf


def test_failures_stay_with_their_request(uow: SqlUnitOfWork, clock: FixedClock) -> None:
    _open(uow, clock)
    overdraw = TransferRequest(TELLER, "big", [_move("o1", "m0", "m1", 20_000)])
    fine = TransferRequest(TELLER, "ok", [_move("f1", "m2", "m3", 100)])
    linked = TransferRequest(TELLER, "linked", [_move("l1", "m4", "m5", 100, linked=True),
                                                 _move("l2", "m4", "m5", 99_999)])
    a, b, c = create_transfers_group(uow, clock, [overdraw, fine, linked])
    assert isinstance(a, BatchResult) and a.items[0].error is not None
    assert a.items[0].error.reason == "EXCEEDS_CREDITS"
    assert isinstance(b, BatchResult) and b.items[0].error is None
    assert isinstance(c, BatchResult)
    assert [i.error.reason if i.error else None for i in c.items] == [
        "LINKED_TRANSFER_FAILED", "EXCEEDS_CREDITS"]
    assert get_account(uow, "m0").totals.debits_posted == 0
    assert get_account(uow, "m4").totals.debits_posted == 0
    assert get_account(uow, "m3").totals.credits_posted == 10_100


def test_a_large_transfer_in_a_group_waits_for_approval_alone(uow: SqlUnitOfWork,
                                                              clock: FixedClock) -> None:
    _open(uow, clock)
    huge = TransferRequest(TELLER, "huge", [_move("h1", "cash", "m1", AMOUNT_MINOR_MAX // 2)])
    small = TransferRequest(TELLER, "small", [_move("s1", "m2", "m3", 100)])
    held, done = create_transfers_group(uow, clock, [huge, small])
    assert isinstance(held, BatchResult) and held.approval_id
    assert held.items[0].error is not None
    assert held.items[0].error.reason == "APPROVAL_REQUIRED"
    assert isinstance(done, BatchResult) and done.items[0].error is None
    assert get_account(uow, "m1").totals.credits_posted == 10_000
    assert verify_audit(uow, []).problems == []


def test_a_request_whose_deadline_passed_is_not_committed(uow: SqlUnitOfWork,
                                                          clock: FixedClock) -> None:
    _open(uow, clock)
    late = TransferRequest(TELLER, "late", [_move("x1", "m0", "m1", 100)],
                           deadline=time.monotonic() - 0.01)
    on_time = TransferRequest(TELLER, "on-time", [_move("x2", "m0", "m1", 100)],
                              deadline=time.monotonic() + 30)
    gone, done = create_transfers_group(uow, clock, [late, on_time])
    assert isinstance(gone, DeadlineExceeded)
    assert isinstance(done, BatchResult) and done.items[0].error is None
    assert get_account(uow, "m1").totals.credits_posted == 10_100
    with uow.read() as r:
        assert r.find_request("late") is None


def test_committer_coalesces_concurrent_requests(uow: SqlUnitOfWork, clock: FixedClock) -> None:
    _open(uow, clock)
    groups: list[int] = []
    committer = GroupCommitter(uow, clock, observe=lambda n, _t: groups.append(n))
    results: dict[str, BatchResult] = {}
    errors: list[BaseException] = []

    def client(k: int) -> None:
        for i in range(25):
            src, dst = MEMBERS[k % 6], MEMBERS[(k + 1 + i) % 6 or 1]
            if src == dst:
                dst = "cash" if src != "cash" else "m0"
            rid = f"c{k}-{i}"
            try:
                results[rid] = committer.submit(TransferRequest(
                    TELLER, rid, [_move(f"tx-{rid}", src, dst, 1)],
                    deadline=time.monotonic() + 30))
            except BaseException as error:
                errors.append(error)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    committer.close()
    assert errors == []
    assert len(results) == 16 * 25
    assert all(r.items[0].error is None for r in results.values())
    assert sum(groups) == 16 * 25
    assert max(groups) > 1, "concurrent requests should have shared a commit"
    with uow.read() as r:
        totals = {a.account_id: a.totals for a in r.iter_accounts()}
        positions = sorted(r.position for r in results.values()
                           for r in [r.items[0]])
    assert positions == sorted(set(positions)), "every transfer has its own position"
    assert sum(t.credits_posted - t.debits_posted for t in totals.values()) == 0
    assert verify_audit(uow, []).problems == []


def test_a_bug_in_one_request_fails_it_alone(uow: SqlUnitOfWork, clock: FixedClock,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _open(uow, clock)
    original = BatchPosting.apply_all

    def apply_all(self: BatchPosting, specs: list[TransferSpec]) -> object:
        if any(s.transfer_id == "poison" for s in specs):
            raise InvariantViolation("simulated bug")
        return original(self, specs)

    monkeypatch.setattr(BatchPosting, "apply_all", apply_all)
    committer = GroupCommitter(uow, clock)
    requests = [TransferRequest(TELLER, "p", [_move("poison", "m0", "m1", 1)]),
                TransferRequest(TELLER, "q", [_move("healthy", "m0", "m1", 1)])]
    outcomes = group_commit.create_transfers_group  # the group as a whole fails ...
    with pytest.raises(InvariantViolation):
        outcomes(uow, clock, requests)
    # ... so the committer runs each request on its own and only the culprit fails.
    box: dict[str, object] = {}
    waiting = [threading.Thread(target=lambda r=r: box.__setitem__(
        r.request_id, _try(committer, r))) for r in requests]
    for t in waiting:
        t.start()
    for t in waiting:
        t.join(30)
    committer.close()
    assert isinstance(box["p"], InvariantViolation)
    assert isinstance(box["q"], BatchResult) and box["q"].items[0].error is None
    assert get_account(uow, "m1").totals.credits_posted == 10_001


def _try(committer: GroupCommitter, request: TransferRequest) -> object:
    try:
        return committer.submit(request)
    except BaseException as error:
        return error


def test_a_request_whose_deadline_passes_while_waiting_for_the_lock_is_rolled_back(
        uow: SqlUnitOfWork, clock: FixedClock) -> None:
    """The group got the lock only after one caller had given up: that caller's request is
    left out (DEADLINE_EXCEEDED, nothing stored), the others commit."""
    _open(uow, clock)
    with uow.read() as r:
        before = r.head()
    short = TransferRequest(TELLER, "short", [_move("y1", "m0", "m1", 100)],
                            deadline=time.monotonic() + 0.3)
    long = TransferRequest(TELLER, "long", [_move("y2", "m2", "m3", 100)],
                           deadline=time.monotonic() + 30)
    holder = threading.Event()
    released = threading.Event()

    def hold_the_ledger() -> None:
        with uow.write() as tx:
            tx.lock_head()
            holder.set()
            time.sleep(0.6)
        released.set()

    thread = threading.Thread(target=hold_the_ledger)
    thread.start()
    holder.wait(5)
    late, done = create_transfers_group(uow, clock, [short, long])
    thread.join(5)
    assert released.is_set()
    assert isinstance(late, DeadlineExceeded)
    assert isinstance(done, BatchResult) and done.items[0].error is None
    assert get_account(uow, "m1").totals.credits_posted == 10_000
    assert get_account(uow, "m3").totals.credits_posted == 10_100
    with uow.read() as r:
        assert r.find_request("short") is None
        assert r.head().audit_size == before.audit_size + 1
