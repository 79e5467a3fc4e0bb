"""The one path every mutation takes.

    authorisation (the edge, before this) -> validation -> idempotency -> the change
    -> the audit entry -> one commit

`run_command` opens a write transaction, takes the ledger head lock (which serialises writers,
so audit indices and entry positions are dense and in commit order), and looks the request id
up. A replay returns the stored outcome, a success or a business failure, exactly as first
given; the same id with different content is REQUEST_ID_REUSED. Otherwise the handler runs, its
outcome is stored with the request, one audit leaf is appended, and everything commits together.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from bank.app.ports import AuditLeaf, Clock, Head, LedgerWriter, StoredRequest, UnitOfWork
from bank.domain.approvals import APPROVAL_TTL_SECONDS, Approval
from bank.domain.audit import leaf_bytes, leaf_hash
from bank.domain.entries import canonical_hash
from bank.domain.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    LedgerError,
    NotFound,
    PermissionDenied,
)
from bank.domain.identity import Principal


class Result(Protocol):
    def to_json(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=Result)

log = logging.getLogger(__name__)
RETRIES_MAX = 5
# Called with the command's method on every retry (the gRPC edge counts them as a metric).
RETRY_OBSERVERS: list[Callable[[str], None]] = []
RETRY_BACKOFF_S = 0.005

# Failures that are the request's fault against current state: recorded, replayed as failures.
BUSINESS_FAILURES = (FailedPrecondition, NotFound, AlreadyExists, PermissionDenied)


@dataclass(frozen=True, slots=True)
class Command:
    """Envelope of one mutating request."""

    method: str  # e.g. "CreateTransfers"
    request_id: str
    principal: Principal
    body: dict[str, Any]  # canonical content, for the fingerprint and the audit leaf

    def fingerprint(self) -> str:
        """Method, content and who asked: another principal reusing a request id is refused
        (REQUEST_ID_REUSED) rather than shown someone else's result."""
        return canonical_hash({"method": self.method, "body": self.body,
                               "principal": self.principal.as_record()})


@dataclass(frozen=True, slots=True)
class Context:
    """What a handler gets: the transaction, the locked head, the clock reading, and the list
    of effects it records (rows it inserted or changed, by digest) for the audit leaf."""

    tx: LedgerWriter
    head: Head
    now_ns: int
    command: Command
    effects: list[list[Any]] = field(default_factory=list)


Handler = Callable[[Context], tuple[R, Head]]


def run_command(uow: UnitOfWork, clock: Clock, command: Command, handler: Handler[R],
                decode: Callable[[dict[str, Any]], R], timeout_s: float | None = None,
                record_refusals: bool = True) -> R:
    """Run `handler` once for `command.request_id`; replay the stored outcome afterwards.

    A concurrency conflict (`Aborted`: serialisation failure, deadlock) rolls the transaction
    back whole and is retried up to `RETRIES_MAX` times; that is safe because nothing of the
    attempt survives and the request id makes the retry idempotent.

    Raises the handler's business error (also on replay), `AlreadyExists` with reason
    REQUEST_ID_REUSED for a conflicting replay, or whatever the storage raises.

    With `record_refusals=False` (system commands whose request ids are derived, such as a
    close-of-business chunk), a business refusal rolls everything back and records nothing,
    so the same command can run again once its cause is mended.
    """
    deadline = time.monotonic() + timeout_s if timeout_s is not None else None
    return with_retries(command.method, command.request_id, lambda: _run_once(
        uow, clock, command, handler, decode, timeout_s, deadline, record_refusals))


T = TypeVar("T")


def with_retries(method: str, request_id: str, attempt: Callable[[], T]) -> T:
    """Run one whole-transaction `attempt`, again after a concurrency conflict (`Aborted`),
    at most `RETRIES_MAX` times with exponential backoff; the last conflict is raised."""
    for number in range(1, RETRIES_MAX + 1):
        try:
            return attempt()
        except Aborted:
            if number == RETRIES_MAX:
                raise
            log.warning("retrying %s %s after a concurrency conflict (attempt %d)",
                        method, request_id, number)
            for observer in RETRY_OBSERVERS:
                observer(method)
            time.sleep(RETRY_BACKOFF_S * 2**number)
    raise AssertionError("unreachable")


class _Undo(Exception):
    """A business refusal raised after the handler wrote: roll back, record it alone."""

    def __init__(self, failure: LedgerError) -> None:
        super().__init__(failure.reason)
        self.failure = failure


def _run_once(uow: UnitOfWork, clock: Clock, command: Command, handler: Handler[R],
              decode: Callable[[dict[str, Any]], R], timeout_s: float | None,
              deadline: float | None, record_refusals: bool = True) -> R:
    try:
        return _attempt(uow, clock, command, handler, decode, timeout_s, deadline,
                        record_refusals)
    except _Undo as undo:
        failure = undo.failure
    if not record_refusals:
        raise failure

    def refuse(ctx: Context) -> tuple[R, Head]:
        raise failure

    return _attempt(uow, clock, command, refuse, decode, timeout_s, deadline)


