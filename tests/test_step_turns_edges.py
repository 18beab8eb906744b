"""Edges of a step's turns (tests/test_step_turns.py): calls inside calls, tasks a tool
starts, sync steps, a stop while calls wait their turn, and what is (not) kept.

Real SQLite store, real Worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import tether
from tests import turnkit
from tether import Continue, Done, StepAgent, Worker, start_run, tool
from tether.runtime.operator import send_command
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools

_acting = turnkit.acting
ACTIVE, PEAK, RAN = turnkit.ACTIVE, turnkit.PEAK, turnkit.RAN
ERRORS: list[str] = []
TASKS: list[asyncio.Task[Any]] = []


@tool(effect="irreversible")
async def ship(what: str) -> str:
    """Ship something."""
    return await _acting(f"ship {what}", 0.02)


@tool(effect="irreversible")
async def slow_pay(who: str) -> str:
    """Pay someone (very slow)."""
    return await _acting(f"pay {who}", 0.4)


@tool(effect="read")
async def nest(what: str) -> str:
    """A tool whose body makes a call of its own step."""
    inner = await tether.current_step().call(ship, what=f"inner {what}")
    return f"outer {what}: {inner}"


@tool(effect="read")
async def nest_in_task(what: str) -> str:
    """A tool that starts a task making a call of its step, and awaits it."""
    t = asyncio.create_task(tether.current_step().call(ship, what=f"task {what}"))
    return str(await t)


@tool(effect="read")
async def leave_behind(what: str) -> str:
    """A tool that starts a task making a call later and does not await it."""
    ctx = tether.current_step()

    async def later() -> None:
        await asyncio.sleep(0.05)
        try:
            await ctx.call(ship, what=f"leaked {what}")
        except Exception as exc:  # kept for the test to read
            ERRORS.append(f"{type(exc).__name__}: {exc}")
    TASKS.append(asyncio.create_task(later()))
    return "started"


@tool(effect="irreversible")
async def broken(what: str) -> str:
    """Fails."""
    raise ValueError(f"no {what}")


async def _nested(ctx: Any, state: dict[str, Any]) -> Any:
    state["got"] = list(await asyncio.gather(
        ctx.call(nest, what="a"), ctx.call(ship, what="b"), ctx.call(nest_in_task, what="c")))
    return Done("ok")


async def _leaks(ctx: Any, state: dict[str, Any]) -> Any:
    if ctx.step == 1:
        await ctx.call(leave_behind, what="x")
        await ctx.call(slow_pay, who="ada")  # the leaked call comes while this is in flight
        await asyncio.sleep(0.3)  # and again after the step returned, if this were shorter
        return Continue()
    await asyncio.sleep(0.3)
    return Done("ok")


async def _leaks_after(ctx: Any, state: dict[str, Any]) -> Any:
    if ctx.step == 1:
        await ctx.call(leave_behind, what="y")
        return Continue()  # the leaked call comes after the step returned
    await ctx.call(slow_pay, who="bo")
    return Done("ok")


async def _tool_failed(ctx: Any, state: dict[str, Any]) -> Any:
    try:
        await ctx.call(broken, what="x")
    except tether.ToolFailed as exc:
        state["told"] = str(exc)
    state["then"] = await ctx.call(ship, what="after")
    return Done("ok")


def _sync(ctx: Any, state: dict[str, Any]) -> Any:
    out: list[Any] = []

    def one(w: str) -> None:
        out.append(ctx.call(ship, what=w))
    threads = [threading.Thread(target=one, args=(w,)) for w in ("s1", "s2", "s3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state["got"] = sorted(out)
    return Done("ok")


async def _stop_me(ctx: Any, state: dict[str, Any]) -> Any:
    await asyncio.gather(ctx.call(slow_pay, who="zed"), ctx.call(ship, what="one"),
                         ctx.call(ship, what="two"), return_exceptions=True)
    await ctx.call(ship, what="after gather")
    return Done("ok")


NESTED = StepAgent(_nested, name="nested", tools=[nest, ship, nest_in_task])
LEAKS = StepAgent(_leaks, name="leaks", tools=[leave_behind, slow_pay, ship])
LEAKS_AFTER = StepAgent(_leaks_after, name="leaks_after", tools=[leave_behind, slow_pay, ship])
TOOL_FAILED = StepAgent(_tool_failed, name="tool_failed", tools=[broken, ship])
SYNC = StepAgent(_sync, name="sync", tools=[ship, nest])
STOP_ME = StepAgent(_stop_me, name="stop_me", tools=[slow_pay, ship])
AGENTS = {f"tests.test_step_turns_edges:{n}": a for n, a in
          [("NESTED", NESTED), ("LEAKS", LEAKS), ("LEAKS_AFTER", LEAKS_AFTER),
           ("TOOL_FAILED", TOOL_FAILED), ("SYNC", SYNC), ("STOP_ME", STOP_ME)]}


def _reset() -> None:
    turnkit.reset()
    ERRORS.clear()
    TASKS.clear()


def _run(tmp_path: Path, name: str) -> tuple[SQLiteStore, str]:
    _reset()
    store = SQLiteStore(tmp_path / "t.db")
    allow_tools(store)
    run = start_run(store, AGENTS[f"tests.test_step_turns_edges:{name}"],
                    agent_ref=f"tests.test_step_turns_edges:{name}", goal=name)
    turnkit.drive(store, AGENTS)
    return store, run


def _calls(store: SQLiteStore, run: str) -> list[tuple[int, int, str]]:
    return [(e.step, e.payload["i"], e.payload.get("tool", "")) for e in store.events(run)
            if e.kind in ("effect.intent", "tool.called")]


def test_a_call_inside_a_call_goes_straight_in(tmp_path: Path) -> None:
    store, run = _run(tmp_path, "NESTED")
    row = store.get_run(run)
    assert row is not None and row.status == "done", row.reason
    assert sorted(RAN) == ["ship b", "ship inner a", "ship task c"]


def test_a_task_a_tool_left_behind_takes_its_turn(tmp_path: Path) -> None:
    store, run = _run(tmp_path, "LEAKS")
    row = store.get_run(run)
    assert row is not None and row.status == "done", row.reason
    assert PEAK[0] == 1, RAN  # the leaked call did not run beside slow_pay


def test_a_task_a_tool_left_behind_is_refused_after_the_step(tmp_path: Path) -> None:
    store, run = _run(tmp_path, "LEAKS_AFTER")
    row = store.get_run(run)
    assert row is not None and row.status == "done", row.reason
    assert "ship leaked y" not in RAN, _calls(store, run)
    assert len(ERRORS) == 1 and "after the step returned" in ERRORS[0], ERRORS


def test_a_tool_failure_is_not_kept(tmp_path: Path) -> None:
    store, run = _run(tmp_path, "TOOL_FAILED")
    row = store.get_run(run)
    assert row is not None and row.status == "done", row.reason
    assert RAN == ["ship after"]


def test_sync_step_calls_from_threads_take_turns(tmp_path: Path) -> None:
    store, run = _run(tmp_path, "SYNC")
    row = store.get_run(run)
    assert row is not None and row.status == "done", row.reason
    assert PEAK[0] == 1
    assert sorted(RAN) == ["ship s1", "ship s2", "ship s3"]


def test_stop_during_a_gather_stops_at_once(tmp_path: Path) -> None:
    _reset()
    path = tmp_path / "t.db"
    store = SQLiteStore(path)
    allow_tools(store)
    run = start_run(store, STOP_ME, agent_ref="tests.test_step_turns_edges:STOP_ME", goal="stop")

    async def main() -> None:
        w = Worker(SQLiteStore(path), agents=AGENTS, poll_interval=0.01)
        task = asyncio.create_task(w.run(until_idle=True))
        for _ in range(2000):  # until slow_pay is in flight
            if ACTIVE[0]:
                break
            await asyncio.sleep(0.005)
        t0 = time.monotonic()
        await asyncio.to_thread(send_command, store, run, "stop", who="human:ops")
        await asyncio.wait_for(task, 10)
        assert time.monotonic() - t0 < 0.35  # before slow_pay would have finished
    asyncio.run(main())
    row = store.get_run(run)
    assert row is not None and row.status == "stopped", (row.status, row.reason)
    assert RAN == [], RAN
    intents = [e for e in store.events(run) if e.kind == "effect.intent"]
    assert [e.payload["tool"] for e in intents] == ["slow_pay"]
    eff = store.effect(intents[0].id)
    assert eff is not None and eff.status == "in_doubt", eff


# -- a worker killed mid-gather ----------------------------------------------------
SIDE_ENV = "TURNS_SIDE"
HANG_ENV = "TURNS_HANG"
REPO = Path(__file__).resolve().parents[1]


def _side(line: str) -> None:
    with open(os.environ[SIDE_ENV], "a") as f:
        f.write(f"{line} {os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())


@tool(effect="irreversible", idempotent=True)
async def mark(what: str) -> str:
    """Append a line to the side file (idempotent: re-sent after a crash)."""
    _side(f"mark {what}")
    if what == os.environ.get(HANG_ENV):
        _side("hung")  # the test kills the worker on this line
        await asyncio.sleep(60)  # killed here
    await asyncio.sleep(0.01)
    return f"marked {what}"


@tool(effect="read")
async def peek(what: str) -> str:
    """A read."""
    _side(f"peek {what}")
    return f"saw {what}"


async def _crash_gather(ctx: Any, state: dict[str, Any]) -> Any:
    state["got"] = list(await asyncio.gather(
        ctx.call(mark, what="a"), ctx.call(peek, what="b"), ctx.call(mark, what="c"),
        ctx.call(mark, what="d")))
    return Done("ok")


CRASH_GATHER = StepAgent(_crash_gather, name="crash_gather", tools=[mark, peek])
AGENTS["tests.test_step_turns_edges:CRASH_GATHER"] = CRASH_GATHER
_WORKER = ("import asyncio, sys; from tether import Worker; from tether.store.sqlite import "
           "SQLiteStore; from tests.test_step_turns_edges import AGENTS; asyncio.run(Worker("
           "SQLiteStore(sys.argv[1]), agents=AGENTS, poll_interval=0.01).run(until_idle=True))")


def _worker(path: Path, side: Path, hang: str = "") -> subprocess.Popen[bytes]:
    env = {**os.environ, SIDE_ENV: str(side), HANG_ENV: hang, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", _WORKER, str(path)], env=env, cwd=REPO)


@pytest.mark.parametrize("hang", ["a", "c"])
def test_a_worker_killed_mid_gather_replays_the_calls_in_order(tmp_path: Path,
                                                               hang: str) -> None:
    path, side = tmp_path / "t.db", tmp_path / "side.txt"
    store = SQLiteStore(path)
    allow_tools(store)
    run = start_run(store, CRASH_GATHER, agent_ref="tests.test_step_turns_edges:CRASH_GATHER",
                    goal="crash")
    proc = _worker(path, side, hang)
    try:
        deadline = time.monotonic() + 20
        while "hung" not in (side.read_text() if side.exists() else ""):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = [ln.split()[:2] for ln in side.read_text().splitlines() if ln.split()[0] != "hung"]
    assert before[-1] == ["mark", hang]
    # the lease of the killed worker must lapse before another takes the run
    store.close()
    again = _worker(path, side)
    assert again.wait(60) == 0
    store = SQLiteStore(path)
    row = store.get_run(run)
    assert row is not None and row.status == "done", (row.status, row.reason)
    events = store.events(run)
    assert not any(e.kind == "nondeterminism" for e in events)
    lines = [" ".join(ln.split()[:2]) for ln in side.read_text().splitlines()
             if ln.split()[0] != "hung"]
    assert lines == ["mark a", "peek b", "mark c", "mark d"][: ["a", "c"].index(hang) * 2 + 1] + \
        ["mark a", "peek b", "mark c", "mark d"][["a", "c"].index(hang) * 2:], lines
    calls = [(e.payload["i"], e.payload["tool"]) for e in events
             if e.kind in ("effect.intent", "tool.called")]
    assert calls == [(0, "mark"), (1, "peek"), (2, "mark"), (3, "mark")], calls


@tool(effect="irreversible")
async def nest_then_wait(what: str) -> str:
    """An effect whose body makes a call of its step, then acts for a long time."""
    await tether.current_step().call(ship, what=f"inner {what}")
    return await _acting(f"long {what}", 5.0)


async def _nest_long(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.call(nest_then_wait, what="n")
    return Done("ok")


NEST_LONG = StepAgent(_nest_long, name="nest_long", tools=[nest_then_wait, ship])
AGENTS["tests.test_step_turns_edges:NEST_LONG"] = NEST_LONG


def test_a_stop_after_a_nested_call_still_cancels_the_outer_one(tmp_path: Path) -> None:
    _reset()
    path = tmp_path / "t.db"
    store = SQLiteStore(path)
    allow_tools(store)
    run = start_run(store, NEST_LONG, agent_ref="tests.test_step_turns_edges:NEST_LONG",
                    goal="stop")

    async def main() -> float:
        w = Worker(SQLiteStore(path), agents=AGENTS, poll_interval=0.01)
        task = asyncio.create_task(w.run(until_idle=True))
        for _ in range(2000):  # until the outer effect acts, its inner call done
            if ACTIVE[0] and RAN:
                break
            await asyncio.sleep(0.005)
        t0 = time.monotonic()
        await asyncio.to_thread(send_command, store, run, "stop", who="human:ops")
        await asyncio.wait_for(task, 20)
        return time.monotonic() - t0
    took = asyncio.run(main())
    row = store.get_run(run)
    assert row is not None and row.status == "stopped", (row.status, row.reason)
    assert RAN == ["ship inner n"], RAN
    assert took < 2.0, took  # stop means now, not when the 5 s effect is done


async def _fails_mid_gather(ctx: Any, state: dict[str, Any]) -> Any:
    # A plain gather: the first error is raised at once, the other calls are left running.
    await asyncio.gather(ctx.call(broken, what="x"), ctx.call(ship, what="orphan"),
                         ctx.call(ship, what="queued"))
    return Done("unreachable")


FAILS_MID = StepAgent(_fails_mid_gather, name="fails_mid", tools=[broken, ship])
AGENTS["tests.test_step_turns_edges:FAILS_MID"] = FAILS_MID


def test_a_call_left_running_when_the_step_raised_ends_before_the_run_fails(
        tmp_path: Path) -> None:
    # The orphan had its turn before the step saw the error (its wake-up was queued
    # first): it is waited for, so its result is journaled before run.failed, never
    # an intent left without one, nor an effect acting for a run already failed.
    store, run = _run(tmp_path, "FAILS_MID")
    row = store.get_run(run)
    assert row is not None and row.status == "failed", (row.status, row.reason)
    assert "no x" in row.reason, row.reason
    kinds = [e.kind for e in store.events(run)]
    assert kinds[-4:] == ["policy.decided", "effect.intent", "effect.done", "run.failed"], kinds
    assert RAN == ["ship orphan"]  # the call queued behind it was refused


@tool(effect="irreversible")
async def gated(who: str) -> str:
    """An effect the test's policy makes wait for a person."""
    return await _acting(f"gated {who}", 0.0)


