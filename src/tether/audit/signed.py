"""Verifying the signed checkpoints (``tether audit seal``) against the store.

Walked by :func:`tether.audit.verify_store` after the chains, with the leaves
the batch chain names (every event's hash in commit order, as the chains hold
them). For each checkpoint, in order:

* its signed note parses as a C2SP tlog checkpoint, its signature by the
  operator's key checks (when ``--key`` is given), and its table row (size,
  root) says what the note says;
* it extends the checkpoint before it: the consistency proof stored with it
  verifies (RFC 9162 section 2.1.4.2) between the two signed roots, so a
  checkpoint signed over a rewritten history is named even when that history
  is what the store now holds;
* the store's events still hash to its root: the first ``size`` leaves give
  the signed root. A store with fewer events was truncated; otherwise an event
  the checkpoint covers was changed, removed, reordered or inserted, and the
  checkpoint before it that still matches bounds where.

What it cannot see: the newest checkpoints deleted together with the events
after an older one, or a history rewritten and sealed again with the key. A
witness that keeps the exported checkpoints (``tether audit export``) sees that:
:mod:`tether.audit.witness` (``verify --witness``). It never reads the seal's
cache (the frontier kept beside each checkpoint): every root is recomputed from
the events.
"""

from __future__ import annotations

from collections.abc import Sequence

from tether.audit.report import VerifyReport
from tether.core.merkle import Tree, verify_consistency
from tether.core.note import Verifier, open_note, split_note
from tether.core.tlog import Checkpoint, parse_checkpoint
from tether.errors import StoreError, VerificationFailed
from tether.store.protocol import Store
from tether.store.seal_records import SignedCheckpoint

_RESTORE = "restore the store from a backup (or the events from a copy a witness holds)"


def verify_signed(store: Store, leaves: Sequence[bytes], key: Verifier | None,
                  rep: VerifyReport) -> Tree | None:
    """Check every signed checkpoint; add the problems to ``rep`` (at most one per kind).
    Returns the Merkle tree over ``leaves`` if it built one (the store has checkpoints), for
    the witness's check to reuse: two SHA-256 per event that need not be taken twice."""
    try:
        cps = store.signed_checkpoints()
    except StoreError as exc:
        rep.problems.append(f"signed checkpoints: cannot be read ({exc})")
        return None
    rep.signatures_checked = key is not None
    if not cps:
        rep.unsealed = len(leaves)
        return None
    tree = Tree.from_data(leaves)
    prev: tuple[SignedCheckpoint, Checkpoint] | None = None
    matched = 0  # the size of the last checkpoint the events still match
    mismatch = False
    for i, cp in enumerate(cps, 1):
        rep.checkpoints += 1
        where = f"signed checkpoint {cp.n} (size {cp.size})"
        if cp.n != i:
            rep.problems.append(f"{where}: expected number {i} (signed checkpoints were "
                                "removed); compare with the copies a witness keeps")
            return tree
        body = _body(cp, key, where, rep)
        if body is None or (prev is not None and not _extends(prev, cp, body, where, rep)):
            return tree
        if not mismatch:
            problem = _events_problem(tree, cp, body, matched, where)
            if problem:
                rep.problems.append(problem)
                mismatch = True
            else:
                matched = body.size
        prev = (cp, body)
    rep.sealed = matched if mismatch else cps[-1].size
    rep.unsealed = max(0, len(leaves) - cps[-1].size)
    return tree


def _body(cp: SignedCheckpoint, key: Verifier | None, where: str,
          rep: VerifyReport) -> Checkpoint | None:
    """The checkpoint a signed note says, once its signature checks (if a key is given)."""
    try:
        text = open_note(cp.note, key) if key is not None else split_note(cp.note)[0]
        body = parse_checkpoint(text)
    except VerificationFailed as exc:
        rep.problems.append(f"{where}: {exc}; the signed note was changed or forged; "
                            f"{_RESTORE}")
        return None
    if body.size != cp.size or body.root.hex() != cp.root:
        rep.problems.append(f"{where}: the row says size {cp.size} root {cp.root[:12]}, its "
                            f"signed note says size {body.size} root {body.root.hex()[:12]} "
                            f"(the row was changed outside tether); {_RESTORE}")
        return None
    return body


def _extends(prev: tuple[SignedCheckpoint, Checkpoint], cp: SignedCheckpoint,
             body: Checkpoint, where: str, rep: VerifyReport) -> bool:
    old_row, old = prev
    if old.origin != body.origin:
        rep.problems.append(f"{where}: origin {body.origin!r} differs from checkpoint "
                            f"{old_row.n}'s {old.origin!r} (a checkpoint of another log)")
        return False
    try:
        proof = [bytes.fromhex(h) for h in cp.proof]
        verify_consistency(old.size, body.size, proof, old.root, body.root)
    except (ValueError, VerificationFailed) as exc:
        rep.problems.append(
            f"{where} does not extend checkpoint {old_row.n} (size {old.size}): its "
            f"consistency proof fails ({exc}); the events checkpoint {old_row.n} covered were "
            f"rewritten before this one was signed; {_RESTORE}")
        return False
    return True


def _events_problem(tree: Tree, cp: SignedCheckpoint, body: Checkpoint, matched: int,
                    where: str) -> str | None:
    if body.size > tree.size:
        return (f"{where}: the store holds only {tree.size} events in commit order, the "
                f"checkpoint covers {body.size}: events were removed (truncated or deleted) "
                f"after it was signed; {_RESTORE}")
    if tree.root(body.size) != body.root:
        return (f"{where}: the store's events no longer hash to its signed root: an event "
                f"among numbers {matched + 1} to {body.size} in commit order (the events after "
                f"the last checkpoint that still matches) was changed, removed, reordered or "
                f"inserted after it was signed; {_RESTORE}")
    return None
