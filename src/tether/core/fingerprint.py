"""Call fingerprints: (kind, name, hash of arguments), to catch nondeterministic replay.

A model call's arguments are a conversation that grows by a few messages a
step; :class:`ConversationHasher` hashes only what was appended since the
previous call, while still noticing messages edited in place.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from tether.core.canonical import dumps


def fingerprint(kind: str, name: str, args_hash: str) -> str:
    """The fingerprint journaled with a call."""
    return f"{kind}:{name}:{args_hash[:32]}"


class ConversationHasher:
    """Hash of a message list, reusing the work done for the list it saw last.

    The list is encoded once per call (orjson, fast); when the previous encoding
    is a prefix of the new one (the conversation only grew), only the new bytes
    are fed to a copy of the previous SHA-256 state. A message edited in place
    changes the prefix, so it is noticed and the whole list is hashed again: a
    replay, which hashes from scratch, always agrees with the live run.
    """

    __slots__ = ("_encoded", "_state")

    def __init__(self) -> None:
        self._encoded = b""
        self._state = hashlib.sha256()

    def digest(self, messages: Sequence[Any]) -> str:
        data = dumps(list(messages))
        # Compare and feed through memoryviews: slicing would copy the conversation.
        n = len(data) - 1  # without the closing bracket, so growth extends the prefix
        old = self._encoded
        m = len(old) - 1
        if old and n >= m and data.startswith(memoryview(old)[:m]):
            state = self._state.copy()
            state.update(memoryview(data)[m:n])
        else:
            state = hashlib.sha256(memoryview(data)[:n])
        self._encoded, self._state = data, state
        return state.copy().hexdigest()
