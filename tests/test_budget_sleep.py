"""Rolling-window budgets sleep a run until the window frees (``on_exceed``), on real runs:
the step cut short re-runs when the run wakes and the run goes on; ``KEY:pause`` and
lifetime caps still pause; keys, merges and the wake-up time."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tether import Done, FixedClock, StepAgent, Worker, start_run
from tether.control import set_swarm_budget
from tether.core import budget as budgets
from tether.errors import UsageError
from tether.models.base import ModelResponse, Usage
from tether.models.scripted import ScriptedModel
from tether.store.sqlite import SQLiteStore

T0 = 1_800_000_000.0  # a whole minute: usage buckets start here
CALLS: list[int] = []


def _answer(messages: Any, tools: Any) -> ModelResponse:
    CALLS.append(len(CALLS))
    return ModelResponse(content="ok", usage=Usage(400, 0))


async def _two_calls(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.model([{"role": "user", "content": f"step {ctx.step} a"}])
    await ctx.model([{"role": "user", "content": f"step {ctx.step} b"}])
    state["n"] = state.get("n", 0) + 1
    return Done("three") if state["n"] == 3 else None


AGENT = StepAgent(_two_calls, name="talker", model=ScriptedModel(_answer))


def _drive(store: SQLiteStore, clock: FixedClock) -> None:
    asyncio.run(Worker(store, agents={"a": AGENT}, clock=clock, poll_interval=0.01)
                .run(until_idle=True))


def _start(tmp_path: Path, budget: dict[str, float], **kw: Any) -> tuple[SQLiteStore, str,
                                                                          FixedClock]:
    CALLS.clear()
    store = SQLiteStore(tmp_path / "t.db")
    clock = FixedClock(T0)
    run = start_run(store, AGENT, goal="talk", agent_ref="a", clock=clock, budget=budget, **kw)
    return store, run, clock


def _payloads(store: SQLiteStore, run: str, kind: str) -> list[Any]:
    return [e.payload for e in store.events(run) if e.kind == kind]


def test_a_window_reached_mid_step_sleeps_until_it_frees_then_the_run_goes_on(
        tmp_path: Path) -> None:
    store, run, clock = _start(tmp_path, {"tokens_per_hour": 1000})
    _drive(store, clock)
    # Step 1: 800 tokens; step 2's first call makes 1,200; its second call is held.
    row = store.get_run(run)
    assert row is not None and row.status == "sleeping" and len(CALLS) == 3
    wake = T0 + 60 + 3600  # the minute of all that usage has left the hour
    assert row.wake_at == wake
    [hit] = _payloads(store, run, "budget.exceeded")
    assert hit == {"scope": "run", "limit": "tokens_per_hour", "cap": 1000, "used": 1200,
                   "on_exceed": "sleep", "until": wake}
    [asleep] = _payloads(store, run, "run.sleeping")
    assert asleep["deferred"] and asleep["until"] == wake
    assert "budget tokens_per_hour=1000 reached (used 1200)" in asleep["reason"]

    clock.set(wake - 1)  # not yet: a worker leaves it asleep
    _drive(store, clock)
    assert store.get_run(run).status == "sleeping"  # type: ignore[union-attr]
    clock.set(wake)
    _drive(store, clock)
    row = store.get_run(run)
    # Step 2 re-ran (its first call from the journal), step 3 fitted in the new window.
    assert row is not None and row.status == "done" and row.step == 3 and len(CALLS) == 6
    assert [e.kind for e in store.events(run)].count("run.woke") == 1


def test_pause_as_on_exceed_and_lifetime_caps_still_pause(tmp_path: Path) -> None:
    for n, budget in enumerate(({"tokens_per_hour:pause": 1000}, {"tokens": 1000})):
        (tmp_path / str(n)).mkdir()
        store, run, clock = _start(tmp_path / str(n), budget)
        _drive(store, clock)
        row = store.get_run(run)
        assert row is not None and row.status == "paused", budget
        [hit] = _payloads(store, run, "budget.exceeded")
        assert hit["on_exceed"] == "pause" and "until" not in hit
        assert _payloads(store, run, "run.sleeping") == []


def test_a_swarm_window_sleeps_its_runs_too(tmp_path: Path) -> None:
    store, run, clock = _start(tmp_path, {}, swarm="team")
    set_swarm_budget(store, "team", {"tokens_per_minute": 1000}, [])
    _drive(store, clock)
    row = store.get_run(run)
    assert row is not None and row.status == "sleeping" and row.wake_at == T0 + 120
    [hit] = _payloads(store, run, "budget.exceeded")
    assert hit["scope"] == "swarm team" and hit["on_exceed"] == "sleep"
    clock.set(T0 + 120)
    _drive(store, clock)
    assert store.get_run(run).status == "done"  # type: ignore[union-attr]
    assert len(CALLS) == 6


def test_budget_keys_take_an_on_exceed() -> None:
    assert budgets.parse_key("cost_usd_per_day").on_exceed == "sleep"
    assert budgets.parse_key("cost_usd_per_day:pause").on_exceed == "pause"
    assert budgets.parse_key("cost_usd_per_day:pause").cap == "cost_usd_per_day"
    assert budgets.parse_key("steps").on_exceed == "pause"
    with pytest.raises(UsageError, match="a lifetime cap never frees"):
        budgets.parse_key("steps:sleep")
    with pytest.raises(UsageError, match="'nap' is not an on_exceed"):
        budgets.parse_key("tokens_per_hour:nap")
    # A key replaces its cap whatever the on_exceed; unset removes both forms.
    old = {"tokens_per_hour": 5.0, "steps": 9.0}
    assert budgets.merge(old, {"tokens_per_hour:pause": 7.0}) == {"steps": 9.0,
                                                                  "tokens_per_hour:pause": 7.0}
    assert budgets.merge({"tokens_per_hour:pause": 7.0}, {}, ["tokens_per_hour"]) == {}


def test_the_wake_up_is_when_the_first_bucket_leaves_enough() -> None:
    buckets = {100: 300.0, 130: 500.0, 150: 400.0}  # minute -> tokens
    lim = budgets.parse_key("tokens_per_hour")

    def used_since(t: float) -> dict[str, float]:
        return {"input_tokens": sum(v for b, v in buckets.items() if b >= t // 60)}
    now = 150 * 60.0 + 30
    # 1,200 used; below 1,000 once minute 100 has left (700), below 500 once 130 has.
    assert budgets.frees_at(lim, 1000, now, used_since) == 101 * 60 + 3600
    assert budgets.frees_at(lim, 500, now, used_since) == 131 * 60 + 3600
    assert budgets.frees_at(lim, 0, now, used_since) is None
