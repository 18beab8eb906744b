"""Re-runs of a step whose calls made calls of their own (``"in"``): a worker SIGKILLed
while the outer call was in flight after its inner call was journaled, an operator
resolving the outer effect, a gather around it, and clock/random/reject reads inside a
tool's body. Real SQLite store, real Worker, real subprocesses.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import tether
from tests import turnkit
from tether import Done, StepAgent, Worker, start_run, tool
from tether.control import resolve_effect
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools

SIDE_ENV = "NEST_SIDE"
HANG_ENV = "NEST_HANG"
REPO = Path(__file__).resolve().parents[1]
MOD = "tests.test_nested_rerun"


def _side(line: str) -> None:
    with open(os.environ[SIDE_ENV], "a") as f:
        f.write(f"{line}\n")
        f.flush()
        os.fsync(f.fileno())


@tool(effect="irreversible")
async def act(what: str) -> str:
    """A real, non-repeatable effect: one side line per run of its body."""
    _side(f"act {what}")
    return f"acted {what}"


@tool(effect="irreversible", idempotent=True)
async def note(what: str) -> str:
    """An idempotent effect (repeated after a crash)."""
    _side(f"note {what}")
    return f"noted {what}"


async def _outer_body(what: str) -> str:
    ctx = tether.current_step()
    _side(f"body {what}")
    inner = await ctx.call(act, what=f"in {what}")
    if f"{what} early" == os.environ.get(HANG_ENV):
        _side("hung")  # killed before the inner effect's result is committed
        await asyncio.sleep(60)
    t = await ctx.now()
    r = await ctx.random()
    rej = ctx.reject("nope", "{bad", "malformed")
    await ctx.call(note, what=what)  # its intent commits what came before (durable)
    if what == os.environ.get(HANG_ENV):
        _side("hung")  # the test kills the worker here
        await asyncio.sleep(60)
    return f"{what}: {inner} t={t} r={r} {rej}"


@tool(effect="irreversible")
async def outer_eff(what: str) -> str:
    """An effect whose body makes calls of its step (not safe to repeat)."""
    return await _outer_body(what)


@tool(effect="irreversible", idempotent=True)
async def outer_idem(what: str) -> str:
    """An idempotent effect whose body makes calls of its step."""
    return await _outer_body(what)


@tool(effect="read")
async def outer_read(what: str) -> str:
    """A read whose body makes calls of its step."""
    return await _outer_body(what)


@tool(effect="irreversible")
async def gated(who: str) -> str:
    """An effect the tests' policy makes wait for a person."""
    _side(f"gated {who}")
    return f"paid {who}"


def _agent(outer: Any, name: str) -> StepAgent:
    async def step(ctx: Any, state: dict[str, Any]) -> Any:
        state["o"] = await ctx.call(outer, what="x")
        state["t"] = await ctx.now()
        state["after"] = await ctx.call(act, what="after")
        return Done(state)
    return StepAgent(step, name=name, tools=[outer, act, gated, note])


async def _gathered(ctx: Any, state: dict[str, Any]) -> Any:
    async def late() -> Any:
        await asyncio.sleep(0.3)  # numbered after the outer call's inner ones
        return await ctx.call(act, what="late")
    state["g"] = list(await asyncio.gather(
        ctx.call(outer_read, what="g"), ctx.call(act, what="sib"), late()))
    state["t"] = await ctx.now()
    state["paid"] = await ctx.call(gated, who="ann")  # waits for approval; the step re-runs
    return Done(state)


AGENTS = {f"{MOD}:EFF": _agent(outer_eff, "eff"), f"{MOD}:IDEM": _agent(outer_idem, "idem"),
          f"{MOD}:READ": _agent(outer_read, "read"),
          f"{MOD}:GATHER": StepAgent(_gathered, name="gather", tools=[outer_read, act, gated, note])}
_WORKER = ("import asyncio, sys; from tether import Worker; from tether.store.sqlite import "
           f"SQLiteStore; from {MOD} import AGENTS; asyncio.run(Worker("
           "SQLiteStore(sys.argv[1]), agents=AGENTS, poll_interval=0.01).run(until_idle=True))")


