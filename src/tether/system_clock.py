"""The system's clocks: the one module of tether that reads the time.

Everything else is given a :class:`tether.core.clock.Clock` (the run clock) or a
:class:`tether.core.clock.WallClock` (leases, heartbeats, expiry) and defaults to
:data:`SYSTEM_CLOCK`.
"""

from __future__ import annotations

import time

from tether.core.clock import WallClock


class SystemClock:
    """The operating system's clock: ``time.time`` and ``time.monotonic``."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class ShiftedClock:
    """The system clock moved forward by hand: time goes on, and :meth:`advance` jumps it.

    For tests of what expires across processes (a dead worker's lease): advancing
    this clock stands for waiting, while everything that really waits (threads,
    sockets, other processes) keeps its real pace.
    """

    def __init__(self, base: WallClock | None = None) -> None:
        self._base = base or SYSTEM_CLOCK
        self.offset = 0.0

    def now(self) -> float:
        return self._base.now() + self.offset

    def monotonic(self) -> float:
        return self._base.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


SYSTEM_CLOCK: WallClock = SystemClock()
"""The clock every run and every lease follows unless another is injected."""


__all__ = ["SYSTEM_CLOCK", "ShiftedClock", "SystemClock"]
