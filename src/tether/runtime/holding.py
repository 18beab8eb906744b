"""Owning a run for a moment: its lease, its journal, a keeper that renews the lease.

What an operator's process (CLI, web, API) does to change a run no worker owns,
and what the worker does itself to apply a decision that came while nobody held
the run (an approval that expired).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from tether.core.clock import WallClock
from tether.core.ids import UlidSource
from tether.errors import NotFound, TetherError, UsageError
from tether.runtime.journal import RunJournal
from tether.runtime.leases import owner_name, reclaim_dead_local
from tether.store.protocol import Store
from tether.store.records import TERMINAL_STATUSES, RunRow
from tether.system_clock import SYSTEM_CLOCK


def must_get(store: Store, run: str) -> RunRow:
    """The run's row; NotFound if there is none."""
    row = store.get_run(run)
    if row is None:
        raise NotFound(f"no run {run!r}")
    return row


def _journal(store: Store, row: RunRow, token: int, clock: WallClock) -> RunJournal:
    # An operator's entries are stamped with the time they were made, whatever the run's clock.
    return RunJournal(store, row, token, UlidSource(clock.now), clock.now)


def fail_held(store: Store, run: str, token: int, error: str, clock: WallClock) -> str:
    """Fail ``run``, whose lease ``token`` this process holds, from its row as the store
    has it (what a refused write held is not there): ``run.failed`` with ``error``. The
    run's status after (unchanged if it had already ended)."""
    row = must_get(store, run)
    if row.status in TERMINAL_STATUSES:
        return row.status
    j = _journal(store, row, token, clock)
    j.append("run.failed", {"error": error})
    j.flush_sync()
    return j.row.status


def _acquire(store: Store, run: str, owner: str, ttl: float, wait: float,
             wall: WallClock) -> int | None:
    """The run's lease token, or None if it is still held by another after ``wait`` s."""
    deadline = wall.monotonic() + wait
    token = store.acquire(run, owner, ttl, wall.now())
    if token is None and reclaim_dead_local(store, runs=[run], wall=wall):
        # Held by a process on this machine that died (a killed CLI or worker): take over.
        token = store.acquire(run, owner, ttl, wall.now())
    while token is None and wall.monotonic() < deadline:
        time.sleep(0.05)
        token = store.acquire(run, owner, ttl, wall.now())
    return token


_RUN_LOCKS: dict[str, threading.RLock] = {}
_RUN_LOCKS_GUARD = threading.Lock()


def _run_lock(run: str) -> threading.RLock:
    """One lock per run in this process. A process's leases share one owner name, so two of
    its threads acquiring the same run would each take the lease over from the other (the
    loser's fenced writes refused with a lease's token numbers): they take turns instead."""
    with _RUN_LOCKS_GUARD:
        return _RUN_LOCKS.setdefault(run, threading.RLock())


@contextlib.contextmanager
def holding(store: Store, run: str, *, kind: str = "cli", ttl: float = 30.0,
            busy: str | None = None, wait: float = 0.0,
            wall: WallClock = SYSTEM_CLOCK) -> Iterator[RunJournal | None]:
    """Own ``run`` for a moment (its lease) and give its journal; release it after.

    When a worker holds the run (still, after ``wait`` seconds: e.g. a worker that just
    paused it and is letting it go): raise UsageError(``busy``) if given, else yield None.
    The lease is renewed in the background while held, so a long operation (a rollback
    with slow undos) keeps it; its writes are fenced by the token in any case. ``wall``:
    the clock leases follow (and the journal's entries are stamped with).
    """
    with _run_lock(run), _held(store, run, kind, ttl, busy, wait, wall) as journal:
        yield journal


@contextlib.contextmanager
def _held(store: Store, run: str, kind: str, ttl: float, busy: str | None, wait: float,
          wall: WallClock) -> Iterator[RunJournal | None]:
    owner = owner_name(kind)
    token = _acquire(store, run, owner, ttl, wait, wall)
    if token is None:
        if busy is not None:
            raise UsageError(busy)
        yield None
        return
    done = threading.Event()

    def renew() -> None:
        while not done.wait(ttl / 3):
            with contextlib.suppress(TetherError):
                if store.renew({run: token}, owner, ttl, wall.now()):
                    return  # taken over: the fenced writes will say so

    keeper = threading.Thread(target=renew, name=f"tether-lease-{run[-6:]}", daemon=True)
    keeper.start()
    try:
        yield _journal(store, must_get(store, run), token, wall)
    finally:
        done.set()
        keeper.join()
        store.release(run, owner, token)
