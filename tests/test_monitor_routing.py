"""Monitors fed only the event kinds they declare, and views built only when read.

The hot path's two savings must not change what any monitor sees or says: a
built-in fed only its declared ``kinds`` gives the same signals, and answers a
proposed call the same, as when fed every event (a property test over random event
streams); a monitor's declared kinds are all it is fed in a real run; a lazy view
reads as the view it describes, on a real run too.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether import Done, StepAgent, Worker, start_run, tool
from tether.core.events import Event
from tether.core.ids import iso
from tether.core.monitors import KINDS, Level, Monitor, Proposal, Quiet, Signal, View
from tether.core.monitors.base import LazyView, lazy_view
from tether.core.monitors.offline import proposal
from tether.core.monitors.watch import Watch
from tether.store.sqlite import SQLiteStore

T0 = 1_800_000_000.0
INVARIANT = {"rules": ["len(effects) < 2", "len(state.get('items', [])) < 3"]}
"""Gives the invariants monitor something to check (it looks at nothing without rules)."""

TOOLS = ("look", "write", "poll")
PATHS = ("a/1.txt", "a/2.txt", "b/x.txt", "c/y-0f3a9c2e11.txt")
TEXTS = ("ok", "the same long answer repeated to every request, word for word, again",
         "a different long answer that still says nothing new about the ticket at all")


@st.composite
def streams(draw: st.DrawFn) -> list[Event]:
    """A run's events in order: steps of calls, effects, messages, model answers, sleeps,
    rollbacks (a new epoch back at an earlier step) and kinds no monitor knows."""
    out: list[Event] = []
    epoch, step, t = 0, 1, T0
    state_items = 0

    def add(kind: str, payload: Any, causes: tuple[str, ...] = ()) -> Event:
        nonlocal t
        t += draw(st.sampled_from((0.5, 7.0, 61.0, 900.0)))
        e = Event(id=f"e{len(out):06d}", run="r", seq=len(out) + 1, epoch=epoch, step=step,
                  kind=kind, time=iso(t), actor="agent:a", causes=causes, payload=payload,
                  payload_hash="", prev="")
        out.append(e)
        return e

    last = ("look", PATHS[0])
    for _ in range(draw(st.integers(1, 14))):
        add("step.started", {})
        for i in range(draw(st.integers(0, 5))):
            what = draw(st.sampled_from(("model", "read", "effect", "send", "receive", "odd")))
            # Often the same call again: the loop rules need streaks to say anything.
            last = last if draw(st.booleans()) else (draw(st.sampled_from(TOOLS)),
                                                     draw(st.sampled_from(PATHS)))
            tool_, args = last[0], {"path": last[1]}
            fp = f"{tool_}:{args['path']}"
            if what == "model":
                add("model.called", {"i": i, "fp": f"m{draw(st.integers(0, 2))}", "cost_usd": 0.5,
                                     "response": {"content": draw(st.sampled_from(TEXTS)),
                                                  "usage": {"input_tokens": 9000,
                                                            "output_tokens": 900}}})
            elif what == "read":
                failed = draw(st.booleans())
                result = {"error": "boom"} if failed else {
                    "result": draw(st.sampled_from(("same", "other")))}
                add("tool.called", {"i": i, "fp": fp, "tool": tool_, "arguments": args,
                                    **result})
            elif what == "effect":
                intent = add("effect.intent", {"i": i, "fp": fp, "tool": tool_,
                                               "effect": "reversible", "arguments": args})
                kind = draw(st.sampled_from(("effect.done", "effect.failed")))
                add(kind, {"i": i, "result": "done", "after": {"files": {args["path"]: "h"}}},
                    causes=(intent.id,))
            elif what == "send":
                add("message.sent", {"to": draw(st.sampled_from(("p1", "p2"))), "topic": "t",
                                     "body": draw(st.sampled_from(("hi", "again")))})
            elif what == "receive":
                add("message.received", {"messages": [
                    {"sender": draw(st.sampled_from(("p1", "p2"))), "id": f"m{len(out)}",
                     "topic": "t", "body": draw(st.sampled_from(("hi", "again")))}]})
            else:
                add(draw(st.sampled_from(("checkpoint", "x.custom", "run.sleeping",
                                          "run.woke"))), {"until": t + 60})
        state_items += draw(st.integers(0, 1))
        progress = draw(st.sampled_from((None, None, 1.0, 2.0)))
        done: dict[str, Any] = {"outcome": "continue", "state_items": state_items,
                                "checkpoint": {"kind": "delta", "hash": draw(
                                    st.sampled_from(("0" * 64, "1" * 64)))}}
        if progress is not None:
            done["progress"] = progress
        add("step.finished", done)
        step += 1
        if draw(st.integers(0, 3)) == 0 and step > 2:  # a rollback opens the next epoch
            epoch += 1
            step = draw(st.integers(1, step - 1))
            add("rollback", {"to_step": step})
            step += 1
    return out


def _view(e: Event) -> View:
    items = e.payload.get("state_items", 0) if isinstance(e.payload, dict) else 0
    return View(run="r", agent="a", swarm=None, goal="g", epoch=e.epoch, step=e.step,
                now=0.0, state={"items": list(range(items))})


def _signals(signals: Iterable[Signal]) -> list[tuple[Any, ...]]:
    return [(s.monitor, s.rule, s.message, s.evidence, repr(s.figures)) for s in signals]


def _builtins() -> list[str]:
    return [n for n, k in KINDS.items() if k.enabled or n == "invariants"]


def _make(name: str) -> Monitor:
    kind = KINDS[name]
    return kind.make({**kind.defaults, **(INVARIANT if name == "invariants" else {})})


def _same_either_way(events: list[Event]) -> None:
    for name in _builtins():
        everything, routed = _make(name), _make(name)
        watch = Watch([(routed, (Level.ALERT,))])
        for e in events:
            view = _view(e)
            call = proposal(e)
            if call is not None:  # asked first, as the worker asks before the call runs
                assert _signals(everything.propose(call, view)) == _signals(
                    v.signal for v in watch.propose(call, view)), (name, e)
            want = _signals(everything.observe(e, view))
            got = _signals(v.signal for v in watch.observe(e, view)) if watch.wants(
                e.kind) else []
            assert got == want, (name, e)


@settings(max_examples=150, deadline=None)
@given(events=streams())
def test_a_builtin_fed_only_its_kinds_says_what_it_says_fed_everything(
        events: list[Event]) -> None:
    _same_either_way(events)


def _ev(i: int, kind: str, epoch: int, step: int, payload: Any,
        causes: tuple[str, ...] = ()) -> Event:
    return Event(id=f"e{i}", run="r", seq=i, epoch=epoch, step=step, kind=kind,
                 time=iso(T0 + i), actor="agent:a", causes=causes, payload=payload,
                 payload_hash="", prev="")


def test_a_rollback_makes_loops_forget_the_abandoned_calls_before_the_next_is_proposed() -> None:
    """The branch a rollback abandoned is no streak: loops is fed ``rollback`` for it."""
    write = {"i": 0, "fp": "fs_write:a", "tool": "fs_write", "effect": "reversible",
             "arguments": {"path": "a/1.txt"}}
    events = [_ev(1, "effect.intent", 0, 1, write), _ev(2, "effect.done", 0, 1, {}, ("e1",)),
              _ev(3, "effect.intent", 0, 1, write), _ev(4, "effect.done", 0, 1, {}, ("e3",)),
              _ev(5, "rollback", 1, 1, {"to_step": 1}), _ev(6, "step.started", 1, 2, {}),
              _ev(7, "effect.intent", 1, 2, write)]
    _same_either_way(events)
    watch = Watch([(_make("loops"), (Level.ALERT,))])
    for e in events[:-1]:
        watch.observe(e, _view(e))
    call = proposal(events[-1])
    assert call is not None and watch.propose(call, _view(events[-1])) == []


def test_every_default_monitor_declares_its_kinds_but_pingpong() -> None:
    """pingpong counts every step the run takes (its storm baseline), so it sees all."""
    for name in _builtins():
        kinds = _make(name).kinds  # type: ignore[attr-defined]
        assert (kinds is None) == (name == "pingpong"), name
    assert _make("invariants").kinds and not KINDS["invariants"].make(
        KINDS["invariants"].defaults).kinds  # type: ignore[attr-defined]


SEEN: dict[str, list[str]] = {"all": [], "calls": [], "views": []}


class Everything(Quiet):
    name = "everything"

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        SEEN["all"].append(event.kind)
        if event.kind == "step.finished":
            SEEN["views"].append(f"{view.run}|{view.goal}|{view.step}|{view.epoch}|"
                                 f"{dict(view.state or {}).get('n')}|{view.progress}")
        return ()


class OnlyCalls(Quiet):
    name = "only_calls"
    kinds = frozenset({"tool.called"})

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        SEEN["calls"].append(event.kind)
        return ()


@tool(effect="read")
def look(path: str) -> str:
    """Read something."""
    return f"contents of {path}"


async def _three_steps(ctx: Any, state: dict[str, Any]) -> Any:
    state["n"] = state.get("n", 0) + 1
    await ctx.call(look, path=f"f{state['n']}.txt")
    ctx.progress(state["n"] * 10)
    return Done("enough") if state["n"] == 3 else None


def test_a_run_feeds_each_monitor_the_kinds_it_declares_and_views_read_true(
        tmp_path: Path) -> None:
    for v in SEEN.values():
        v.clear()
    agent = StepAgent(_three_steps, name="reader", tools=[look], monitors=[Everything, OnlyCalls])
    store = SQLiteStore(tmp_path / "t.db")
    rid = start_run(store, agent, agent_ref="t:reader", goal="read three files")
    asyncio.run(Worker(store, agents={"t:reader": agent}).run(until_idle=True))
    kinds = [e.kind for e in store.events(rid) if e.kind != "alert"]
    store.close()
    assert SEEN["calls"] == ["tool.called"] * 3
    # Everything sees every event: those before the worker took the run as it warms up.
    assert SEEN["all"] == kinds and "tool.called" in kinds
    assert SEEN["views"] == [f"{rid}|read three files|{s}|0|{s}|{s * 10.0}" for s in (1, 2, 3)]


def _describe(step: int) -> View:
    _describe.calls += 1  # type: ignore[attr-defined]
    return View(run="r", agent="a", swarm="s", goal="g", epoch=1, step=step, now=5.0,
                usage={"steps": 2.0}, state={"k": 1}, progress=0.5)


def test_a_lazy_view_is_described_once_when_read_and_reads_as_that_view() -> None:
    _describe.calls = 0  # type: ignore[attr-defined]
    v = lazy_view(_describe, 7)
    assert isinstance(v, View) and _describe.calls == 0  # type: ignore[attr-defined]
    assert (v.step, v.goal, v.state, v.progress) == (7, "g", {"k": 1}, 0.5)
    assert v.run == "r" and _describe.calls == 1  # type: ignore[attr-defined]
    assert v == _describe(7) and _describe(7) == v
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.step = 8  # type: ignore[misc]
    w = dataclasses.replace(lazy_view(_describe, 7), step=9)
    assert isinstance(w, LazyView) and (w.step, w.run, w.now) == (9, "r", 5.0)
    assert dataclasses.asdict(lazy_view(_describe, 3))["step"] == 3
    with pytest.raises(AttributeError):
        lazy_view(_describe, 1).missing  # type: ignore[attr-defined]  # noqa: B018


class Raises(Quiet):
    name = "raises"
    kinds = frozenset({"tool.called"})

    def __init__(self) -> None:
        self.fed = 0

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        self.fed += 1
        raise RuntimeError("bug")


class Counts(Quiet):
    name = "counts"

    def __init__(self) -> None:
        self.fed = 0

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        self.fed += 1
        return ()


class Judges(Counts):
    name = "judges"

    def propose(self, call: Proposal, view: View) -> Iterable[Signal]:
        self.fed += 100
        return ()


def test_a_monitor_that_raises_is_fed_nothing_more_and_quiet_ones_are_not_asked() -> None:
    raises, counts, judges = Raises(), Counts(), Judges()
    watch = Watch([(raises, (Level.ALERT,)), (counts, (Level.ALERT,)),
                   (judges, (Level.ALERT,))])
    view = View(run="r", agent="a", swarm=None, goal="g", epoch=0, step=1, now=0.0)
    evs = [Event(id=f"e{i}", run="r", seq=i, epoch=0, step=1, kind=k, time=iso(T0),
                 actor="agent:a", causes=(), payload={"tool": "look"}, payload_hash="",
                 prev="")
           for i, k in enumerate(("step.started", "tool.called", "tool.called", "x"))]
    verdicts = [v for e in evs for v in watch.observe(e, view)]
    assert [v.signal.rule for v in verdicts] == ["monitor_error"]
    assert (raises.fed, counts.fed, judges.fed) == (1, 4, 4)
    assert watch.wants("tool.called")  # counts and judges still look at it
    watch.propose(Proposal(0, "look", "read", {}, "fp"), view)
    assert (counts.fed, judges.fed) == (4, 104)