async def _nest_then_gated(ctx: Any, state: dict[str, Any]) -> Any:
    state["nested"] = await ctx.call(nest, what="r")  # its body makes call #1 of the step
    state["paid"] = await ctx.call(gated, who="ann")  # waits for approval; the step re-runs
    return Done("ok")


NEST_GATED = StepAgent(_nest_then_gated, name="nest_gated", tools=[nest, ship, gated])
AGENTS["tests.test_step_turns_edges:NEST_GATED"] = NEST_GATED


def test_a_step_re_run_after_a_call_inside_a_call_replays_without_nondeterminism(
        tmp_path: Path) -> None:
    from tether import approvals
    _reset()
    store = SQLiteStore(tmp_path / "t.db")
    allow_tools(store, "nest", "ship")
    run = start_run(store, NEST_GATED, agent_ref="tests.test_step_turns_edges:NEST_GATED",
                    goal="nested then gated")
    turnkit.drive(store, AGENTS)
    row = store.get_run(run)
    assert row is not None and row.status == "awaiting_approval", (row.status, row.reason)
    (req,) = store.approvals(status="pending")
    approvals.decide(store, req.id, approve=True, who="human:ada", agents=AGENTS)
    turnkit.drive(store, AGENTS)
    row = store.get_run(run)
    kinds = [e.kind for e in store.events(run)]
    assert row is not None and row.status == "done", (row.status, row.reason)
    assert "nondeterminism" not in kinds
    assert RAN == ["ship inner r", "gated ann"]  # the inner effect ran once


