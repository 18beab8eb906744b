"""The no_progress monitor on real runs: declared progress flat while the run spends
(alert, then pause), the same stretch measured in minutes, an unchanged state, and the
negative controls: progress that moves, a state that changes, a run that sleeps or polls
without spending, a router that keeps no state but forwards its work."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from tether import Done, FixedClock, SleepUntil, StepAgent, Worker, start_run, tool
from tether.core.events import Event
from tether.core.monitors import Quiet, Signal, View
from tether.models.base import ModelResponse
from tether.models.scripted import ScriptedModel
from tether.store.sqlite import SQLiteStore

T0 = 1_800_000_000.0
CLOCK = FixedClock(T0)
MODEL = ScriptedModel([ModelResponse(content="thinking")])
STEPS = [0]
SEEN: list[float | None] = []


@tool(effect="read")
def queue() -> list[str]:
    """Look at a queue (always empty)."""
    return []


def _agent(body: Callable[[Any, dict[str, Any], int], Any], *, steps: int = 20,
           advance: float = 1.0, sync: bool = False) -> StepAgent:
    """An agent that runs ``body`` for ``steps`` steps, the clock moving ``advance`` s each."""
    def step(ctx: Any, state: dict[str, Any]) -> Any:
        STEPS[0] += 1
        if STEPS[0] > steps:
            return Done("enough")
        CLOCK.advance(advance)
        return body(ctx, state, STEPS[0])

    async def astep(ctx: Any, state: dict[str, Any]) -> Any:
        out = step(ctx, state)
        return await out if asyncio.iscoroutine(out) else out

    return StepAgent(step if sync else astep, name="worker", model=MODEL, tools=[queue],
                     monitors=[Peek])


class Peek(Quiet):
    """Records what the view says of progress at each step's end."""

    name = "peek"

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        if event.kind == "step.finished":
            SEEN.append(view.progress)
        return ()


def _drive(tmp_path: Path, agent: StepAgent) -> tuple[SQLiteStore, str]:
    STEPS[0] = 0
    SEEN.clear()
    CLOCK.set(T0)
    store = SQLiteStore(tmp_path / "t.db")
    run = start_run(store, agent, goal="work", agent_ref="a", clock=CLOCK)
    for _ in range(50):  # a sleeping run is woken when its time comes, as a worker would
        asyncio.run(Worker(store, agents={"a": agent}, clock=CLOCK, poll_interval=0.01)
                    .run(until_idle=True))
        row = store.get_run(run)
        if row is None or row.status != "sleeping" or row.wake_at is None:
            break
        CLOCK.set(row.wake_at)
    return store, run


def _alerts(store: SQLiteStore, run: str) -> list[tuple[str, str, int]]:
    return [(e.payload["rule"], e.payload["verdict"], e.step) for e in store.events(run)
            if e.kind == "alert" and e.payload["monitor"] == "no_progress"]


def _status(store: SQLiteStore, run: str) -> str:
    row = store.get_run(run)
    assert row is not None
    return row.status


async def _think(ctx: Any) -> None:
    await ctx.model([{"role": "user", "content": "go on"}])


def _flat(ctx: Any, state: dict[str, Any], k: int) -> Any:
    async def go() -> None:
        await _think(ctx)
        state["k"] = k  # the state changes: only the declared progress counts
        ctx.progress(0.25)
    return go()


def test_flat_declared_progress_while_spending_alerts_then_pauses(tmp_path: Path) -> None:
    store, run = _drive(tmp_path, _agent(_flat))
    # Step 1 sets the mark; steps 2..9 are eight flat spending steps; 10..17 eight more.
    assert _alerts(store, run) == [("flat_progress", "alert", 9), ("flat_progress", "pause", 17)]
    assert _status(store, run) == "paused"
    first = next(e for e in store.events(run) if e.kind == "alert")
    assert first.payload["figures"]["progress"] == 0.25 and first.payload["threshold"] == 8
    cited = [e for e in store.events(run) if e.id in first.causes]
    assert len(cited) == 8 and {e.kind for e in cited} == {"step.finished"}
    assert all(e.payload["progress"] == 0.25 for e in cited)
    assert SEEN[:3] == [0.25, 0.25, 0.25]  # the view carries it too


