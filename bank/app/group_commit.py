"""Group commit: concurrent CreateTransfers requests share one database transaction.

Every write takes the ledger head lock, so writers are serialised and one transfer per commit
is bounded by the commit's round trips and fsync. A `GroupCommitter` owns one writer thread per
server process; RPC threads hand it their request and wait. Whatever has queued up while the
previous group was committing becomes the next group (no artificial delay, so an idle server
answers at once), and `create_transfers_group` applies the group as one batch:

    lock head -> look up every request id at once -> one preload of every account and entry
    -> apply each request's transfers in arrival order to one in-memory working copy
    -> per request: its own result, its own audit leaf, its own stored outcome
    -> bulk insert entries, postings, audit leaves and requests -> save head -> one commit

The result is the same as running the requests one after another in arrival order (the same
engine, the same working copy), and each request keeps its own idempotency: a replay of a
stored request id gets the stored outcome, and a request id that arrives twice within one group
runs once and the second copy replays the first. A business failure of one transfer is that
transfer's result and touches nothing else. If the group fails for a reason that is not the
database's (a bug, an invariant), every request is run again on its own, so only the culprit
fails; a storage failure (database unavailable, deadline, conflict after retries) is reported
to every request of the group, and each may be retried with its request id.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial

from bank.app.accounts import BatchResult
from bank.app.ports import Clock, Head, StoredRequest, UnitOfWork
from bank.app.transfers import (
    approval_gate,
    batch_result,
    create_transfers,
    hold_for_approval,
    preload,
    transfers_command,
)
from bank.app.unit import (
    Command,
    Context,
    audit_leaf,
    batch_outcome_sha256,
    outcome_of,
    replay,
    with_retries,
)
from bank.domain.approvals import DEFAULT_RULES, ApprovalRule
from bank.domain.entries import JournalEntry, TransferSpec, validate_specs
from bank.domain.errors import DeadlineExceeded, InvariantViolation, LedgerError, Unavailable
from bank.domain.identity import Principal
from bank.domain.ledger import BatchPosting

log = logging.getLogger(__name__)

GROUP_REQUESTS_MAX = 512
GROUP_TRANSFERS_MAX = 8_000  # a group closes once it holds this many transfers
GROUP_TIMEOUT_MAX_S = 60.0

Outcome = BatchResult | BaseException


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """One CreateTransfers call, validated. `deadline` is a `time.monotonic()` reading after
    which the caller has given up (None: no deadline). `specs` must not change once the request
    is made: its command and fingerprint are computed once and kept."""

    principal: Principal
    request_id: str
    specs: list[TransferSpec]
    deadline: float | None = None
    _command: Command | None = field(default=None, init=False, compare=False, repr=False)
    _fingerprint: str = field(default="", init=False, compare=False, repr=False)

    def command(self) -> Command:
        if self._command is None:
            object.__setattr__(self, "_command",
                               transfers_command(self.principal, self.request_id, self.specs))
        assert self._command is not None
        return self._command

    def fingerprint(self) -> str:
        """The command's fingerprint, computed once (`GroupCommitter.submit` has the caller's
        thread compute it, and every transfer's, so the writer does not)."""
        if not self._fingerprint:
            object.__setattr__(self, "_fingerprint", self.command().fingerprint())
        return self._fingerprint

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


def _deadline_passed() -> DeadlineExceeded:
    return DeadlineExceeded("DEADLINE_EXCEEDED", "the deadline passed while the request waited "
                            "for its turn to commit; nothing was changed")


def create_transfers_group(uow: UnitOfWork, clock: Clock, requests: list[TransferRequest],
                           rules: tuple[ApprovalRule, ...] = DEFAULT_RULES) -> list[Outcome]:
    """Apply many CreateTransfers requests in one transaction: one outcome per request, in
    order (a `BatchResult`, or the error that request alone raises: a conflicting replay,
    a stored failure, a passed deadline).

    Raises `InvalidArgument` if a request is malformed (nothing is applied), and what the
    storage raises for the group as a whole (`Unavailable`, `DeadlineExceeded`, `Aborted`
    after `RETRIES_MAX` conflicts); nothing of the group is then committed.
    """
    for request in requests:
        validate_specs(request.specs)
    return _create_validated(uow, clock, requests, rules)


