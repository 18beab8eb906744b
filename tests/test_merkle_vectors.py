"""RFC 6962 Merkle hashing against the Certificate Transparency test vectors.

The vectors below are TRANSCRIBED, not computed: they are the classic 8-leaf
set of Certificate Transparency, copied by hand from
transparency-dev/merkle, ``proof/verify_test.go`` (commit
02194e9afb6c1d95b5381350007963aa70fff472; the same values as
google/certificate-transparency-go's ``merkle`` tests, and as Debian's
``golang-github-google-certificate-transparency-dev`` package): the eight leaf
inputs (``leaves``), the roots of the trees of sizes 1 to 8 (``roots``), the
inclusion proofs (``inclusionProofs``, whose leaf numbers there are 1-based)
and the consistency proofs (``consistencyProofs``). The empty tree's root is
that file's ``sha256EmptyTreeHash`` (the SHA-256 of the empty string).

Each known-good proof must verify, the proof our tree generates must equal it,
and every corrupted variant (after that file's ``corruptInclusionProof`` and
``corruptConsistencyProof``: a leaf index or size off by one, a wrong tree
size, a flipped bit, a truncated, padded or reordered proof, a wrong root)
must fail. (A tree size off by one is not among them: along some paths the
trees of n and n + 1 leaves have the same shape, so the same proof leads to the
same root; what binds a size to its root is the signature over the checkpoint,
which tests/test_audit_signed.py changes instead.)
"""

from __future__ import annotations

import pytest

from tether.core.merkle import Tree, leaf_hash, root_of, verify_consistency, verify_inclusion
from tether.errors import VerificationFailed

