"""Whether a worker's store can be written, and when to try again while it cannot.

A full disk or a failing mount does not heal in milliseconds: a worker that
retried at its polling rate wrote 47 identical lines a second and never
stopped. While the store fails, the worker's scheduling passes follow a
capped exponential :class:`~tether.core.backoff.Backoff`; a line is logged
when the store starts failing, when the kind of failure changes, and when
it works again, never per retry. ``--until-idle`` gives up after a while
with the last error, which says what to fix. Meanwhile the group committer
retries the runs' commits (they wait), so an effect that ran is recorded
once space is freed; a run whose commit fails for good is abandoned as it
is, never marked failed, and taken again once the store works. Nothing
journaled is lost either way.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from tether.core.backoff import STORAGE_BACKOFF as STORAGE_BACKOFF
from tether.core.backoff import Backoff
from tether.errors import StoreError
from tether.system_clock import SYSTEM_CLOCK

log = logging.getLogger("tether.worker")


GIVE_UP_AFTER = 60.0
"""Seconds of failing storage after which ``--until-idle`` gives up (``--give-up-after``)."""


class StoreHealth:
    """The failure episode a worker is in, if any (its clock and its random draws injected).

    Args:
        who: names the worker in log lines.
        schedule: the backoff between scheduling passes while the store fails.
        give_up_after: seconds of failure after which :meth:`exhausted` returns the error
            to give up with; None never gives up.
        now: a monotonic clock in seconds.
        rand: draws in [0, 1) for the jitter.
        writes: a count of the runs' writes the store accepted (the worker's group
            commits): a sign that the store works again, which also puts off giving up.
    """

    def __init__(self, who: str, schedule: Backoff = STORAGE_BACKOFF, *,
                 give_up_after: float | None = GIVE_UP_AFTER,
                 now: Callable[[], float] = SYSTEM_CLOCK.monotonic,
                 rand: Callable[[], float] = random.random,
                 writes: Callable[[], int] = lambda: 0) -> None:
        self.who = who
        self._writes = writes
        self._writes_seen = 0
        self.schedule = schedule
        self.give_up_after = give_up_after
        self._now = now
        self._rand = rand
        self.since: float | None = None
        """When the current episode began (None: the store works)."""
        self.attempts = 0
        """Scheduling passes tried in this episode, the one that first failed included."""
        self.retry_at = 0.0
        self.last: StoreError | None = None
        self._worked_at: float | None = None
        self._ok_since: float | None = None

    @property
    def failing(self) -> bool:
        """True from the first failure until writes have gone through for a while."""
        return self.since is not None

    def failed(self, exc: StoreError) -> None:
        """Note a storage failure: the first of an episode (or a new kind) is logged."""
        # Commits that landed since the last look are progress even though this failure
        # follows them: the worker notes its committer's failure before before_pass() would
        # see them, and swallowing them here made a store that works again give up anyway.
        self._note_writes()
        self._ok_since = None
        if self.since is None:
            self.since, self.attempts = self._now(), 1
            self.retry_at = self.since + self.schedule.delay(0, self._rand())
            give_up = (f"; --until-idle gives up after {self.give_up_after:g} s"
                       if self.give_up_after is not None else "")
            log.warning("worker %s: the store is failing; retrying with backoff (%g s doubling "
                        "to %g s apart), no run is failed for it%s: %s", self.who,
                        self.schedule.base, self.schedule.cap, give_up, exc)
        elif self.last is not None and type(exc) is not type(self.last):
            log.warning("worker %s: the store is still failing, now with: %s", self.who, exc)
        else:
            log.debug("worker %s: the store is still failing: %s", self.who, exc)
        self.last = exc

    def before_pass(self, *, give_up: bool) -> float:
        """Seconds to wait before the next scheduling pass; 0: go now (while failing, that
        pass is an attempt). With ``give_up``, raises the error to give up with instead.

        Raises:
            StoreError: the last failure, once :meth:`exhausted`.
        """
        self._note_writes()
        self.settle()
        if not self.failing:
            return 0.0
        if give_up and (err := self.exhausted()) is not None:
            raise err
        wait = self.wait()
        if wait <= 0:
            self.attempt()
        return wait

    def _note_writes(self) -> None:
        """Count the runs' writes the store accepted since the last look as :meth:`worked`."""
        writes = self._writes()
        if writes > self._writes_seen:
            self._writes_seen = writes
            self.worked()

    def close(self) -> None:
        """The worker ends: if writes went through after the last failure, say the store works
        again now (``--until-idle`` may end before a whole ``schedule.cap`` of quiet)."""
        self._note_writes()
        if self.since is not None and self._ok_since is not None:
            self._recovered()

    def _recovered(self) -> None:
        since, ok_since = self.since or 0.0, self._ok_since or 0.0
        log.warning("worker %s: the store works again after %.1f s of failures "
                    "(%d attempts)", self.who, ok_since - since, self.attempts)
        self.since, self.attempts, self.retry_at, self.last = None, 0, 0.0, None
        self._worked_at = self._ok_since = None

    def worked(self, *, progress: bool = True) -> None:
        """A write went through while failing (see :meth:`settle`). ``progress``: it was a
        run's (a group commit), which also puts off giving up; taking a lease is not."""
        if self.since is None:
            return
        now = self._now()
        if progress:
            self._worked_at = now
        if self._ok_since is None:
            self._ok_since = now

    def settle(self) -> None:
        """End the episode once writes have gone through with no failure for a full
        ``schedule.cap``: a disk with a little room left lets small writes through and fails
        big ones, and must not flip the state (and reset the backoff) each time."""
        if self.since is None or self._ok_since is None:
            return
        if self._now() - self._ok_since >= self.schedule.cap:
            self._recovered()

    def wait(self) -> float:
        """Seconds until the next scheduling pass may start (0: now)."""
        return max(0.0, self.retry_at - self._now()) if self.failing else 0.0

    def attempt(self) -> None:
        """A scheduling pass starts while failing: the next one waits longer."""
        if self.failing:
            self.attempts += 1
            self.retry_at = self._now() + self.schedule.delay(self.attempts - 1, self._rand())

    def exhausted(self) -> StoreError | None:
        """The error to give up with once the store has failed for ``give_up_after`` with no
        write going through meanwhile."""
        if self.since is None or self.give_up_after is None or self.last is None:
            return None
        now = self._now()
        stalled = now - max(self.since, self._worked_at or self.since)
        if stalled < self.give_up_after:
            return None
        return type(self.last)(
            f"worker {self.who} gave up after {now - self.since:.1f} s of failing storage "
            f"({self.attempts} attempts; no write landed for {stalled:.1f} s; --give-up-after "
            f"{self.give_up_after:g}); runs are left as they were. Last error: {self.last}")
