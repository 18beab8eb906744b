"""A step's calls take turns, and a signal one of them raises ends the step.

Native steps that make calls concurrently (``asyncio.gather``) and code that catches
tether's signals, on a real SQLite store and a real Worker: one call of a step in
flight at a time, in the order they were started; after a pause, an approval to wait
for or a stop, no further call of the step acts; a signal the step's code swallows or
turns into an error still ends the step; a call from a task the step left behind is
refused.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests import turnkit
from tether import Continue, Done, StepAgent, start_run, tool
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools

_acting = turnkit.acting
PEAK, RAN = turnkit.PEAK, turnkit.RAN


@tool(effect="irreversible")
async def pay(who: str) -> str:
    """Pay someone (slow)."""
    return await _acting(f"pay {who}", 0.05)


@tool(effect="irreversible")
async def ship(what: str) -> str:
    """Ship something (fast)."""
    return await _acting(f"ship {what}", 0.0)


@tool(effect="read")
async def look(what: str) -> str:
    """Look at something."""
    return await _acting(f"look {what}", 0.01)


async def _gathered(ctx: Any, state: dict[str, Any]) -> Any:
    state["got"] = list(await asyncio.gather(
        ctx.call(pay, who="ada"), ctx.call(look, what="stock"), ctx.call(ship, what="box")))
    return Done("ok")


async def _swallows(ctx: Any, state: dict[str, Any]) -> Any:
    try:
        await ctx.call(pay, who="bob")  # needs an approval: AwaitApproval, a BaseException
    except BaseException:  # what a careless agent does
        state["swallowed"] = True
    return Done("finished anyway")


async def _converts(ctx: Any, state: dict[str, Any]) -> Any:
    try:
        await ctx.call(pay, who="cy")
    except BaseException as exc:  # a framework wrapping what it caught
        raise RuntimeError(f"tool error: {exc!r}") from exc
    return Done("unreachable")


async def _leaves_a_task(ctx: Any, state: dict[str, Any]) -> Any:
    if ctx.step == 1:
        async def later() -> None:
            await asyncio.sleep(0.05)
            try:
                await ctx.call(ship, what="late")
            except Exception as exc:  # kept for the test to read
                state_errors.append(str(exc))
        state_tasks.append(asyncio.create_task(later()))
        return Continue()
    await ctx.call(look, what="after")
    await asyncio.sleep(0.1)
    return Done("ok")

state_errors: list[str] = []
state_tasks: list[asyncio.Task[None]] = []

GATHERED = StepAgent(_gathered, name="gathered", tools=[pay, look, ship])
SWALLOWS = StepAgent(_swallows, name="swallows", tools=[pay])
CONVERTS = StepAgent(_converts, name="converts", tools=[pay])
LEAVES = StepAgent(_leaves_a_task, name="leaves", tools=[ship, look])
AGENTS = {f"tests.test_step_turns:{n}": a for n, a in
          [("GATHERED", GATHERED), ("SWALLOWS", SWALLOWS), ("CONVERTS", CONVERTS),
           ("LEAVES", LEAVES)]}


def _drive(store: SQLiteStore) -> None:
    turnkit.drive(store, AGENTS)


def _reset() -> None:
    turnkit.reset()
    state_errors.clear()
    state_tasks.clear()


def test_gathered_calls_take_turns_in_the_order_started(tmp_path: Path) -> None:
    _reset()
    store = SQLiteStore(tmp_path / "t.db")
    allow_tools(store)
    run = start_run(store, GATHERED, agent_ref="tests.test_step_turns:GATHERED", goal="three at once")
    _drive(store)
    row = store.get_run(run)
    assert row is not None and row.status == "done", row.reason
    assert PEAK[0] == 1  # never two of the step's calls in flight at once
    assert RAN == ["pay ada", "look stock", "ship box"]
    calls = [(e.payload["i"], e.payload["tool"]) for e in store.events(run)
             if e.kind in ("effect.intent", "tool.called")]
    assert calls == [(0, "pay"), (1, "look"), (2, "ship")]


def test_no_call_of_the_step_acts_after_one_waits_for_approval(tmp_path: Path) -> None:
    _reset()
    store = SQLiteStore(tmp_path / "t.db")
    allow_tools(store, "ship", "look")  # pay is not allowed: it waits for a person
    run = start_run(store, GATHERED, agent_ref="tests.test_step_turns:GATHERED", goal="pay first")
    _drive(store)
    row = store.get_run(run)
    assert row is not None and row.status == "awaiting_approval", (row.status, row.reason)
    assert RAN == []  # look and ship were started beside pay, and did not run
    kinds = [e.kind for e in store.events(run)]
    assert "effect.intent" not in kinds and "tool.called" not in kinds


def test_a_swallowed_signal_still_ends_the_step(tmp_path: Path) -> None:
    _reset()
    store = SQLiteStore(tmp_path / "t.db")
    run = start_run(store, SWALLOWS, agent_ref="tests.test_step_turns:SWALLOWS", goal="swallow")
    _drive(store)
    row = store.get_run(run)
    assert row is not None and row.status == "awaiting_approval", (row.status, row.reason)
    assert "approval" in row.reason
    assert not any(e.kind in ("step.finished", "run.done") for e in store.events(run))


def test_a_signal_turned_into_an_error_pauses_instead_of_failing(tmp_path: Path) -> None:
    _reset()
    store = SQLiteStore(tmp_path / "t.db")
    run = start_run(store, CONVERTS, agent_ref="tests.test_step_turns:CONVERTS", goal="convert")
    _drive(store)
    row = store.get_run(run)
    assert row is not None and row.status == "awaiting_approval", (row.status, row.reason)
    assert "approval" in row.reason and "RuntimeError" not in row.reason


def test_a_call_from_a_task_the_step_left_behind_is_refused(tmp_path: Path) -> None:
    _reset()
    store = SQLiteStore(tmp_path / "t.db")
    allow_tools(store)
    run = start_run(store, LEAVES, agent_ref="tests.test_step_turns:LEAVES", goal="leave a task")
    _drive(store)
    row = store.get_run(run)
    assert row is not None and row.status == "done", row.reason
    assert "ship late" not in RAN
    assert len(state_errors) == 1 and "after the step returned" in state_errors[0]
    assert "await every ctx call" in state_errors[0]
    step1 = [e for e in store.events(run) if e.step == 1 and e.kind == "effect.intent"]
    assert step1 == []
