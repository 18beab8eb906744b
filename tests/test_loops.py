"""The built-in ``loops`` monitor on real runs (real SQLite store, a worker, scripted
models): each rule flags by the third repeat, escalates alert -> block -> pause, a
refused call does not reset its streak, and legitimate repetition is not flagged."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tether import (
    Agent,
    Continue,
    Done,
    ModelResponse,
    ScriptedModel,
    SleepUntil,
    StepAgent,
    ToolCall,
    Worker,
    start_run,
    tool,
)
from tether.core.clock import FixedClock
from tether.core.events import Event
from tether.errors import ToolFailed
from tether.runtime.operator import send_command
from tether.store.sqlite import SQLiteStore

CALLS: list[str] = []
QUEUE: list[str] = []
FLAKY: dict[str, int] = {}


@tool(effect="read")
def look(path: str, request_id: str = "") -> str:
    """Read a file (the same contents every time)."""
    CALLS.append(path)
    return f"contents of {path} (read 2026-12-04T10:00:0{len(CALLS) % 10}Z)"


@tool(effect="read")
def poll() -> str:
    """Take the next item of a queue."""
    CALLS.append("poll")
    return QUEUE.pop(0) if QUEUE else "empty"


@tool(effect="read")
def flaky(key: str) -> str:
    """Fails the first time it is asked for ``key``."""
    CALLS.append(key)
    FLAKY[key] = FLAKY.get(key, 0) + 1
    if FLAKY[key] == 1:
        raise ConnectionError("transient")
    return f"value of {key}"


@tool(effect="read")
def broken(n: int) -> str:
    """Always fails."""
    raise RuntimeError(f"broken {n}")


@tool(effect="reversible")
def bump(name: str) -> str:
    """Append to a counter (a write whose result changes every time)."""
    from tether.tools import register_undo
    CALLS.append(name)
    register_undo(unbump, name=name)
    return f"bumped {name}, now {len(CALLS)}"


@tool(effect="reversible", idempotent=True)
def unbump(name: str) -> str:
    """Undo of bump."""
    return "ok"


@tool(effect="reversible")
def mark_done(ticket: str) -> str:
    """Mark a ticket done."""
    from tether.tools import register_undo
    register_undo(unbump, name=ticket)
    return "ok"


def _run(tmp_path: Path, agent: Any, goal: str = "go") -> tuple[SQLiteStore, str]:
    CALLS.clear()
    FLAKY.clear()
    store = SQLiteStore(tmp_path / "t.db")
    run = start_run(store, agent, goal=goal, agent_ref="a")
    _drive(store, agent)
    return store, run


def _drive(store: SQLiteStore, agent: Any) -> None:
    asyncio.run(Worker(store, agents={"a": agent}, poll_interval=0.01).run(until_idle=True))


def _alerts(store: SQLiteStore, run: str) -> list[tuple[str, str, int]]:
    return [(e.payload["rule"], e.payload["verdict"], e.payload["stage"])
            for e in store.events(run) if e.kind == "alert"]


def _status(store: SQLiteStore, run: str) -> str:
    row = store.get_run(run)
    assert row is not None
    return row.status


def _asks(calls: Sequence[tuple[str, dict[str, Any]]]) -> Any:
    """A model that asks for ``calls`` in turn, each with a fresh request id, then is done;
    a stubborn one: refused a call, it asks for it again."""
    def script(messages: Sequence[Any], tools: Sequence[Any]) -> ModelResponse:
        k = sum(1 for m in messages if m["role"] == "tool"
                and "refused by monitor" not in str(m["content"]))
        if k >= len(calls):
            return ModelResponse("done")
        name, args = calls[k]
        args = {**args, "request_id": f"9f8e7d6c-0000-4000-8000-{k:012d}"} if name == "look" \
            else args
        return ModelResponse(None, (ToolCall(f"c{k}", name, json.dumps(args)),))
    return ScriptedModel(script)


def _agent(calls: Sequence[tuple[str, dict[str, Any]]]) -> Agent:
    return Agent("a", model=_asks(calls), instructions="work",
                 tools=[look, poll, flaky, broken, bump, mark_done])


# -- the rules -------------------------------------------------------------------------------
def test_the_same_read_answering_the_same_is_flagged_at_its_fourth_call_then_refused_then_paused(
        tmp_path: Path) -> None:
    # A fresh request id and a changing timestamp in the result do not hide the loop. A
    # read is judged once it answered the same three times (a queue polled empty twice is
    # polling), so the fourth call is the first flagged.
    store, run = _run(tmp_path, _agent([("look", {"path": "a.txt"})] * 8))
    assert _alerts(store, run) == [("no_progress", "alert", 1), ("no_progress", "block", 2),
                                   ("no_progress", "pause", 3)]
    assert CALLS == ["a.txt"] * 4  # the fourth ran (alert only); the refused one did not
    assert _status(store, run) == "paused"
    events = store.events(run)
    alerts = [e for e in events if e.kind == "alert"]
    called = [e.id for e in events if e.kind == "tool.called"]
    assert alerts[0].causes == tuple(called[:3])  # the evidence: the three calls before
    # The refusal did not reset the streak: the model asked again and was judged again.
    assert [a.payload["figures"]["repeats"] for a in alerts] == [4, 5, 5]
    assert alerts[1].payload["blocked"] is True
    # The model was told of the refusal and asked once more (the sixth model call).
    assert len([e for e in events if e.kind == "model.called"]) == 6


def test_the_same_write_is_flagged_though_its_result_changes(tmp_path: Path) -> None:
    store, run = _run(tmp_path, _agent([("bump", {"name": "x"})] * 5))
    assert _alerts(store, run) == [("identical_calls", "alert", 1),
                                   ("identical_calls", "block", 2),
                                   ("identical_calls", "pause", 3)]
    assert CALLS == ["x"] * 3


def test_an_alternation_is_flagged_at_its_fourth_call(tmp_path: Path) -> None:
    calls = [("look", {"path": "a.txt"}), ("look", {"path": "b.txt"})] * 4
    store, run = _run(tmp_path, _agent(calls))
    assert _alerts(store, run) == [("alternation", "alert", 1), ("alternation", "block", 2),
                                   ("alternation", "pause", 3)]
    assert CALLS == ["a.txt", "b.txt", "a.txt", "b.txt"]


def test_a_cycle_of_three_calls_is_flagged_when_it_comes_round_again(tmp_path: Path) -> None:
    calls = [("look", {"path": "a"}), ("bump", {"name": "x"}), ("look", {"path": "c"})] * 3
    store, run = _run(tmp_path, _agent(calls))
    assert _alerts(store, run)[0] == ("cycle", "alert", 1)
    alert = next(e for e in store.events(run) if e.kind == "alert")
    assert alert.payload["figures"] == {"period": 3, "tools": ["look", "bump", "look"]}
    assert alert.step == 6  # the sixth call, one a step


def test_an_error_streak_is_flagged_and_a_success_ends_it(tmp_path: Path) -> None:
    calls = [("broken", {"n": n}) for n in range(4)] + [("look", {"path": "a"})] + \
        [("broken", {"n": n}) for n in range(10, 15)]
    store, run = _run(tmp_path, _agent(calls))
    # Three failures in a row, twice: the success between starts the streak again.
    assert _alerts(store, run) == [("errors", "alert", 1), ("errors", "block", 2)]
    first, second = (e for e in store.events(run) if e.kind == "alert")
    assert first.payload["figures"] == second.payload["figures"] == {"failures": 3}
    failed = [e.id for e in store.events(run) if e.kind == "tool.called" and "error" in e.payload]
    assert first.causes == tuple(failed[:3])
    assert second.causes == tuple(failed[4:7])
    assert _status(store, run) == "done"


def test_rejected_calls_count_as_failures(tmp_path: Path) -> None:
    def script(messages: Sequence[Any], tools: Sequence[Any]) -> ModelResponse:
        k = sum(1 for m in messages if m["role"] == "assistant")
        return ModelResponse("gave up") if k >= 6 else ModelResponse(
            None, (ToolCall(f"c{k}", f"nosuch{k}", "{}"),))
    store, run = _run(tmp_path, Agent("a", model=ScriptedModel(script), instructions="w",
                                      tools=[look]))
    assert _alerts(store, run) == [("errors", "alert", 1), ("errors", "block", 2)]


LONG = "I am sorry, I cannot find that order in our system; please check the number."


async def _ask_model(ctx: Any, state: dict[str, Any]) -> Any:
    n = state.setdefault("n", 0)
    await ctx.model([{"role": "user", "content": f"order question {n}"}])
    state["n"] = n + 1
    return Done("ok") if n >= 5 else Continue()


def test_the_same_long_answer_to_different_requests_is_flagged(tmp_path: Path) -> None:
    agent = StepAgent(_ask_model, name="a", model=ScriptedModel([ModelResponse(LONG)]))
    store, run = _run(tmp_path, agent)
    assert _alerts(store, run) == [("same_answer", "alert", 1), ("same_answer", "block", 2),
                                   ("same_answer", "pause", 3)]
    alert = next(e for e in store.events(run) if e.kind == "alert")
    assert alert.payload["figures"]["answers"] == 3
    assert len(alert.causes) == 3


# -- legitimate repetition -------------------------------------------------------------------
def test_a_classifier_answering_the_same_label_to_different_inputs_is_not_flagged(
        tmp_path: Path) -> None:
    agent = StepAgent(_ask_model, name="a", model=ScriptedModel([ModelResponse("billing")]))
    store, run = _run(tmp_path, agent)
    assert _alerts(store, run) == [] and _status(store, run) == "done"


def test_reading_different_files_is_not_a_loop(tmp_path: Path) -> None:
    store, run = _run(tmp_path, _agent([("look", {"path": p}) for p in "abcdef"]))
    assert _alerts(store, run) == [] and list("abcdef") == CALLS


def test_polling_a_queue_whose_answer_changes_is_not_a_loop(tmp_path: Path) -> None:
    QUEUE[:] = [f"item {n}" for n in range(6)]
    store, run = _run(tmp_path, _agent([("poll", {})] * 6))
    assert _alerts(store, run) == [] and CALLS == ["poll"] * 6


def test_acting_on_different_tickets_by_id_is_not_a_loop(tmp_path: Path) -> None:
    ids = [f"01M8Q43S408EPJAC6445Y4X5Q{c}" for c in "ABCDE"]
    store, run = _run(tmp_path, _agent([("mark_done", {"ticket": t}) for t in ids]))
    assert _alerts(store, run) == []


def test_a_retry_after_a_transient_error_that_succeeds_is_not_flagged(tmp_path: Path) -> None:
    calls = [("flaky", {"key": "k"}), ("flaky", {"key": "k"}), ("look", {"path": "a"}),
             ("flaky", {"key": "j"}), ("flaky", {"key": "j"})]
    store, run = _run(tmp_path, _agent(calls))
    assert _alerts(store, run) == [] and CALLS == ["k", "k", "a", "j", "j"]


async def _poll_and_sleep(ctx: Any, state: dict[str, Any]) -> Any:
    state["n"] = n = state.get("n", 0) + 1
    await ctx.call(poll)
    return Done("ok") if n >= 5 else SleepUntil(await ctx.now() + 1)


def test_polling_with_a_sleep_between_is_waiting_not_looping(tmp_path: Path) -> None:
    QUEUE.clear()  # "empty" every time: the same call, the same answer
    CALLS.clear()
    agent = StepAgent(_poll_and_sleep, name="a", tools=[poll])
    store = SQLiteStore(tmp_path / "t.db")
    clock = FixedClock(1_800_000_000.0)
    run = start_run(store, agent, goal="poll", agent_ref="a")
    for _ in range(5):
        asyncio.run(Worker(store, agents={"a": agent}, clock=clock,
                           poll_interval=0.01).run(until_idle=True))
        clock.advance(2)
    assert _alerts(store, run) == [] and CALLS == ["poll"] * 5


# -- replay: each event is seen once ---------------------------------------------------------
async def _loop_in_one_step(ctx: Any, state: dict[str, Any]) -> Any:
    out = []
    for _ in range(6):
        try:
            out.append(await ctx.call(look, path="a.txt"))
        except ToolFailed as exc:
            out.append(str(exc))
    state["out"] = out
    return Done("looked")


def test_a_run_taken_over_mid_step_judges_each_event_once(tmp_path: Path) -> None:
    agent = StepAgent(_loop_in_one_step, name="a", tools=[look])
    store, run = _run(tmp_path, agent)
    assert _status(store, run) == "paused"
    # A new worker warms the monitor from the journal; the re-run step replays its calls
    # (no new events), is refused call 4 again and goes ahead with call 5, where a human
    # resumed it. Had the warm-up or the replay been counted twice, a new alert would
    # have been made; had the streak been lost, call 5 would not have run as resumed.
    send_command(store, run, "resume", who="human:ops")
    _drive(store, agent)
    alerts = [e.payload for e in store.events(run) if e.kind == "alert"]
    assert [(a["verdict"], a["stage"], a["figures"]["repeats"], a["i"]) for a in alerts] == [
        ("alert", 1, 4, 3), ("block", 2, 5, 4), ("pause", 3, 5, 5)]
    assert CALLS == ["a.txt"] * 5
    assert _status(store, run) == "done"


def test_warming_gives_the_state_that_feeding_gave(tmp_path: Path) -> None:
    from tether.core.monitors import Proposal, View
    from tether.core.monitors.loops import Loops
    store, run = _run(tmp_path, _agent([("look", {"path": "a"}), ("look", {"path": "b"})] * 2))
    events: list[Event] = store.events(run)
    view = View(run=run, agent="a", swarm=None, goal="g", epoch=0, step=1, now=0.0)
    fed, warmed = Loops(), Loops()
    for e in events:
        list(fed.observe(e, view))
    for e in events[-40:]:
        for _ in warmed.observe(e, view):
            pass
    ask = Proposal(9, "look", "read", {"path": "a"}, "x")
    assert [s.rule for s in fed.propose(ask, view)] == [s.rule for s in warmed.propose(ask, view)]
