"""Sealing a store: a signed checkpoint over every event's hash in commit order.

A seal builds the RFC 6962 Merkle tree (:mod:`tether.core.merkle`) whose leaves
are the 32-byte hashes of every event the store committed (run chains and the
store chain alike), in the order the batch chain names them, writes its size
and root as a C2SP tlog-checkpoint body (:mod:`tether.core.tlog`), signs it as
a C2SP signed note with Ed25519 (:mod:`tether.core.note`) and stores it with
the consistency proof from the checkpoint before it. ``tether audit seal``
seals on demand; a worker given a key seals every N events or T seconds.

A seal refuses to sign a store whose history no longer extends its last
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

from tether.core.merkle import Tree
from tether.core.note import Signer, Verifier, check_name, sign_note
from tether.core.tlog import Checkpoint
from tether.errors import UsageError, VerificationFailed
from tether.store.protocol import Store
from tether.store.records import SignedCheckpoint


def leaf_tree(store: Store) -> Tree:
    """The Merkle tree over the store's events now (leaves: their hashes' leaf hashes)."""
    return Tree.from_data(store.leaf_hashes())


def seal(store: Store, signer: Signer, *, now: float, origin: str | None = None
         ) -> tuple[SignedCheckpoint, bool]:
    """Sign a checkpoint of every event committed so far.

    Returns the checkpoint and whether it is new (False: no event since the last one,
    which is returned as it is).

    Raises:
        VerificationFailed: the store no longer extends its last signed checkpoint.
        Conflict: another process sealed meanwhile (seal again).
    """
    with store.snapshot():  # the events and the last checkpoint as of one moment
        tree = leaf_tree(store)
        done = store.signed_checkpoints()
    last = done[-1] if done else None
    if last is not None:
        _check_extends(tree, last)
        if last.size == tree.size:
            return last, False
    body = Checkpoint(origin or signer.name, tree.size, tree.root())
    note = sign_note(body.text(), signer)
    proof = [] if last is None else [h.hex() for h in tree.consistency_proof(last.size)]
    cp = store.add_signed_checkpoint(tree.size, body.root.hex(), note, proof, now,
                                     after=0 if last is None else last.n)
    return cp, True


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
