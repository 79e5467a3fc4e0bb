"""Journal entries (transfers) and their postings.

An entry is immutable once recorded. Its postings each have a side, a positive amount and an
*effect* on the account's totals:

    POST     adds to posted debits/credits          (posted entries, reversals, posting a hold)
    RESERVE  adds to pending debits/credits         (a pending entry: a hold)
    RELEASE  takes a hold's amount off pending      (posting, voiding or expiring a hold)

Within one entry, the postings of each effect balance per currency. So an account's totals are
always the sum of its postings by effect and side, and the trial balance is zero per currency.
Lifecycle state (a hold posted, voided or expired; an entry reversed) is never written back onto
the entry: it is derived from the later entry that references it.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from bank.domain.accounts import Side, Totals
from bank.domain.errors import ViolationCollector
from bank.domain.limits import (
    AMOUNT_MINOR_MAX,
    POSTINGS_PER_ENTRY_MAX,
    POSTINGS_PER_ENTRY_MIN,
    TRANSFERS_PER_BATCH_MAX,
)


class TransferKind(enum.Enum):
    POSTED = "posted"  # moves posted totals at once
    PENDING = "pending"  # a hold: reserves funds, moves pending totals only
    POST_PENDING = "post_pending"  # posts a hold in full or for less, releasing all of it
    VOID_PENDING = "void_pending"  # releases a hold without posting it
    EXPIRE_PENDING = "expire_pending"  # server-made: releases a hold past its timeout
    REVERSAL = "reversal"  # posts the mirror image of an earlier posted entry


class Effect(enum.Enum):
    POST = "post"
    RESERVE = "reserve"
    RELEASE = "release"


class TransferState(enum.Enum):
    POSTED = "posted"
    PENDING = "pending"
    PENDING_POSTED = "pending_posted"
    PENDING_VOIDED = "pending_voided"
    PENDING_EXPIRED = "pending_expired"


@dataclass(frozen=True, slots=True)
class PostingLine:
    """What a client asks for: move `amount` minor units of `currency` on one side of an account."""

    account_id: str
    side: Side
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class TransferSpec:
    """One transfer as requested. Structural rules are checked by `validate_specs`."""

    transfer_id: str
    kind: TransferKind
    postings: tuple[PostingLine, ...] = ()
    pending_id: str | None = None
    reverses_id: str | None = None
    effective_date: date | None = None
    description: str = ""
    metadata: tuple[tuple[str, str], ...] = ()
    timeout_seconds: int = 0
    linked: bool = False
    _fingerprint: str = field(default="", init=False, compare=False, repr=False)

    def fingerprint(self) -> str:
        """SHA-256 of the canonical content: the same transfer id must always mean this.
        Computed once per spec (the command's fingerprint and the engine both need it)."""
        if not self._fingerprint:
            digest = hashlib.sha256(self._canonical_json().encode("utf-8")).hexdigest()
            object.__setattr__(self, "_fingerprint", digest)
        return self._fingerprint

    def _canonical_json(self) -> str:
        """`_body()` in canonical JSON (what `canonical_hash` hashes), written directly as
        `JournalEntry.canonical_json` is; a property test holds it to `json.dumps`."""
        s = _json_string
        metadata = ",".join(f"[{s(k)},{s(v)}]" for k, v in sorted(self.metadata))
        postings = ",".join(f'[{s(p.account_id)},"{p.side._value_}",{p.amount},{s(p.currency)}]'
                            for p in self.postings)
        day = f'"{self.effective_date.isoformat()}"' if self.effective_date else "null"
        return (f'{{"date":{day},"description":{s(self.description)},'
                f'"id":{s(self.transfer_id)},"kind":"{self.kind._value_}",'
                f'"metadata":[{metadata}],"pending":{_json_optional(self.pending_id)},'
                f'"postings":[{postings}],"reverses":{_json_optional(self.reverses_id)},'
                f'"timeout":{self.timeout_seconds}}}')

    def to_json(self) -> dict[str, object]:
        """Everything needed to rebuild this spec exactly (for commands awaiting approval)."""
        metadata = [list(kv) for kv in self.metadata]
        return {**self._body(), "linked": self.linked, "metadata": metadata}

    @staticmethod
    def from_json(data: dict[str, Any]) -> TransferSpec:
        return TransferSpec(
            transfer_id=data["id"], kind=TransferKind(data["kind"]),
            postings=tuple(PostingLine(a, Side(s), amount, c)
                           for a, s, amount, c in data["postings"]),
            pending_id=data["pending"], reverses_id=data["reverses"],
            effective_date=date.fromisoformat(data["date"]) if data["date"] else None,
            description=data["description"],
            metadata=tuple((k, v) for k, v in data["metadata"]),
            timeout_seconds=data["timeout"], linked=data["linked"])

    def _body(self) -> dict[str, Any]:
        body = {
            "id": self.transfer_id,
            "kind": self.kind._value_,
            "postings": [[p.account_id, p.side._value_, p.amount, p.currency]
                         for p in self.postings],
            "pending": self.pending_id,
            "reverses": self.reverses_id,
            "date": self.effective_date.isoformat() if self.effective_date else None,
            "description": self.description,
            "metadata": sorted(self.metadata),
            "timeout": self.timeout_seconds,
        }
        return body


@dataclass(frozen=True, slots=True)
class Posting:
    """A recorded posting, with the account's totals right after it was applied."""

    entry_seq: int
    index: int
    account_id: str
    side: Side
    amount: int
    currency: str
    effect: Effect
    totals_after: Totals


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """A recorded, immutable journal entry. `seq` is its dense position in the change feed."""

    seq: int
    transfer_id: str
    kind: TransferKind
    recorded_ns: int
    effective_date: date
    postings: tuple[Posting, ...]
    pending_id: str | None = None
    reverses_id: str | None = None
    expires_ns: int = 0
    description: str = ""
    metadata: tuple[tuple[str, str], ...] = ()
    fingerprint: str = ""
    request_id: str = ""

    def lines(self, effect: Effect) -> tuple[Posting, ...]:
        return tuple(p for p in self.postings if p.effect is effect)

    def canonical(self) -> dict[str, Any]:
        """The entry as canonical data: what audit leaves commit to and exports carry."""
        return {
            "position": self.seq, "transfer_id": self.transfer_id, "kind": self.kind.value,
            "recorded_ns": self.recorded_ns, "effective_date": self.effective_date.isoformat(),
            "pending_id": self.pending_id, "reverses_id": self.reverses_id,
            "expires_ns": self.expires_ns, "description": self.description,
            "metadata": [list(kv) for kv in self.metadata], "fingerprint": self.fingerprint,
            "request_id": self.request_id,
            "postings": [[p.index, p.account_id, p.side.value, p.amount, p.currency,
                          p.effect.value, p.totals_after.debits_posted,
                          p.totals_after.credits_posted, p.totals_after.debits_pending,
                          p.totals_after.credits_pending] for p in self.postings],
        }

    def digest(self) -> str:
        """SHA-256 of `canonical()`; recorded in the audit leaf of the command that made it."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    def canonical_json(self) -> str:
        """`canonical()` in canonical JSON (what `canonical_hash` hashes), written directly:
        every command hashes each entry it records, and building the dict for `json.dumps`
        cost twice this. Keys in sorted order; strings through json's own encoder; the enum
        values and the ISO date need no escaping. A property test holds it to `json.dumps`.
        (`_value_`, the enum's documented attribute behind `.value`, skips the descriptor.)"""
        s = _json_string
        metadata = ",".join(f"[{s(k)},{s(v)}]" for k, v in self.metadata)
        postings = ",".join(
            f'[{p.index},{s(p.account_id)},"{p.side._value_}",{p.amount},{s(p.currency)},'
            f'"{p.effect._value_}",{t.debits_posted},{t.credits_posted},{t.debits_pending},'
            f"{t.credits_pending}]"
            for p in self.postings for t in (p.totals_after,))
        return (
            f'{{"description":{s(self.description)},'
            f'"effective_date":"{self.effective_date.isoformat()}",'
            f'"expires_ns":{self.expires_ns},"fingerprint":{s(self.fingerprint)},'
            f'"kind":"{self.kind._value_}","metadata":[{metadata}],'
            f'"pending_id":{_json_optional(self.pending_id)},"position":{self.seq},'
            f'"postings":[{postings}],"recorded_ns":{self.recorded_ns},'
            f'"request_id":{s(self.request_id)},'
            f'"reverses_id":{_json_optional(self.reverses_id)},'
            f'"transfer_id":{s(self.transfer_id)}}}')


# json's own string encoder (C), as `json.dumps(..., ensure_ascii=False)` uses it.
_json_string: Callable[[str], str] = json.encoder.encode_basestring


def _json_optional(value: str | None) -> str:
    return "null" if value is None else _json_string(value)


def canonical_hash(body: object) -> str:
    """SHA-256 hex of the canonical JSON form of `body` (sorted keys, no spaces, UTF-8)."""
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def imbalances(lines: Iterable[tuple[Side, int, str]]) -> dict[str, int]:
    """Per currency, debits minus credits; only currencies that do not balance are returned."""
    net: dict[str, int] = defaultdict(int)
    for side, amount, currency in lines:
        net[currency] += amount if side is Side.DEBIT else -amount
    return {c: n for c, n in sorted(net.items()) if n}


_NEEDS_POSTINGS = (TransferKind.POSTED, TransferKind.PENDING)
_NO_POSTINGS = (TransferKind.VOID_PENDING, TransferKind.REVERSAL, TransferKind.EXPIRE_PENDING)


def validate_specs(specs: list[TransferSpec], field: str = "transfers") -> None:
    """Check every structural rule that needs no stored state; raise all violations at once.

    Raises `InvalidArgument` listing violations in request order.
    """
    v = ViolationCollector()
    if not specs:
        v.add(field, "must contain at least one transfer")
    for i, spec in enumerate(specs):
        _validate_spec(spec, f"{field}[{i}]", v)
    if specs and specs[-1].linked:
        v.add(f"{field}[{len(specs) - 1}].linked",
              "the last transfer of a request cannot be linked to a next one")
    v.raise_if_any()
    assert len(specs) <= TRANSFERS_PER_BATCH_MAX  # checked at the edge with its own error


def _validate_spec(spec: TransferSpec, path: str, v: ViolationCollector) -> None:
    kind = spec.kind
    n = len(spec.postings)
    if kind in _NEEDS_POSTINGS and not POSTINGS_PER_ENTRY_MIN <= n <= POSTINGS_PER_ENTRY_MAX:
        v.add(f"{path}.postings",
              f"must have {POSTINGS_PER_ENTRY_MIN} to {POSTINGS_PER_ENTRY_MAX} postings")
    if kind is TransferKind.POST_PENDING and n > POSTINGS_PER_ENTRY_MAX:
        v.add(f"{path}.postings", f"must have at most {POSTINGS_PER_ENTRY_MAX} postings")
    if kind in _NO_POSTINGS and n:
        v.add(f"{path}.postings", f"must be empty for a {kind.value} transfer")
    if kind is TransferKind.EXPIRE_PENDING:
        v.add(f"{path}.kind", "expiry is made by the server only")
    if kind in (TransferKind.POST_PENDING, TransferKind.VOID_PENDING) and not spec.pending_id:
        v.add(f"{path}.pending_transfer", f"is required for a {kind.value} transfer")
    if kind not in (TransferKind.POST_PENDING, TransferKind.VOID_PENDING) and spec.pending_id:
        v.add(f"{path}.pending_transfer", "is only allowed when posting or voiding a hold")
    if kind is TransferKind.REVERSAL and not spec.reverses_id:
        v.add(f"{path}.reverses_transfer", "is required for a reversal")
    if kind is not TransferKind.REVERSAL and spec.reverses_id:
        v.add(f"{path}.reverses_transfer", "is only allowed on a reversal")
    if type(spec.timeout_seconds) is not int or spec.timeout_seconds < 0:
        v.add(f"{path}.timeout_seconds", "must be a whole number of seconds, not negative")
    if kind is not TransferKind.PENDING and spec.timeout_seconds:
        v.add(f"{path}.timeout_seconds", "is only allowed on a pending transfer")
    seen: dict[str, Side] = {}
    for j, line in enumerate(spec.postings):
        # `type() is int`: a bool is an int to Python but not to the canonical JSON of the
        # transfer's fingerprint (the gRPC edge only ever gives ints; Python callers might not).
        if type(line.amount) is not int or not 0 < line.amount <= AMOUNT_MINOR_MAX:
            v.add(f"{path}.postings[{j}].amount",
                  f"must be greater than zero and at most {AMOUNT_MINOR_MAX} minor units")
        previous = seen.setdefault(line.account_id, line.side)
        if previous is not line.side:
            v.add(f"{path}.postings[{j}].account",
                  "an account cannot be both debited and credited by one transfer")
    if n and kind in (*_NEEDS_POSTINGS, TransferKind.POST_PENDING):
        lines = ((p.side, p.amount, p.currency) for p in spec.postings)
        for currency, net in imbalances(lines).items():
            v.add(f"{path}.postings",
                  f"debits and credits in {currency} must balance (off by {net} minor units)")