def _attempt(uow: UnitOfWork, clock: Clock, command: Command, handler: Handler[R],
             decode: Callable[[dict[str, Any]], R], timeout_s: float | None,
             deadline: float | None, record_refusals: bool = True) -> R:
    fingerprint = command.fingerprint()
    with uow.write(timeout_s) as tx:
        head = tx.lock_head()
        stored = tx.find_request(command.request_id)
        if stored is not None:
            return replay(stored, command, fingerprint, decode)
        now_ns = max(clock.now_ns(), head.last_recorded_ns + 1)
        result: R | None = None
        error: LedgerError | None = None
        ctx = Context(tx, head, now_ns, command)
        try:
            result, head = handler(ctx)
        except BUSINESS_FAILURES as failure:
            # Handlers plan before they write where they can; a refusal found after writing
            # (a pool refusing its part of a loan booking, say) undoes the whole transaction,
            # and the refusal alone is recorded in a new one.
            if ctx.effects:
                raise _Undo(failure) from None
            if not record_refusals:
                raise
            error = failure
        outcome_json = outcome_of(result, error)
        leaf, head = audit_leaf(head, now_ns, command, fingerprint, outcome_json, ctx.effects)
        with tx.write_behind():
            tx.append_audit([leaf])
            tx.save_request(StoredRequest(command.request_id, command.method, fingerprint,
                                          outcome_json, now_ns))
            tx.save_head(head)
        if deadline is not None and time.monotonic() > deadline:
            # The caller has given up: roll back rather than commit behind its back. (A commit
            # can still land in the instant after this check: DEADLINE_EXCEEDED means "outcome
            # unknown, retry with the same request_id".)
            raise DeadlineExceeded("DEADLINE_EXCEEDED", "the deadline passed before the change "
                                   "could commit; nothing was changed")
    if error is not None:
        try:
            raise error
        finally:
            # Break the cycle traceback -> this frame -> `error` -> traceback, so the frame and
            # what it holds are freed as soon as the caller is done with the error, not at
            # some later garbage collection.
            del error, ctx
    assert result is not None
    return result


def request_approval(ctx: Context, payload: dict[str, Any], reason: str) -> str:
    """Store the command as a pending approval (maker = this command's principal); returns its
    id. Nothing else of the command runs now."""
    payload_json = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    approval = Approval(
        approval_id=f"apr-{uuid.uuid4().hex[:24]}", operation=ctx.command.method,
        payload_json=payload_json, payload_sha256=canonical_hash(payload),
        maker=ctx.command.principal, maker_request_id=ctx.command.request_id,
        reason=reason[:256], created_ns=ctx.now_ns,
        expires_ns=ctx.now_ns + APPROVAL_TTL_SECONDS * 1_000_000_000)
    ctx.tx.insert_approval(approval)
    ctx.effects.append(["approval", approval.approval_id, approval.payload_sha256])
    return approval.approval_id


def record_denial(uow: UnitOfWork, clock: Clock, principal: Principal | None, method: str,
                  reason: str) -> None:
    """Append an audit leaf for a refused call (nothing else changes), in its own transaction."""
    who = principal.as_record() if principal else {"subject": "", "role": "", "scope": ""}
    with uow.write() as tx:
        head = tx.lock_head()
        now_ns = max(clock.now_ns(), head.last_recorded_ns + 1)
        record = {"index": head.audit_size, "time_ns": now_ns, "principal": who,
                  "method": method, "outcome": "denied", "reason": reason}
        data = leaf_bytes(record)
        tx.append_audit([AuditLeaf(head.audit_size, now_ns, data, leaf_hash(data))])
        tx.save_head(Head(head.next_seq, now_ns, head.audit_size + 1))


def outcome_of(result: Result | None, error: LedgerError | None) -> str:
    """The stored outcome of a command: its result, or its business failure, as JSON."""
    outcome = ({"result": result.to_json()} if result is not None
               else {"error": error.to_record() if error else None})
    return json.dumps(outcome, sort_keys=True, separators=(",", ":"))


def batch_outcome_sha256(outcome_json: str) -> str:
    """`canonical_hash` of a stored outcome whose keys are all strings (a `BatchResult`'s),
    from its JSON text: that text, made by `outcome_of`, is already the canonical form unless
    it holds an escaped character (`ensure_ascii` escapes what the canonical form keeps as
    UTF-8), so only then is it parsed and hashed again."""
    if "\\u" in outcome_json:
        return canonical_hash(json.loads(outcome_json))
    return hashlib.sha256(outcome_json.encode("utf-8")).hexdigest()


def audit_leaf(head: Head, now_ns: int, command: Command, fingerprint: str, outcome_json: str,
               effects: list[list[Any]], outcome_sha256: str | None = None
               ) -> tuple[AuditLeaf, Head]:
    """The audit leaf of a command at the next audit index, and the head after it.
    `outcome_sha256`, if given, is `canonical_hash(json.loads(outcome_json))`, known already."""
    record = {
        "index": head.audit_size,
        "time_ns": now_ns,
        "principal": command.principal.as_record(),
        "method": command.method,
        "request_id": command.request_id,
        "request_sha256": fingerprint,
        "outcome_sha256": (outcome_sha256 if outcome_sha256 is not None
                           else canonical_hash(json.loads(outcome_json))),
        "outcome": "error" if outcome_json.startswith('{"error"') else "ok",
        "effects": effects,
    }
    data = leaf_bytes(record)
    leaf = AuditLeaf(head.audit_size, now_ns, data, leaf_hash(data))
    return leaf, Head(head.next_seq, max(head.last_recorded_ns, now_ns), head.audit_size + 1)


def replay(stored: StoredRequest, command: Command, fingerprint: str,
           decode: Callable[[dict[str, Any]], R]) -> R:
    """The stored outcome of an earlier run of this request (raised, if it was a failure)."""
    if stored.method != command.method or stored.fingerprint != fingerprint:
        raise AlreadyExists(
            "REQUEST_ID_REUSED",
            f"request_id {command.request_id!r} was already used for a different request",
            metadata={"request_id": command.request_id, "field": "request_id"})
    outcome = json.loads(stored.outcome_json)
    if outcome.get("error") is not None:
        raise LedgerError.from_record(outcome["error"])
    return decode(outcome["result"])
