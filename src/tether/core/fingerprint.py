"""Call fingerprints: (kind, name, hash of arguments), to catch nondeterministic replay.

A model call's arguments are a conversation that grows by a few messages a
step. Re-encoding all of it on every call would cost O(conversation) per call,
so :class:`ConversationHasher` keeps a running hash chain over the messages of
the list it saw last and hashes only the messages appended since.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from tether.core.canonical import digest, dumps

_ZERO = "0" * 64


def fingerprint(kind: str, name: str, args_hash: str) -> str:
    """The fingerprint journaled with a call."""
    return f"{kind}:{name}:{args_hash[:32]}"


class ConversationHasher:
    """Incremental hash of a message list that grows at the end.

    The cache follows one list object. Messages changed in place after they
    were hashed are not noticed: the fingerprint is a guard against code or
    input drift between a crash and its replay, not an integrity check.
    """

    __slots__ = ("_digests", "_list")

    def __init__(self) -> None:
        self._list: Sequence[Any] | None = None
        self._digests: list[str] = []

    def digest(self, messages: Sequence[Any]) -> str:
        if messages is not self._list or len(messages) < len(self._digests):
            self._list = messages
            self._digests = []
        h = self._digests[-1] if self._digests else _ZERO
        for m in messages[len(self._digests):]:
            h = hashlib.sha256((h + hashlib.sha256(dumps(m)).hexdigest()).encode()).hexdigest()
            self._digests.append(h)
        return h


__all__ = ["ConversationHasher", "digest", "fingerprint"]
