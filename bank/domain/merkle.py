"""The audit log's Merkle tree (RFC 9162 section 2.1, same hashing as RFC 6962).

Leaves are the RFC 6962 leaf hashes SHA-256(0x00 || leaf) made by `bank.domain.audit.leaf_hash`;
interior nodes are SHA-256(0x01 || left || right). The tree of n leaves is split at k, the largest
power of two smaller than n: MTH(D[n]) = node(MTH(D[0:k]), MTH(D[k:n])); the empty tree's root is
SHA-256 of the empty string.

What is here:

- `root` computes the root of a list of leaf hashes; `RootBuilder` computes it while streaming
  over any number of leaf hashes, keeping only O(log n) hashes (a compact range).
- `inclusion_proof` / `consistency_proof` make audit paths and consistency proofs (RFC 9162
  2.1.3.1 and 2.1.4.1) from a list of leaf hashes; `build_inclusion_proof` /
  `build_consistency_proof` make the same proofs for trees too large to hold in memory, asking a
  callable for the roots of the O(log n) subtrees the proof needs.
- `verify_inclusion` / `verify_consistency` check proofs (RFC 9162 2.1.3.2 and 2.1.4.2) and raise
  `ProofError`, naming what is wrong, on any failure. They return None when the proof holds.

The verifiers are stricter than the RFC's algorithm alone: every hash must be exactly 32 bytes,
sizes and indices must be non-negative integers, and the proof must have exactly the number of
hashes that the sizes call for. A consistency proof from the empty tree is refused (the RFC
defines proofs only for 0 < old_size); trees of equal size are consistent only when their roots
are equal, and two empty trees only when both roots are the empty-tree root.

Standard library only: the offline verifier imports this module.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence

from bank.domain.audit import node_hash

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

#: Returns MTH(D[start:end]), the root of leaves start..end-1 of the tree, for start < end.
SubtreeRoot = Callable[[int, int], bytes]


class ProofError(ValueError):
    """An inclusion or consistency proof does not hold, or its inputs are malformed."""


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProofError(f"{name} must be an integer, not {type(value).__name__}")
    if value < 0:
        raise ProofError(f"{name} must not be negative (got {value})")


def _check_hash(name: str, value: bytes) -> None:
    if not isinstance(value, bytes | bytearray):
        raise ProofError(f"{name} must be bytes, not {type(value).__name__}")
    if len(value) != HASH_SIZE:
        raise ProofError(f"{name} is {len(value)} bytes; a SHA-256 hash is {HASH_SIZE}")


def _check_proof(proof: Sequence[bytes]) -> None:
    if isinstance(proof, bytes | bytearray | str):
        raise ProofError("proof must be a sequence of hashes, not a single string")
    for i, h in enumerate(proof):
        _check_hash(f"proof[{i}]", h)


def _same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(bytes(a), bytes(b))


# ---------------------------------------------------------------------------------------------
# Roots
# ---------------------------------------------------------------------------------------------


class RootBuilder:
    """Streams leaf hashes and gives the root of the tree so far, in O(log n) memory.

    It keeps the roots of the perfect subtrees that the leaves appended so far decompose into,
    largest (leftmost) first: one per set bit of `size`. Appending merges equal-sized subtrees
    like a binary counter carries; `root()` folds them right to left, which is exactly RFC 9162's
    split at the largest power of two.
    """

    __slots__ = ("_size", "_stack")

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._size = 0
        self._stack: list[bytes] = []
        self.extend(leaf_hashes)

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    def append(self, leaf_hash: bytes) -> None:
        """Append the next leaf's hash (SHA-256(0x00 || leaf), 32 bytes)."""
        if not isinstance(leaf_hash, bytes | bytearray) or len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf {self._size}: a leaf hash must be {HASH_SIZE} bytes")
        h = bytes(leaf_hash)
        carry = self._size
        while carry & 1:
            h = node_hash(self._stack.pop(), h)
            carry >>= 1
        self._stack.append(h)
        self._size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append several leaf hashes in order."""
        for h in leaf_hashes:
            self.append(h)

    def root(self) -> bytes:
        """MTH of the leaves appended so far; SHA-256(b"") when there are none."""
        if not self._stack:
            return EMPTY_ROOT
        h = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            h = node_hash(left, h)
        return h

    def compact_range(self) -> tuple[bytes, ...]:
        """Roots of the perfect subtrees covering the leaves so far, largest first."""
        return tuple(self._stack)

    @staticmethod
    def from_compact_range(size: int, hashes: Sequence[bytes]) -> RootBuilder:
        """A builder resumed from `compact_range()` of a tree of `size` leaves (for proofs that
        carry the left edge of a range). Raises `ProofError` when the count does not fit."""
        _check_size("size", size)
        if len(hashes) != bin(size).count("1"):
            raise ProofError(f"a compact range of {size} leaves has {bin(size).count('1')} "
                             f"hashes, not {len(hashes)}")
        for i, h in enumerate(hashes):
            _check_hash(f"compact_range[{i}]", h)
        builder = RootBuilder()
        builder._size = size
        builder._stack = [bytes(h) for h in hashes]
        return builder

    def append_subtree(self, subtree_root: bytes, height: int) -> None:
        """Append the root of a perfect subtree of 2**height leaves starting at `size`, which
        must be a multiple of 2**height (see `aligned_subtrees`)."""
        _check_hash("subtree root", subtree_root)
        width = 1 << height
        if height < 0 or self._size % width:
            raise ProofError(f"a subtree of {width} leaves cannot start at leaf {self._size}")
        h = bytes(subtree_root)
        carry = self._size >> height
        while carry & 1:
            h = node_hash(self._stack.pop(), h)
            carry >>= 1
        self._stack.append(h)
        self._size += width

    def copy(self) -> RootBuilder:
        """An independent builder in the same state."""
        twin = RootBuilder()
        twin._size = self._size
        twin._stack = list(self._stack)
        return twin


def aligned_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """Split leaves [start, end) into the fewest perfect subtrees, each aligned to its size, in
    order, as (first leaf, height): what `RootBuilder.append_subtree` accepts."""
    out = []
    while start < end:
        height = (end - start).bit_length() - 1
        if start:
            height = min(height, (start & -start).bit_length() - 1)
        out.append((start, height))
        start += 1 << height
    return out


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the given leaf hashes; SHA-256(b"") for an empty sequence."""
    return RootBuilder(leaf_hashes).root()