@tool(effect="irreversible")
async def nest_deeper(what: str) -> str:
    """An effect whose body calls a tool whose body makes a call of the step (two deep)."""
    got = await tether.current_step().call(nest, what=f"deep {what}")
    return f"deeper {what}: {got}"


async def _deeper_then_gated(ctx: Any, state: dict[str, Any]) -> Any:
    state["nested"] = await ctx.call(nest_deeper, what="d")  # calls #1 and #2 inside it
    state["paid"] = await ctx.call(gated, who="bo")
    return Done("ok")


DEEPER_GATED = StepAgent(_deeper_then_gated, name="deeper_gated",
                         tools=[nest_deeper, nest, ship, gated])
AGENTS["tests.test_step_turns_edges:DEEPER_GATED"] = DEEPER_GATED


def test_calls_two_deep_inside_an_effect_are_passed_over_on_a_re_run(tmp_path: Path) -> None:
    _reset()
    store = SQLiteStore(tmp_path / "t.db")
    allow_tools(store, "nest_deeper", "nest", "ship")
    run = start_run(store, DEEPER_GATED, agent_ref="tests.test_step_turns_edges:DEEPER_GATED",
                    goal="two deep, then gated")
    turnkit.approve_then_drive(store, AGENTS)
    row = store.get_run(run)
    assert row is not None and row.status == "done", (row.status, row.reason)
    assert RAN == ["ship inner deep d", "gated bo"]  # nothing inside ran twice
    calls = {e.payload["i"]: (e.payload["tool"], e.payload.get("in")) for e in store.events(run)
             if e.kind in ("effect.intent", "tool.called")}
    assert calls == {0: ("nest_deeper", None), 1: ("nest", 0), 2: ("ship", 1),
                     3: ("gated", None)}
