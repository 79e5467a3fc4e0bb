"""Envelope encryption of members' personal data, and crypto-shredding.

Key hierarchy:

    master key (AES-256, on disk in KEYS_DIR/member-master, mode 0600; several, one active)
      └── wraps: data key per member (AES-256, random), stored wrapped in `member_keys`
            └── encrypts: the member's personal data (AES-256-GCM), stored in `members`

- A data key is wrapped with AES-256-GCM under the active master key; the associated data binds
  the wrapping to the master key id and the member id, so a wrapped key copied onto another
  member's row does not unwrap.
- Personal data is encrypted with AES-256-GCM under the member's data key, with the member id
  as associated data (plus a purpose label): ciphertext moved to another member's row fails
  authentication instead of decrypting as someone else's data.
- Every nonce is 96 random bits from the OS; a data key encrypts a handful of messages in its
  life, far below GCM's random-nonce limit.
- Erasure destroys the member's wrapped data key (the row's `wrapped_key` is set to NULL;
  bank_app may UPDATE that column but never DELETE anything). The ciphertext stays, unreadable
  by anyone, including whoever holds the master key.
- Rotation (`MasterKeyRing.rotate`, then the `rewrap_member_keys` use case) wraps every live
  data key under a new master key. Old master keys stay until every key wrapped under them has
  been rewrapped *and every backup holding such rows has aged out*: destroying a retired master
  key is what makes erased members' data keys in old backups and database pages (a NULLed value
  can linger in PostgreSQL's WAL and dead tuples, or SQLite's WAL, until they are recycled)
  unreadable too.
- Request fingerprints (`digest`) use HMAC-SHA256 under a separate, never-rotated digest key, so
  the stored fingerprint of an onboarding request does not let anyone confirm a guess of a
  member's personal data without that key.

The master key folder is the seam for a KMS or HSM: `MemberCipher` is all the use cases see.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import stat
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bank.domain.errors import InvariantViolation
from bank.domain.members import WrappedKey

FORMAT_VERSION = b"\x01"
NONCE_BYTES = 12
KEY_BYTES = 32
MASTER_KEY_DIR = "member-master"
_WRAP_LABEL = b"peoplesbank/member-data-key/v1"
_DATA_LABEL = b"peoplesbank/member-personal-data/v1"
_DIGEST_LABEL = b"peoplesbank/member-request-digest/v1"
_KEY_NAME = re.compile(r"mk-[0-9]{1,9}")


class MasterKeyError(Exception):
    """A master key file is missing, malformed or readable by others."""


class MasterKeyRing:
    """Master keys in a folder: `mk-<n>.key` (hex, mode 0600) for every key ever used,
    `active` naming the one that wraps new data keys, and `digest.key` for request digests.
    On a fresh machine `ensure()` creates the first key (development and demo)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._cache: dict[str, bytes] = {}

    def _read_key(self, path: Path) -> bytes:
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise MasterKeyError(f"{path} does not exist") from None
        if stat.S_IMODE(mode) & 0o077:
            raise MasterKeyError(f"{path} is readable by others; chmod 600 it")
        try:
            key = bytes.fromhex(path.read_text().strip())
        except ValueError:
            raise MasterKeyError(f"{path} does not hold a hex key") from None
        if len(key) != KEY_BYTES:
            raise MasterKeyError(f"{path} does not hold a 256-bit key")
        return key

    def key(self, key_id: str) -> bytes:
        """The master key `key_id`; raises `MasterKeyError`."""
        with self._lock:
            if key_id not in self._cache:
                if not _KEY_NAME.fullmatch(key_id):
                    raise MasterKeyError(f"{key_id!r} is not a master key id")
                self._cache[key_id] = self._read_key(self.root / f"{key_id}.key")
            return self._cache[key_id]

    def active_id(self) -> str:
        """The id of the active master key (re-read each time: rotation needs no restart)."""
        self.ensure()
        name = (self.root / "active").read_text().strip()
        if not _KEY_NAME.fullmatch(name):
            raise MasterKeyError(f"{self.root / 'active'} does not name a master key")
        return name

    def digest_key(self) -> bytes:
        self.ensure()
        return self._read_key(self.root / "digest.key")

    def key_ids(self) -> list[str]:
        return sorted((p.stem for p in self.root.glob("mk-*.key")),
                      key=lambda name: int(name[3:]))

    def _write_new(self, path: Path, data: str) -> bool:
        """Create `path` holding `data`, complete or not at all (written aside, then linked
        into place); False when it exists already (another process made it first)."""
        temporary = self.root / f".{path.name}.{os.getpid()}.{threading.get_ident()}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(data + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        finally:
            temporary.unlink()
        return True

    def _set_active(self, name: str) -> None:
        temporary = self.root / f".active.{os.getpid()}.{threading.get_ident()}"
        temporary.write_text(name + "\n")
        os.replace(temporary, self.root / "active")

    def ensure(self) -> None:
        """Create the folder, the first master key and the digest key if they are missing."""
        if (self.root / "active").exists() and (self.root / "digest.key").exists():
            return
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._write_new(self.root / "digest.key", os.urandom(KEY_BYTES).hex())
        created = self._write_new(self.root / "mk-1.key", os.urandom(KEY_BYTES).hex())
        # Whoever made mk-1 activates it; so does a loser that finds `active` still missing.
        if created or not (self.root / "active").exists():
            self._set_active("mk-1")

    def rotate(self) -> str:
        """Create a new master key and make it the active one; returns its id."""
        self.ensure()
        while True:
            ids = self.key_ids()
            name = f"mk-{int(ids[-1][3:]) + 1 if ids else 1}"
            if self._write_new(self.root / f"{name}.key", os.urandom(KEY_BYTES).hex()):
                self._set_active(name)
                return name


