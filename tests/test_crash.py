"""Crash tests: real worker subprocesses killed with SIGKILL at random moments.

Each trial starts a few runs (an async step agent with an irreversible effect,
a sync step agent with an idempotent one, the built-in Agent on a scripted
model), starts the real worker in a subprocess, kills it after a random delay,
restarts it, and in the end drives everything to rest in this process. After
every kill and restart the invariants of ``tests.crashkit.check_store`` must
hold: nothing committed is lost, no irreversible effect ran twice, idempotent
retries reuse their key, chains verify, and every run is done or paused on an
in-doubt effect that names itself. In-doubt effects are then settled as an
operator would (``tether.control.resolve_effect``) and every run must finish.

The side channel (``$CRASH_SIDE``) is the ground truth of what happened.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import crashkit as ck
from tether import Done, StepAgent, Worker, start_run, tool
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools

TRIALS = 30
STEPS = 28
PACE = 0.015
TTL = 0.2
"""Lease of the killed workers: short, so a restart takes their runs over quickly."""

pytestmark = pytest.mark.crash


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path, SQLiteStore]]:
    db, side = tmp_path / "crash.db", tmp_path / "side.log"
    monkeypatch.setenv(ck.SIDE_ENV, str(side))  # for the workers this process runs
    monkeypatch.delenv(ck.EXIT_ENV, raising=False)
    store = SQLiteStore(db)
    yield db, side, store
    store.close()


def settle(store: SQLiteStore, side: Path) -> ck.Summary:
    """Drive to rest, check, resolve what is in doubt as an operator would, finish."""
    ck.finish(store)
    first = ck.check_store(store, side, final=True)
    if first.in_doubt:
        resolved = ck.resolve_in_doubt(store, side)
        assert set(resolved) == set(first.in_doubt)
        ck.finish(store)
    last = ck.check_store(store, side, final=True)
    assert not last.in_doubt
    assert set(last.statuses) == {"done"}, last.statuses
    last.in_doubt = first.in_doubt
    return last


@pytest.mark.parametrize("seed", range(TRIALS))
def test_sigkill_at_random_moments(seed: int, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ck.SIDE_ENV, str(tmp_path / "side.log"))
    monkeypatch.delenv(ck.EXIT_ENV, raising=False)
    trial = ck.kill_restart_trial(tmp_path, seed, kills=2 if seed % 3 == 0 else 1, steps=STEPS, pace=PACE,
                                  ttl=TTL)
    assert trial.summary.statuses["done"] == 4
    print(trial.line())


@pytest.mark.parametrize("seed", range(100, 103))
def test_sigterm_drains_without_leaving_anything_in_doubt(seed: int, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ck.SIDE_ENV, str(tmp_path / "side.log"))
    monkeypatch.delenv(ck.EXIT_ENV, raising=False)
    trial = ck.kill_restart_trial(tmp_path, seed, kills=1, steps=STEPS, pace=PACE, ttl=TTL,
                                  delay=(0.1, 0.6), term=True)
    assert trial.killed_mid_run and not trial.resolved


def test_two_workers_never_run_the_same_run(files: tuple[Path, Path, SQLiteStore]) -> None:
    db, side, store = files
    a = ck.spawn_worker(db, side, tag="a", concurrency=2)
    b = ck.spawn_worker(db, side, tag="b", concurrency=2)
    try:
        a.wait_ready()
        b.wait_ready()
        env = {**os.environ, "PYTHONPATH": str(ck.ROOT)}
        out = subprocess.run([sys.executable, "-m", "tests.crashkit", "start", str(db), "6",
                              "--steps", "20"], cwd=ck.ROOT, env=env, check=True,
                             capture_output=True, text=True, timeout=60).stdout.split()
        assert len(out) == 6
        ck.wait_for(lambda: all(ck.status_of(store, r) == "done" for r in out), 90,
                    "both workers to finish the six runs")
    finally:
        codes = (a.terminate(), b.terminate())
    assert codes == (0, 0), "SIGTERM must drain and exit cleanly"
    lines = ck.read_side(side)
    summary = ck.check_store(store, side, final=True)
    assert summary.statuses == Counter(done=6)
    effects = {e.id: e for r in out for e in store.effects(run=r)}
    per_slot: dict[tuple[str, int, int, int], list[int]] = defaultdict(list)
    per_run: dict[str, set[int]] = defaultdict(set)
    for ln in lines:
        e = effects[ln.effect]
        per_slot[(e.run, e.epoch, e.step, e.idx)].append(ln.pid)
        per_run[ln.run].add(ln.pid)
    assert len(per_slot) == len(effects) == len(lines)
    assert all(len(p) == 1 for p in per_slot.values()), "a call ran twice"
    assert all(len(p) == 1 for p in per_run.values()), f"a run moved between workers: {per_run}"
    assert {ln.pid for ln in lines} == {a.pid, b.pid}, "both workers should have driven runs"


def owner_of(store: SQLiteStore, run: str) -> str | None:
    lease = store.lease_of(run)
    return lease[0] if lease else None


def test_killed_worker_is_taken_over_after_lease_expiry(
        files: tuple[Path, Path, SQLiteStore]) -> None:
    db, side, store = files
    keyed = ck.start_runs(store, ["keyed", "keyed"], steps=150, pace=0.01)
    runs = keyed + ck.start_runs(store, ["counter", "counter"], steps=60, pace=0.01)
    a = ck.spawn_worker(db, side, tag="a", owner="A", lease_ttl=1.0)
    b = None
    try:
        a.wait_ready()
        ck.wait_for(lambda: all(owner_of(store, r) == "A" for r in runs), 30,
                    "worker A to lease every run")
        b = ck.spawn_worker(db, side, tag="b", owner="B", lease_ttl=1.0)
        b.wait_ready()  # B polls, but A renews its leases: B must wait
        a.kill()
        killed_at = time.time()
        leases = {r: store.lease_of(r) for r in runs}
        running = {r for r in runs if ck.status_of(store, r) == "running"}
        before = ck.snapshot(store)
        ck.check_store(store, side, final=False)
        ck.wait_for(lambda: ck.at_rest(store, runs), 90, "worker B to take the runs over")
    finally:
        a.kill()
        if b is not None:
            assert b.terminate() == 0
    ck.check_nothing_lost(before, ck.snapshot(store))
    lines = ck.read_side(side)
    assert b is not None
    for r in runs:
        lease = leases[r]
        assert lease is not None and lease[0] == "A", f"run {r} was not held by A: {lease}"
        mine = [ln for ln in lines if ln.run == r]
        assert {ln.pid for ln in mine} <= {a.pid, b.pid}
        assert all(ln.t < killed_at for ln in mine if ln.pid == a.pid)
        late = [ln for ln in mine if ln.pid == b.pid]
        assert all(ln.t >= lease[2] for ln in late), (
            f"run {r}: B acted at {min(ln.t for ln in late)} before A's lease expired at {lease[2]}")
    assert set(keyed) <= running, "A finished a long run before it was killed"
    for r in keyed:  # idempotent effects never pause: B must have finished them
        assert ck.status_of(store, r) == "done"
        assert any(ln.pid == b.pid for ln in lines if ln.run == r), f"B never drove run {r}"
        lease, old = store.lease_of(r), leases[r]
        assert lease is not None and old is not None
        assert lease[0] == "B" and lease[1] > old[1], "the new owner's fencing token is larger"
    summary = settle(store, side)
    assert summary.statuses == Counter(done=len(runs))


def stopped(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] in "Tt"


def freeze_between_commits(w: ck.WorkerProc, db: Path) -> None:
    """SIGSTOP the worker at a moment it holds no SQLite write lock (a frozen lock holder
    would block every process on the file: SQLite's limit, not the one tested here)."""
    for _ in range(500):
        os.kill(w.pid, signal.SIGSTOP)
        ck.wait_for(lambda: stopped(w.pid), 10, "the worker to stop", interval=0.001)
        c = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:
            c.execute("BEGIN IMMEDIATE")
            c.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            pass
        finally:
            c.close()
        os.kill(w.pid, signal.SIGCONT)
        time.sleep(0.003)
    raise AssertionError("the worker always held the write lock")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states in /proc")
def test_frozen_worker_is_fenced_off_after_takeover(files: tuple[Path, Path, SQLiteStore]) -> None:
    """SIGSTOP (a VM pause, a long GC) outlasts the lease; B takes over; SIGCONT.
    The woken worker must never commit to the runs again nor start new effects."""
    db, side, store = files
    keyed = ck.start_runs(store, ["keyed", "keyed"], steps=150, pace=0.01)
    runs = keyed + ck.start_runs(store, ["counter", "chatty"], steps=60, pace=0.01)
    a = ck.spawn_worker(db, side, tag="a", owner="A", lease_ttl=1.0)
    b = None
    try:
        a.wait_ready()
        ck.wait_for(lambda: all(owner_of(store, r) == "A" for r in runs), 30,
                    "worker A to lease every run")
        b = ck.spawn_worker(db, side, tag="b", owner="B", lease_ttl=1.0)
        b.wait_ready()
        freeze_between_commits(a, db)
        assert all(ck.status_of(store, r) == "running" for r in keyed)
        ck.wait_for(lambda: all(owner_of(store, r) == "B" for r in keyed), 30,
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
    assert b is not None
    lines = ck.read_side(side)
    durable_before_thaw = {e[1] for evs in before.values() for e in evs}
    late = [ln for ln in lines if ln.pid == a.pid and ln.t >= thawed_at]
    assert all(ln.effect in durable_before_thaw for ln in late), "A started an effect after thawing"
    for r in keyed:
        assert ck.status_of(store, r) == "done"
        assert any(ln.pid == b.pid for ln in lines if ln.run == r)
    summary = settle(store, side)
    assert summary.statuses == Counter(done=len(runs))


def test_worker_outlives_a_lock_held_past_its_busy_timeout(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A frozen process inside a write transaction blocks the file for everyone (SQLite);
    the worker must wait it out (StoreLocked from acquire is retried), not die."""
    monkeypatch.setenv(ck.SIDE_ENV, str(tmp_path / "side.log"))
    db = tmp_path / "locked.db"
    store = SQLiteStore(db, busy_timeout=0.2)
    (run,) = ck.start_runs(store, ["keyed"], steps=3, pace=0.0)
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process, frozen inside a write transaction
    release = threading.Timer(1.0, holder.execute, ("ROLLBACK",))
    release.start()
    try:
        ck.finish(store)
        assert ck.status_of(store, run) == "done"
    finally:
        release.join()
        holder.close()
        store.close()


LOCKED: list[threading.Thread] = []
SEEN_WHILE_LOCKED: list[str] = []
"""The statuses of the run's effects as the lock holder saw them just before letting go."""


@tool(effect="irreversible")
def mark_then_lock(note: str) -> str:
    """Do the effect, then let another process hold the store's write lock for 1 s."""
    with open(os.environ[ck.SIDE_ENV], "a", encoding="utf-8") as f:
        f.write(f"{note}\n")
    held = threading.Event()

    def hold() -> None:
        c = sqlite3.connect(os.environ["LOCK_DB"], isolation_level=None, timeout=5)
        c.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(1.0)  # longer than the store's busy timeout (0.2 s): commits fail meanwhile
        SEEN_WHILE_LOCKED.extend(r[0] for r in c.execute("SELECT status FROM effects"))
        c.execute("ROLLBACK")
        c.close()
    t = threading.Thread(target=hold)
    t.start()
    LOCKED.append(t)
    # The step's commit must meet the lock: return only once it is held.
    assert held.wait(10), "the lock holder never got the write lock"
    return f"marked {note}"


async def _locked_step(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.call(mark_then_lock, note=f"step {ctx.step}")
    return Done()


def test_a_transient_lock_does_not_put_a_completed_effect_in_doubt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "blip.db"
    monkeypatch.setenv(ck.SIDE_ENV, str(tmp_path / "side.log"))
    monkeypatch.setenv("LOCK_DB", str(db))
    store = SQLiteStore(db, busy_timeout=0.2)
    agent = StepAgent(_locked_step, name="locked", tools=[mark_then_lock])
    allow_tools(store)
    run = start_run(store, agent, agent_ref="locked", goal="g")
    try:
        asyncio.run(Worker(store, agents={"locked": agent}, lease_ttl=0.5, poll_interval=0.01)
                    .run(until_idle=True))
        for t in LOCKED:
            t.join()
        # The lock was in force when the effect's result was to be committed: it had to wait.
        assert SEEN_WHILE_LOCKED and "done" not in SEEN_WHILE_LOCKED, SEEN_WHILE_LOCKED
        ck.finish(store, agents={"locked": agent})
        assert (tmp_path / "side.log").read_text().splitlines() == ["step 1"]
        assert [e.status for e in store.effects(run=run)] == ["done"]
        assert ck.status_of(store, run) == "done"
    finally:
        store.close()
