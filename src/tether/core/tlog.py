"""C2SP tlog-checkpoint bodies (https://c2sp.org/tlog-checkpoint).

A checkpoint is the note text::

    <origin>
    <tree size, decimal>
    <root hash, base64>
    [extension lines]

signed as a C2SP signed note (:mod:`tether.core.note`). tether's log is the
Merkle tree (:mod:`tether.core.merkle`) over every event's hash in commit
order, so a checkpoint of size ``n`` commits to the first ``n`` events a store
committed. Pure.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from tether.core.merkle import HASH_SIZE
from tether.errors import VerificationFailed


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The body of a signed checkpoint."""

    origin: str
    """Which log: one line, unique to the store (by default the signing key's name)."""
    size: int
    """How many leaves (events, in commit order) the tree has."""
    root: bytes
    """The tree's root hash (32 bytes)."""
    extensions: tuple[str, ...] = ()
    """Further non-empty lines, opaque to verifiers that do not know them."""

    def text(self) -> str:
        """The note text (ends in a newline)."""
        if not self.origin or "\n" in self.origin or not self.origin.isprintable():
            raise ValueError(f"origin {self.origin!r}: one printable, non-empty line")
        if any(not x or "\n" in x for x in self.extensions):
            raise ValueError("extension lines are non-empty single lines")
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(),
                 *self.extensions]
        return "\n".join(lines) + "\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """Read a checkpoint body (the text of a signed note).

    Raises:
        VerificationFailed: saying which line is wrong.
    """
    if not text.endswith("\n"):
        raise VerificationFailed("checkpoint: the text does not end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise VerificationFailed("checkpoint: expected origin, tree size and root hash lines")
    origin, size_line, root_line, *ext = lines
    if not origin:
        raise VerificationFailed("checkpoint: empty origin line")
    if not size_line.isascii() or not size_line.isdigit() or \
            (size_line.startswith("0") and size_line != "0"):
        raise VerificationFailed(f"checkpoint: tree size {size_line[:30]!r} is not a decimal "
                                 "number")
    try:
        root = base64.b64decode(root_line, validate=True)
    except binascii.Error:
        raise VerificationFailed("checkpoint: the root hash is not base64") from None
    if len(root) != HASH_SIZE:
        raise VerificationFailed(f"checkpoint: the root hash is {len(root)} bytes, not "
                                 f"{HASH_SIZE}")
    if any(not x for x in ext):
        raise VerificationFailed("checkpoint: an empty extension line")
    return Checkpoint(origin, int(size_line), root, tuple(ext))