def test_progress_that_moves_is_not_flagged(tmp_path: Path) -> None:
    def rising(ctx: Any, state: dict[str, Any], k: int) -> Any:
        async def go() -> None:
            await _think(ctx)
            ctx.progress(k / 20)
        return go()
    store, run = _drive(tmp_path, _agent(rising))
    assert _alerts(store, run) == [] and _status(store, run) == "done"
    assert SEEN[:2] == [0.05, 0.1]


def test_flat_progress_for_an_hour_is_flagged_in_fewer_steps(tmp_path: Path) -> None:
    # Steps half an hour apart: step 1 marks, 2 and 3 are two flat steps (fewer than
    # min_steps), step 4 is the third, 90 minutes after the mark; step 5, two hours
    # after it, is a further hour: the second stage.
    store, run = _drive(tmp_path, _agent(_flat, steps=5, advance=1800.0))
    assert _alerts(store, run) == [("flat_progress", "alert", 4), ("flat_progress", "pause", 5)]
    alert = next(e for e in store.events(run) if e.kind == "alert")
    assert alert.payload["figures"]["unit"] == "minutes" and alert.payload["threshold"] == 60


def test_an_unchanged_state_while_spending_is_flagged(tmp_path: Path) -> None:
    def stuck(ctx: Any, state: dict[str, Any], k: int) -> Any:
        return _think(ctx)
    store, run = _drive(tmp_path, _agent(stuck, steps=12))
    assert _alerts(store, run) == [("unchanged_state", "alert", 9)]
    assert _status(store, run) == "done"


def test_a_sync_step_declares_progress_too(tmp_path: Path) -> None:
    def stuck(ctx: Any, state: dict[str, Any], k: int) -> None:
        ctx.model([{"role": "user", "content": "go on"}])
        ctx.progress(3)
    store, run = _drive(tmp_path, _agent(stuck, steps=10, sync=True))
    assert _alerts(store, run) == [("flat_progress", "alert", 9)]
    assert SEEN[0] == 3.0


def test_a_changing_state_a_sleeper_a_poller_and_a_forwarder_are_not_flagged(
        tmp_path: Path) -> None:
    def changing(ctx: Any, state: dict[str, Any], k: int) -> Any:
        state.setdefault("seen", []).append(k)
        return _think(ctx)

    def sleeper(ctx: Any, state: dict[str, Any], k: int) -> Any:
        return SleepUntil(CLOCK.now() + 600)

    def poller(ctx: Any, state: dict[str, Any], k: int) -> Any:
        async def go() -> Any:
            await ctx.call(queue)  # a read: polling is not spending
            return SleepUntil(CLOCK.now() + 60)
        return go()

    def forwarder(ctx: Any, state: dict[str, Any], k: int) -> Any:
        async def go() -> None:
            await _think(ctx)
            await ctx.board.set("last", k)  # its work leaves the run: progress
        return go()

    for n, body in enumerate((changing, sleeper, poller, forwarder)):
        (tmp_path / str(n)).mkdir()
        store, run = _drive(tmp_path / str(n), _agent(body))
        assert _alerts(store, run) == [], body.__name__
        assert _status(store, run) == "done", body.__name__


@pytest.mark.parametrize("value", [float("nan"), True, "1"])
def test_a_progress_that_is_not_a_number_fails_the_step_naming_it(tmp_path: Path,
                                                                   value: Any) -> None:
    def bad(ctx: Any, state: dict[str, Any], k: int) -> None:
        ctx.progress(value)
    store, run = _drive(tmp_path, _agent(bad, sync=True))
    failed = [e.payload["error"] for e in store.events(run) if e.kind == "run.failed"]
    assert len(failed) == 1 and f"run {run} step 1: ctx.progress() takes a finite" in failed[0]
