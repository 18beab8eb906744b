"""Sealing a store: a signed checkpoint over every event's hash in commit order.

A seal builds the RFC 6962 Merkle tree (:mod:`tether.core.merkle`) whose leaves
are the 32-byte hashes of every event the store committed (run chains and the
store chain alike), in the order the batch chain names them, writes its size
and root as a C2SP tlog-checkpoint body (:mod:`tether.core.tlog`), signs it as
a C2SP signed note with Ed25519 (:mod:`tether.core.note`) and stores it with
the consistency proof from the checkpoint before it. ``tether audit seal``
seals on demand; a worker given a key seals every N events or T seconds.

A seal hashes only the events since the last checkpoint: the tree's frontier
(:mod:`tether.core.compact`) is kept beside each checkpoint as a cache, used
only once it folds to that checkpoint's signed root and the batch chain and
event count agree with it, so what is signed extends the signed history by
construction. Without a usable cache (or with ``full``) it reads every event
and refuses to sign a store whose history no longer extends its last
checkpoint (an event it covered was changed, removed, reordered or inserted):
signing it would not hide the change, since verification checks every
checkpoint against the one before, but it would sign a history the operator
has not looked at. Key files: ``PREFIX.key`` (the signer key, mode 0600,
never journaled) and ``PREFIX.pub`` (the verifier key), in the text forms of
Go's ``sumdb/note`` package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tether.core.compact import Frontier
from tether.core.merkle import Tree, leaf_hash
from tether.core.note import Signer, Verifier, check_name, sign_note
from tether.core.tlog import Checkpoint
from tether.errors import UsageError, VerificationFailed
from tether.store.protocol import Store
from tether.store.seal_records import SignedCheckpoint


def leaf_tree(store: Store) -> Tree:
    """The Merkle tree over the store's events now (leaves: their hashes' leaf hashes)."""
    return Tree.from_data(store.leaf_hashes())


def seal(store: Store, signer: Signer, *, now: float, origin: str | None = None,
         full: bool = False) -> tuple[SignedCheckpoint, bool]:
    """Sign a checkpoint of every event committed so far.

    Hashes only the events since the last checkpoint, from the cache kept beside it
    (:class:`~tether.store.records.SealCache`), once the cache checks: its frontier folds
    to that checkpoint's signed root, the last batch it covers still has the hash it had,
    and the store holds exactly the events it covered plus the new ones. Otherwise, or
    with ``full``, it reads and hashes every event and checks that they still give the
    last checkpoint's root (the check ``tether audit verify`` makes of every checkpoint).

    Returns the checkpoint and whether it is new (False: no event since the last one,
    which is returned as it is).

    Raises:
        VerificationFailed: the store no longer extends its last signed checkpoint.
        Conflict: another process sealed meanwhile (seal again).
    """
    with store.snapshot():  # the events and the last checkpoint as of one moment
        done = store.signed_checkpoints()
        last = done[-1] if done else None
        step = None if full or last is None else _incremental(store, last)
        if step is None:
            step = _from_scratch(store, last)
    frontier, proof, batch, batch_hash = step
    if last is not None and last.size == frontier.size:
        return last, False
    body = Checkpoint(origin or signer.name, frontier.size, frontier.root())
    note = sign_note(body.text(), signer)
    cp = store.add_signed_checkpoint(frontier.size, body.root.hex(), note,
                                     [h.hex() for h in proof], now,
                                     after=0 if last is None else last.n,
                                     cache=(batch, batch_hash, frontier.encode()))
    return cp, True


_Step = tuple[Frontier, list[bytes], int, str]
"""The tree now (its frontier), the consistency proof from the last checkpoint, and the
last batch it covers with that batch's hash."""


def _incremental(store: Store, last: SignedCheckpoint) -> _Step | None:
    """The seal from the cache and the events since; None when the cache is missing or does
    not check (the caller then reads every event)."""
    cache = store.seal_cache()
    if cache is None or cache.checkpoint != last.n:
        return None
    try:
        old = Frontier.decode(last.size, cache.frontier)
    except ValueError:
        return None
    if old.root().hex() != last.root:
        return None  # not the signed tree's frontier: never trusted
    span = store.leaves_since(cache.batch)
    if span.after_hash != cache.batch_hash or \
            store.event_count() != last.size + len(span.hashes):
        return None  # batches or events changed under the cache: look at everything
    leaves = [leaf_hash(h) for h in span.hashes]
    return old.extend(leaves), old.consistency_proof(leaves), span.last, span.last_hash


