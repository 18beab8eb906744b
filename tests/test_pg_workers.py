"""Many real ``tether worker`` processes on one PostgreSQL store: what it is for.

Each worker is the real CLI in a subprocess, in a working folder of its own. The side
channel of tests/crashkit.py (``$CRASH_SIDE``, one fsynced line per effect as it really
ran, with the pid that ran it) is what happened in the world; the store is what tether
believes happened; ``crashkit.check_store`` compares them (chains verify, write-ahead,
an irreversible effect at most once, idempotent retries with their own key, no step
finished twice, and at rest: every done effect exactly once).

- several workers share the runs of one store, and every effect runs exactly once;
- a worker killed mid-run (SIGKILL, or ``os._exit`` at an exact point of an effect) has
  its runs taken over by another: at once on the same host (its pid is gone), after the
  lease expires from another host (its own UTS namespace); nothing repeats, nothing is
  lost, ``tether audit verify`` passes;
- a worker stopped (SIGSTOP) past its lease, whose runs another worker took, writes
  nothing once it wakes (SIGCONT): neither events nor effects (fencing).
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import crashkit as ck
from tests import pg_agents, pgkit
from tests.pgworkers import CliWorker, cli, other_host_prefix, spawn
from tether import start_run
from tether.store import open_store
from tether.store.protocol import Store
from tether.testing import allow_tools

TTL = 1.0
"""Lease of the workers (renewed every third of it): short, so a takeover is quick."""
STEPS = 6
"""Steps of each run in the kill tests: with 0.5 s in each, the runs are still going when
the second worker is up (it takes a second or two to start on a loaded machine)."""


@pytest.fixture
def shared(pg_url: str, tmp_path: Path) -> Iterator[tuple[str, Store, Path]]:
    """A PostgreSQL store whose policy allows every tool, and the side channel's path."""
    store = open_store(pg_url)
    allow_tools(store)
    yield pg_url, store, tmp_path / "side.log"
    store.close()


def start(store: Store, n: int, *, steps: int, dwell: float = 0.0) -> list[str]:
    """``n`` runs of the dwelling agent."""
    return [start_run(store, pg_agents.dwelling, agent_ref="tests.pg_agents:dwelling",
                      goal=f"steps={steps} dwell={dwell} #{i}") for i in range(n)]


def per_effect(side: Path) -> Counter[tuple[str, int, str]]:
    """How many times each (run, step, tool) really ran."""
    return Counter((x.run, x.step, x.tool) for x in ck.read_side(side))


def settle(store: Store, side: Path, runs: list[str], timeout: float = 90.0) -> list[str]:
    """Wait until the running workers bring every run to rest; resolve what a crash left in
    doubt as an operator would (by the side channel), until every run is done. The
    effects resolved."""
    resolved: list[str] = []
    for _ in range(4):
        ck.wait_for(lambda: ck.at_rest(store, runs), timeout, "the runs to come to rest",
                    interval=0.05)
        if all(ck.status_of(store, r) == "done" for r in runs):
            return resolved
        resolved += ck.resolve_in_doubt(store, side)
    raise AssertionError(f"runs not done: {[(r, ck.status_of(store, r)) for r in runs]}")


def audit_ok(url: str, cwd: Path) -> None:
    res = cli("--store", url, "audit", "verify", cwd=cwd)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr


def stop_all(*workers: CliWorker) -> None:
    for w in workers:
        if w.proc.poll() is None:
            w.stop()


# -- several workers, one store ------------------------------------------------------

