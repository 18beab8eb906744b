"""The monitor framework: verdicts journaled with their evidence, escalation by stages,
blocks that hold on replay, a monitor that raises, the policy's [monitors] tables."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tether import Done, StepAgent, Worker, start_run, tool
from tether.core.events import Event
from tether.core.monitors import KINDS, Level, MonitorKind, Proposal, Quiet, Signal, View, register
from tether.core.policy import PolicyError, parse_policy
from tether.errors import ToolDenied
from tether.store.sqlite import SQLiteStore

CALLS: list[str] = []


@pytest.fixture(autouse=True)
def _only_the_toy_monitors() -> Iterator[None]:
    """These tests loop on purpose to exercise the framework with toy monitors; the
    built-in ``loops`` would flag them too (tests/test_loops.py tests it)."""
    from dataclasses import replace
    kind = KINDS["loops"]
    KINDS["loops"] = replace(kind, enabled=False)
    yield
    KINDS["loops"] = kind


@tool(effect="read")
def look(path: str) -> str:
    """Read something."""
    CALLS.append(path)
    return f"contents of {path}"


class Repeats(Quiet):
    """Signals a call identical to the previous call (the test's toy loop detector)."""

    name = "repeats"
    stages = (Level.ALERT, Level.BLOCK, Level.PAUSE)

    def __init__(self) -> None:
        self.last: tuple[str, str] | None = None
        self.last_id = ""

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        if event.kind == "tool.called":
            self.last, self.last_id = ("x", event.payload["fp"]), event.id
        return ()

    def propose(self, call: Proposal, view: View) -> Iterable[Signal]:
        if self.last == ("x", call.fp):
            yield Signal(self.name, "same_call", f"{call.tool} asked again with the same "
                         "arguments", evidence=(self.last_id,), figures={"tool": call.tool},
                         threshold=1)


class Broken(Quiet):
    name = "broken"

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        if event.kind == "tool.called":
            raise RuntimeError("bug in a monitor")
        return ()


async def _looping(ctx: Any, state: dict[str, Any]) -> Any:
    out = []
    for _ in range(4):
        try:
            out.append(await ctx.call(look, path="a.txt"))
        except ToolDenied as exc:
            out.append(f"denied: {exc}")
    state["out"] = out
    return Done("looked")


def _drive(store: SQLiteStore, agent: StepAgent) -> str:
    run = start_run(store, agent, goal="look", agent_ref="a")
    asyncio.run(Worker(store, agents={"a": agent}, poll_interval=0.01).run(until_idle=True))
    return run


def test_a_repeated_call_is_alerted_then_refused_then_the_run_is_paused(tmp_path: Path) -> None:
    CALLS.clear()
    agent = StepAgent(_looping, name="looper", tools=[look], monitors=[Repeats])
    store = SQLiteStore(tmp_path / "t.db")
    run = _drive(store, agent)
    events = store.events(run)
    alerts = [e for e in events if e.kind == "alert"]
    assert [(a.payload["verdict"], a.payload["stage"]) for a in alerts] == [
        ("alert", 1), ("block", 2), ("pause", 3)]
    # The evidence is the previous identical call, and each alert cites it.
    called = [e for e in events if e.kind == "tool.called"]
    assert alerts[0].causes == (called[0].id,)
    assert alerts[1].payload["blocked"] is True and alerts[1].payload["i"] == 2
    # The first repeat ran (alert only); the blocked and the paused ones did not.
    assert CALLS == ["a.txt", "a.txt"]
    row = store.get_run(run)
    assert row is not None and row.status == "paused"
    assert "monitor 'repeats' (same_call)" in row.reason
    paused = next(e for e in events if e.kind == "run.paused")
    assert paused.payload["alert"] == alerts[2].id


def test_a_block_holds_when_the_step_is_run_again(tmp_path: Path) -> None:
    CALLS.clear()
    agent = StepAgent(_looping, name="looper", tools=[look], monitors=[Repeats])
    store = SQLiteStore(tmp_path / "t.db")
    run = _drive(store, agent)
    # Resumed: the step is re-run from its start. Journaled calls replay; the journaled
    # block refuses call 2 again without asking the monitor; call 3, where the run was
    # paused, goes ahead (a human looked and resumed it). No new alert is made.
    from tether.runtime.operator import send_command
    send_command(store, run, "resume", who="human:ops")
    asyncio.run(Worker(store, agents={"a": agent}, poll_interval=0.01).run(until_idle=True))
    events = store.events(run)
    assert CALLS == ["a.txt", "a.txt", "a.txt"]
    assert len([e for e in events if e.kind == "alert"]) == 3
    row = store.get_run(run)
    assert row is not None and row.status == "done"
    assert row.spec is not None
    done = next(e for e in events if e.kind == "run.done")
    assert done.step == 1


def test_a_monitor_that_raises_is_an_alert_and_the_run_goes_on(tmp_path: Path) -> None:
    agent = StepAgent(_looping, name="looper", tools=[look], monitors=[Broken])
    store = SQLiteStore(tmp_path / "t.db")
    run = _drive(store, agent)
    alerts = [e for e in store.events(run) if e.kind == "alert"]
    assert len(alerts) == 1
    assert alerts[0].payload["rule"] == "monitor_error"
    assert "RuntimeError: bug in a monitor" in alerts[0].payload["message"]
    row = store.get_run(run)
    assert row is not None and row.status == "done"


@pytest.fixture
def toy_kind() -> Iterator[MonitorKind]:
    kind = register(MonitorKind("toy", lambda p: Repeats(), {"repeat": 3, "ratio": 0.5}))
    yield kind
    del KINDS["toy"]


@pytest.mark.parametrize(("table", "error"), [
    ('[monitors.nosuch]\nrepeat = 3', "monitors.nosuch: no monitor is called 'nosuch'"),
    ('[monitors.toy]\nrepaet = 3', "monitors.toy.repaet: monitor 'toy' has no parameter"),
    ('[monitors.toy]\nrepeat = "3"', "monitors.toy.repeat: expected int like 3"),
    ('[monitors.toy]\nstages = ["alert", "nap"]', "'nap' is not a verdict"),
    ('[monitors.toy]\nstages = []', "expected a non-empty list"),
    ('[monitors.agent.router.toy]\nenabled = "yes"', "monitors.agent.router.toy.enabled"),
])
def test_a_broken_monitors_table_is_refused_with_its_key_path(toy_kind: MonitorKind,
                                                              table: str, error: str) -> None:
    with pytest.raises(PolicyError, match=error.replace("(", r"\(").replace("[", r"\[")):
        parse_policy(table, source="p.toml")


def test_monitors_tables_merge_base_swarm_agent(toy_kind: MonitorKind) -> None:
    p = parse_policy('[monitors.toy]\nrepeat = 5\nstages = ["alert"]\n'
                     '[monitors.swarm.night.toy]\nratio = 1\n'
                     '[monitors.agent.router.toy]\nrepeat = 7\nstages = ["quarantine"]\n',
                     source="p.toml")
    def of(agent: str, swarm: str | None) -> Mapping[str, Any]:
        c = next(c for c in p.monitors.for_run(agent, swarm) if c.kind.name == "toy")
        return {**c.params, "stages": c.stages}
    assert of("x", None) == {"repeat": 5, "ratio": 0.5, "stages": (Level.ALERT,)}
    assert of("x", "night") == {"repeat": 5, "ratio": 1.0, "stages": (Level.ALERT,)}
    assert of("router", "night") == {"repeat": 7, "ratio": 1.0, "stages": (Level.QUARANTINE,)}