def _from_scratch(store: Store, last: SignedCheckpoint | None) -> _Step:
    span = store.leaves_since(0)
    tree = Tree.from_data(span.hashes)
    if last is None:
        return Frontier.of_tree(tree), [], span.last, span.last_hash
    _check_extends(tree, last)
    return Frontier.of_tree(tree), tree.consistency_proof(last.size), span.last, span.last_hash


def _check_extends(tree: Tree, last: SignedCheckpoint) -> None:
    if last.size > tree.size:
        raise VerificationFailed(
            f"the store holds {tree.size} events but signed checkpoint {last.n} covers "
            f"{last.size}: events were removed; not signing. Run `tether audit verify` to see "
            "which, and restore the store from a backup")
    if tree.root(last.size).hex() != last.root:
        raise VerificationFailed(
            f"the store's first {last.size} events no longer hash to signed checkpoint "
            f"{last.n}'s root: an event it covers was changed, removed, reordered or inserted "
            "since; not signing over it. Run `tether audit verify` to see which, and restore "
            "the store from a backup")


@dataclass(frozen=True, slots=True)
class SealSchedule:
    """When a worker seals: every ``events`` new events or ``seconds`` seconds (if any
    event is new), whichever comes first, and once more as it stops."""

    signer: Signer
    events: int = 10_000
    seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.events < 1:
            raise UsageError(f"seal every {self.events} events: give 1 or more")
        if not self.seconds > 0:
            raise UsageError(f"seal every {self.seconds} seconds: give more than 0")


# -- key files -----------------------------------------------------------------

def write_keys(prefix: str, name: str, seed: bytes) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (mode 0600, created new: an existing key is never overwritten)
    and ``PREFIX.pub`` for a new key named ``name``; return their paths."""
    try:
        signer = Signer.generate(check_name(name), seed)
    except ValueError as exc:
        raise UsageError(f"--name: {exc}") from None
    key, pub = Path(prefix + ".key"), Path(prefix + ".pub")
    for p in (key, pub):
        if p.exists():
            raise UsageError(f"{p} exists; keys are never overwritten: choose another PREFIX "
                             "or move the old key away first")
        if not p.parent.is_dir():
            raise UsageError(f"{p}: folder {p.parent} does not exist; create it first")
    try:
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(signer.encode() + "\n")
        os.chmod(key, 0o600)  # whatever the umask said
        pub.write_text(signer.verifier.encode() + "\n")
    except OSError as exc:
        raise UsageError(f"cannot write the key files {key} and {pub}: "
                         f"{exc.strerror or exc}") from None
    return key, pub


def load_signer(path: str | os.PathLike[str]) -> Signer:
    """Read a signer key file (``PREFIX.key``); UsageError saying what is wrong."""
    text = _read_key(path, "--key")
    try:
        return Signer.decode(text)
    except ValueError as exc:
        hint = " (that is a public key: sealing needs PREFIX.key)" if \
            not text.startswith("PRIVATE+") else ""
        raise UsageError(f"key file {path}: {exc}{hint}") from None


def load_verifier(path: str | os.PathLike[str]) -> Verifier:
    """Read a verifier key file (``PREFIX.pub``); a signer key file gives its verifier."""
    text = _read_key(path, "--key")
    try:
        if text.startswith("PRIVATE+"):
            return Signer.decode(text).verifier
        return Verifier.decode(text)
    except ValueError as exc:
        raise UsageError(f"key file {path}: {exc}") from None


def _read_key(path: str | os.PathLike[str], label: str) -> str:
    try:
        return Path(path).read_text().strip()
    except FileNotFoundError:
        raise UsageError(f"{label} {path}: no such file; make a key with "
                         "`tether audit keygen PREFIX`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{label} {path}: cannot read it ({exc})") from None
