"""`bank audit verify` against a real database that someone tampered with, bypassing the
append-only triggers the way a database administrator could. Each case is named precisely."""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from bank.adapters.keys import KeyRing
from bank.adapters.sql import SqlUnitOfWork
from bank.app.audit import sign_checkpoint, verify_audit
from bank.app.ports import AuditLeaf, Head
from bank.app.transfers import create_transfers
from bank.demo import seed
from bank.domain.accounts import Side
from bank.domain.audit import leaf_hash
from bank.domain.entries import PostingLine, TransferKind, TransferSpec
from bank.domain.errors import FailedPrecondition
from bank.domain.identity import Principal, Role
from bank.domain.merkle import RootBuilder
from bank.offline.note import Signer

TELLER = Principal("tess", Role.TELLER, "branch:preston")


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    ring = KeyRing(tmp_path / "keys")
    ring.rotate()
    return ring


@pytest.fixture
def audited(uow, clock, ring) -> SqlUnitOfWork:
    """Demo data, a signed checkpoint, then more activity after it."""
    seed(uow, clock, say=lambda _line: None)
    sign_checkpoint(uow, clock, ring.active())
    for n in range(3):
        clock.advance(1)
        create_transfers(uow, clock, TELLER, f"later-{n}", [TransferSpec(
            f"later-{n}", TransferKind.POSTED, (
                PostingLine("m-0002-deposit", Side.DEBIT, 100 + n, "GBP"),
                PostingLine("m-0003-deposit", Side.CREDIT, 100 + n, "GBP")))])
    return uow


