"""Operators' commands: pause, resume, stop, budget and resolve, from another caller."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import sample_agents
from tether import Worker, start_run
from tether.control import resolve_effect, set_budget
from tether.errors import NotFound, UsageError
from tether.models.base import ModelResponse
from tether.policies import apply_policy
from tether.runtime.agent import StepAgent
from tether.runtime.holding import holding
from tether.runtime.operator import run_state, send_command
from tether.store.sqlite import SQLiteStore
from tether.system_clock import ShiftedClock
from tether.testing import allow_tools
from tether.testing.openai_server import FakeChatServer, Reply, completion

REPO = Path(__file__).resolve().parents[1]


def _kinds(store: SQLiteStore, run: str) -> list[str]:
    return [e.kind for e in store.events(run)]


def _wait(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def _kill_worker_inside_tool(path: Path, side: Path, marker: Path, **env: str) -> None:
    """Run a real worker subprocess and SIGKILL it once a tool has written ``marker``."""
    full = {**os.environ, "TETHER_TEST_SIDE": str(side), "TETHER_TEST_MARKER": str(marker),
            "PYTHONPATH": str(REPO), **env}
    proc = subprocess.Popen([sys.executable, "-m", "tests.sample_agents", "worker", str(path)],
                            env=full, cwd=REPO)
    try:
        _wait(marker.exists)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()


def _start(store: SQLiteStore, name: str, **kw: object) -> str:
    agent = getattr(sample_agents, name)
    return start_run(store, agent, agent_ref=f"tests.sample_agents:{name}", goal="test", **kw)  # type: ignore[arg-type]


def _worker_thread(store_path: Path, stop: threading.Event, **kw: object) -> threading.Thread:
    def body() -> None:
        s = SQLiteStore(store_path)
        ev: asyncio.Event

        async def main() -> None:
            nonlocal ev
            ev = asyncio.Event()
            w = Worker(s, poll_interval=0.01, **kw)  # type: ignore[arg-type]
            loop = asyncio.get_running_loop()
            threading.Thread(target=lambda: (stop.wait(), loop.call_soon_threadsafe(ev.set)),
                             daemon=True).start()
            await w.run(stop=ev, grace=2.0)
        asyncio.run(main())
        s.close()
    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t


def test_pause_resume_stop_without_a_worker(store: SQLiteStore) -> None:
    rid = _start(store, "ticker")
    res = send_command(store, rid, "pause", who="human:ada")
    assert res.applied and res.by == "cli"
    row = store.get_run(rid)
    assert row is not None and row.status == "paused"
    cmd = next(e for e in store.events(rid) if e.kind == "command")
    assert cmd.actor == "human:ada" and cmd.payload["kind"] == "pause"
    assert send_command(store, rid, "resume", who="human:ada").applied
    assert store.get_run(rid).status == "running"  # type: ignore[union-attr]
    send_command(store, rid, "stop", who="human:ada")
    assert store.get_run(rid).status == "stopped"  # type: ignore[union-attr]
    send_command(store, rid, "resume", who="human:ada")
    assert store.get_run(rid).status == "stopped"  # type: ignore[union-attr]
    last_cmd = [e for e in store.events(rid) if e.kind == "command"][-1]
    assert last_cmd.payload["outcome"] == "ignored: the run is stopped"
    assert store.pending_commands([rid]) == []


def test_pause_reaches_a_busy_worker(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SQLiteStore(path)
    rid = _start(store, "ticker")
    stop = threading.Event()
    t = _worker_thread(path, stop)
    _wait(lambda: (store.get_run(rid).step or 0) >= 3)  # type: ignore[union-attr]
    res = send_command(store, rid, "pause", who="human:bob")
    assert res.applied and res.by == "worker"
    _wait(lambda: store.get_run(rid).status == "paused")  # type: ignore[union-attr]
    steps = store.get_run(rid).step  # type: ignore[union-attr]
    time.sleep(0.2)
    assert store.get_run(rid).step == steps  # type: ignore[union-attr]
    send_command(store, rid, "resume", who="human:bob")
    _wait(lambda: (store.get_run(rid).step or 0) >= steps + 3)  # type: ignore[union-attr]
    stop.set()
    t.join(10)
    store.close()


def test_stop_cancels_a_slow_model_call_at_once(tmp_path: Path) -> None:
    from tether.models.openai import OpenAIModel
    path = tmp_path / "t.db"
    store = SQLiteStore(path)
    with FakeChatServer([Reply(200, completion("late"), delay=30.0)]) as srv:
        model = OpenAIModel("m", base_url=srv.base_url, api_key="k", timeout=60.0)

        async def slow(ctx: object, state: dict[str, object]) -> ModelResponse:
            return await ctx.model([{"role": "user", "content": "hi"}])  # type: ignore[attr-defined,no-any-return]
        agent = StepAgent(slow, name="slow", model=model)
        rid = start_run(store, agent, agent_ref="slow", goal="wait")
        stop = threading.Event()
        t = _worker_thread(path, stop, agents={"slow": agent})
        _wait(lambda: len(srv.requests) == 1)
        t0 = time.monotonic()
        res = send_command(store, rid, "stop", who="human:ops")
        _wait(lambda: store.get_run(rid).status == "stopped", timeout=5)  # type: ignore[union-attr]
        assert time.monotonic() - t0 < 3.0
        assert res.applied
        kinds = _kinds(store, rid)
        assert "run.stopped" in kinds and "model.called" not in kinds
        stop.set()
        t.join(10)
    store.close()


def test_budget_change_is_journaled(store: SQLiteStore) -> None:
    rid = _start(store, "ticker", budget={"steps": 5})
    set_budget(store, rid, {"cost_usd_per_day": 2.5}, ["steps"], who="human:fin")
    row = store.get_run(rid)
    assert row is not None and row.budget == {"cost_usd_per_day": 2.5}
    ev = next(e for e in store.events(rid) if e.kind == "budget.changed")
    assert ev.payload["old"] == {"steps": 5.0}
    assert ev.payload["by"] == "human:fin"
    with pytest.raises(UsageError, match="unknown budget key"):
        set_budget(store, rid, {"dollars": 1}, [])


def test_unknown_ids_are_clear(store: SQLiteStore) -> None:
    with pytest.raises(NotFound, match="no run 'nope'"):
        send_command(store, "nope", "pause")
    with pytest.raises(NotFound, match="no effect"):
        resolve_effect(store, "01XYZ", "done")
    rid = _start(store, "ticker")
    with pytest.raises(UsageError, match="in the future"):
        run_state(store, rid, 7)


@pytest.mark.crash
def test_kill_during_an_effect_then_resolve(tmp_path: Path) -> None:
    """kill -9 inside an irreversible tool: the effect is in doubt, never re-run; an operator
    resolves it as done and the run completes with the given result."""
    path = tmp_path / "t.db"
    side, marker = tmp_path / "side.txt", tmp_path / "marker"
    store = SQLiteStore(path)
    allow_tools(store, "charge_slowly")  # about the doubt, not the approval
    rid = _start(store, "pay_once")
    _kill_worker_inside_tool(path, side, marker)
    assert side.read_text().count("charge 42") == 1
    os.environ["TETHER_TEST_SIDE"] = str(side)
    try:
        # The dead worker's lease expires after 2 s; then a new worker finds the doubt.
        asyncio.run(Worker(store, lease_ttl=2.0).run(until_idle=True))
        _wait(lambda: store.runnable(time.time(), 10) != [] or
              store.get_run(rid).status != "running", timeout=10)  # type: ignore[union-attr]
        later = ShiftedClock()
        later.advance(2.1)  # past the dead worker's lease (2 s), without waiting for it
        asyncio.run(Worker(store, wall=later).run(until_idle=True))
        row = store.get_run(rid)
        assert row is not None and row.status == "paused", row
        doubt = store.effects(run=rid, status="in_doubt")
        assert len(doubt) == 1 and doubt[0].tool == "charge_slowly"
        assert side.read_text().count("charge 42") == 1  # never re-run automatically
        # A worker that paused the run may still hold it for a moment: the operator's
        # resolve waits for it to let go rather than fail (it did, under CI's load).
        token = store.acquire(rid, "worker:elsewhere", 30.0, time.time())
        assert token is not None
        threading.Timer(0.5, store.release, (rid, "worker:elsewhere", token)).start()
        resolve_effect(store, doubt[0].id, "done", result="charged 42 (checked by hand)",
                           who="human:ops")
        assert store.get_run(rid).status == "running"  # type: ignore[union-attr]
        asyncio.run(Worker(store).run(until_idle=True))
        row = store.get_run(rid)
        assert row is not None and row.status == "done"
        assert side.read_text().count("charge 42") == 1
        with pytest.raises(UsageError, match="not in doubt"):
            resolve_effect(store, doubt[0].id, "done")
    finally:
        os.environ.pop("TETHER_TEST_SIDE", None)
    from tether.audit import verify_store
    assert verify_store(store).ok
    store.close()


@pytest.mark.crash
def test_sigterm_drains_and_releases_leases(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SQLiteStore(path)
    rids = [_start(store, "ticker") for _ in range(3)]
    proc = subprocess.Popen([sys.executable, "-m", "tests.sample_agents", "worker", str(path)],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    try:
        _wait(lambda: all((store.get_run(r).step or 0) >= 2 for r in rids))  # type: ignore[union-attr]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    for r in rids:
        lease = store.lease_of(r)
        assert lease is not None and lease[2] == 0  # released, not left to expire
        assert store.get_run(r).status == "running"  # type: ignore[union-attr]
    # Another worker takes over at once and goes on from the last checkpoint.
    steps = {r: store.get_run(r).step for r in rids}  # type: ignore[union-attr]
    stop = threading.Event()
    t = _worker_thread(path, stop)
    _wait(lambda: all(store.get_run(r).step > steps[r] + 1 for r in rids))  # type: ignore[union-attr]
    stop.set()
    t.join(10)
    from tether.audit import verify_store
    assert verify_store(store).ok
    store.close()


@pytest.mark.crash
def test_kill_between_approval_and_execution_runs_it_at_most_once(tmp_path: Path) -> None:
    """An approved action whose worker dies mid-tool is in doubt afterwards, never re-run;
    an approved action whose worker died before it ran runs exactly once."""
    from tether import approvals
    from tether.core.policy import load_policy
    path = tmp_path / "t.db"
    policy_file = tmp_path / "tether.toml"
    policy_file.write_text('[[rule]]\nid = "ask"\ntool = "charge_slowly"\ndecide = "approve"\n')
    side, marker = tmp_path / "side.txt", tmp_path / "marker"
    store = SQLiteStore(path)
    apply_policy(store, load_policy(policy_file), who="human:ops")  # every worker's, the killed one's too
    rid = _start(store, "pay_once")
    asyncio.run(Worker(store).run(until_idle=True))
    (req,) = store.approvals(status="pending")
    approvals.decide(store, req.id, approve=True, who="human:ops")
    _kill_worker_inside_tool(path, side, marker)
    later = ShiftedClock()
    later.advance(2.1)  # past the dead worker's lease (2 s), without waiting for it
    os.environ["TETHER_TEST_SIDE"] = str(side)
    try:
        asyncio.run(Worker(store, wall=later).run(until_idle=True))
    finally:
        os.environ.pop("TETHER_TEST_SIDE", None)
    row = store.get_run(rid)
    assert row is not None and row.status == "paused"
    assert side.read_text().count("charge 42") == 1
    assert len(store.effects(run=rid, status="in_doubt")) == 1
    assert len(store.approvals(run=rid)) == 1  # not asked again after the crash
    store.close()


def test_stop_all_from_another_process_under_load(tmp_path: Path) -> None:
    """Twenty runs inside slow model calls on a real loopback server are all stopped by
    `tether stop --all` run as a separate process; none journals a model response."""
    from tether.models.openai import OpenAIModel
    path = tmp_path / "t.db"
    store = SQLiteStore(path)
    n = 20
    with FakeChatServer([Reply(200, completion("late"), delay=60.0) for _ in range(n)]) as srv:
        model = OpenAIModel("m", base_url=srv.base_url, api_key="k", timeout=120.0)

        async def slow(ctx: object, state: dict[str, object]) -> ModelResponse:
            return await ctx.model([{"role": "user", "content": "hi"}])  # type: ignore[attr-defined,no-any-return]
        agent = StepAgent(slow, name="slow", model=model)
        runs = [start_run(store, agent, agent_ref="slow", goal="wait") for _ in range(n)]
        stop = threading.Event()
        t = _worker_thread(path, stop, agents={"slow": agent})
        _wait(lambda: len(srv.requests) == n)
        exe = Path(sys.executable).with_name("tether")
        res = subprocess.run([str(exe), "--store", str(path), "stop", "--all"],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        _wait(lambda: all(store.get_run(r).status == "stopped" for r in runs),  # type: ignore[union-attr]
              timeout=10)
        for r in runs:
            kinds = _kinds(store, r)
            assert "run.stopped" in kinds and "model.called" not in kinds
            assert kinds.count("run.stopped") == 1
        stop.set()
        t.join(10)
    store.close()


def test_a_long_cli_operation_keeps_its_lease(tmp_path: Path) -> None:
    # A rollback with slow undos holds the run's lease for longer than its ttl: it is
    # renewed meanwhile, so no worker takes the run from under it.
    store = SQLiteStore(tmp_path / "t.db")
    run = start_run(store, sample_agents.ticker, agent_ref="tests.sample_agents:ticker",
                    goal="tick")
    with holding(store, run, ttl=0.3) as j:
        assert j is not None
        time.sleep(0.8)
        lease = store.lease_of(run)
        assert lease is not None and lease[1] == j.fence and lease[2] > time.time()
        assert store.acquire(run, "someone-else", 30, time.time()) is None
    assert store.acquire(run, "someone-else", 30, time.time()) is not None
    store.close()