@pytest.mark.workers
def test_workers_share_the_runs_and_every_effect_runs_once(
        shared: tuple[str, Store, Path], tmp_path: Path) -> None:
    url, store, side = shared
    runs = start(store, 12, steps=5)
    t0 = time.monotonic()
    # Four runs each at most: no worker can take them all, so they share.
    workers = [spawn(url, tmp_path, f"w{i}", side=side, ttl=TTL, concurrency=4,
                     via_env=i == 2) for i in range(3)]
    try:
        ck.wait_for(lambda: all(ck.status_of(store, r) == "done" for r in runs), 120,
                    "every run to finish", interval=0.05)
        elapsed = time.monotonic() - t0
    finally:
        stop_all(*workers)
    for w in workers:
        assert w.proc.returncode == 0, w.logs()
    counts = per_effect(side)
    assert len(counts) == 12 * 5 * 2
    assert set(counts.values()) == {1}, [k for k, n in counts.items() if n != 1][:5]
    drivers = {x.pid for x in ck.read_side(side)}
    assert drivers <= {w.pid for w in workers}
    assert len(drivers) >= 2, "one worker drove every run: they did not share"
    took = [set(w.took()) for w in workers]
    assert set().union(*took) == set(runs)
    ck.check_store(store, side, final=True)
    audit_ok(url, tmp_path)
    print(f"3 workers, 12 runs x 5 steps x 2 effects on PostgreSQL: {elapsed:.2f}s; "
          f"runs per worker {[len(t) for t in took]}")


# -- a worker killed mid-run -------------------------------------------------------------

KILLS = [
    pytest.param(("exit", "deliver:before"), id="exit-before-idempotent"),
    pytest.param(("exit", "deliver:after"), id="exit-after-idempotent"),
    pytest.param(("exit", "mark:before"), id="exit-before-irreversible"),
    pytest.param(("exit", "mark:after"), id="exit-after-irreversible"),
    pytest.param(("sigkill", "3"), id="sigkill-after-3-effects"),
    pytest.param(("sigkill", "7"), id="sigkill-after-7-effects"),
]


def _crash(first: CliWorker, how: str, point: str, side: Path) -> float:
    """Bring ``first`` down as ``how`` says; when it died."""
    if how == "exit":  # it exits by itself at that point of its first such effect
        code = first.wait(timeout=60)
        assert code == ck.EXIT_CODE, first.logs()
        return time.time()
    def mine() -> int:
        if first.proc.poll() is not None:
            raise AssertionError(f"the first worker exited before it was killed: {first.logs()}")
        return sum(x.pid == first.pid for x in ck.read_side(side))
    goal = mine() + int(point)  # effects from now, the second worker being ready
    ck.wait_for(lambda: mine() >= goal, 60, f"{point} more effects by the first worker",
                interval=0.005)
    first.kill()
    return time.time()


@pytest.mark.crash
@pytest.mark.parametrize("kill", KILLS)
def test_a_killed_workers_runs_are_taken_over_on_the_same_host(
        shared: tuple[str, Store, Path], tmp_path: Path, kill: tuple[str, str]) -> None:
    url, store, side = shared
    how, point = kill
    runs = start(store, 3, steps=STEPS, dwell=0.5)
    env = {ck.EXIT_ENV: point} if how == "exit" else None
    first = spawn(url, tmp_path, "first", side=side, ttl=TTL, env=env)
    second = None
    try:
        first.wait_took(runs)
        second = spawn(url, tmp_path, "second", side=side, ttl=TTL)
        second.wait_started()
        died = _crash(first, how, point, side)
        before = ck.snapshot(store)
        ck.check_store(store, side, final=False)
        took = second.wait_took(runs)
        assert min(took.values()) >= died - 0.05, (took, died)
        resolved = settle(store, side, runs)
    finally:
        stop_all(first, *([second] if second else []))
    assert second.proc.returncode == 0, second.logs()
    ck.check_nothing_lost(before, ck.snapshot(store))
    summary = ck.check_store(store, side, final=True)
    counts = per_effect(side)
    # Every step's effects ran; an irreversible one exactly once (a crash after it ran
    # leaves it in doubt, resolved as done: never run again).
    assert set(counts) == {(r, s, t) for r in runs for s in range(1, STEPS + 1)
                                   for t in ("deliver", "mark")}
    assert all(n == 1 for (_, _, t), n in counts.items() if t == "mark"), counts
    if point == "mark:after":
        # In doubt and settled as done: the one it died after (and any other run's that
        # ran at the same moment, its runs being driven concurrently).
        assert 1 <= len(resolved) <= len(runs), resolved
    audit_ok(url, tmp_path)
    print(f"{kill}: takeover {min(took.values()) - died:+.2f}s after the crash; "
          f"{summary.line()}")


