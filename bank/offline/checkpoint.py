"""C2SP tlog checkpoints (https://c2sp.org/tlog-checkpoint): origin, tree size, root hash."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from bank.offline.note import NoteError, Verifier, open_note

ORIGIN = "peoplesbank.coop/audit/v1"


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @staticmethod
    def parse(text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("a checkpoint is origin, size and root hash, one per line")
        origin, size, root = lines[0], lines[1], lines[2]
        if not size.isdigit() or (size != "0" and size.startswith("0")):
            raise NoteError(f"checkpoint size {size[:30]!r} is not a decimal number")
        try:
            root_bytes = base64.b64decode(root, validate=True)
        except binascii.Error:
            raise NoteError("checkpoint root is not base64") from None
        if len(root_bytes) != 32:
            raise NoteError("checkpoint root is not a SHA-256 hash")
        return Checkpoint(origin, int(size), root_bytes)


def verify_checkpoint(note: str, verifiers: list[Verifier],
                      origin: str = ORIGIN) -> Checkpoint:
    """Open a signed checkpoint with pinned keys; raises `NoteError`."""
    text, _ = open_note(note, verifiers)
    checkpoint = Checkpoint.parse(text)
    if checkpoint.origin != origin:
        raise NoteError(f"checkpoint origin {checkpoint.origin!r} is not {origin!r}")
    return checkpoint
