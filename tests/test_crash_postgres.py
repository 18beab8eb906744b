"""Crash tests on the PostgreSQL store: real worker subprocesses, SIGKILL and SIGSTOP.

The same trials and invariants as tests/test_crash.py (``tests.crashkit``), with the
store in a fresh schema of the server at 127.0.0.1:5432: nothing committed is lost,
no irreversible effect runs twice, a killed worker's runs are taken over once its
leases expire, and a frozen worker that wakes after a takeover never writes again
(its fencing token is refused by the commit, whichever process or machine it is on).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import crashkit as ck
from tests import pgkit
from tests.test_crash import owner_of, settle, stopped
from tether.store.postgres import PostgresStore
from tether.store.postgres_base import lock_key

pytestmark = [pytest.mark.crash, pytest.mark.raw_rows]


@pytest.fixture
def pg(pg_url: str, tmp_path: Path,
       monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path, PostgresStore]]:
    """A store in a fresh schema (dropped afterwards) and the side channel's file."""
    side = tmp_path / "side.log"
    monkeypatch.setenv(ck.SIDE_ENV, str(side))
    monkeypatch.delenv(ck.EXIT_ENV, raising=False)
    store = PostgresStore(pg_url)
    yield pg_url, side, store
    store.close()


@pytest.mark.parametrize("seed", range(4))
def test_sigkill_at_random_moments(seed: int, pg: tuple[str, Path, PostgresStore]) -> None:
    url, side, _ = pg
    trial = ck.kill_restart_trial(side.parent, seed, kills=3, steps=24, ttl=0.3, url=url)
    assert set(trial.summary.statuses) == {"done"} and trial.kills == 3


def test_killed_worker_is_taken_over_after_lease_expiry(
        pg: tuple[str, Path, PostgresStore]) -> None:
    url, side, store = pg
    runs = ck.start_runs(store, ["keyed", "keyed", "counter"], steps=150, pace=0.01)
    a = ck.spawn_worker(url, side, tag="a", owner="A", lease_ttl=1.0)
    b = None
    try:
        a.wait_ready()
        ck.wait_for(lambda: all(owner_of(store, r) == "A" for r in runs), 30,
                    "worker A to lease every run")
        b = ck.spawn_worker(url, side, tag="b", owner="B", lease_ttl=1.0)
        b.wait_ready()  # B polls, but A renews its leases: B must wait
        a.kill()
        killed_at = time.time()
        leases = {r: store.lease_of(r) for r in runs}
        before = ck.snapshot(store)
        ck.wait_for(lambda: ck.at_rest(store, runs), 90, "worker B to take the runs over")
    finally:
        a.kill()
        if b is not None:
            assert b.terminate() == 0
    ck.check_nothing_lost(before, ck.snapshot(store))
    lines = ck.read_side(side)
    for r in runs:
        old = leases[r]
        assert old is not None and old[0] == "A"
        assert all(ln.t < killed_at for ln in lines if ln.run == r and ln.pid == a.pid)
        assert all(ln.t >= old[2] for ln in lines if ln.run == r and ln.pid == b.pid), (
            f"run {r}: B acted before A's lease expired")
        new = store.lease_of(r)
        assert new is not None and new[0] == "B" and new[1] > old[1]
    summary = settle(store, side)
    assert summary.statuses == Counter(done=len(runs))


def freeze_between_commits(w: ck.WorkerProc, store: PostgresStore) -> None:
    """SIGSTOP the worker at a moment it holds no write transaction: a frozen holder of
    the store's advisory lock would stall every writer for lock_timeout, which is not
    what is tested here."""
    key = lock_key(store.schema)
    with pgkit.connect(autocommit=True) as c:
        for _ in range(500):
            os.kill(w.pid, signal.SIGSTOP)
            ck.wait_for(lambda: stopped(w.pid), 10, "the worker to stop", interval=0.001)
            row = c.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            if row is not None and row[0]:
                c.execute("SELECT pg_advisory_unlock(%s)", (key,))
                return
            os.kill(w.pid, signal.SIGCONT)
            time.sleep(0.003)
    raise AssertionError("the worker always held the write lock")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states in /proc")
def test_frozen_worker_is_fenced_off_after_takeover(pg: tuple[str, Path, PostgresStore]) -> None:
    """SIGSTOP (a VM pause, a long GC) outlasts the lease; B takes over; SIGCONT. The woken
    worker must never commit to the runs again nor start new effects."""
    url, side, store = pg
    keyed = ck.start_runs(store, ["keyed", "keyed"], steps=150, pace=0.01)
    runs = keyed + ck.start_runs(store, ["counter"], steps=60, pace=0.01)
    a = ck.spawn_worker(url, side, tag="a", owner="A", lease_ttl=1.0)
    b = None
    try:
        a.wait_ready()
        ck.wait_for(lambda: all(owner_of(store, r) == "A" for r in runs), 30,
                    "worker A to lease every run")
        b = ck.spawn_worker(url, side, tag="b", owner="B", lease_ttl=1.0)
        b.wait_ready()
        freeze_between_commits(a, store)
        # Within the lease's expiry, or, if a commit the worker had already sent (BEGIN and
        # the lock travel in one message) took the lock after the check above, within the
        # server's 30 s stall timeout that frees it.
        ck.wait_for(lambda: all(owner_of(store, r) == "B" for r in keyed), 75,
                    "worker B to take the frozen worker's runs")
        before = ck.snapshot(store)
        thawed_at = time.time()
        os.kill(a.pid, signal.SIGCONT)
        ck.wait_for(lambda: ck.at_rest(store, runs), 90, "the runs to come to rest")
    finally:
        os.kill(a.pid, signal.SIGCONT)
        codes = (a.terminate(), b.terminate() if b is not None else 0)
    assert codes == (0, 0)
    ck.check_nothing_lost(before, ck.snapshot(store))
    lines = ck.read_side(side)
    durable_before_thaw = {e[1] for evs in before.values() for e in evs}
    late = [ln for ln in lines if ln.pid == a.pid and ln.t >= thawed_at]
    assert all(ln.effect in durable_before_thaw for ln in late), "A started an effect after thawing"
    for r in keyed:
        assert ck.status_of(store, r) == "done"
    summary = settle(store, side)
    assert summary.statuses == Counter(done=len(runs))