LEAVES = [bytes.fromhex(x) for x in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f")]

EMPTY_TREE = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")

ROOTS = [EMPTY_TREE] + [bytes.fromhex(x) for x in (  # sizes 0, 1, ..., 8
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]


def _h(*xs: str) -> list[bytes]:
    return [bytes.fromhex(x) for x in xs]


# (0-based leaf index, tree size, proof): the source's 1-based leaf numbers minus one.
INCLUSION = [
    (0, 1, []),
    (0, 8, _h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
              "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
              "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (5, 8, _h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
              "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
              "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 3, _h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (1, 5, _h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
              "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
              "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
]

# (old size, new size, proof)
CONSISTENCY = [
    (1, 1, []),
    (1, 8, _h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
              "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
              "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")),
    (6, 8, _h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
              "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
              "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
    (2, 5, _h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
              "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b")),
    (6, 7, _h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
              "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
              "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")),
]


@pytest.mark.parametrize("size", range(9))
def test_roots_of_sizes_0_to_8(size: int) -> None:
    assert Tree.from_data(LEAVES[:size]).root() == ROOTS[size]
    assert Tree.from_data(LEAVES).root(size) == ROOTS[size]  # a prefix of the bigger tree
    assert root_of([leaf_hash(d) for d in LEAVES[:size]]) == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_vectors(index: int, size: int, proof: list[bytes]) -> None:
    leaf = leaf_hash(LEAVES[index])
    verify_inclusion(index, size, leaf, proof, ROOTS[size])
    assert Tree.from_data(LEAVES).inclusion_proof(index, size) == proof
    assert Tree.from_data(LEAVES[:size]).inclusion_proof(index) == proof


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_vectors(old: int, new: int, proof: list[bytes]) -> None:
    verify_consistency(old, new, proof, ROOTS[old], ROOTS[new])
    assert Tree.from_data(LEAVES).consistency_proof(old, new) == proof
    assert Tree.from_data(LEAVES[:new]).consistency_proof(old) == proof


def _flipped(proof: list[bytes], i: int, bit: int) -> list[bytes]:
    out = list(proof)
    out[i] = bytes([out[i][0] ^ bit]) + out[i][1:]
    return out


def _bad_inclusions(index: int, size: int, proof: list[bytes], root: bytes,
                    leaf: bytes) -> list[tuple[str, tuple[int, int, bytes, list[bytes], bytes]]]:
    bad = [
        ("index - 1", (index - 1, size, leaf, proof, root)),
        ("index + 1", (index + 1, size, leaf, proof, root)),
        ("index ^ 2", (index ^ 2, size, leaf, proof, root)),
        ("size * 2", (index, size * 2, leaf, proof, root)),
        ("size / 2", (index, size // 2, leaf, proof, root)),
        ("wrong leaf", (index, size, b"WrongLeaf", proof, root)),
        ("wrong leaf hash", (index, size, SOME_HASH, proof, root)),
        ("empty root", (index, size, leaf, proof, EMPTY_TREE)),
        ("random root", (index, size, leaf, proof, SOME_HASH)),
        ("trailing garbage", (index, size, leaf, [*proof, b""], root)),
        ("trailing root", (index, size, leaf, [*proof, root], root)),
        ("preceding garbage", (index, size, leaf, [b"", *proof], root)),
        ("preceding root", (index, size, leaf, [root, *proof], root)),
    ]
    bad += [(f"proof[{i}] bit 3 flipped", (index, size, leaf, _flipped(proof, i, 8), root))
            for i in range(len(proof))]
    if proof:
        bad.append(("truncated", (index, size, leaf, proof[:-1], root)))
    if len(proof) > 1:
        bad.append(("inserted", (index, size, leaf, [proof[0], SOME_HASH, *proof[1:]], root)))
        bad.append(("swapped", (index, size, leaf, [proof[1], proof[0], *proof[2:]], root)))
    return bad


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_corrupted_inclusion_proofs_fail(index: int, size: int, proof: list[bytes]) -> None:
    leaf = leaf_hash(LEAVES[index])
    passed = []
    for what, args in _bad_inclusions(index, size, proof, ROOTS[size], leaf):
        try:
            verify_inclusion(*args)
        except VerificationFailed:
            continue
        passed.append(what)
    assert passed == []


def _bad_consistencies(old: int, new: int, proof: list[bytes], r1: bytes, r2: bytes
                       ) -> list[tuple[str, tuple[int, int, list[bytes], bytes, bytes]]]:
    bad = [
        ("old - 1", (old - 1, new, proof, r1, r2)),
        ("old + 1", (old + 1, new, proof, r1, r2)),
        ("old ^ 2", (old ^ 2, new, proof, r1, r2)),
        ("new * 2", (old, new * 2, proof, r1, r2)),
        ("new / 2", (old, new // 2, proof, r1, r2)),
        ("wrong old root", (old, new, proof, b"WrongRoot", r2)),
        ("wrong new root", (old, new, proof, r1, b"WrongRoot")),
        ("random old root", (old, new, proof, SOME_HASH, r2)),
        ("swapped roots", (old, new, proof, r2, r1)),
        ("empty proof", (old, new, [], r1, r2)),
        ("trailing garbage", (old, new, [*proof, b""], r1, r2)),
        ("trailing old root", (old, new, [*proof, r1], r1, r2)),
        ("trailing new root", (old, new, [*proof, r2], r1, r2)),
        ("preceding garbage", (old, new, [b"", *proof], r1, r2)),
        ("preceding old root", (old, new, [r1, *proof], r1, r2)),
        ("preceding new root", (old, new, [r2, *proof], r1, r2)),
        ("preceding proof[0]", (old, new, [proof[0], *proof], r1, r2)),
        ("truncated", (old, new, proof[:-1], r1, r2)),
    ]
    bad += [(f"proof[{i}] bit 4 flipped", (old, new, _flipped(proof, i, 16), r1, r2))
            for i in range(len(proof))]
    return bad


@pytest.mark.parametrize(("old", "new", "proof"), [c for c in CONSISTENCY if c[2]])
def test_corrupted_consistency_proofs_fail(old: int, new: int, proof: list[bytes]) -> None:
    passed = []
    for what, args in _bad_consistencies(old, new, proof, ROOTS[old], ROOTS[new]):
        try:
            verify_consistency(*args)
        except VerificationFailed:
            continue
        passed.append(what)
    assert passed == []


@pytest.mark.parametrize(("old", "new", "r1", "r2", "proof", "ok"), [
    # From the source's TestVerifyConsistency: sizes that are always consistent, and not.
    (0, 0, b"don't care 1", b"don't care 1", [], True),
    (0, 1, b"don't care 1", b"don't care 2", [], True),
    (1, 1, b"don't care 2", b"don't care 2", [], True),
    (0, 0, b"don't care 1", b"don't care 2", [], False),
    (1, 1, b"don't care 1", b"don't care 2", [], False),
    (1, 0, b"don't care 1", b"don't care 2", [], False),
    (2, 1, b"don't care 1", b"don't care 2", [], False),
    (1, 2, b"don't care 1", b"don't care 2", [], False),
    (0, 0, EMPTY_TREE, b"don't care 2", [], False),
    (1, 1, EMPTY_TREE, b"don't care 2", [], False),
    (0, 0, EMPTY_TREE, EMPTY_TREE, [EMPTY_TREE], False),
    (0, 1, EMPTY_TREE, EMPTY_TREE, [EMPTY_TREE], False),
    (1, 1, EMPTY_TREE, EMPTY_TREE, [EMPTY_TREE], False),
])
def test_consistency_edge_cases(old: int, new: int, r1: bytes, r2: bytes, proof: list[bytes],
                                ok: bool) -> None:
    if ok:
        verify_consistency(old, new, proof, r1, r2)
    else:
        with pytest.raises(VerificationFailed):
            verify_consistency(old, new, proof, r1, r2)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (0, 1), (1, 0), (2, 1)])
def test_inclusion_edge_cases_fail(index: int, size: int) -> None:
    # The source's TestVerifyInclusion probes: no root or leaf verifies there.
    for leaf, root in ((SOME_HASH, b""), (b"", EMPTY_TREE), (SOME_HASH, EMPTY_TREE)):
        with pytest.raises(VerificationFailed):
            verify_inclusion(index, size, leaf, [], root)


def test_single_leaf_tree() -> None:
    h = leaf_hash(b"data")
    verify_inclusion(0, 1, h, [], h)  # the root of a one-leaf tree is its leaf hash
    for leaf, root in ((h, b""), (b"", h), (b"", b"")):
        with pytest.raises(VerificationFailed):
            verify_inclusion(0, 1, leaf, [], root)