def _worker(path: Path, side: Path, hang: str = "") -> subprocess.Popen[bytes]:
    env = {**os.environ, SIDE_ENV: str(side), HANG_ENV: hang, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", _WORKER, str(path)], env=env, cwd=REPO)


def _killed_mid_outer(tmp_path: Path, name: str, hang: str = "x",
                      wait: str = "random.read") -> tuple[Path, Path, str]:
    """Start the run; SIGKILL the worker once the outer call hangs with its inner effect's
    result (and the reads after it) committed."""
    path, side = tmp_path / "t.db", tmp_path / "side.txt"
    store = SQLiteStore(path)
    allow_tools(store, "outer_eff", "outer_idem", "outer_read", "act", "note")
    run = start_run(store, AGENTS[f"{MOD}:{name}"], agent_ref=f"{MOD}:{name}", goal=name)
    proc = _worker(path, side, hang=hang)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert time.monotonic() < deadline and proc.poll() is None
            kinds = [e.kind for e in store.events(run)]
            if "hung" in (side.read_text() if side.exists() else "") and \
                    wait in kinds:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    store.close()
    return path, side, run


def _again(path: Path, side: Path) -> SQLiteStore:
    assert _worker(path, side).wait(60) == 0
    return SQLiteStore(path)


def _lines(side: Path) -> list[str]:
    return [ln for ln in side.read_text().splitlines() if ln != "hung"]


def _calls(store: SQLiteStore, run: str) -> dict[int, tuple[str, Any]]:
    out: dict[int, tuple[str, Any]] = {}
    for e in store.events(run):
        if e.kind in ("effect.intent", "tool.called", "clock.read", "random.read"):
            out.setdefault(e.payload["i"], (e.payload.get("tool", e.kind), e.payload.get("in")))
    return out


NESTED = {0: None, 1: ("act", 0), 2: ("clock.read", 0), 3: ("random.read", 0), 4: ("nope", 0),
          5: ("note", 0)}


def _check_nested(calls: dict[int, tuple[str, Any]], outer: str) -> None:
    assert calls[0] == (outer, None), calls
    assert {i: calls[i] for i in range(1, 6)} == {i: NESTED[i] for i in range(1, 6)}, calls
    assert calls[6] == ("clock.read", None) and calls[7] == ("act", None), calls


def test_killed_idempotent_outer_is_retried_and_its_inner_calls_replay(
        tmp_path: Path) -> None:
    path, side, run = _killed_mid_outer(tmp_path, "IDEM")
    first = [e.payload for e in SQLiteStore(path).events(run) if e.kind in
             ("clock.read", "random.read")]
    store = _again(path, side)
    row = store.get_run(run)
    assert row is not None and row.status == "done", (row.status, row.reason)
    events = store.events(run)
    assert not any(e.kind == "nondeterminism" for e in events)
    # the body ran twice (retried), its inner effect once (replayed from the journal)
    assert _lines(side) == ["body x", "act in x", "note x", "body x", "note x", "act after"], _lines(side)
    _check_nested(_calls(store, run), "outer_idem")
    got = row_state(store, run)["o"]
    assert f"t={first[0]['value']} r={first[1]['value']}" in got, (got, first)


def test_killed_read_outer_re_runs_without_repeating_its_inner_effect(tmp_path: Path) -> None:
    path, side, run = _killed_mid_outer(tmp_path, "READ")
    store = _again(path, side)
    row = store.get_run(run)
    assert row is not None and row.status == "done", (row.status, row.reason)
    assert not any(e.kind == "nondeterminism" for e in store.events(run))
    assert _lines(side) == ["body x", "act in x", "note x", "body x", "note x", "act after"], _lines(side)
    _check_nested(_calls(store, run), "outer_read")


def test_killed_outer_effect_in_doubt_then_resolved_done(tmp_path: Path) -> None:
    path, side, run = _killed_mid_outer(tmp_path, "EFF")
    store = _again(path, side)
    row = store.get_run(run)
    assert row is not None and row.status == "paused", (row.status, row.reason)
    (outer,) = [e for e in store.effects(run=run) if e.tool == "outer_eff"]
    assert outer.status == "in_doubt", outer
    resolve_effect(store, outer.id, "done", result="by hand", who="human:ops")
    store.close()
    store = _again(path, side)
    row = store.get_run(run)
    assert row is not None and row.status == "done", (row.status, row.reason)
    assert not any(e.kind == "nondeterminism" for e in store.events(run))
    assert _lines(side) == ["body x", "act in x", "note x", "act after"], _lines(side)
    _check_nested(_calls(store, run), "outer_eff")
    assert row_state(store, run)["o"] == "by hand"


def row_state(store: SQLiteStore, run: str) -> dict[str, Any]:
    (done,) = [e for e in store.events(run) if e.kind == "run.done"]
    res: dict[str, Any] = done.payload["result"]
    return res


def test_gather_with_a_nested_call_re_runs_after_approval(tmp_path: Path) -> None:
    side = tmp_path / "side.txt"
    os.environ[SIDE_ENV] = str(side)
    store = SQLiteStore(tmp_path / "t.db")
    allow_tools(store, "outer_read", "act", "note")
    run = start_run(store, AGENTS[f"{MOD}:GATHER"], agent_ref=f"{MOD}:GATHER", goal="g")
    turnkit.approve_then_drive(store, AGENTS)
    row = store.get_run(run)
    assert row is not None and row.status == "done", (row.status, row.reason)
    assert not any(e.kind == "nondeterminism" for e in store.events(run))
    assert sorted(_lines(side)) == sorted(["body g", "act sib", "act in g", "note g", "act late",
                                           "gated ann"]), _lines(side)
    calls = _calls(store, run)
    # the read's body runs until its inner effect's intent is made durable; the sibling
    # is numbered then, between the outer call's inner ones, and keeps its index on re-run
    assert calls == {0: ("outer_read", None), 1: ("act", 0), 2: ("act", None),
                     3: ("clock.read", 0), 4: ("random.read", 0), 5: ("nope", 0),
                     6: ("note", 0), 7: ("act", None), 8: ("clock.read", None),
                     9: ("gated", None)}, calls


@tool(effect="read")
async def leave_behind(what: str) -> str:
    """A read whose body starts a task that makes a call of the step after it returned."""
    ctx = tether.current_step()

    async def later() -> None:
        await asyncio.sleep(0.05)
        await ctx.call(act, what=f"leaked {what}")
    LEFT.append(asyncio.create_task(later()))
    return "started"


LEFT: list[asyncio.Task[Any]] = []


async def _leaves(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.call(leave_behind, what="x")
    await asyncio.sleep(0.2)  # the task's call is made (and journaled) meanwhile
    await ctx.call(gated, who="bo")  # waits for approval; the step re-runs
    return Done("ok")


AGENTS[f"{MOD}:LEAVES"] = StepAgent(_leaves, name="leaves", tools=[leave_behind, act, gated])


def test_a_call_from_a_task_a_replayed_call_left_is_passed_over(tmp_path: Path) -> None:
    side = tmp_path / "side.txt"
    os.environ[SIDE_ENV] = str(side)
    store = SQLiteStore(tmp_path / "t.db")
    allow_tools(store, "leave_behind", "act")
    run = start_run(store, AGENTS[f"{MOD}:LEAVES"], agent_ref=f"{MOD}:LEAVES", goal="l")
    turnkit.approve_then_drive(store, AGENTS)
    row = store.get_run(run)
    assert row is not None and row.status == "done", (row.status, row.reason)
    assert not any(e.kind == "nondeterminism" for e in store.events(run))
    assert _lines(side) == ["act leaked x", "gated bo"], _lines(side)


def test_outer_resolved_done_surfaces_its_unsettled_inner_effect(tmp_path: Path) -> None:
    # Killed before the inner effect's result was committed: the outer is in doubt; the
    # operator says it happened; the re-run passes over the inner call, whose intent has
    # no result. It must not be left as a bare intent nobody will ever see.
    path, side, run = _killed_mid_outer(tmp_path, "EFF", hang="x early", wait="effect.intent")
    store = _again(path, side)
    row = store.get_run(run)
    assert row is not None and row.status == "paused", (row.status, row.reason)
    (outer,) = [e for e in store.effects(run=run) if e.tool == "outer_eff"]
    resolve_effect(store, outer.id, "done", result="by hand", who="human:ops")
    store.close()
    store = _again(path, side)
    row = store.get_run(run)
    assert row is not None and row.status == "done", (row.status, row.reason)
    assert _lines(side) == ["body x", "act in x", "act after"], _lines(side)
    status = {(e.tool, e.idx): e.status for e in store.effects(run=run)}
    assert status == {("outer_eff", 0): "resolved_done", ("act", 1): "in_doubt",
                      ("act", 3): "done"}, status
    (inner,) = store.effects(run=run, status="in_doubt")
    assert resolve_effect(store, inner.id, "done", who="human:ops").status == "resolved_done"


@tool(effect="irreversible")
async def act_then_wait(what: str) -> str:
    """An effect whose body makes an inner effect, then acts for a long time."""
    await tether.current_step().call(act, what=f"in {what}")
    STARTED.set()
    await asyncio.sleep(30)
    return "late"


STARTED = asyncio.Event()


async def _long(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.call(act_then_wait, what="w")
    return Done("ok")


AGENTS[f"{MOD}:LONG"] = StepAgent(_long, name="long", tools=[act_then_wait, act])


def test_a_stop_after_an_inner_effect_leaves_the_outer_one_in_doubt(tmp_path: Path) -> None:
    # The inner effect settled while the outer one runs on: a stop cancels the outer one,
    # which may have acted: in doubt, as any effect a stop cuts short (not a bare intent).
    from tether.runtime.operator import send_command
    side = tmp_path / "side.txt"
    os.environ[SIDE_ENV] = str(side)
    path = tmp_path / "t.db"
    store = SQLiteStore(path)
    allow_tools(store)
    run = start_run(store, AGENTS[f"{MOD}:LONG"], agent_ref=f"{MOD}:LONG", goal="stop")

    async def main() -> None:
        STARTED.clear()
        task = asyncio.create_task(
            Worker(SQLiteStore(path), agents=AGENTS, poll_interval=0.01).run(until_idle=True))
        await asyncio.wait_for(STARTED.wait(), 20)
        await asyncio.to_thread(send_command, store, run, "stop", who="human:ops")
        await asyncio.wait_for(task, 20)
    asyncio.run(main())
    row = store.get_run(run)
    assert row is not None and row.status == "stopped", (row.status, row.reason)
    status = {(e.tool, e.idx): e.status for e in store.effects(run=run)}
    assert status == {("act_then_wait", 0): "in_doubt", ("act", 1): "done"}, status


def test_outer_resolved_retry_runs_its_body_and_replays_the_inner_calls(
        tmp_path: Path) -> None:
    path, side, run = _killed_mid_outer(tmp_path, "EFF")
    store = _again(path, side)
    (outer,) = [e for e in store.effects(run=run) if e.tool == "outer_eff"]
    resolve_effect(store, outer.id, "retry", who="human:ops")
    store.close()
    store = _again(path, side)
    row = store.get_run(run)
    assert row is not None and row.status == "done", (row.status, row.reason)
    assert not any(e.kind == "nondeterminism" for e in store.events(run))
    # the body ran again; its inner effect did not (replayed); the idempotent note did
    assert _lines(side) == ["body x", "act in x", "note x", "body x", "note x", "act after"]
    _check_nested(_calls(store, run), "outer_eff")


def test_idempotent_outer_whose_inner_result_was_lost_pauses_on_the_inner(
        tmp_path: Path) -> None:
    path, side, run = _killed_mid_outer(tmp_path, "IDEM", hang="x early", wait="effect.intent")
    store = _again(path, side)
    row = store.get_run(run)
    assert row is not None and row.status == "paused", (row.status, row.reason)
    (inner,) = store.effects(run=run, status="in_doubt")
    assert (inner.tool, inner.idx) == ("act", 1), inner
    resolve_effect(store, inner.id, "done", result="acted by hand", who="human:ops")
    store.close()
    store = _again(path, side)
    row = store.get_run(run)
    assert row is not None and row.status == "done", (row.status, row.reason)
    assert not any(e.kind == "nondeterminism" for e in store.events(run))
    assert _lines(side) == ["body x", "act in x", "body x", "body x", "note x", "act after"]
