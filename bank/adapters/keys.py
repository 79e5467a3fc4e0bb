"""Checkpoint signing keys (Ed25519) on disk, with rotation.

A key folder holds `<name>.key` (PKCS#8 PEM, mode 0600) for every key ever used, and `active`
naming the one that signs now. Rotation adds a key and makes it active; old keys stay, so their
verifier keys can still be listed and old checkpoints still verify. Regulators pin the verifier
keys that `bank audit keys` prints.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from bank.offline.note import Signer, Verifier

KEY_PREFIX = "peoplesbank-audit"


class SigningKeyError(Exception):
    """No usable signing key."""


class KeyRing:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _names(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.key"))

    def _load(self, name: str) -> Signer:
        path = self.root / f"{name}.key"
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            raise SigningKeyError(f"{path} is readable by others; chmod 600 it")
        key = load_pem_private_key(path.read_bytes(), None)
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"{name} is not an Ed25519 key")
        return Signer(name, key)

    def active(self) -> Signer:
        marker = self.root / "active"
        if not marker.exists():
            raise SigningKeyError(f"no active signing key in {self.root}: "
                                  "run `bank audit rotate-key`")
        return self._load(marker.read_text().strip())

    def verifiers(self) -> list[Verifier]:
        """Verifier keys of every key, old ones included."""
        return [self._load(name).verifier for name in self._names()]

    def rotate(self) -> Signer:
        """Create a new key and make it the active one; returns it."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
        n = 1 + sum(1 for name in self._names() if name.startswith(f"{KEY_PREFIX}-{stamp}"))
        name = f"{KEY_PREFIX}-{stamp}-{n}"
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        fd = os.open(self.root / f"{name}.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        (self.root / "active").write_text(name + "\n")
        return Signer(name, key)

    def ensure(self) -> Signer:
        """The active key, creating the first one on a fresh machine."""
        try:
            return self.active()
        except SigningKeyError:
            return self.rotate()
