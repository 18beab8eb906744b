"""Exponential backoff with bounded jitter: one pure schedule for every retry loop.

The worker (failing storage), the notifier (an unreachable webhook) and the
OpenAI-compatible model (a provider error) all wait longer after each failure,
up to a cap. The schedule is a value; the caller owns the clock and the sleep,
and passes the random draw in, so a test can give ``rand=0`` (the shortest
wait) or ``rand=1`` (the longest) and know exactly what comes out.

Example:
    >>> b = Backoff(base=0.5, cap=30.0)
    >>> [b.delay(n, rand=1.0) for n in range(4)]
    [0.5, 1.0, 2.0, 4.0]
    >>> b.delay(10, rand=0.0)  # capped, then the lower half of the jitter
    15.0
"""

from __future__ import annotations

from dataclasses import dataclass

from tether.errors import UsageError


@dataclass(frozen=True, slots=True)
class Backoff:
    """A capped exponential schedule whose jitter spreads each wait over its upper half.

    Half of each wait is fixed and half random, so clients that failed together
    spread out while every one of them still backs off: a wait is never shorter
    than half of ``min(cap, base * factor ** attempt)``.

    Attributes:
        base: the full wait before the first retry, in seconds.
        cap: the longest full wait, in seconds.
        factor: how much the full wait grows per failure.
    """

    base: float
    cap: float
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not 0 <= self.base <= self.cap:
            raise UsageError(f"backoff needs 0 <= base <= cap, not base={self.base} "
                             f"and cap={self.cap}")
        if self.factor < 1:
            raise UsageError(f"backoff factor must be at least 1, not {self.factor}")

    def full(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (0-based) without jitter."""
        # The exponent is bounded so a long outage cannot overflow a float.
        return min(self.cap, self.base * self.factor ** min(max(attempt, 0), 64))

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based).

        Args:
            attempt: how many retries came before this one.
            rand: a draw in [0, 1] (clamped): 0 gives half the full wait, 1 all of it.
        """
        full = self.full(attempt)
        return full * (0.5 + 0.5 * min(max(rand, 0.0), 1.0))

    def most_attempts(self, seconds: float) -> int:
        """The most attempts that fit in ``seconds`` (one at once, then each after the
        shortest possible wait): a bound on how often a loop on this schedule can try."""
        if self.base <= 0:
            raise UsageError("a backoff with base 0 never waits, so no count of attempts "
                             "bounds it")
        n, spent = 1, 0.0
        while spent + self.delay(n - 1, 0.0) <= seconds:
            spent += self.delay(n - 1, 0.0)
            n += 1
        return n


STORAGE_BACKOFF = Backoff(base=0.1, cap=5.0)
"""The schedule while a store fails (scheduling passes and commit retries alike): 0.1 s doubling
to 5 s (at most 29 tries in the first minute, then 12-24 a minute), so a worker notices soon
once space is freed."""
