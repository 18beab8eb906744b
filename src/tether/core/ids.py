"""Sortable unique ids (ULID form) from an injected clock, and event time stamps.

Event ids must sort by time in every backend and never collide across
processes. A ULID (48-bit milliseconds + 80 random bits, Crockford base32)
gives both. We generate them here rather than through a library because the
generator must read an injected clock (the demo runs a simulated night) and be
monotonic within one millisecond, which the common packages do not promise.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


_TO_INT32 = str.maketrans(_ALPHABET, "0123456789abcdefghijklmnopqrstuv")
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)
"""Two characters per 10 bits: every id a store reads back is encoded, so this is hot
(Python 3.11's ``base64.b32encode`` loops in Python: 5x slower)."""


def ulid_str(value: int | bytes) -> str:
    """The 26-character ULID text of a 128-bit value."""
    n = int.from_bytes(value, "big") if isinstance(value, bytes) else value
    p = _PAIRS
    # 26 characters carry 130 bits: the 128 bits right-aligned, 13 pairs from the top
    # (written out: a loop or a join costs half as much again).
    return (p[n >> 120 & 1023] + p[n >> 110 & 1023] + p[n >> 100 & 1023] + p[n >> 90 & 1023]
            + p[n >> 80 & 1023] + p[n >> 70 & 1023] + p[n >> 60 & 1023] + p[n >> 50 & 1023]
            + p[n >> 40 & 1023] + p[n >> 30 & 1023] + p[n >> 20 & 1023] + p[n >> 10 & 1023]
            + p[n & 1023])


def ulid_bytes(text: str) -> bytes:
    """The 16 bytes of a ULID's text (how stores keep ids compactly)."""
    return int(text.translate(_TO_INT32), 32).to_bytes(16, "big")


def ulid_time(text: str) -> float:
    """The time (seconds since the epoch, to the millisecond) a ULID was made at."""
    return (int.from_bytes(ulid_bytes(text), "big") >> 80) / 1000


class UlidSource:
    """Monotonic ULID generator.

    Within one millisecond the random part is incremented, so ids created by
    one process are strictly increasing even when the clock stands still or
    steps back (the previous timestamp is kept until the clock passes it).
    """

    def __init__(self, clock: Callable[[], float],
                 randbits: Callable[[], int] | None = None) -> None:
        self._clock = clock
        self._rand = randbits or (lambda: int.from_bytes(os.urandom(10), "big"))
        self._last_ms = -1
        self._last_rand = 0
        self._lock = threading.Lock()

    def new(self) -> str:
        """Return a new id, greater than every id this source returned before."""
        with self._lock:
            ms = int(self._clock() * 1000)
            if ms <= self._last_ms:
                ms = self._last_ms
                rand = self._last_rand + 1
                if rand >= 1 << 80:  # exhausted this millisecond: borrow the next one
                    ms += 1
                    rand = self._rand()
            else:
                rand = self._rand()
            self._last_ms, self._last_rand = ms, rand
            return ulid_str((ms << 80) | rand)


def _seconds(sec: int) -> str:
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def iso(t: float) -> str:
    """Seconds since the epoch as an ISO-8601 UTC string with microseconds (pure).

    Stamping many events: :func:`iso_stamper` gives the same text faster.
    """
    sec, us = divmod(round(t * 1_000_000), 1_000_000)
    return f"{_seconds(sec)}.{us:06d}Z"


def iso_stamper() -> Callable[[float], str]:
    """:func:`iso` with the date part formatted once per second, for a worker's journals.

    One per worker, shared by the runs it drives: a run alone steps too seldom for a
    cache of its own to hit. The cache is one (second, text) tuple replaced whole, so
    even two threads stamping through one stamper read a consistent pair (one thread
    can never take another's second).
    A closure rather than an object: a call costs what the old module-global cache did.
    """
    last = (-1 << 62, "")

    def stamp(t: float) -> str:
        nonlocal last
        sec, us = divmod(round(t * 1_000_000), 1_000_000)
        cur = last
        if cur[0] != sec:
            cur = last = (sec, _seconds(sec))
        return f"{cur[1]}.{us:06d}Z"
    return stamp


def parse_iso(s: str) -> float:
    """Inverse of :func:`iso` (accepts any ISO-8601 form with a zone)."""
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
