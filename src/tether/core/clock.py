"""The two clocks a process reads, as types: a run clock and a wall clock.

A run's journal, its ids and what its agent sees (``ctx.now()``, sleeps, policy
time windows) follow the *run clock*, which a simulation may move by hand (the
demo's night is hours of run time in seconds). What several processes must agree
on follows the *wall clock*: lease expiry and heartbeats, when an approval or a
command expires, when a notification is due. Keeping them apart lets a test
expire a lease by moving the wall clock instead of sleeping, and a simulated
night keep real leases.

Core only names the clocks; it never reads one. The system's implementation is
``tether.system_clock.SystemClock`` (the one place that reads the time); tests
and simulations use :class:`FixedClock`.
"""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    """A source of the time: the run clock, or any clock that only tells the time."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class WallClock(Clock, Protocol):
    """The time processes share (leases, heartbeats, expiry), and a timer for this one."""

    def monotonic(self) -> float:
        """Seconds on a clock that never steps back: for deadlines and intervals inside one
        process (a system clock set back must not stall them)."""
        ...


class FixedClock:
    """A clock that moves only when told to: for tests and simulations.

    It serves as a run clock or a wall clock (``monotonic`` is ``now``).

    Example:
        >>> c = FixedClock(100.0)
        >>> c.advance(2.5); c.now()
        102.5
    """

    def __init__(self, start: float) -> None:
        self._t = start

    def now(self) -> float:
        return self._t

    def monotonic(self) -> float:
        return self._t

    def advance(self, seconds: float) -> None:
        self._t += seconds

    def set(self, t: float) -> None:
        self._t = t


__all__ = ["Clock", "FixedClock", "WallClock"]
