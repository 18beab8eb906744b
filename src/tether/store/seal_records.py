"""Records of signed checkpoints (``tether audit seal``; docs/audit.md): a checkpoint as
the store keeps it, the cache the next seal reads beside it, and the events a seal reads
since a batch. Plain data, shared by the store protocol, every backend and the audit."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """One signed checkpoint of the store (``tether audit seal``; docs/audit.md)."""

    n: int
    """Its number, from 1, in the order they were written."""
    size: int
    """How many events (leaves, in commit order) it covers."""
    root: str
    """Hex Merkle root of those events' hashes (also in the note, base64)."""
    note: str
    """The C2SP signed note: the tlog-checkpoint body and its Ed25519 signature line."""
    proof: tuple[str, ...]
    """Hex consistency proof from the checkpoint before it (empty for the first)."""
    created: float
    """Wall-clock time it was written (seconds since the epoch); not signed."""


@dataclass(frozen=True, slots=True)
class SealCache:
    """What the next seal needs of the last signed checkpoint's tree, kept beside it so a
    seal hashes only the events since (docs/audit.md, Cost). A cache: a seal checks it
    against the signed root and the batch chain before using it, verification never
    reads it, and a missing or stale one means the seal reads every event instead."""

    checkpoint: int
    """The signed checkpoint it belongs to."""
    batch: int
    """The last batch (of the batch chain) that checkpoint covers; 0: none."""
    batch_hash: str
    """That batch's hash (hex) when the checkpoint was signed ('' for batch 0)."""
    frontier: bytes
    """The tree's frontier (:class:`tether.core.compact.Frontier`), its hashes concatenated."""


@dataclass(frozen=True, slots=True)
class LeafSpan:
    """The events committed after some batch: :meth:`Store.leaves_since`."""

    after_hash: str | None
    """The hash (hex) of the batch they follow, as the store holds it now ('' for batch 0;
    None: that batch is not in the store)."""
    last: int
    """The number of the last batch the store holds (the one they follow if none is new)."""
    last_hash: str
    """Its hash (hex; '' for batch 0)."""
    hashes: list[bytes]
    """Every event hash committed after that batch, in commit order."""
