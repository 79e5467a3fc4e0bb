"""Audit leaves: canonical bytes and RFC 6962 leaf hashes.

A leaf records who did what, when, the request's fingerprint and its outcome's fingerprint. It
holds no personal data: requests are referenced by their SHA-256, not copied.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"


def leaf_bytes(record: dict[str, Any]) -> bytes:
    """Canonical JSON (sorted keys, no spaces, UTF-8) of an audit record."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()
