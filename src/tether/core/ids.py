"""Sortable unique ids (ULID form) from an injected clock, and event time stamps.

Event ids must sort by time in every backend and never collide across
processes. A ULID (48-bit milliseconds + 80 random bits, Crockford base32)
gives both. We generate them here rather than through a library because the
generator must read an injected clock (the demo runs a simulated night) and be
monotonic within one millisecond, which the common packages do not promise.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# Standard base32 (RFC 4648) does the bit twiddling in C; only the alphabet differs.
_FROM_RFC = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())
_TO_INT32 = str.maketrans(_ALPHABET, "0123456789abcdefghijklmnopqrstuv")


def ulid_str(value: int | bytes) -> str:
    """The 26-character ULID text of a 128-bit value."""
    n = int.from_bytes(value, "big") if isinstance(value, bytes) else value
    # 26 characters carry 130 bits: shift so the 128 bits end 6 bits before a byte edge.
    return base64.b32encode((n << 6).to_bytes(17, "big"))[:26].translate(_FROM_RFC).decode()


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