@contextmanager
def tampering(engine) -> Iterator[Connection]:
    """A connection on which the append-only triggers do not fire."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            names = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
            for (name,) in list(names):
                conn.execute(text(f"DROP TRIGGER {name}"))
        yield conn


def problems(uow, ring) -> list[str]:
    report = verify_audit(uow, ring.verifiers())
    return report.problems


def _leaf(conn: Connection, idx: int) -> dict[str, Any]:
    raw = conn.execute(text("SELECT leaf FROM audit_log WHERE idx = :i"), {"i": idx}).scalar_one()
    return json.loads(bytes(raw))


def _rewrite(conn: Connection, idx: int, record: dict[str, Any], fix_hash: bool = True) -> None:
    data = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    values = {"i": idx, "l": data, "h": leaf_hash(data)}
    sql = "UPDATE audit_log SET leaf = :l" + (", leaf_hash = :h" if fix_hash else "")
    conn.execute(text(sql + " WHERE idx = :i"), values)


def test_an_untouched_log_verifies(audited, ring):
    assert problems(audited, ring) == []


def test_an_edited_leaf_is_detected(audited, ring, engine):
    with tampering(engine) as conn:
        record = _leaf(conn, 1)
        record["principal"]["subject"] = "mallory"
        _rewrite(conn, 1, record, fix_hash=False)
    found = problems(audited, ring)
    assert any("audit leaf 1: stored hash does not match its content" in p for p in found)


def test_a_deleted_leaf_is_detected(audited, ring, engine):
    with tampering(engine) as conn:
        conn.execute(text("DELETE FROM audit_log WHERE idx = 2"))
    found = problems(audited, ring)
    assert any("audit leaf index 3 found where 2 was expected" in p for p in found)


def test_an_inserted_leaf_is_detected(audited, ring, engine):
    with tampering(engine) as conn:
        size = conn.execute(text("SELECT audit_size FROM ledger_head")).scalar_one()
        data = b'{"index":%d,"method":"Forged"}' % size
        conn.execute(text("INSERT INTO audit_log (idx, recorded_ns, leaf, leaf_hash) "
                          "VALUES (:i, 1, :l, :h)"), {"i": size, "l": data, "h": leaf_hash(data)})
    found = problems(audited, ring)
    assert any("the ledger head counts" in p for p in found)


def test_reordered_leaves_are_detected(audited, ring, engine):
    with tampering(engine) as conn:
        first, second = _leaf(conn, 1), _leaf(conn, 2)
        _rewrite(conn, 1, second)
        _rewrite(conn, 2, first)
    found = problems(audited, ring)
    assert any("audit leaf 1 says it is leaf 2" in p for p in found)
    assert any("hash to a different root" in p for p in found)


def test_a_fork_of_signed_history_is_detected(audited, ring, engine):
    with tampering(engine) as conn:
        record = _leaf(conn, 0)
        record["time_ns"] += 1  # a different, self-consistent history at an earlier size
        _rewrite(conn, 0, record)
    found = problems(audited, ring)
    assert any("history was changed or forked" in p for p in found)


def test_a_truncated_tail_is_detected(audited, ring, engine, clock):
    sign_checkpoint(audited, clock, ring.active())
    with tampering(engine) as conn:
        size = conn.execute(text("SELECT audit_size FROM ledger_head")).scalar_one()
        conn.execute(text("DELETE FROM audit_log WHERE idx >= :n"), {"n": size - 2})
        conn.execute(text("UPDATE ledger_head SET audit_size = :n"), {"n": size - 2})
    found = problems(audited, ring)
    assert any("the log was truncated" in p for p in found)


def test_a_duplicated_entry_is_detected(audited, ring, engine):
    with tampering(engine) as conn:
        last = conn.execute(text("SELECT MAX(seq) FROM entries")).scalar_one()
        conn.execute(text(
            "INSERT INTO postings SELECT :n, idx, account_id, side, amount, currency, effect, "
            "recorded_ns + 1, debits_posted_after, credits_posted_after, debits_pending_after, "
            "credits_pending_after FROM postings WHERE entry_seq = :s"), {"n": last + 1, "s": last})
        conn.execute(text(
            "INSERT INTO entries SELECT :n, transfer_id || '-copy', kind, recorded_ns + 1, "
            "effective_date, pending_id, reverses_id, expires_ns, description, metadata_json, "
            "fingerprint, request_id, posting_count FROM entries WHERE seq = :s"),
            {"n": last + 1, "s": last})
    found = problems(audited, ring)
    assert any(f"entry {last + 1} " in p and "not produced by any audited operation" in p
               for p in found)


def test_an_edited_entry_is_detected(audited, ring, engine):
    with tampering(engine) as conn:
        conn.execute(text("UPDATE entries SET description = 'nothing to see' WHERE seq = 2"))
    found = problems(audited, ring)
    assert any("entry 2 " in p and "differs from what its audited operation recorded" in p
               for p in found)


def test_a_deleted_entry_is_detected(audited, ring, engine):
    with tampering(engine) as conn:
        last = conn.execute(text("SELECT MAX(seq) FROM entries")).scalar_one()
        conn.execute(text("DELETE FROM postings WHERE entry_seq = :s"), {"s": last})
        conn.execute(text("DELETE FROM entries WHERE seq = :s"), {"s": last})
    found = problems(audited, ring)
    assert any(f"entry {last} recorded by the audit log is missing" in p for p in found)


def test_a_forged_checkpoint_signature_is_detected(audited, ring, engine):
    with tampering(engine) as conn:
        note = conn.execute(text("SELECT note FROM checkpoints WHERE seq = 1")).scalar_one()
        forged = Signer(ring.active().name, __import__(
            "cryptography.hazmat.primitives.asymmetric.ed25519", fromlist=["x"]
        ).Ed25519PrivateKey.generate()).sign(note.split("\n\n")[0] + "\n")
        conn.execute(text("UPDATE checkpoints SET note = :n WHERE seq = 1"), {"n": forged})
    found = problems(audited, ring)
    assert any("checkpoint 1: no signature by a pinned key" in p for p in found)


def test_the_signer_refuses_a_tree_inconsistent_with_its_last_checkpoint(audited, ring, engine,
                                                                         clock):
    with tampering(engine) as conn:
        record = _leaf(conn, 0)
        record["method"] = "Rewritten"
        _rewrite(conn, 0, record)
    with pytest.raises(FailedPrecondition) as caught:
        sign_checkpoint(audited, clock, ring.active())
    assert caught.value.reason == "TREE_INCONSISTENT"


def test_old_keys_still_verify_after_rotation(audited, ring, clock):
    ring.rotate()
    sign_checkpoint(audited, clock, ring.active())
    assert problems(audited, ring) == []
    with audited.read() as r:
        assert len({cp.key_name for cp in r.checkpoints()}) == 2


def test_indices_stay_dense_under_concurrent_writers_with_rollbacks(uow, clock, ring, engine):
    seed(uow, clock, say=lambda _line: None)
    failures: list[BaseException] = []

    class Boom(Exception):
        pass

    def writer(worker: int) -> None:
        rng = random.Random(worker)
        try:
            for _ in range(15):
                spec = TransferSpec(f"w{worker}-{uuid.uuid4().hex[:8]}", TransferKind.POSTED, (
                    PostingLine("bank-cash", Side.DEBIT, rng.randint(1, 500), "GBP"),
                    PostingLine("m-0004-deposit", Side.CREDIT, 0, "GBP")))
                spec = TransferSpec(spec.transfer_id, spec.kind, (
                    spec.postings[0], PostingLine("m-0004-deposit", Side.CREDIT,
                                                  spec.postings[0].amount, "GBP")))
                if rng.random() < 0.3:
                    try:  # a transaction that dies after writing: it must leave no trace
                        with uow.write() as tx:
                            head = tx.lock_head()
                            data = b'{"doomed":true}'
                            tx.append_audit([AuditLeaf(head.audit_size, clock.now_ns(), data,
                                                       leaf_hash(data))])
                            tx.save_head(Head(head.next_seq, head.last_recorded_ns,
                                              head.audit_size + 1))
                            raise Boom
                    except Boom:
                        pass
                create_transfers(uow, clock, TELLER, str(uuid.uuid4()), [spec])
        except BaseException as error:  # surfaced below
            failures.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    with uow.read() as r:
        indices = [leaf.index for leaf in r.iter_audit()]
        head = r.head()
        builder = RootBuilder(leaf.leaf_hash for leaf in r.iter_audit())
    assert indices == list(range(len(indices))) == list(range(head.audit_size))
    checkpoint = sign_checkpoint(uow, clock, ring.active())
    assert checkpoint.root_hash == builder.root()
    assert problems(uow, ring) == []
