"""Checking a store against a witness's copy of its signed checkpoints
(``tether audit verify --witness FILE``).

A witness keeps what ``tether audit export`` wrote, elsewhere. Whoever holds the
store and the key can rewrite history and sign a new series of checkpoints, or
roll the store back to an older one; the store alone then verifies. The
witness's copy does not change with it, so for each checkpoint it holds, in
order, the store must still:

* hold the same signed checkpoint under the same number (same size, same root),
  and no checkpoint of the same size with another root;
* have a tree that extends it: the store's events in commit order hold at least
  its size, and the consistency proof from it to the store's current tree
  verifies (RFC 9162 section 2.1.4.2).

The first checkpoint that fails is named, with the first event that differs when
the witness's roots and proofs narrow it to one (else the range it lies in).
With ``--key``, the witness's notes must carry good signatures by that key.
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from tether.audit.report import VerifyReport
from tether.core.merkle import (
    HASH_SIZE,
    Tree,
    consistency_ranges,
    verify_consistency,
)
from tether.core.note import Verifier, open_note, split_note
from tether.core.settings import STORE_CHAIN
from tether.core.tlog import parse_checkpoint
from tether.errors import UsageError, VerificationFailed
from tether.store.protocol import Store
from tether.store.seal_records import SignedCheckpoint

_FIX = ("the store was rolled back or rewritten after the witness copied its checkpoints; "
        "restore it from a backup that the witness's checkpoints verify")


@dataclass(frozen=True, slots=True)
class WitnessCheckpoint:
    """One line of an export a witness keeps."""

    line: int
    n: int
    size: int
    root: bytes
    note: str
    proof: tuple[bytes, ...]

    @property
    def where(self) -> str:
        return f"witness checkpoint {self.n} (size {self.size}, root {self.root.hex()[:16]})"


def parse_witness(data: bytes, name: str) -> list[WitnessCheckpoint]:
    """The checkpoints of a witness file (JSON lines, as ``tether audit export`` writes).

    Raises:
        UsageError: one line naming the file, the line and what is wrong.
    """
    out: list[WitnessCheckpoint] = []
    for i, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            cp = WitnessCheckpoint(i, *_parse_line(raw))
        except ValueError as exc:
            raise UsageError(f"witness file {name} line {i}: {exc}; give the file "
                             "`tether audit export` wrote") from None
        if out and cp.n <= out[-1].n:
            raise UsageError(f"witness file {name} line {i}: checkpoint {cp.n} after "
                             f"{out[-1].n} (they are in increasing order as exported)")
        out.append(cp)
    if not out:
        raise UsageError(f"witness file {name} holds no signed checkpoints; give the file "
                         "`tether audit export` wrote (after at least one seal)")
    return out


def _parse_line(raw: bytes) -> tuple[int, int, bytes, str, tuple[bytes, ...]]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError("not a JSON object") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    n, size, root, note, proof = (obj.get(k) for k in ("n", "size", "root", "note", "proof"))
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n {n!r} is not a checkpoint number")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"size {size!r} is not a number of events")
    if not isinstance(note, str) or not isinstance(proof, list):
        raise ValueError("note (text) and proof (a list) are required")
    hashes = [_hash(x, "root") if k < 0 else _hash(x, f"proof[{k}]")
              for k, x in enumerate([root, *proof], -1)]
    return n, size, hashes[0], note, tuple(hashes[1:])


def _hash(x: object, what: str) -> bytes:
    try:
        h = bytes.fromhex(x) if isinstance(x, str) else b""
    except (ValueError, binascii.Error):
        h = b""
    if len(h) != HASH_SIZE:
        raise ValueError(f"{what} is not a {HASH_SIZE}-byte hex hash")
    return h


def verify_witness(store: Store, leaves: Sequence[bytes], witness: Sequence[WitnessCheckpoint],
                   key: Verifier | None, rep: VerifyReport, *, tree: Tree | None = None) -> None:
    """Check that the store extends every checkpoint of ``witness``; add the first that it
    does not extend to ``rep`` (a problem in the witness's own notes is named too).
    ``tree``: the Merkle tree over ``leaves`` if the caller has it (built here otherwise)."""
    cps = {cp.n: cp for cp in store.signed_checkpoints()}
    by_size = {cp.size: cp for cp in cps.values()}
    if tree is None:
        tree = Tree.from_data(leaves)
    for w in witness:
        rep.witnessed += 1
        problem = _note_problem(w, key) or _checkpoint_problem(w, cps, by_size) or \
            _tree_problem(store, tree, witness, w)
        if problem:
            rep.problems.append(problem)
            return


def _note_problem(w: WitnessCheckpoint, key: Verifier | None) -> str | None:
    try:
        body = parse_checkpoint(open_note(w.note, key) if key is not None
                                else split_note(w.note)[0])
    except VerificationFailed as exc:
        return (f"{w.where} in the witness file (line {w.line}): {exc}; the witness's copy "
                "was changed, or is of another key")
    if body.size != w.size or body.root != w.root:
        return (f"{w.where} in the witness file (line {w.line}): its signed note says size "
                f"{body.size} root {body.root.hex()[:16]} (the witness's copy was changed)")
    return None


def _checkpoint_problem(w: WitnessCheckpoint, cps: dict[int, SignedCheckpoint],
                        by_size: dict[int, SignedCheckpoint]) -> str | None:
    mine = cps.get(w.n)
    if mine is None:
        last = max(cps, default=0)
        return (f"{w.where} is not extended by this store: the store holds {last} signed "
                f"checkpoints, none numbered {w.n} (its newest checkpoints were removed); "
                f"{_FIX}")
    if mine.size != w.size or mine.root != w.root.hex():
        return (f"{w.where} is not extended by this store: the store's signed checkpoint "
                f"{w.n} says size {mine.size}, root {mine.root[:16]} (its signed checkpoints "
                f"were replaced); {_FIX}")
    same = by_size.get(w.size)
    if same is not None and same.root != w.root.hex():
        return (f"{w.where} is not extended by this store: the store's signed checkpoint "
                f"{same.n} of the same size has root {same.root[:16]}; {_FIX}")
    return None


def _tree_problem(store: Store, tree: Tree, witness: Sequence[WitnessCheckpoint],
                  w: WitnessCheckpoint) -> str | None:
    if w.size > tree.size:
        return (f"{w.where} is not extended by this store: the store holds only {tree.size} "
                f"events in commit order (events after number {tree.size} were removed); "
                f"{_FIX}")
    try:
        verify_consistency(w.size, tree.size, tree.consistency_proof(w.size), w.root,
                           tree.root())
    except VerificationFailed:
        lo, hi = _first_difference(tree, witness, w)
        what = f"event number {lo + 1} in commit order ({_event_name(store, lo)}) differs" \
            if hi - lo == 1 else \
            (f"an event among numbers {lo + 1} to {hi} in commit order differs (the first of "
             f"them: {_event_name(store, lo)})")
        return (f"{w.where} is not extended by this store: the store's first {w.size} "
                f"events hash to another root; {what}; {_FIX}")
    return None


def _first_difference(tree: Tree, witness: Sequence[WitnessCheckpoint],
                      w: WitnessCheckpoint) -> tuple[int, int]:
    """Leaves ``[lo, hi)`` the first difference from the witness's history lies in: every
    range the witness knows a hash of (its roots, its proofs' elements) that the store
    matches has no difference; any that it does not match has one."""
    known: list[tuple[int, int, bytes]] = []
    prev: WitnessCheckpoint | None = None
    for x in witness:  # later checkpoints' proofs too: they hash parts of earlier trees
        if 0 < x.size <= w.size:
            known.append((0, x.size, x.root))
        if prev is not None and x.n == prev.n + 1:
            try:  # only a proof that holds between the witness's own signed roots says anything
                verify_consistency(prev.size, x.size, x.proof, prev.root, x.root)
            except VerificationFailed:
                pass
            else:
                known.extend((lo, hi, h) for (lo, hi), h in
                             zip(consistency_ranges(prev.size, x.size), x.proof, strict=True)
                             if hi <= w.size)
        prev = x
    same = sorted((lo, hi) for lo, hi, h in known if tree.subtree(lo, hi) == h)
    upper = min((hi for lo, hi, h in known if tree.subtree(lo, hi) != h), default=w.size)
    lower, moved = 0, True
    while moved:
        moved = False
        for lo, hi in same:
            if lo <= lower < hi:
                lower, moved = hi, True
    return (lower, upper) if lower < upper else (0, w.size)


def _event_name(store: Store, index: int) -> str:
    """The event at ``index`` in commit order, by run and seq, from the batch chain."""
    at = 0
    for b in store.batches():
        for run, first, last in b.entries:
            count = last - first + 1
            if index < at + count:
                seq = first + index - at
                return f"store event #{seq}" if run == STORE_CHAIN else f"run {run} #{seq}"
            at += count
    return f"number {index + 1} is named by no batch"
