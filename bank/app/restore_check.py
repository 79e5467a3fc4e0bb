"""Is a restored audit log older than, or forked from, a checkpoint the operator kept?

A backup carries its own checkpoints, so a restored database verifies on its own even when it
is older than what the bank has already signed and handed out. The operator (and regulators)
keep the last signed checkpoint outside the database (`bank audit sign > checkpoint.txt`);
this compares the restored log with it: the log must have at least the checkpoint's number of
leaves, and its first leaves must hash to the checkpoint's root.
"""

from __future__ import annotations

from bank.app.ports import UnitOfWork
from bank.domain.audit import leaf_hash
from bank.domain.merkle import RootBuilder
from bank.offline.checkpoint import verify_checkpoint
from bank.offline.note import NoteError, Verifier


def check_against_checkpoint(uow: UnitOfWork, checkpoint_note: str,
                             verifiers: list[Verifier]) -> list[str]:
    """Problems of the stored audit log against a trusted signed checkpoint (none: it holds)."""
    try:
        trusted = verify_checkpoint(checkpoint_note, verifiers)
    except NoteError as error:
        return [f"the trusted checkpoint does not verify with the pinned keys: {error}"]
    builder = RootBuilder()
    with uow.read() as r:
        leaves = r.iter_audit(0, trusted.size)
        try:
            for leaf in leaves:
                if leaf.index != builder.size:
                    return [f"audit leaf {builder.size} is missing from the restored log"]
                builder.append(leaf_hash(leaf.leaf))
        finally:
            leaves.close()
    if builder.size < trusted.size:
        return [f"restored log has {builder.size} leaves but the last signed checkpoint covers "
                f"{trusted.size}: this backup is older than the checkpoint"]
    if builder.root() != trusted.root:
        return [f"the restored log's first {trusted.size} leaves hash to a different root than "
                "the last signed checkpoint: the restored history is forked from it"]
    return []
