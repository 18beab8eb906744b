"""Merkle trees with RFC 6962 hashing: roots, inclusion and consistency proofs.

The tree over leaves ``d[0..n)`` is the one RFC 6962 (section 2.1) and RFC 9162
(section 2.1.1) define: a leaf hashes as ``SHA-256(0x00 || d)``, an interior
node as ``SHA-256(0x01 || left || right)``, the empty tree as ``SHA-256("")``,
and a tree of ``n > 1`` leaves splits at ``k``, the largest power of two below
``n``. That tree is the same as pairing the nodes of each level left to right
and carrying an unpaired last node up unchanged, which is how :class:`Tree`
builds it: every level is kept, so any root, proof or subtree of the first
``n`` leaves is a few lookups, not a recursion over hashes.

Proofs are lists of 32-byte hashes in the RFC's order (nearest the leaf
first). Verification follows RFC 9162 sections 2.1.3.2 and 2.1.4.2 step by
step and raises :class:`~tether.errors.VerificationFailed` saying why; it
never trusts the proof's length, the sizes or the hash lengths it is given.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from tether.errors import VerificationFailed

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of the empty tree (RFC 6962: the hash of the empty string)."""

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``: the hash of one leaf."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: the hash of an interior node."""
    return _sha256(b"\x01" + left + right).digest()