@pytest.mark.crash
def test_a_killed_workers_runs_wait_for_the_lease_on_another_host(
        shared: tuple[str, Store, Path], tmp_path: Path) -> None:
    url, store, side = shared
    prefix = other_host_prefix("tether-test-machine-b")
    if prefix is None:
        pytest.skip("no UTS namespace here (unshare --uts): cannot act as a second machine")
    runs = start(store, 3, steps=STEPS, dwell=0.5)
    ttl = 2.0
    first = spawn(url, tmp_path, "first", side=side, ttl=ttl, host_prefix=prefix)
    second = None
    try:
        first.wait_took(runs)
        second = spawn(url, tmp_path, "second", side=side, ttl=ttl)
        second.wait_started()
        died = _crash(first, "sigkill", "4", side)
        took = second.wait_took(runs)
        # Not at once: the dead owner is on "another machine", where only its lease's
        # expiry (renewed every ttl/3) can tell it is gone.
        waited = min(took.values()) - died
        assert waited >= ttl / 2, f"taken {waited:.2f}s after the kill, before the lease expired"
        settle(store, side, runs)
    finally:
        stop_all(first, *([second] if second else []))
    ck.check_store(store, side, final=True)
    assert all(n == 1 for (_, _, t), n in per_effect(side).items() if t == "mark")
    audit_ok(url, tmp_path)
    print(f"another host: taken over {waited:.2f}s after the kill (lease {ttl}s)")


# -- fencing ---------------------------------------------------------------------------

@pytest.mark.crash
def test_a_worker_stopped_past_its_lease_writes_nothing_once_it_wakes(
        shared: tuple[str, Store, Path], tmp_path: Path) -> None:
    url, store, side = shared
    # One run: a worker driving several could be inside one run's effect while it dwells
    # in another's.
    runs = start(store, 1, steps=6, dwell=0.8)
    dwell_log = tmp_path / "dwell.log"
    first = spawn(url, tmp_path, "first", side=side, ttl=TTL)
    second = None
    try:
        first.wait_took(runs)

        def inside_dwell() -> bool:
            # Stopped inside the read-only tool, with time to spare: inside no effect.
            now = time.time()
            return any(pid == first.pid and step >= 2 and leaves - now > 0.4
                       for pid, _, step, _, leaves in pg_agents.read_dwell(dwell_log))
        for _ in range(50):
            ck.wait_for(inside_dwell, 60, "the first worker to dwell", interval=0.01)
            first.freeze()
            # Not while one of its threads is inside a write transaction: that would hold
            # the store's write lock for everyone, for 30 s (test_a_writer_frozen_...).
            if not pgkit.write_lock_held(url):
                break
            first.signal(signal.SIGCONT)
            time.sleep(0.05)
        stopped = time.time()
        at_stop = ck.snapshot(store)
        second = spawn(url, tmp_path, "second", side=side, ttl=TTL)
        took = second.wait_took(runs)
        # Its owner is alive (stopped), so only the lease's expiry lets the run go.
        assert min(took.values()) - stopped >= TTL / 2, (took, stopped)

        def progressed() -> bool:
            # Its last irreversible effect may not be durable yet (a step's effect.done
            # commits with the step): the second worker then finds it in doubt and pauses
            # the run, and an operator settles it by the side channel (it ran: done).
            if any(ck.status_of(store, r) == "paused" for r in runs):
                ck.resolve_in_doubt(store, side)
            steps = {(x.run, x.step) for x in ck.read_side(side) if x.pid == second.pid}
            return len(steps) >= 3
        ck.wait_for(progressed, 60, "the second worker to make steps", interval=0.02)
        first.signal(signal.SIGCONT)  # wakes with leases that are no longer its own
        woke = time.time()
        # It lets each run go, ``abandoned``: refused at its next commit, or cancelled by
        # its heartbeat, whose renewal finds the lease gone.
        ck.wait_for(lambda: {x["run"] for x in first.left("abandoned")} == set(runs), 30,
                    "the woken worker to give its runs up", interval=0.02)
        settle(store, side, runs)
    finally:
        stop_all(first, *([second] if second else []))
    assert first.proc.returncode == 0, first.logs()
    said = first.err.read_text(encoding="utf-8")
    assert all(r in said for r in runs), said  # one warning per run it lost
    assert "never retrieved" not in said, said
    mine = [x for x in ck.read_side(side) if x.pid == first.pid]
    late = [x for x in mine if x.t >= stopped]
    assert not late, f"the fenced worker acted on the world after it was stopped: {late}"
    ck.check_nothing_lost(at_stop, ck.snapshot(store))
    summary = ck.check_store(store, side, final=True)
    assert all(n == 1 for (_, _, t), n in per_effect(side).items() if t == "mark")
    audit_ok(url, tmp_path)
    print(f"fencing: stopped at {stopped:.2f}, taken over after "
          f"{min(took.values()) - stopped:.2f}s, woke {woke - stopped:.2f}s after; "
          f"{summary.line()}")


