"""Envelope encryption of personal data: round trips, bound to the member, shredded by erasure,
and master keys that rotate without losing anything."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from bank.adapters.member_crypto import EnvelopeCipher, MasterKeyError, MasterKeyRing
from bank.domain.errors import InvariantViolation
from bank.domain.members import WrappedKey

SECRET = b"Ada Lovelace, 12 Fishergate, PR1 2HE"


@pytest.fixture
def ring(tmp_path: Path) -> MasterKeyRing:
    return MasterKeyRing(tmp_path / "member-master")


@pytest.fixture
def cipher(ring: MasterKeyRing) -> EnvelopeCipher:
    return EnvelopeCipher(ring)


def test_personal_data_round_trips_and_is_not_in_the_ciphertext(cipher):
    key, sealed = cipher.seal_new("m-1", SECRET)
    assert cipher.open("m-1", key, sealed) == SECRET
    assert SECRET not in sealed and b"Lovelace" not in sealed and b"Lovelace" not in key.wrapped
    assert key.master_key_id == "mk-1"


def test_every_encryption_uses_a_fresh_data_key_and_nonce(cipher):
    a = cipher.seal_new("m-1", SECRET)
    b = cipher.seal_new("m-1", SECRET)
    assert a[0].wrapped != b[0].wrapped and a[1] != b[1]


def test_ciphertext_moved_to_another_member_does_not_decrypt(cipher):
    key, sealed = cipher.seal_new("m-1", SECRET)
    with pytest.raises(InvariantViolation, match="failed authentication"):
        cipher.open("m-2", key, sealed)  # wrong associated data: the member id


def test_a_wrapped_key_moved_to_another_member_does_not_unwrap(cipher):
    key_1, sealed_1 = cipher.seal_new("m-1", SECRET)
    key_2, _ = cipher.seal_new("m-2", b"someone else")
    with pytest.raises(InvariantViolation, match="data key of member 'm-2'"):
        cipher.open("m-2", key_1, sealed_1)
    with pytest.raises(InvariantViolation):
        cipher.open("m-1", key_2, sealed_1)  # the other member's key: wrong key for this data


@pytest.mark.parametrize("position", [0, 1, 13, -1])
def test_any_flipped_bit_is_detected(cipher, position):
    key, sealed = cipher.seal_new("m-1", SECRET)
    broken = bytearray(sealed)
    broken[position] ^= 0x01
    with pytest.raises(InvariantViolation):
        cipher.open("m-1", key, bytes(broken))
    wrapped = bytearray(key.wrapped)
    wrapped[position] ^= 0x01
    with pytest.raises(InvariantViolation):
        cipher.open("m-1", replace(key, wrapped=bytes(wrapped)), sealed)


def test_without_its_data_key_the_ciphertext_is_unreadable_even_with_every_master_key(
        cipher, ring):
    """Crypto-shredding: once the wrapped data key is gone, nothing opens the ciphertext."""
    key, sealed = cipher.seal_new("m-1", SECRET)
    other_key, _ = cipher.seal_new("m-1", b"another record of the same member")
    with pytest.raises(InvariantViolation):
        cipher.open("m-1", other_key, sealed)
    for key_id in ring.key_ids():
        forged = WrappedKey(key_id, key.wrapped[:1] + bytes(len(key.wrapped) - 1))
        with pytest.raises(InvariantViolation):
            cipher.open("m-1", forged, sealed)


def test_rotation_rewraps_data_keys_and_old_ciphertext_still_opens(cipher, ring):
    key, sealed = cipher.seal_new("m-1", SECRET)
    assert ring.rotate() == "mk-2"
    new_key = cipher.rewrap("m-1", key)
    assert new_key.master_key_id == "mk-2" and new_key.wrapped != key.wrapped
    assert cipher.open("m-1", new_key, sealed) == SECRET
    assert cipher.open("m-1", key, sealed) == SECRET  # the old master key is still kept
    assert cipher.rewrap("m-1", new_key) is new_key  # already under the active key
    assert cipher.seal_new("m-3", SECRET)[0].master_key_id == "mk-2"
    (ring.root / "mk-1.key").unlink()  # retiring the old master key, once nothing needs it
    fresh = EnvelopeCipher(MasterKeyRing(ring.root))
    assert fresh.open("m-1", new_key, sealed) == SECRET
    with pytest.raises(InvariantViolation, match="master key unavailable"):
        fresh.open("m-1", key, sealed)


def test_master_keys_are_private_files_and_others_readable_ones_are_refused(cipher, ring):
    cipher.seal_new("m-1", SECRET)
    for name in ("mk-1.key", "digest.key"):
        assert stat.S_IMODE((ring.root / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(ring.root.stat().st_mode) & 0o077 == 0
    os.chmod(ring.root / "mk-1.key", 0o644)
    with pytest.raises(MasterKeyError, match="readable by others"):
        MasterKeyRing(ring.root).key("mk-1")


def test_a_malformed_master_key_id_is_refused(ring):
    ring.ensure()
    with pytest.raises(MasterKeyError):
        ring.key("../../etc/passwd")


def test_request_digests_are_keyed_deterministic_and_bound_to_the_member(cipher, ring):
    import hashlib

    digest = cipher.digest("m-1", SECRET)
    assert digest == cipher.digest("m-1", SECRET)
    assert digest != cipher.digest("m-2", SECRET)
    assert digest != hashlib.sha256(SECRET).hexdigest()
    ring.rotate()  # digests survive master key rotation (request replays keep working)
    assert EnvelopeCipher(MasterKeyRing(ring.root)).digest("m-1", SECRET) == digest