class Tree:
    """Every level of the tree over some leaf hashes (level 0: the leaf hashes).

    Args:
        leaves: leaf hashes (:func:`leaf_hash` of each leaf's data), in order.

    Example:
        >>> t = Tree([leaf_hash(b"a"), leaf_hash(b"b"), leaf_hash(b"c")])
        >>> t.root() == node_hash(node_hash(leaf_hash(b"a"), leaf_hash(b"b")), leaf_hash(b"c"))
        True
    """

    __slots__ = ("levels",)

    def __init__(self, leaves: Sequence[bytes]) -> None:
        levels = [list(leaves)]
        level = levels[0]
        while len(level) > 1:
            # One comprehension per level: the per-node cost is one hash, little else.
            up = [_sha256(b"\x01" + level[i] + level[i + 1]).digest()
                  for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                up.append(level[-1])  # unpaired: carried up unchanged
            levels.append(up)
            level = up
        self.levels = levels

    @classmethod
    def from_data(cls, data: Sequence[bytes]) -> Tree:
        """The tree whose leaves are ``data`` (each hashed with :func:`leaf_hash`)."""
        return cls([_sha256(b"\x00" + d).digest() for d in data])

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def root(self, size: int | None = None) -> bytes:
        """The root of the tree over the first ``size`` leaves (default: all of them)."""
        n = self.size if size is None else self._check_size(size)
        return EMPTY_ROOT if n == 0 else self._subtree(0, n)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """The audit path of leaf ``index`` in the tree of the first ``size`` leaves
        (RFC 6962 section 2.1.1, ``PATH``)."""
        n = self.size if size is None else self._check_size(size)
        if not 0 <= index < n:
            raise ValueError(f"leaf index {index} is outside a tree of {n} leaves")
        return self._path(index, 0, n)

    def consistency_proof(self, old: int, size: int | None = None) -> list[bytes]:
        """The proof that the tree of the first ``size`` leaves extends the tree of the first
        ``old`` (RFC 6962 section 2.1.2, ``PROOF``); empty when ``old`` is 0 or ``size``."""
        n = self.size if size is None else self._check_size(size)
        if not 0 <= old <= n:
            raise ValueError(f"old size {old} is not between 0 and the tree size {n}")
        if old in (0, n):
            return []
        return self._subproof(old, 0, n, True)

    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH of leaves ``lo`` to ``hi`` (``0 <= lo < hi <= size``): the hash a proof
        element of that range must have."""
        if not 0 <= lo < hi <= self.size:
            raise ValueError(f"leaves {lo} to {hi} are not a range of a tree of {self.size}")
        return self._subtree(lo, hi)

    # -- internals -------------------------------------------------------
    def _check_size(self, size: int) -> int:
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} is not between 0 and {self.size}")
        return size

    def _subtree(self, lo: int, hi: int) -> bytes:
        """MTH(d[lo:hi]), for ranges the RFC's recursion visits."""
        width = hi - lo
        height = (width - 1).bit_length()
        if lo & ((1 << height) - 1) == 0 and (width == 1 << height or hi == self.size):
            # A node of the full tree: a whole aligned subtree, or its right edge.
            return self.levels[height][lo >> height]
        k = 1 << ((width - 1).bit_length() - 1)
        return node_hash(self._subtree(lo, lo + k), self._subtree(lo + k, hi))

    def _path(self, m: int, lo: int, hi: int) -> list[bytes]:
        width = hi - lo
        if width == 1:
            return []
        k = 1 << ((width - 1).bit_length() - 1)
        if m < k:
            return [*self._path(m, lo, lo + k), self._subtree(lo + k, hi)]
        return [*self._path(m - k, lo + k, hi), self._subtree(lo, lo + k)]

    def _subproof(self, m: int, lo: int, hi: int, whole: bool) -> list[bytes]:
        width = hi - lo
        if m == width:
            return [] if whole else [self._subtree(lo, hi)]
        k = 1 << ((width - 1).bit_length() - 1)
        if m <= k:
            return [*self._subproof(m, lo, lo + k, whole), self._subtree(lo + k, hi)]
        return [*self._subproof(m - k, lo + k, hi, False), self._subtree(lo, lo + k)]


def consistency_ranges(old: int, size: int) -> list[tuple[int, int]]:
    """The leaves ``[lo, hi)`` each element of ``PROOF(old, D[size])`` is the hash of, in
    the proof's order: what a proof says about a tree beyond its two roots (an audit
    uses it to narrow down where a history that does not match one begins)."""
    if not 0 <= old <= size:
        raise ValueError(f"old size {old} is not between 0 and {size}")
    if old in (0, size):
        return []

    def sub(m: int, lo: int, hi: int, whole: bool) -> list[tuple[int, int]]:
        width = hi - lo
        if m == width:
            return [] if whole else [(lo, hi)]
        k = 1 << ((width - 1).bit_length() - 1)
        if m <= k:
            return [*sub(m, lo, lo + k, whole), (lo + k, hi)]
        return [*sub(m - k, lo + k, hi, False), (lo, lo + k)]

    return sub(old, 0, size, True)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """The root of the tree over ``leaves`` (leaf hashes) without keeping its levels."""
    level = list(leaves)
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        up = [_sha256(b"\x01" + level[i] + level[i + 1]).digest()
              for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            up.append(level[-1])
        level = up
    return level[0]


def _check_hashes(what: str, hashes: Sequence[bytes]) -> None:
    for i, h in enumerate(hashes):
        if len(h) != HASH_SIZE:
            raise VerificationFailed(f"{what}[{i}] is {len(h)} bytes, not {HASH_SIZE}")


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes],
                     root: bytes) -> None:
    """Check that ``leaf`` (a leaf hash) is leaf ``index`` of the tree of ``size`` leaves
    whose root is ``root`` (RFC 9162 section 2.1.3.2).

    Raises:
        VerificationFailed: saying why the proof does not hold.
    """
    _check_hashes("proof", proof)
    _check_hashes("leaf and root", [leaf, root])
    if not 0 <= index < size:
        raise VerificationFailed(f"leaf index {index} is outside a tree of {size} leaves")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise VerificationFailed("the proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationFailed("the proof is shorter than the tree is deep")
    if r != root:
        raise VerificationFailed("the proof leads to another root (the leaf, its index, the "
                                 "proof or the root was changed)")


def verify_consistency(old_size: int, size: int, proof: Sequence[bytes], old_root: bytes,
                       root: bytes) -> None:
    """Check that the tree of ``size`` leaves with root ``root`` extends the tree of
    ``old_size`` leaves with root ``old_root`` (RFC 9162 section 2.1.4.2).

    Raises:
        VerificationFailed: saying why the proof does not hold.
    """
    _check_hashes("proof", proof)
    if not 0 <= old_size <= size:
        raise VerificationFailed(f"old size {old_size} is not between 0 and {size}")
    if old_size == size:
        if proof:
            raise VerificationFailed("equal sizes take an empty proof")
        if old_root != root:
            raise VerificationFailed("equal sizes but different roots")
        return
    if old_size == 0:
        if proof:
            raise VerificationFailed("an empty old tree takes an empty proof")
        return
    if not proof:
        raise VerificationFailed("the proof is empty")
    _check_hashes("roots", [old_root, root])
    fr, sr = _consistency_roots(old_size, size, proof, old_root)
    if fr != old_root:
        raise VerificationFailed("the proof does not lead to the old root")
    if sr != root:
        raise VerificationFailed("the proof does not lead to the new root")


def _consistency_roots(old_size: int, size: int, proof: Sequence[bytes], old_root: bytes
                       ) -> tuple[bytes, bytes]:
    """RFC 9162 section 2.1.4.2, steps 2 to 6: the old and new roots the proof leads to."""
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the new
        path.insert(0, old_root)
    fn, sn = old_size - 1, size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationFailed("the proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationFailed("the proof is shorter than the tree is deep")
    return fr, sr
