"""The Merkle frontier: a tree's root and consistency proofs from its new leaves alone.

The tree over the first ``n`` leaves (RFC 6962, :mod:`tether.core.merkle`) is
fixed by its *frontier*: the roots of the perfect subtrees that tile ``[0, n)``
from the left, one per set bit of ``n``, largest first (a "compact range").
Appending ``k`` leaves to a frontier costs about ``k`` node hashes; the root is
the frontier folded from the right (``log n`` hashes); and every hash of the
RFC's consistency proof from size ``n`` to ``n + k`` is either a frontier node
of ``n`` or a subtree of the ``k`` new leaves. So a seal of ``k`` new events
hashes ``O(k + log n)``, not the whole store.

A frontier is only as good as where it came from: a seal keeps it as a cache
and trusts it only once :meth:`Frontier.root` equals the signed root it was
stored with (``tether.sealing``); verification never reads it.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tether.core.merkle import EMPTY_ROOT, HASH_SIZE, Tree, node_hash, root_of


@dataclass(frozen=True, slots=True)
class Frontier:
    """The perfect subtrees tiling the first ``size`` leaves, largest first.

    Example:
        >>> from tether.core.merkle import leaf_hash
        >>> leaves = [leaf_hash(bytes([i])) for i in range(5)]
        >>> EMPTY_FRONTIER.extend(leaves).root() == Tree(leaves).root()
        True
    """

    size: int
    hashes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if self.size < 0 or len(self.hashes) != self.size.bit_count():
            raise ValueError(f"a frontier of {self.size} leaves has {self.size.bit_count()} "
                             f"hashes, not {len(self.hashes)}")
        if any(len(h) != HASH_SIZE for h in self.hashes):
            raise ValueError(f"frontier hashes are {HASH_SIZE} bytes")

    @classmethod
    def of_tree(cls, tree: Tree, size: int | None = None) -> Frontier:
        """The frontier of the first ``size`` leaves of ``tree`` (default: all), read from its
        levels without hashing."""
        n = tree.size if size is None else size
        if not 0 <= n <= tree.size:
            raise ValueError(f"size {n} is not between 0 and the tree size {tree.size}")
        return cls(n, tuple(tree.levels[h][lo >> h] for lo, h in _tiles(n)))

    @classmethod
    def decode(cls, size: int, blob: bytes) -> Frontier:
        """The frontier stored as :meth:`encode` wrote it; ValueError if it does not fit."""
        if len(blob) % HASH_SIZE:
            raise ValueError(f"a frontier is whole {HASH_SIZE}-byte hashes")
        return cls(size, tuple(blob[i:i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)))

    def encode(self) -> bytes:
        """The hashes, concatenated (the size is kept beside them)."""
        return b"".join(self.hashes)

    def root(self) -> bytes:
        """The root of the tree over the first ``size`` leaves."""
        if not self.hashes:
            return EMPTY_ROOT
        r = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            r = node_hash(h, r)
        return r

    def extend(self, leaves: Sequence[bytes]) -> Frontier:
        """The frontier after appending ``leaves`` (leaf hashes): about one hash per leaf."""
        stack = [(h, 1 << height) for (_, height), h in zip(_tiles(self.size), self.hashes, strict=True)]
        for leaf in leaves:
            h, width = leaf, 1
            # Two neighbours of equal width are siblings: merge them, like binary carry.
            while stack and stack[-1][1] == width:
                left, _ = stack.pop()
                h, width = node_hash(left, h), width * 2
            stack.append((h, width))
        return Frontier(self.size + len(leaves), tuple(h for h, _ in stack))

    def consistency_proof(self, leaves: Sequence[bytes]) -> list[bytes]:
        """RFC 6962's ``PROOF(size, D[size + len(leaves)])``: the consistency proof from this
        tree to the one with ``leaves`` (leaf hashes) appended, from those alone.

        Every node the RFC's recursion asks for lies wholly before ``size`` (then it is a
        frontier node) or wholly after (then it is a subtree of ``leaves``; those ranges do
        not overlap, so building them costs about ``len(leaves)`` hashes)."""
        m, n = self.size, self.size + len(leaves)
        if m in (0, n):
            return []
        old = {(lo, lo + (1 << h)): x
               for (lo, h), x in zip(_tiles(m), self.hashes, strict=True)}

        def subtree(lo: int, hi: int) -> bytes:
            if hi <= m:
                return old[(lo, hi)]  # KeyError would be a bug in the recursion, not bad input
            if lo < m:
                raise AssertionError(f"range [{lo}, {hi}) straddles the old size {m}")
            return root_of(leaves[lo - m:hi - m])

        def subproof(k: int, lo: int, hi: int, whole: bool) -> list[bytes]:
            width = hi - lo
            if k == width:
                return [] if whole else [subtree(lo, hi)]
            split = 1 << ((width - 1).bit_length() - 1)
            if k <= split:
                return [*subproof(k, lo, lo + split, whole), subtree(lo + split, hi)]
            return [*subproof(k - split, lo + split, hi, False), subtree(lo, lo + split)]

        return subproof(m, 0, n, True)


EMPTY_FRONTIER = Frontier(0, ())
"""The frontier of the empty tree."""


def _tiles(size: int) -> list[tuple[int, int]]:
    """(first leaf, height) of each perfect subtree tiling ``[0, size)``, largest first."""
    out, lo = [], 0
    for h in range(size.bit_length() - 1, -1, -1):
        if size >> h & 1:
            out.append((lo, h))
            lo += 1 << h
    return out