# ---------------------------------------------------------------------------------------------
# Making proofs
# ---------------------------------------------------------------------------------------------


def build_inclusion_proof(index: int, size: int, subtree_root: SubtreeRoot) -> list[bytes]:
    """Audit path PATH(index, D[size]) (RFC 9162 2.1.3.1), ordered from the leaf up.

    `subtree_root(start, end)` must return MTH(D[start:end]); it is called once per proof hash
    (O(log size) times), only for ranges that are nodes of the tree: [i * 2^h, (i + 1) * 2^h)
    or, on the right edge, [i * 2^h, size).
    """
    if isinstance(index, bool) or isinstance(size, bool):
        raise ValueError("index and size must be integers")
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            path.append(subtree_root(mid, hi))
            hi = mid
        else:
            path.append(subtree_root(lo, mid))
            lo = mid
    path.reverse()
    return path


def build_consistency_proof(old_size: int, new_size: int,
                            subtree_root: SubtreeRoot) -> list[bytes]:
    """Consistency proof PROOF(old_size, D[new_size]) (RFC 9162 2.1.4.1).

    Requires 0 < old_size <= new_size; the proof between equal sizes is empty. `subtree_root`
    is as for `build_inclusion_proof`.
    """
    if isinstance(old_size, bool) or isinstance(new_size, bool):
        raise ValueError("sizes must be integers")
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}: "
                         "needs 0 < old_size <= new_size")
    path: list[bytes] = []
    lo, hi, m = 0, new_size, old_size
    old_is_whole_subtree = True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            path.append(subtree_root(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree_root(lo, lo + k))
            lo += k
            m -= k
            old_is_whole_subtree = False
    if not old_is_whole_subtree:
        path.append(subtree_root(lo, hi))
    path.reverse()
    return path


def _list_subtree_root(leaf_hashes: Sequence[bytes]) -> SubtreeRoot:
    def subtree_root(start: int, end: int) -> bytes:
        return root(leaf_hashes[start:end])
    return subtree_root


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path for leaf `index` in the tree of all of `leaf_hashes`."""
    return build_inclusion_proof(index, len(leaf_hashes), _list_subtree_root(leaf_hashes))


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """Proof that the tree of the first `old_size` leaves is a prefix of the tree of all."""
    return build_consistency_proof(old_size, len(leaf_hashes), _list_subtree_root(leaf_hashes))


def _inclusion_proof_length(index: int, size: int) -> int:
    """Number of hashes in the audit path of leaf `index` in a tree of `size` (index < size)."""
    count, lo, hi = 0, 0, size
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        lo, hi = (lo, mid) if index < mid else (mid, hi)
        count += 1
    return count


def _consistency_proof_length(old_size: int, new_size: int) -> int:
    """Number of hashes in PROOF(old_size, D[new_size]) (0 < old_size < new_size)."""
    count, lo, hi, m = 0, 0, new_size, old_size
    whole = True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            hi = lo + k
        else:
            lo, m, whole = lo + k, m - k, False
        count += 1
    return count + (0 if whole else 1)


# ---------------------------------------------------------------------------------------------
# Verifying proofs
# ---------------------------------------------------------------------------------------------


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes],
                     root: bytes) -> None:
    """Check that `leaf_hash` is leaf `index` of the tree of `size` leaves with root `root`.

    RFC 9162 2.1.3.2. Raises ProofError naming the failure; returns None when the proof holds.
    """
    _check_size("index", index)
    _check_size("size", size)
    if index >= size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size} "
                         "(index must be < size)")
    _check_hash("leaf_hash", leaf_hash)
    _check_hash("root", root)
    _check_proof(proof)
    expected = _inclusion_proof_length(index, size)
    if len(proof) != expected:
        raise ProofError(f"inclusion proof has {len(proof)} hashes; leaf {index} of a tree of "
                         f"size {size} needs exactly {expected}")

    fn, sn = index, size - 1
    r = bytes(leaf_hash)
    for p in proof:
        if sn == 0:  # unreachable after the length check; kept as the RFC's own guard
            raise ProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the path to the root")
    if not _same(r, root):
        raise ProofError(f"inclusion proof does not lead to the given root: leaf {index} with "
                         f"this proof hashes to {r.hex()}, not {bytes(root).hex()}")


def verify_consistency(old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes,
                       new_root: bytes) -> None:
    """Check that the tree (old_size, old_root) is a prefix of the tree (new_size, new_root).

    RFC 9162 2.1.4.2. Raises ProofError naming the failure; returns None when the proof holds.
    """
    _check_size("old_size", old_size)
    _check_size("new_size", new_size)
    if old_size > new_size:
        raise ProofError(f"old_size {old_size} is larger than new_size {new_size}: a log "
                         "never shrinks")
    _check_hash("old_root", old_root)
    _check_hash("new_root", new_root)
    _check_proof(proof)
    if old_size == new_size:
        if proof:
            raise ProofError(f"the proof between two trees of the same size ({old_size}) must "
                             f"be empty; got {len(proof)} hashes")
        if not _same(old_root, new_root):
            raise ProofError(f"two trees of size {old_size} have different roots: the log "
                             "forked")
        if old_size == 0 and not _same(old_root, EMPTY_ROOT):
            raise ProofError("the root of the empty tree must be SHA-256 of the empty string")
        return
    if old_size == 0:
        raise ProofError("no consistency proof exists from the empty tree (old_size 0): "
                         "every tree extends it, so there is nothing to prove")
    if not proof:
        raise ProofError(f"empty consistency proof: sizes {old_size} -> {new_size} need one")
    expected = _consistency_proof_length(old_size, new_size)
    if len(proof) != expected:
        raise ProofError(f"consistency proof has {len(proof)} hashes; sizes {old_size} -> "
                         f"{new_size} need exactly {expected}")

    path = [bytes(h) for h in proof]
    if old_size & (old_size - 1) == 0:  # the old tree is a perfect subtree: its root is the seed
        path.insert(0, bytes(old_root))
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:  # unreachable after the length check; kept as the RFC's own guard
            raise ProofError("consistency proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than the path to the root")
    if not _same(fr, old_root):
        raise ProofError(f"consistency proof does not reproduce old_root of size {old_size}: "
                         f"it gives {fr.hex()}, not {bytes(old_root).hex()}")
    if not _same(sr, new_root):
        raise ProofError(f"consistency proof does not reproduce new_root of size {new_size}: "
                         f"it gives {sr.hex()}, not {bytes(new_root).hex()}")
