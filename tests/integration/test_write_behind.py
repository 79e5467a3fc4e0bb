"""The closing writes of a command (audit leaves, stored requests, the head) go to the database
together (`LedgerWriter.write_behind`: one pipeline on PostgreSQL). A refusal among them must
still fail the whole transaction, and nothing of it may be committed."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError

from bank.app.accounts import AccountSpec, create_accounts
from bank.app.ports import AuditLeaf, Head, StoredRequest
from bank.domain.accounts import AccountType, OwnerKind
from bank.domain.identity import SYSTEM


def _snapshot(uow) -> tuple[Head, list[AuditLeaf], StoredRequest | None]:
    with uow.read() as r:
        return r.head(), list(r.iter_audit()), r.find_requests(["late"]).get("late")


def test_the_closing_writes_land_together(uow, clock):
    before = _snapshot(uow)[0]
    with uow.write() as tx:
        head = tx.lock_head()
        leaf = AuditLeaf(head.audit_size, 7, b"leaf", b"h" * 32)
        with tx.write_behind():
            tx.append_audit([leaf])
            tx.save_requests([StoredRequest("late", "CreateTransfers", "f" * 64, "{}", 7)])
            tx.save_head(Head(head.next_seq, max(head.last_recorded_ns, 7),
                              head.audit_size + 1))
    head, leaves, stored = _snapshot(uow)
    assert head.audit_size == before.audit_size + 1
    assert leaves[-1] == leaf
    assert stored == StoredRequest("late", "CreateTransfers", "f" * 64, "{}", 7)


def test_a_refusal_among_the_closing_writes_fails_the_transaction_and_commits_nothing(
        uow, clock):
    create_accounts(uow, clock, SYSTEM, "accounts", [
        AccountSpec("cash", "GBP", AccountType.ASSET, "1000", OwnerKind.BANK, "bank")])
    before = _snapshot(uow)
    with pytest.raises(DBAPIError, match="backwards"), uow.write() as tx:
        head = tx.lock_head()
        with tx.write_behind():
            tx.append_audit([AuditLeaf(head.audit_size, 7, b"leaf", b"h" * 32)])
            tx.save_requests([StoredRequest("late", "CreateTransfers", "f" * 64, "{}", 7)])
            # The head's guard refuses this: it would move the audit size backwards.
            tx.save_head(Head(head.next_seq, head.last_recorded_ns, head.audit_size - 1))
    assert _snapshot(uow) == before  # neither the leaf, nor the request, nor the head


def test_a_refusal_early_among_the_closing_writes_fails_them_all(uow, clock):
    create_accounts(uow, clock, SYSTEM, "accounts", [
        AccountSpec("cash", "GBP", AccountType.ASSET, "1000", OwnerKind.BANK, "bank")])
    before = _snapshot(uow)
    with pytest.raises(DBAPIError) as raised, uow.write() as tx:
        head = tx.lock_head()
        with tx.write_behind():
            # The first write fails (that audit index is taken); the later ones were sent too.
            tx.append_audit([AuditLeaf(head.audit_size - 1, 7, b"leaf", b"h" * 32)])
            tx.save_requests([StoredRequest("late", "CreateTransfers", "f" * 64, "{}", 7)])
            tx.save_head(Head(head.next_seq, max(head.last_recorded_ns, 7), head.audit_size + 1))
    if uow.is_postgres:  # named as one of the pipelined writes, not as a later statement
        assert "(one of the pipelined writes)" in str(raised.value)
        assert "audit_log" in str(raised.value.orig)
    assert _snapshot(uow) == before
