"""C2SP signed notes with Ed25519 (https://c2sp.org/signed-note), on `cryptography` only.

A note is UTF-8 text ending in a newline, then a blank line, then one or more signature lines
`— <key name> <base64(4-byte key id || 64-byte signature)>`. The key id of an Ed25519 key is the
first four bytes of SHA-256(key name || "\\n" || 0x01 || 32-byte public key). A verifier key is
written `<name>+<key id hex>+<base64(0x01 || public key)>`; verifiers pin these strings and never
trust a key that arrives with the note.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = b"\x01"
SIGNATURE_PREFIX = "\u2014 "  # em dash, space
NOTE_BYTES_MAX = 1 << 20


class NoteError(ValueError):
    """A note or key that does not parse, or signatures that do not verify."""


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + _raw(public_key)).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise NoteError(f"invalid key name {name!r}: no spaces or '+'")


@dataclass(frozen=True)
class Verifier:
    name: str
    key_id: bytes
    public_key: Ed25519PublicKey

    def encode(self) -> str:
        raw = base64.b64encode(ED25519 + _raw(self.public_key)).decode()
        return f"{self.name}+{self.key_id.hex()}+{raw}"

    @staticmethod
    def for_key(name: str, public_key: Ed25519PublicKey) -> Verifier:
        _check_name(name)
        return Verifier(name, key_id(name, public_key), public_key)

    @staticmethod
    def parse(text: str) -> Verifier:
        """Parse `<name>+<hex id>+<base64 key>`; raises `NoteError`."""
        parts = text.strip().split("+", 2)  # the base64 key may itself contain '+'
        if len(parts) != 3:
            raise NoteError("a verifier key is <name>+<key id hex>+<base64 key>")
        name, hex_id, b64 = parts
        try:
            raw = base64.b64decode(b64, validate=True)
            wanted = bytes.fromhex(hex_id)
        except (binascii.Error, ValueError):
            raise NoteError(f"verifier key {name!r} is not valid hex/base64") from None
        if len(raw) != 33 or raw[:1] != ED25519 or len(wanted) != 4:
            raise NoteError(f"verifier key {name!r} is not an Ed25519 key")
        verifier = Verifier.for_key(name, Ed25519PublicKey.from_public_bytes(raw[1:]))
        if verifier.key_id != wanted:
            raise NoteError(f"verifier key {name!r}: key id does not match the key")
        return verifier


@dataclass(frozen=True)
class Signer:
    name: str
    private_key: Ed25519PrivateKey

    @property
    def verifier(self) -> Verifier:
        return Verifier.for_key(self.name, self.private_key.public_key())

    def sign(self, text: str) -> str:
        """The signed note for `text` (which must end in a newline)."""
        if not text.endswith("\n") or "\n\n" in text:
            raise NoteError("note text must end in one newline and contain no blank line")
        signature = self.private_key.sign(text.encode())
        blob = base64.b64encode(self.verifier.key_id + signature).decode()
        return f"{text}\n{SIGNATURE_PREFIX}{self.name} {blob}\n"


def open_note(note: str, verifiers: list[Verifier]) -> tuple[str, list[str]]:
    """The note's text and the names of the pinned keys that signed it.

    Raises `NoteError` if the note is malformed, if a signature claiming a pinned key does not
    verify, or if no pinned key signed it. Signatures by keys not pinned are ignored.
    """
    if len(note) > NOTE_BYTES_MAX or not note.endswith("\n"):
        raise NoteError("a signed note ends in a newline and is at most 1 MiB")
    text, sep, signatures = note.rpartition("\n\n")
    if not sep or not text:
        raise NoteError("a signed note has text, a blank line, then signature lines")
    text += "\n"
    pinned = {(v.name, v.key_id): v for v in verifiers}
    signed_by: list[str] = []
    for line in signatures.rstrip("\n").split("\n"):
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError(f"not a signature line: {line[:60]!r}")
        name, _, blob = line[len(SIGNATURE_PREFIX):].partition(" ")
        try:
            raw = base64.b64decode(blob, validate=True)
        except binascii.Error:
            raise NoteError(f"signature by {name!r} is not base64") from None
        if len(raw) < 5:
            raise NoteError(f"signature by {name!r} is too short")
        verifier = pinned.get((name, raw[:4]))
        if verifier is None:
            continue
        try:
            verifier.public_key.verify(raw[4:], text.encode())
        except InvalidSignature:
            raise NoteError(f"the signature by {name!r} does not verify") from None
        signed_by.append(name)
    if not signed_by:
        raise NoteError("no signature by a pinned key (unknown or missing signer)")
    return text, signed_by
