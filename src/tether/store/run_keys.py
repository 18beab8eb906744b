"""Run ids and their small integer keys, as every backend caches them.

Events, checkpoints and links name a run by a small integer key (``run_keys``), a
fraction of its id's size in every row and index. A run's key never changes, so each
store keeps both directions in memory once read; a key read inside a write transaction
may be one that transaction created, so a rolled-back transaction forgets them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class RunKeys:
    """A store's cache of run keys, both ways."""

    def __init__(self) -> None:
        self._keys: dict[str, int] = {}
        self._ids: dict[int, str] = {}

    def key(self, run: str) -> int | None:
        """The run's key, if read before."""
        return self._keys.get(run)

    def remember(self, run: str, rk: Any) -> int:
        """Keep what a committed ``run_keys`` row says; the key."""
        self._keys[run] = int(rk)
        self._ids[int(rk)] = run
        return int(rk)

    def run(self, rk: int) -> str | None:
        """The run of key ``rk``, if read before."""
        return self._ids.get(rk)

    def found(self, rk: int, rows: Sequence[Sequence[Any]]) -> str:
        """The run of key ``rk`` from its ``run_keys`` rows ``(id,)``, kept; a key no
        row names (a damaged or copied store) is named as such, and not kept."""
        if not rows:
            return f"(unknown run key {rk})"
        self._ids[rk] = str(rows[0][0])
        return self._ids[rk]

    def forget(self) -> None:
        """Forget every key: a transaction that may have created some rolled back."""
        self._keys.clear()
        self._ids.clear()