# -- a writer frozen inside a transaction ----------------------------------------------------

FROZEN_AT = [
    pytest.param(("UPDATE", "INSERT INTO usage", "SELECT"), id="after-a-statement"),
    pytest.param(("WITH s0 AS (INSERT INTO events", "INSERT INTO events"),
                 id="inside-a-write-s-statement"),
]


@pytest.mark.crash
@pytest.mark.parametrize("at", FROZEN_AT)
def test_a_writer_frozen_mid_commit_stalls_the_store_only_for_a_while(
        shared: tuple[str, Store, Path], tmp_path: Path, at: tuple[str, ...]) -> None:
    """A worker frozen (SIGSTOP here; a paused VM or container, or a machine cut off without
    a reset, in the field) while one of its threads is inside a write transaction holds
    the store's write lock. The server ends that session after the store's stall timeout
    (30 s idle in the transaction), so the store is not blocked for ever: a command retried
    meanwhile is refused in one line ("locked by another writer ... retry"), then goes
    through; the frozen worker, once it wakes, carries on.

    ``inside-a-write-s-statement`` failed while a commit sent its events with psycopg's
    ``executemany`` (pipeline mode: Bind/Execute messages, the Sync at the end): frozen
    mid-batch, the server never reached ReadyForQuery, so the idle-in-transaction timer
    was never armed and the lock stayed held (seen > 90 s). A write is now one statement,
    sent whole (tests/test_pg_frozen_commit.py freezes it mid-send too)."""
    url, store, side = shared
    runs = start(store, 4, steps=400)
    first = spawn(url, tmp_path, "first", side=side, ttl=TTL)
    caught = False
    try:
        first.wait_took(runs)
        for _ in range(2000):
            first.freeze()
            holder = pgkit.write_lock_holder(url)
            if holder is not None and holder.lstrip().startswith(at):
                caught = True
                break
            first.signal(signal.SIGCONT)
            time.sleep(0.003)
        assert caught, f"never caught the worker inside a write transaction at {at}"
        t0 = time.monotonic()
        refused = 0
        while True:
            res = cli("--store", url, "pause", runs[0], cwd=tmp_path)
            if res.returncode == 0 or time.monotonic() - t0 > 75:
                break
            assert "locked by another writer" in one_line(res.stderr), res.stderr
            refused += 1
        waited = time.monotonic() - t0
        assert res.returncode == 0, f"still refused after {waited:.1f}s: {res.stderr}"
        first.signal(signal.SIGCONT)
        # Woken, it goes on with what is still its own (no one else took those runs) and
        # lets the paused one go.
        ck.wait_for(lambda: {x["run"] for x in first.left()} == set(runs), 60,
                    "the woken worker to let every run go", interval=0.05)
    finally:
        stop_all(first)
    # The woken worker found its session ended (said as a store failure it recovered from),
    # and its refused commits are no asyncio noise in its log.
    said = first.err.read_text(encoding="utf-8")
    assert "the store is failing" in said and "works again" in said, first.logs()
    assert "never retrieved" not in said, said
    print(f"frozen writer: a command got through after {waited:.1f}s ({refused} refused)")


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]