def _wrap_aad(key_id: str, member_id: str) -> bytes:
    return b"\x00".join((_WRAP_LABEL, key_id.encode(), member_id.encode()))


def _data_aad(member_id: str) -> bytes:
    return b"\x00".join((_DATA_LABEL, member_id.encode()))


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return FORMAT_VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, sealed: bytes, aad: bytes, what: str) -> bytes:
    if len(sealed) < 1 + NONCE_BYTES + 16 or sealed[:1] != FORMAT_VERSION:
        raise InvariantViolation(f"{what} is not in a known format")
    nonce, body = sealed[1:1 + NONCE_BYTES], sealed[1 + NONCE_BYTES:]
    try:
        return AESGCM(key).decrypt(nonce, body, aad)
    except InvalidTag:
        raise InvariantViolation(f"{what} failed authentication (tampered with, moved to "
                                 "another member, or under another key)") from None


class EnvelopeCipher:
    """`bank.app.ports.MemberCipher` with keys from a `MasterKeyRing`.

    Failures to authenticate raise `InvariantViolation` (stored data that does not decrypt is
    corruption or tampering, never a user mistake); a missing master key raises it too.
    """

    def __init__(self, ring: MasterKeyRing) -> None:
        self.ring = ring

    def _master(self, key_id: str) -> bytes:
        try:
            return self.ring.key(key_id)
        except MasterKeyError as error:
            raise InvariantViolation(f"member master key unavailable: {error}") from None

    def seal_new(self, member_id: str, plaintext: bytes) -> tuple[WrappedKey, bytes]:
        """A fresh data key for the member, wrapped under the active master key, and the
        plaintext encrypted under it."""
        data_key = AESGCM.generate_key(bit_length=256)
        key_id = self.ring.active_id()
        wrapped = _seal(self._master(key_id), data_key, _wrap_aad(key_id, member_id))
        return WrappedKey(key_id, wrapped), _seal(data_key, plaintext, _data_aad(member_id))

    def _unwrap(self, member_id: str, key: WrappedKey) -> bytes:
        return _open(self._master(key.master_key_id), key.wrapped, _wrap_aad(
            key.master_key_id, member_id), f"the data key of member {member_id!r}")

    def open(self, member_id: str, key: WrappedKey, ciphertext: bytes) -> bytes:
        """The member's personal data in clear."""
        return _open(self._unwrap(member_id, key), ciphertext, _data_aad(member_id),
                     f"the personal data of member {member_id!r}")

    def rewrap(self, member_id: str, key: WrappedKey) -> WrappedKey:
        """The same data key, wrapped under the active master key."""
        key_id = self.ring.active_id()
        if key.master_key_id == key_id:
            return key
        data_key = self._unwrap(member_id, key)
        return WrappedKey(key_id, _seal(self._master(key_id), data_key,
                                        _wrap_aad(key_id, member_id)))

    def digest(self, member_id: str, plaintext: bytes) -> str:
        """HMAC-SHA256 (hex) of a member's personal data, for request fingerprints."""
        message = b"\x00".join((_DIGEST_LABEL, member_id.encode(), plaintext))
        return hmac.new(self.ring.digest_key(), message, hashlib.sha256).hexdigest()

    def active_master_key_id(self) -> str:
        return self.ring.active_id()