def _create_validated(uow: UnitOfWork, clock: Clock, requests: list[TransferRequest],
                      rules: tuple[ApprovalRule, ...]) -> list[Outcome]:
    """`create_transfers_group` for requests already checked by `validate_specs` (the
    committer checks each one in `submit`, on its caller's thread)."""
    outcomes: list[Outcome | None] = [None] * len(requests)
    waiting = list(range(len(requests)))
    while waiting:
        group = [requests[i] for i in waiting]
        try:
            done = with_retries("CreateTransfers", f"{group[0].request_id} (+{len(group) - 1} "
                                "grouped)", partial(_group_once, uow, clock, group, rules))
        except _LateRequests as late:  # rolled back: run the others again without them
            for j in late.positions:
                outcomes[waiting[j]] = _deadline_passed()
            waiting = [i for j, i in enumerate(waiting) if j not in late.positions]
            continue
        for i, outcome in zip(waiting, done, strict=True):
            outcomes[i] = outcome
        break
    return [o for o in outcomes if o is not None]


class _LateRequests(Exception):
    """Requests of the group whose deadline passed before it could commit (by position)."""

    def __init__(self, positions: set[int]) -> None:
        super().__init__(f"{len(positions)} requests missed their deadline")
        self.positions = positions


def _group_timeout(requests: list[TransferRequest]) -> float | None:
    left = [r.remaining() for r in requests]
    if any(x is None for x in left):
        return None
    return min(GROUP_TIMEOUT_MAX_S, max(x for x in left if x is not None))


def _group_once(uow: UnitOfWork, clock: Clock, requests: list[TransferRequest],
                rules: tuple[ApprovalRule, ...]) -> list[Outcome]:
    outcomes: list[Outcome | None] = [None] * len(requests)
    live = []
    for i, request in enumerate(requests):
        left = request.remaining()
        if left is not None and left <= 0:
            outcomes[i] = _deadline_passed()  # the caller has gone; do not commit behind it
        else:
            live.append(i)
    if not live:
        return [o for o in outcomes if o is not None]
    commands = {i: requests[i].command() for i in live}
    fingerprints = {i: requests[i].fingerprint() for i in live}
    with uow.write(_group_timeout([requests[i] for i in live])) as tx:
        head = tx.lock_head()
        stored = tx.find_requests([requests[i].request_id for i in live])
        fresh: dict[str, int] = {}  # request id -> the request of this group that runs it
        repeats: list[int] = []
        for i in live:
            request_id = requests[i].request_id
            if request_id in stored:
                outcomes[i] = _replayed(stored[request_id], commands[i], fingerprints[i])
            elif request_id in fresh:
                repeats.append(i)
            else:
                fresh[request_id] = i
        engine = BatchPosting(
            preload(tx, [s for i in fresh.values() for s in requests[i].specs]),
            next_seq=head.next_seq, last_recorded_ns=head.last_recorded_ns,
            now_ns=clock.now_ns(), business_date=clock.business_date())
        saved: dict[str, StoredRequest] = {}
        leaves = []
        for i in fresh.values():
            request, command = requests[i], commands[i]
            now_ns = max(clock.now_ns(), head.last_recorded_ns + 1)
            ctx = Context(tx, head, now_ns, command)
            gate = approval_gate(rules, request.principal, _entries_in(engine), request.specs)
            if gate is not None:
                result = hold_for_approval(ctx, request.specs, gate)
            else:
                start = engine.next_seq
                engine.begin_command(request.request_id, now_ns)
                result = batch_result(engine.apply_all(request.specs))
                ctx.effects.extend(["entry", e.seq, e.digest()]
                                   for e in engine.recorded_from(start))
                head = Head(engine.next_seq, max(head.last_recorded_ns,
                                                 engine.last_recorded_ns), head.audit_size)
            outcome_json = outcome_of(result, None)
            leaf, head = audit_leaf(head, now_ns, command, fingerprints[i], outcome_json,
                                    ctx.effects, batch_outcome_sha256(outcome_json))
            leaves.append(leaf)
            saved[request.request_id] = StoredRequest(request.request_id, command.method,
                                                      fingerprints[i], outcome_json, now_ns)
            outcomes[i] = result
        for i in repeats:
            outcomes[i] = _replayed(saved[requests[i].request_id], commands[i], fingerprints[i])
        # As for a command on its own: a caller that has given up is not committed behind its
        # back. (A commit can still land in the instant after this check: DEADLINE_EXCEEDED
        # means "outcome unknown, retry with the same request_id".)
        late = {i for i in fresh.values() if (left := requests[i].remaining()) is not None
                and left <= 0}
        if late:
            raise _LateRequests(late)
        tx.insert_entries(engine.new_entries)
        with tx.write_behind():
            tx.save_account_totals(engine.touched_accounts)
            tx.append_audit(leaves)
            tx.save_requests(list(saved.values()))
            tx.save_head(head)
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


