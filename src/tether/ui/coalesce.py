"""Live regions shared by the open pages that show the same thing at the same commit.

Every open page fetches its live region again after each commit the poller announces,
all at once. A hundred pages on a few run pages would each read the store and render the
same HTML; here the first request for a (page, viewer, commit) computes it and the
others, arriving meanwhile or after, take its result. Only the CSRF token differs
between viewers' copies: the region is rendered with a placeholder that each response
replaces with its own token.

Entries are keyed by the poller's newest batch number, which is read from the store
before any request is keyed by it: a region computed under it shows at least that
commit. When the number moves on, the older entries are dropped; while it stands still,
at most ``limit`` are kept (the oldest go first), so asking for many distinct URLs cannot
fill the server's memory.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Hashable

__all__ = ["LiveRegions"]


class LiveRegions:
    """Rendered live regions of the current commit, computed once per key."""

    def __init__(self, limit: int = 128) -> None:
        self.limit = limit
        self.placeholder = f"csrf-{secrets.token_hex(16)}"
        """Stands for the CSRF token in a shared region (random: no page text can hold it)."""
        self.computed = 0
        """Regions rendered (a test checks that pages share them)."""
        self._lock = threading.Lock()
        self._head = -1
        self._done: dict[Hashable, str] = {}
        self._pending: dict[tuple[int, Hashable], threading.Event] = {}

    def get(self, head: int, key: Hashable, render: Callable[[str], str], token: str) -> str:
        """The region for ``key`` at commit ``head`` with ``token`` in it: rendered by
        ``render(placeholder)`` unless another request did or is doing it."""
        mine: threading.Event | None = None
        while True:
            with self._lock:
                if head > self._head:
                    self._head, self._done = head, {}
                if head < self._head:  # keyed before the poller moved on: not shared
                    break
                if key in self._done:
                    return self._done[key].replace(self.placeholder, token)
                wait = self._pending.get((head, key))
                if wait is None:
                    mine = self._pending[head, key] = threading.Event()
                    break
            wait.wait()  # the first request's result, or its failure (then try ourselves)
        if mine is None:
            return render(token)
        try:
            html = render(self.placeholder)
            with self._lock:
                self.computed += 1
                if head == self._head:
                    if len(self._done) >= self.limit:
                        del self._done[next(iter(self._done))]
                    self._done[key] = html
        finally:
            with self._lock:
                self._pending.pop((head, key), None)
            mine.set()
        return html.replace(self.placeholder, token)
