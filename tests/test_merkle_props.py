"""Property tests over random trees: the level-keeping tree agrees with RFC 6962's
recursive definition (written out here, apart from the code under test), every
proof it makes verifies, and any change to a proof, an index or a root fails."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core.merkle import Tree, root_of, verify_consistency, verify_inclusion
from tether.errors import VerificationFailed


def _mth(data: list[bytes]) -> bytes:
    """RFC 6962 section 2.1, MTH, word for word."""
    n = len(data)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + data[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(data[:k]) + _mth(data[k:])).digest()


leaves = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


@settings(max_examples=150, deadline=None)
@given(leaves, st.data())
def test_roots_match_the_rfc_definition(data: list[bytes], draw: st.DataObject) -> None:
    t = Tree.from_data(data)
    size = draw.draw(st.integers(0, len(data)))
    assert t.root(size) == _mth(data[:size])
    assert root_of(t.levels[0][:size]) == _mth(data[:size])


@settings(max_examples=150, deadline=None)
@given(leaves, st.data())
def test_inclusion_proofs_verify_and_tampering_fails(data: list[bytes],
                                                     draw: st.DataObject) -> None:
    t = Tree.from_data(data)
    size = draw.draw(st.integers(1, len(data)))
    index = draw.draw(st.integers(0, size - 1))
    proof = t.inclusion_proof(index, size)
    root = t.root(size)
    leaf = t.levels[0][index]
    verify_inclusion(index, size, leaf, proof, root)
    if proof:
        i = draw.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
        for args in ((index, size, leaf, bad, root), (index, size, leaf, proof[:-1], root),
                     (index, size, leaf, [*proof, root], root)):
            try:
                verify_inclusion(*args)
            except VerificationFailed:
                continue
            raise AssertionError(f"a corrupted proof verified: {args[:2]}")
    other = draw.draw(st.integers(0, size - 1))
    if t.levels[0][other] != leaf:  # another leaf at this index must not verify
        try:
            verify_inclusion(index, size, t.levels[0][other], proof, root)
        except VerificationFailed:
            pass
        else:
            raise AssertionError("another leaf verified")


@settings(max_examples=150, deadline=None)
@given(leaves, st.data())
def test_consistency_proofs_verify_and_tampering_fails(data: list[bytes],
                                                       draw: st.DataObject) -> None:
    t = Tree.from_data(data)
    new = draw.draw(st.integers(1, len(data)))
    old = draw.draw(st.integers(1, new))
    proof = t.consistency_proof(old, new)
    verify_consistency(old, new, proof, t.root(old), t.root(new))
    if proof:
        i = draw.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 0x80]) + bad[i][1:]
        try:
            verify_consistency(old, new, bad, t.root(old), t.root(new))
        except VerificationFailed:
            pass
        else:
            raise AssertionError("a corrupted consistency proof verified")
    # A history that differs in one leaf below the old size is not consistent.
    pos = draw.draw(st.integers(0, old - 1))
    forked = list(data)
    forked[pos] = forked[pos] + b"!"
    f = Tree.from_data(forked)
    try:
        verify_consistency(old, new, f.consistency_proof(old, new), t.root(old), f.root(new))
    except VerificationFailed:
        pass
    else:
        raise AssertionError("a rewritten history verified as consistent")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.binary(max_size=4), max_size=40), min_size=1, max_size=8))
def test_incremental_seals_give_the_from_scratch_roots_and_proofs(
        seals: list[list[bytes]]) -> None:
    """A frontier extended seal by seal gives, at every seal, the root and the consistency
    proof from the seal before that the whole tree gives (RFC 6962's definition)."""
    from tether.core.compact import EMPTY_FRONTIER, Frontier
    from tether.core.merkle import leaf_hash

    data: list[bytes] = []
    frontier = EMPTY_FRONTIER
    for batch in seals:
        new = [leaf_hash(d) for d in batch]
        proof = frontier.consistency_proof(new)
        old, old_root = frontier.size, frontier.root()
        frontier = frontier.extend(new)
        data += batch
        whole = Tree.from_data(data)
        assert frontier.root() == whole.root() == _mth(data)
        assert proof == whole.consistency_proof(old)
        assert frontier == Frontier.of_tree(whole)
        assert Frontier.decode(frontier.size, frontier.encode()) == frontier
        verify_consistency(old, whole.size, proof, old_root, frontier.root())


@settings(max_examples=150, deadline=None)
@given(leaves, st.data())
def test_consistency_ranges_name_what_each_proof_element_hashes(data: list[bytes],
                                                                 draw: st.DataObject) -> None:
    from tether.core.merkle import consistency_ranges

    t = Tree.from_data(data)
    old = draw.draw(st.integers(0, len(data)))
    ranges = consistency_ranges(old, len(data))
    assert [_mth(data[lo:hi]) for lo, hi in ranges] == t.consistency_proof(old)
    assert [t.subtree(lo, hi) for lo, hi in ranges] == t.consistency_proof(old)