def _entries_in(engine: BatchPosting) -> Callable[[list[str]], dict[str, JournalEntry]]:
    def entries_of(transfer_ids: list[str]) -> dict[str, JournalEntry]:
        found = {t: engine.entry(t) for t in transfer_ids}
        return {t: e for t, e in found.items() if e is not None}
    return entries_of


def _replayed(stored: StoredRequest, command: Command, fingerprint: str) -> Outcome:
    try:
        return replay(stored, command, fingerprint, BatchResult.from_json)
    except LedgerError as error:
        return error


@dataclass(slots=True)
class _Waiting:
    request: TransferRequest
    future: Future[Outcome] = field(default_factory=Future)


_STOP = object()


class GroupCommitter:
    """One writer thread that commits queued CreateTransfers requests in groups.

    `submit` blocks the calling (RPC) thread until its request's group has committed and
    returns its result or raises its error. `observe(size)` is told each group's size.
    """

    def __init__(self, uow: UnitOfWork, clock: Clock,
                 rules: tuple[ApprovalRule, ...] = DEFAULT_RULES,
                 observe: Callable[[int, int], None] | None = None) -> None:
        self.uow = uow
        self.clock = clock
        self.rules = rules
        self.observe = observe
        self._queue: queue.SimpleQueue[_Waiting | object] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def submit(self, request: TransferRequest) -> BatchResult:
        """Queue `request` for the next group and wait for its outcome.

        Raises `Unavailable` once the committer is stopping, and `DeadlineExceeded` if the
        deadline passes while waiting (the outcome is then unknown: retry with the same
        request id to learn it).
        """
        validate_specs(request.specs)
        request.fingerprint()  # here, on the caller's thread, rather than in the writer
        if self._closed.is_set():
            raise Unavailable("SHUTTING_DOWN", "the server is shutting down; retry with the "
                              "same request_id")
        waiting = _Waiting(request)
        self._queue.put(waiting)
        left = request.remaining()
        try:
            # A little grace past the deadline: the group may be committing right now.
            outcome = waiting.future.result(None if left is None else max(left, 0) + 1.0)
        except TimeoutError:
            raise DeadlineExceeded("DEADLINE_EXCEEDED", "the deadline passed while the request "
                                   "was committing; retry with the same request_id to learn "
                                   "its outcome") from None
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def close(self, timeout_s: float = 10.0) -> None:
        """Commit what is queued, then stop the writer thread."""
        self._closed.set()
        self._queue.put(_STOP)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                break
            assert isinstance(item, _Waiting)
            group = [item]
            transfers = len(item.request.specs)
            while len(group) < GROUP_REQUESTS_MAX and transfers < GROUP_TRANSFERS_MAX:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                assert isinstance(item, _Waiting)
                group.append(item)
                transfers += len(item.request.specs)
            self._commit(group, transfers)
        while True:  # anything that raced with close(): refuse it rather than leave it hanging
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Waiting):
                item.future.set_result(Unavailable("SHUTTING_DOWN", "the server is shutting "
                                                   "down; retry with the same request_id"))

    def _commit(self, group: list[_Waiting], transfers: int) -> None:
        requests = [w.request for w in group]
        outcomes: list[Outcome]
        try:  # every request was validated by `submit`
            outcomes = _create_validated(self.uow, self.clock, requests, self.rules)
        except InvariantViolation:
            log.exception("a group of %d requests broke an invariant; running them one by one",
                          len(group))
            outcomes = [self._alone(r) for r in requests]
        except LedgerError as error:  # the storage failed the group as a whole
            record = error.to_record()
            outcomes = [LedgerError.from_record(record) for _ in requests]
        except Exception:
            log.exception("a group of %d requests failed; running them one by one", len(group))
            outcomes = [self._alone(r) for r in requests]
        if self.observe is not None:
            self.observe(len(group), transfers)
        for waiting, outcome in zip(group, outcomes, strict=True):
            waiting.future.set_result(outcome)

    def _alone(self, request: TransferRequest) -> Outcome:
        left = request.remaining()
        if left is not None and left <= 0:
            return _deadline_passed()
        try:
            return create_transfers(self.uow, self.clock, request.principal, request.request_id,
                                    request.specs, left, self.rules)
        except Exception as error:  # this request's own failure, reported to its caller
            return error
