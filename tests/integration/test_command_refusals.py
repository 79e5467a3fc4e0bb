"""A business refusal raised after a command's handler has written (a pool refusing its part
of a loan booking, say) undoes the whole transaction; the refusal alone is recorded and
replays. A system command with a derived request id (a close-of-business chunk) records
nothing when refused, so it can run again once the cause is mended. Both databases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from bank.adapters.clock import FixedClock
from bank.adapters.sql import SqlUnitOfWork
from bank.app.ports import Head
from bank.app.unit import Command, Context, request_approval, run_command
from bank.domain.errors import FailedPrecondition
from bank.domain.identity import Principal, Role

OFFICER = Principal("lou", Role.LOAN_OFFICER, "branch:preston")


@dataclass(frozen=True)
class Done:
    ok: str

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok}

    @staticmethod
    def from_json(data: dict[str, Any]) -> Done:
        return Done(data["ok"])


def _approvals(uow: SqlUnitOfWork) -> list[str]:
    with uow.read() as r:
        return [a.approval_id for a, _ in r.list_approvals(2**62, 100)]


def _writes_then_refuses(ctx: Context) -> tuple[Done, Head]:
    request_approval(ctx, {"x": 1}, "a write that must not survive")
    raise FailedPrecondition("POOL_SAID_NO", "refused after writing")


def test_a_refusal_after_writing_leaves_nothing_but_the_refusal(uow, clock: FixedClock):
    audit_before = _audit_size(uow)
    command = Command("Example", "req-1", OFFICER, {"a": 1})
    for _ in range(2):  # the second time is a replay of the stored refusal
        with pytest.raises(FailedPrecondition) as caught:
            run_command(uow, clock, command, _writes_then_refuses, Done.from_json)
        assert caught.value.reason == "POOL_SAID_NO"
    assert _approvals(uow) == []
    with uow.read() as r:
        stored = r.find_request("req-1")
    assert stored is not None and "POOL_SAID_NO" in stored.outcome_json
    assert _audit_size(uow) == audit_before + 1


def test_a_system_command_refused_records_nothing_and_can_run_again(uow, clock: FixedClock):
    audit_before = _audit_size(uow)
    command = Command("CloseOfBusinessChunk", "cob:2026-01-01:1", OFFICER, {"a": 1})
    with pytest.raises(FailedPrecondition):
        run_command(uow, clock, command, _writes_then_refuses, Done.from_json,
                    record_refusals=False)

    def refuses_at_once(ctx: Context) -> tuple[Done, Head]:
        raise FailedPrecondition("NOT_YET", "refused before writing")

    with pytest.raises(FailedPrecondition):
        run_command(uow, clock, command, refuses_at_once, Done.from_json,
                    record_refusals=False)
    with uow.read() as r:
        assert r.find_request("cob:2026-01-01:1") is None
    assert _approvals(uow) == [] and _audit_size(uow) == audit_before

    def succeeds(ctx: Context) -> tuple[Done, Head]:
        return Done("yes"), ctx.head

    assert run_command(uow, clock, command, succeeds, Done.from_json,
                       record_refusals=False) == Done("yes")


def _audit_size(uow: SqlUnitOfWork) -> int:
    with uow.read() as r:
        return r.head().audit_size
