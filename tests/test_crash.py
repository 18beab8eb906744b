"""Crash tests: real worker subprocesses killed with SIGKILL at random moments.

Each trial starts a few runs (an async step agent with an irreversible effect,
a sync step agent with an idempotent one, the built-in Agent on a scripted
model), starts the real worker in a subprocess, kills it after a random delay,
restarts it, and in the end drives everything to rest in this process. After
every kill and restart the invariants of ``tests.crashkit.check_store`` must
hold: nothing committed is lost, no irreversible effect ran twice, idempotent
retries reuse their key, chains verify, and every run is done or paused on an
in-doubt effect that names itself. In-doubt effects are then settled as an
operator would (``tether.ops.resolve_effect``) and every run must finish.

The side channel (``$CRASH_SIDE``) is the ground truth of what happened.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import crashkit as ck
from tether.store.sqlite import SQLiteStore

TRIALS = 30
STEPS = 40
PACE = 0.015

pytestmark = pytest.mark.crash


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path, SQLiteStore]]:
    db, side = tmp_path / "crash.db", tmp_path / "side.log"
    monkeypatch.setenv(ck.SIDE_ENV, str(side))  # for the workers this process runs
    monkeypatch.delenv(ck.EXIT_ENV, raising=False)
    store = SQLiteStore(db)
    yield db, side, store
    store.close()


def settle(store: SQLiteStore, side: Path, owner: str) -> ck.Summary:
    """Drive to rest, check, resolve what is in doubt as an operator would, finish."""
    ck.finish(store, owner=owner)
    first = ck.check_store(store, side, final=True)
    if first.in_doubt:
        resolved = ck.resolve_in_doubt(store, side)
        assert set(resolved) == set(first.in_doubt)
        ck.finish(store, owner=owner)
    last = ck.check_store(store, side, final=True)
    assert not last.in_doubt
    assert set(last.statuses) == {"done"}, last.statuses
    last.in_doubt = first.in_doubt
    return last


@pytest.mark.parametrize("seed", range(TRIALS))
def test_sigkill_at_random_moments(seed: int, files: tuple[Path, Path, SQLiteStore]) -> None:
    db, side, store = files
    rng = random.Random(seed)
    runs = ck.start_runs(store, [*ck.AGENTS, rng.choice(ck.AGENTS)], steps=STEPS, pace=PACE)
    owner = f"crash-{seed}"  # a restarted worker of the same name takes the leases back at once
    before: ck.Snapshot = {}
    for cycle in range(1 + seed % 2):
        w = ck.spawn_worker(db, side, tag=f"w{cycle}", owner=owner)
        w.wait_ready()
        time.sleep(rng.uniform(0.05, 1.0))
        w.kill()
        after = ck.snapshot(store)  # read between the kill and the restart
        ck.check_nothing_lost(before, after)
        ck.check_store(store, side, final=False)
        before = after
    summary = settle(store, side, owner)
    ck.check_nothing_lost(before, ck.snapshot(store))
    assert summary.statuses["done"] == len(runs)


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
        ck.wait_for(lambda: all(store.get_run(r).status == "done" for r in out),  # type: ignore[union-attr]
                    90, "both workers to finish the six runs")
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


def test_killed_worker_is_taken_over_after_lease_expiry(
        files: tuple[Path, Path, SQLiteStore]) -> None:
    db, side, store = files
    runs = ck.start_runs(store, ["keyed", "counter", "keyed", "counter"], steps=80, pace=0.02)
    a = ck.spawn_worker(db, side, tag="a", owner="A", lease_ttl=1.0)
    b = None
    try:
        a.wait_ready()
        ck.wait_for(lambda: {ln.run for ln in ck.read_side(side)} == set(runs), 30,
                    "worker A to be inside every run")
        b = ck.spawn_worker(db, side, tag="b", owner="B", lease_ttl=1.0)
        b.wait_ready()
        a.kill()
        killed_at = time.time()
        leases = {r: store.lease_of(r) for r in runs}
        before = ck.snapshot(store)
        ck.check_store(store, side, final=False)
        ck.wait_for(lambda: all(store.get_run(r).status in ("done", "paused")  # type: ignore[union-attr]
                                for r in runs), 90, "worker B to take the runs over")
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
        assert all(ln.t < killed_at for ln in mine if ln.pid == a.pid)
        late = [ln for ln in mine if ln.pid == b.pid]
        assert all(ln.t >= lease[2] for ln in late), (
            f"run {r}: B acted at {min(ln.t for ln in late)} before A's lease expired at {lease[2]}")
        assert {ln.pid for ln in mine} <= {a.pid, b.pid}
    keyed = [r for r, n in zip(runs, ["keyed", "counter"] * 2, strict=True) if n == "keyed"]
    for r in keyed:  # idempotent effects never pause: B must have finished them
        assert store.get_run(r).status == "done"  # type: ignore[union-attr]
        assert any(ln.pid == b.pid for ln in lines if ln.run == r), f"B never drove run {r}"
        owner, token, _ = store.lease_of(r)  # type: ignore[misc]
        assert owner == "B" and token > leases[r][1]  # type: ignore[index]
    summary = settle(store, side, "after-takeover")
    assert summary.statuses == Counter(done=len(runs))
