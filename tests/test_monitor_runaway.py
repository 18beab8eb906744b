"""The runaway monitor on real runs: a spike against the run's own baseline opens the
breaker (an alert), a second breach after the cool-down pauses the run, normal minutes
close it again, ceilings from the policy file, and the breaker rebuilt from events."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tether import Done, FixedClock, StepAgent, Worker, start_run
from tether.core.monitors import KINDS
from tether.core.monitors.base import View
from tether.core.monitors.runaway import CLOSED, HALF_OPEN, OPEN, Runaway
from tether.core.policy import parse_policy
from tether.models.base import ModelResponse, Usage
from tether.models.scripted import ScriptedModel
from tether.policies import apply_policy
from tether.store.sqlite import SQLiteStore

T0 = 1_800_000_000.0  # a whole minute on the run clock
CLOCK = FixedClock(T0)
PLAN: list[tuple[float, int, int]] = []
"""Per step: (seconds the clock moves before it, model calls, tokens per call)."""


def _answer(messages: Any, tools: Any) -> ModelResponse:
    return ModelResponse(content="ok", usage=Usage(PLAN_TOKENS[0], 0))


PLAN_TOKENS = [0]
MODEL = ScriptedModel(_answer)


async def _spend(ctx: Any, state: dict[str, Any]) -> Any:
    k = state.get("k", 0)
    if k >= len(PLAN):
        return Done("spent")
    advance, calls, tokens = PLAN[k]
    CLOCK.advance(advance)
    PLAN_TOKENS[0] = tokens
    for _ in range(calls):
        await ctx.model([{"role": "user", "content": f"step {k}"}])
    state["k"] = k + 1
    return None


AGENT = StepAgent(_spend, name="spender", model=MODEL)


def _drive(tmp_path: Path, plan: list[tuple[float, int, int]], policy: str | None = None,
           ) -> tuple[SQLiteStore, str]:
    PLAN[:] = plan
    CLOCK.set(T0)
    store = SQLiteStore(tmp_path / "t.db")
    pol = None
    if policy is not None:
        pol = parse_policy(policy, source="p.toml")
        apply_policy(store, pol, who="human:ops")
    run = start_run(store, AGENT, goal="spend", agent_ref="a", clock=CLOCK)
    asyncio.run(Worker(store, agents={"a": AGENT}, clock=CLOCK, policy=pol,
                       poll_interval=0.01).run(until_idle=True))
    return store, run


def _alerts(store: SQLiteStore, run: str) -> list[dict[str, Any]]:
    return [e.payload for e in store.events(run) if e.kind == "alert"]


NORMAL = [(60.0, 1, 1000)] * 6
"""Six quiet minutes: one step and one call of 1,000 tokens each: the baseline."""


def test_a_token_spike_opens_the_breaker_and_a_second_after_the_cool_down_pauses(
        tmp_path: Path) -> None:
    # Minute 7: five steps of four calls of 3,000 tokens: 60,000 tokens in a minute, over
    # ten times the usual 1,000 and over the 20,000 floor. It keeps going while open
    # (no more alerts), then after the 5-minute cool-down still runs away: paused.
    burst = [(60.0, 4, 3000)] + [(1.0, 4, 3000)] * 4
    later = [(60.0, 4, 3000)] * 5 + [(1.0, 4, 3000)] * 3
    store, run = _drive(tmp_path, NORMAL + burst + later + [(60.0, 1, 1000)] * 3)
    alerts = _alerts(store, run)
    assert [(a["rule"], a["verdict"], a["stage"]) for a in alerts] == [
        ("spike", "alert", 1), ("spike", "pause", 2)]
    first = alerts[0]
    assert first["figures"]["metric"] == "tokens" and first["figures"]["baseline_per_minute"] == 1000
    assert first["threshold"] == 20000 and first["figures"]["per_minute"] > 20000
    assert store.get_run(run).status == "paused"  # type: ignore[union-attr]
    spike = next(e for e in store.events(run) if e.kind == "alert")
    cited = {e.id: e.kind for e in store.events(run) if e.id in spike.causes}
    assert cited and set(cited.values()) <= {"model.called", "step.finished"}


def test_normal_minutes_after_the_cool_down_close_the_breaker(tmp_path: Path) -> None:
    burst = [(60.0, 4, 6000)]
    calm = [(60.0, 1, 1000)] * 10
    store, run = _drive(tmp_path, NORMAL + burst + calm)
    assert [a["rule"] for a in _alerts(store, run)] == ["spike"]
    assert store.get_run(run).status == "done"  # type: ignore[union-attr]
    # The breaker's state is the events': fed them again, a fresh monitor ends closed,
    # and it was open right after the spike.
    events = list(store.events(run))
    m = Runaway(KINDS["runaway"].defaults)
    states = []
    for e in events:
        list(m.observe(e, _view(run)))
        states.append(m.state)
    assert OPEN in states and states[-1] == CLOSED
    assert HALF_OPEN in states  # after the cool-down, before a whole normal minute


def test_a_steady_run_and_a_sleeper_waking_up_are_not_flagged(tmp_path: Path) -> None:
    # Hours asleep between minutes of work, and a slow rise (1,000 -> 4,000 tokens a
    # minute): neither is a runaway.
    plan = [(3600.0 * (k % 3), 1, 1000 + 300 * k) for k in range(12)]
    store, run = _drive(tmp_path, plan)
    assert _alerts(store, run) == []
    assert store.get_run(run).status == "done"  # type: ignore[union-attr]


def test_a_ceiling_from_the_policy_file_trips_with_no_baseline(tmp_path: Path) -> None:
    policy = ('[monitors.runaway]\nmax_steps_per_minute = 3\nstages = ["pause"]\n')
    store, run = _drive(tmp_path, [(0.0, 0, 0)] * 6, policy)
    alerts = _alerts(store, run)
    assert [(a["rule"], a["verdict"]) for a in alerts] == [("ceiling", "pause")]
    assert alerts[0]["figures"]["metric"] == "steps" and alerts[0]["threshold"] == 3
    row = store.get_run(run)
    assert row is not None and row.status == "paused" and row.step == 4


def test_a_bad_parameter_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"monitors\.runaway\.factor"):
        Runaway({**KINDS["runaway"].defaults, "factor": -1})


def _view(run: str) -> View:
    return View(run=run, agent="a", swarm=None, goal="spend", epoch=0, step=0, now=0.0)
