"""Replay semantics on a real SQLite file.

A step re-run after a crash or a pause gets every journaled call back without
running it again; a call that differs from the journal pauses the run with a
``nondeterminism`` event; an effect with an intent and no result is in doubt
(retried with the same key when idempotent, else surfaced and never repeated).
Crashes are real: a worker subprocess ``os._exit``s inside a tool at an exact
point (``$CRASH_EXIT``), then this process resumes the run with a real Worker.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import crashkit as ck
from tether import (
    Agent,
    Continue,
    Done,
    FixedClock,
    ModelResponse,
    PriceTable,
    ScriptedModel,
    StepAgent,
    ToolCall,
    Usage,
    Worker,
    current,
    start_run,
    tool,
    verify_store,
)
from tether.control import resolve_effect, set_budget
from tether.core.checkpoint import restore
from tether.core.events import Event
from tether.runtime.operator import send_command
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools


@dataclass
class Files:
    db: Path
    side: Path
    store: SQLiteStore


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Files]:
    monkeypatch.setenv(ck.SIDE_ENV, str(tmp_path / "side.log"))
    monkeypatch.delenv(ck.EXIT_ENV, raising=False)
    f = Files(tmp_path / "replay.db", tmp_path / "side.log", SQLiteStore(tmp_path / "replay.db"))
    allow_tools(f.store)  # replay, not approvals: irreversible calls are allowed outright
    yield f
    assert verify_store(f.store).ok
    f.store.close()


def crash_at(f: Files, point: str) -> int:
    """Run a worker subprocess until the tool named in ``point`` kills it; return its pid."""
    w = ck.spawn_worker(f.db, f.side, tag="crash", lease_ttl=0.2, until_idle=True,
                        extra_env={ck.EXIT_ENV: point})
    code = w.proc.wait(timeout=60)
    assert code == ck.EXIT_CODE, f"worker exited {code}, not at {point}: {w.log.read_text()}"
    return w.pid


def drive(store: SQLiteStore, agents: dict[str, Any] | None = None, **options: Any) -> None:
    """A fresh Worker (a restart) on the same store, until nothing is runnable."""
    asyncio.run(Worker(store, agents=agents, poll_interval=0.01, **options).run(until_idle=True))


def state_of(store: SQLiteStore, run: str) -> dict[str, Any]:
    row = store.get_run(run)
    assert row is not None
    chain = store.checkpoint_chain(run, row.epoch, row.step)
    assert chain is not None
    return restore(chain.key_body, store.chunk, chain.deltas)


def kinds(store: SQLiteStore, run: str, step: int | None = None) -> list[str]:
    """The run's event kinds, without the test policy's allow decisions (see ``files``)."""
    return [e.kind for e in store.events(run)
            if (step is None or e.step == step) and e.kind != "policy.decided"]


def only(events: list[Event], kind: str) -> Event:
    hits = [e for e in events if e.kind == kind]
    assert len(hits) == 1, f"{len(hits)} {kind} events"
    return hits[0]


def status(store: SQLiteStore, run: str) -> str:
    row = store.get_run(run)
    assert row is not None
    return row.status


def effect_status(store: SQLiteStore, effect: str) -> str:
    row = store.effect(effect)
    assert row is not None, f"no effect {effect}"
    return row.status


# -- a crash after the model call, the clock, the random and an idempotent intent ------
def test_crashed_step_replays_model_clock_and_random_and_retries_with_same_key(
        files: Files) -> None:
    (run,) = ck.start_runs(files.store, ["recall"])
    crashed_pid = crash_at(files, "deliver:after")
    step1 = [e for e in files.store.events(run) if e.step == 1 and e.kind != "policy.decided"]
    assert [e.kind for e in step1] == ["step.started", "model.called", "clock.read",
                                       "random.read", "effect.intent"]
    recorded = only(step1, "model.called").payload["response"]["content"]
    assert recorded == f"answer to step 1 from pid {crashed_pid}"

    ck.RECALL_CALLS.clear()
    ck.finish(files.store)

    assert status(files.store, run) == "done"
    assert ck.RECALL_CALLS == ["step 2", "step 3"], "the journaled model call was made again"
    log = state_of(files.store, run)["log"]
    assert log[0]["content"] == recorded
    assert log[0]["t"] == only(step1, "clock.read").payload["value"]
    assert log[0]["r"] == only(step1, "random.read").payload["value"]
    intent = only(step1, "effect.intent")
    lines = [ln for ln in ck.read_side(files.side) if ln.effect == intent.id]
    assert [ln.pid for ln in lines] == [crashed_pid, os.getpid()], "retried once, here"
    assert {ln.key for ln in lines} == {intent.id} == {log[0]["receipt"]}
    eff = files.store.effect(intent.id)
    assert eff is not None and eff.status == "done" and eff.idempotent
    assert kinds(files.store, run, 1).count("effect.done") == 1
    assert [e.step for e in files.store.events(run) if e.kind == "model.called"] == [1, 2, 3]


# -- an irreversible effect left in doubt -----------------------------------------------
@pytest.mark.parametrize(("point", "resolution"), [("after", "done"), ("before", "retry"),
                                                   ("before", "not_done")])
def test_in_doubt_irreversible_effect_pauses_and_is_never_repeated(
        files: Files, point: str, resolution: str) -> None:
    (run,) = ck.start_runs(files.store, ["doubt"])
    crash_at(files, f"mark:{point}")
    intent = only(files.store.events(run), "effect.intent")
    assert effect_status(files.store, intent.id) == "intent"
    lines_after_crash = len(ck.read_side(files.side))
    assert lines_after_crash == (1 if point == "after" else 0)

    for _ in range(2):  # a restart, then another: the run stays paused, the tool never runs
        ck.finish(files.store)
        row = files.store.get_run(run)
        assert row is not None and row.status == "paused"
        assert intent.id in row.reason and "tether resolve" in row.reason
        assert len(ck.read_side(files.side)) == lines_after_crash
    evs = files.store.events(run)
    doubt = only(evs, "effect.in_doubt")
    assert doubt.causes == (intent.id,) and doubt.payload["tool"] == "mark"
    paused = only(evs, "run.paused")
    assert paused.payload["effect"] == intent.id and paused.payload["in_doubt"] is True
    assert effect_status(files.store, intent.id) == "in_doubt"

    resolve_effect(files.store, intent.id, resolution, result="marked by hand",
                       who="human:test")
    ck.finish(files.store)
    assert status(files.store, run) == "done"
    log = state_of(files.store, run)["log"]
    by_effect = [ln.effect for ln in ck.read_side(files.side)]
    assert by_effect.count(intent.id) == (0 if resolution == "not_done" else 1)
    assert len(by_effect) == len(set(by_effect)), "an irreversible effect ran twice"
    if resolution == "done":
        assert log[0]["result"] == "marked by hand"
    elif resolution == "retry":
        assert log[0]["result"] == "marked doubt 1"
    else:
        assert log[0]["result"].startswith("skipped: tool mark was not performed")


async def _doubt_changed(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.now()  # the same first call, but the effect at call #1 is no longer made
    return Done("skipped the effect")


def test_in_doubt_effect_the_rerun_step_no_longer_reaches_is_still_surfaced(
        files: Files) -> None:
    """A replayed step that ends before a journaled call is nondeterministic too; an
    intent it left behind must not stay a bare, unnoticed 'intent'."""
    (run,) = ck.start_runs(files.store, ["doubt"])
    crash_at(files, "mark:after")  # the effect happened; only its intent is journaled
    ck.finish(files.store, agents={"tests.crashkit:doubt": StepAgent(_doubt_changed,
                                                                     name="doubt")})
    eff = files.store.effects(run=run)[0]
    assert len(ck.read_side(files.side)) == 1
    assert status(files.store, run) == "paused", "finished over an effect that may have happened"
    assert eff.status == "in_doubt"
    nd = only(files.store.events(run), "nondeterminism")
    assert nd.step == 1 and nd.payload["i"] == 1


async def _doubt_catch_all(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.now()
    try:
        result = await ctx.call(ck.mark, note=f"doubt {ctx.step}")
    except Exception as exc:  # handling a failed tool the way agent code often does
        result = f"failed: {type(exc).__name__}"
    state["log"].append({"step": ctx.step, "result": result})
    return Done(ctx.step) if ctx.step >= 2 else Continue()


def test_in_doubt_pause_cannot_be_swallowed_by_the_step(files: Files) -> None:
    """Control-flow signals are not Exceptions: a step's `except Exception` cannot eat the
    in-doubt pause and go on to its next effect."""
    (run,) = ck.start_runs(files.store, ["doubt"])
    crash_at(files, "mark:after")
    ck.finish(files.store, agents={"tests.crashkit:doubt": StepAgent(_doubt_catch_all,
                                                                     name="doubt")})
    assert [e.status for e in files.store.effects(run=run)] == ["in_doubt"], "went on"
    assert status(files.store, run) == "paused"
    assert len(ck.read_side(files.side)) == 1


# -- nondeterminism -----------------------------------------------------------------------
RAN: list[str] = []


@tool(effect="read")
def probe(tag: str) -> str:
    """A read tool that counts its executions."""
    RAN.append(tag)
    return f"probed {tag}"


async def _v1(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.call(probe, tag="a")
    await ctx.call(probe, tag="b")
    await ctx.call(probe, tag="c")
    return Done("v1")


async def _v2_arguments(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.call(probe, tag="z")
    return Done("v2")


async def _v2_tool(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.call(ck.mark, note="not what the journal says")
    return Done("v2")


async def _v2_clock(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.now()
    return Done("v2")


async def _v2_second_call(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.call(probe, tag="a")
    await ctx.call(probe, tag="B")
    return Done("v2")


V1 = StepAgent(_v1, name="drift", tools=[probe])


def _partial_step(store: SQLiteStore) -> str:
    """A run whose step 1 is journaled up to its second call, then paused (budget)."""
    run = start_run(store, V1, agent_ref="drift", goal="drift", budget={"tool_calls": 2})
    drive(store, {"drift": V1})
    assert status(store, run) == "paused"
    assert kinds(store, run, 1)[:4] == ["step.started", "tool.called", "tool.called",
                                        "budget.exceeded"]
    set_budget(store, run, {"tool_calls": 10}, [], who="human:test")
    send_command(store, run, "resume", who="human:test")
    assert status(store, run) == "running"
    return run


@pytest.mark.parametrize(("fn", "i", "expected", "got"), [
    (_v2_arguments, 0, "tool.called", "tool.called"),
    (_v2_tool, 0, "tool.called", "effect.intent"),
    (_v2_clock, 0, "tool.called", "clock.read"),
    (_v2_second_call, 1, "tool.called", "tool.called"),
])
def test_a_different_call_on_replay_pauses_with_nondeterminism(
        files: Files, fn: Any, i: int, expected: str, got: str) -> None:
    RAN.clear()
    run = _partial_step(files.store)
    assert RAN == ["a", "b"]
    # The changed code is allowed to resume (on_change), so the replay check is what stops it.
    drive(files.store, {"drift": StepAgent(fn, name="drift", tools=[probe, ck.mark],
                                           on_change="warn")})
    row = files.store.get_run(run)
    assert row is not None and row.status == "paused"
    nd = only(files.store.events(run), "nondeterminism")
    assert nd.step == 1 and nd.payload["i"] == i
    assert nd.payload["expected"].startswith(expected) and nd.payload["got"].startswith(got)
    assert f"step 1 call #{i}" in row.reason and "nondeterminism" in row.reason
    assert RAN == ["a", "b"], "a replayed or mismatched call ran"
    assert ck.read_side(files.side) == [], "the mismatched effect ran"
    assert "effect.intent" not in kinds(files.store, run)


def test_the_same_code_replays_the_partial_step_without_rerunning(files: Files) -> None:
    RAN.clear()
    run = _partial_step(files.store)
    drive(files.store, {"drift": V1})
    assert status(files.store, run) == "done"
    assert RAN == ["a", "b", "c"], "a journaled call ran again"
    assert "nondeterminism" not in kinds(files.store, run)


# -- an idempotent effect marked in doubt by a shutdown that could not wait --------------
class Gate:
    entered: asyncio.Event
    release: bool = False
    runs: list[str] = []  # noqa: RUF012 (a test's shared log)


@tool(effect="irreversible", idempotent=True)
async def slow_send(note: str) -> str:
    """Idempotent; hangs until cancelled unless released."""
    Gate.runs.append(current().idempotency_key or "")
    if not Gate.release:
        Gate.entered.set()
        await asyncio.Event().wait()
    return f"sent {note}"


async def _sender(ctx: Any, state: dict[str, Any]) -> Any:
    state["sent"] = await ctx.call(slow_send, note="once")
    return Done()


def test_idempotent_effect_abandoned_by_drain_is_retried(files: Files) -> None:
    """A drain whose grace runs out cancels the tool and journals ``effect.in_doubt``;
    an idempotent effect is still retried with its key, not paused."""
    sender = StepAgent(_sender, name="sender", tools=[slow_send])
    run = start_run(files.store, sender, agent_ref="sender", goal="send")
    Gate.runs, Gate.release = [], False

    async def shutdown_mid_effect() -> None:
        Gate.entered = asyncio.Event()
        stop = asyncio.Event()
        w = Worker(files.store, agents={"sender": sender}, poll_interval=0.01)
        task = asyncio.create_task(w.run(stop=stop, grace=0.2))
        await asyncio.wait_for(Gate.entered.wait(), 30)
        stop.set()  # SIGTERM: drain; the tool outlives the grace period and is cancelled
        await task

    asyncio.run(shutdown_mid_effect())
    eff = files.store.effects(run=run)[0]
    assert eff.status == "in_doubt" and status(files.store, run) == "running"
    Gate.release = True
    drive(files.store, {"sender": sender})
    assert Gate.runs == [eff.id, eff.id], "retried with the same key"
    assert status(files.store, run) == "done"


# -- the built-in Agent: failing tools and malformed arguments ----------------------------
@tool(effect="irreversible")
def explode(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(reason)


def _agent(name: str, turns: list[ModelResponse]) -> Agent:
    return Agent(name, model=ScriptedModel(turns), instructions="test",
                 tools=[explode, ck.mark, ck.peek])


def test_a_failing_tool_is_journaled_and_the_agent_goes_on(files: Files) -> None:
    a = _agent("exploder", [
        ModelResponse(None, (ToolCall("c1", "explode", '{"reason": "boom"}'),)),
        ModelResponse("recovered")])
    run = start_run(files.store, a, agent_ref="exploder", goal="try")
    drive(files.store, {"exploder": a})
    assert status(files.store, run) == "done"
    evs = files.store.events(run)
    failed = only(evs, "effect.failed")
    assert failed.causes == (only(evs, "effect.intent").id,)
    assert "RuntimeError: boom" in failed.payload["error"]
    assert files.store.effects(run=run)[0].status == "failed"
    tool_msgs = [m for m in state_of(files.store, run)["messages"] if m["role"] == "tool"]
    assert tool_msgs == [{"role": "tool", "tool_call_id": "c1",
                          "content": "error: tool explode failed: RuntimeError: boom"}]
    assert only(evs, "run.done").payload["result"] == "recovered"


def test_malformed_tool_arguments_are_journaled_and_the_loop_goes_on(files: Files) -> None:
    a = _agent("sloppy", [
        ModelResponse(None, (ToolCall("b1", "mark", '{"note": "unterminated'),
                             ToolCall("b2", "nosuch", "{}"),
                             ToolCall("b3", "mark", "[1, 2]"),
                             ToolCall("b4", "mark", '{"note": 5}'),
                             ToolCall("ok", "mark", '{"note": "fine"}'))),
        ModelResponse("done despite the mess")])
    run = start_run(files.store, a, agent_ref="sloppy", goal="try")
    drive(files.store, {"sloppy": a})
    assert status(files.store, run) == "done"
    rejected = [e for e in files.store.events(run) if e.kind == "tool.called"]
    assert [e.payload["i"] for e in rejected] == [1, 2, 3, 4]  # the model call is #0
    assert all(e.payload["rejected"] for e in rejected)
    assert [e.payload["raw_arguments"] for e in rejected] == ['{"note": "unterminated', "{}",
                                                              "[1, 2]", '{"note": 5}']
    errors = [e.payload["error"] for e in rejected]
    assert "not valid JSON" in errors[0]
    assert "unknown tool 'nosuch'" in errors[1]
    assert "must be a JSON object, got list" in errors[2]
    msgs = {m["tool_call_id"]: m["content"] for m in state_of(files.store, run)["messages"]
            if m["role"] == "tool"}
    assert errors[3].startswith("error: tool mark: invalid arguments: note")
    assert msgs == {"b1": errors[0], "b2": errors[1], "b3": errors[2], "b4": errors[3],
                    "ok": "marked fine"}
    assert [ln.step for ln in ck.read_side(files.side)] == [1]
    assert only(files.store.events(run), "effect.intent").payload["i"] == 5


# -- a state that cannot be checkpointed --------------------------------------------------
async def _leaky(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.call(ck.mark, note=f"leaky {ctx.step}")
    if ctx.step == 2:
        state["bad"] = {"nested": {1, 2}}
    return Done("ok") if ctx.step >= 3 else Continue()


async def _fixed(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.call(ck.mark, note=f"leaky {ctx.step}")
    if ctx.step == 2:
        state["bad"] = {"nested": [1, 2]}
    return Done("ok") if ctx.step >= 3 else Continue()


def test_unserialisable_state_fails_the_run_naming_key_and_step_and_loses_nothing(
        files: Files) -> None:
    leaky = StepAgent(_leaky, name="leaky", tools=[ck.mark])
    run = start_run(files.store, leaky, agent_ref="leaky", goal="leak")
    drive(files.store, {"leaky": leaky})
    row = files.store.get_run(run)
    assert row is not None and row.status == "failed" and row.step == 1
    assert "step 2" in row.reason and "bad.nested" in row.reason and "set" in row.reason
    evs = files.store.events(run)
    failed = only(evs, "run.failed")
    assert "state key bad.nested" in failed.payload["error"] and failed.step == 2
    step2 = [e.kind for e in evs if e.step == 2 and e.kind != "policy.decided"]
    assert step2[:4] == ["step.started", "effect.intent", "effect.done", "run.failed"]
    assert [e.status for e in files.store.effects(run=run)] == ["done", "done"]
    assert "bad" not in state_of(files.store, run)

    # Fixed code resumes from the step-1 checkpoint; step 2's effect is not repeated. The
    # agent's definition changed, so the operator says so (tether resume --accept-change).
    send_command(files.store, run, "resume", {"accept_change": True}, who="human:test")
    drive(files.store, {"leaky": StepAgent(_fixed, name="leaky", tools=[ck.mark])})
    assert status(files.store, run) == "done"
    assert [ln.step for ln in ck.read_side(files.side)] == [1, 2, 3]
    assert state_of(files.store, run)["bad"] == {"nested": [1, 2]}


@tool(effect="read")
def lookup(x: int) -> int:
    """Echo."""
    return x


async def _compacting(ctx: Any, state: dict[str, Any]) -> Any:
    msgs = state["messages"]
    if ctx.step == 2:  # compact the context in place, as long-running agents do
        msgs[0] = {"role": "system", "content": "summary of the earlier conversation"}
    msgs.append({"role": "user", "content": f"step {ctx.step}"})
    msgs.append((await ctx.model(msgs)).as_message())
    await ctx.call(lookup, x=ctx.step)
    await ctx.call(lookup, x=-ctx.step)
    return Done() if ctx.step >= 3 else Continue()


def test_a_conversation_edited_in_place_replays_without_nondeterminism(files: Files) -> None:
    """The live fingerprint of a compacted conversation must equal the one a fresh
    executor computes on replay (the incremental hasher must notice in-place edits)."""
    agent = StepAgent(_compacting, name="compact", tools=[lookup],
                      model=ScriptedModel([ModelResponse("ok")]),
                      init=lambda g: {"messages": [{"role": "system", "content": "original"}]})
    run = start_run(files.store, agent, agent_ref="compact", goal="g", budget={"tool_calls": 3})
    drive(files.store, {"compact": agent})  # pauses inside step 2, after its model call
    row = files.store.get_run(run)
    assert row is not None and row.status == "paused" and row.step == 1
    assert "model.called" in kinds(files.store, run, 2)
    set_budget(files.store, run, {"tool_calls": 99}, [], who="human:test")
    send_command(files.store, run, "resume", who="human:test")
    drive(files.store, {"compact": agent})  # same code, new executor: step 2 is replayed
    assert "nondeterminism" not in kinds(files.store, run)
    assert status(files.store, run) == "done"


# -- budgets --------------------------------------------------------------------------------
async def _stepper(ctx: Any, state: dict[str, Any]) -> Any:
    state["n"] = state.get("n", 0) + 1
    await ctx.call(probe, tag=f"s{ctx.step}a")
    await ctx.call(probe, tag=f"s{ctx.step}b")
    return Continue()


STEPPER = StepAgent(_stepper, name="stepper", tools=[probe])


def exceeded(store: SQLiteStore, run: str) -> list[dict[str, Any]]:
    return [e.payload for e in store.events(run) if e.kind == "budget.exceeded"]


def test_steps_cap_pauses_and_usage_survives_a_restart(files: Files) -> None:
    run = start_run(files.store, STEPPER, agent_ref="stepper", goal="g", budget={"steps": 3})
    drive(files.store, {"stepper": STEPPER})
    row = files.store.get_run(run)
    assert row is not None and row.status == "paused" and row.step == 3
    assert exceeded(files.store, run) == [{"scope": "run", "limit": "steps", "cap": 3.0,
                                           "used": 3.0, "on_exceed": "pause"}]
    assert "steps=3" in row.reason
    drive(files.store, {"stepper": STEPPER})  # a restart does not touch a paused run
    assert files.store.get_run(run) == row
    set_budget(files.store, run, {"steps": 5}, [], who="human:test")
    send_command(files.store, run, "resume", who="human:test")
    drive(files.store, {"stepper": STEPPER})  # a new Worker instance: usage comes from the store
    row = files.store.get_run(run)
    assert row is not None and row.status == "paused" and row.step == 5
    assert row.usage["steps"] == 5 and state_of(files.store, run)["n"] == 5


def test_tool_calls_cap_pauses_mid_step_and_the_step_resumes_by_replay(files: Files) -> None:
    RAN.clear()
    run = start_run(files.store, STEPPER, agent_ref="stepper", goal="g",
                    budget={"tool_calls": 3})
    drive(files.store, {"stepper": STEPPER})
    row = files.store.get_run(run)
    assert row is not None and row.status == "paused" and row.step == 1
    assert RAN == ["s1a", "s1b", "s2a"] and row.usage["tool_calls"] == 3
    assert exceeded(files.store, run)[0]["limit"] == "tool_calls"
    set_budget(files.store, run, {"tool_calls": 5}, [], who="human:test")
    send_command(files.store, run, "resume", who="human:test")
    drive(files.store, {"stepper": STEPPER})
    row = files.store.get_run(run)
    assert row is not None and row.status == "paused" and row.step == 2
    assert RAN == ["s1a", "s1b", "s2a", "s2b", "s3a"], "the journaled s2a ran again"
    assert row.usage["tool_calls"] == 5


SPENT: list[int] = []


def _pricey(messages: Any, tools: Any) -> ModelResponse:
    SPENT.append(len(SPENT))
    return ModelResponse("ok", usage=Usage(400, 0), model="pricey")


async def _spender(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.model([{"role": "user", "content": f"step {ctx.step}"}])
    return Continue()


def test_rolling_window_pauses_survives_restart_and_reopens(files: Files) -> None:
    # Named as priced: a cost cap on a model the table does not price is refused.
    spender = StepAgent(_spender, name="spender", model=ScriptedModel(_pricey, name="pricey"))
    clock = FixedClock(1_700_000_000.0)
    prices = PriceTable(prices={"pricey": (1000.0, 0.0)})  # $0.40 a call
    agents = {"spender": spender}
    run = start_run(files.store, spender, agent_ref="spender", goal="g", clock=clock,
                    budget={"cost_usd_per_day:pause": 1.0}, prices=prices)
    SPENT.clear()
    drive(files.store, agents, clock=clock, prices=prices)
    row = files.store.get_run(run)
    assert row is not None and row.status == "paused" and len(SPENT) == 3
    hit = exceeded(files.store, run)
    assert [h["limit"] for h in hit] == ["cost_usd_per_day:pause"]
    assert hit[0]["used"] == pytest.approx(1.2)

    clock.advance(3600)  # later the same day, a new worker: the window still counts $1.20
    send_command(files.store, run, "resume", who="human:test")
    drive(files.store, agents, clock=clock, prices=prices)
    assert status(files.store, run) == "paused" and len(SPENT) == 3
    assert len(exceeded(files.store, run)) == 2

    clock.advance(86400)  # the window has rolled past the spending
    send_command(files.store, run, "resume", who="human:test")
    drive(files.store, agents, clock=clock, prices=prices)
    row = files.store.get_run(run)
    assert row is not None and row.status == "paused" and len(SPENT) == 6
    assert row.usage["cost_usd"] == pytest.approx(2.4) and row.step == 6


def test_pipeline_zero_makes_every_step_durable_before_the_next(tmp_path: Path) -> None:
    from tether import Worker
    from tether.errors import UsageError as _UsageError

    async def grow(ctx: Any, state: dict[str, Any]) -> Any:
        state.setdefault("log", []).append(len(state.get("log", [])))
        return Done() if len(state["log"]) >= 30 else None

    agent = StepAgent(grow, name="grow")
    store = SQLiteStore(tmp_path / "p.db")
    try:
        start_run(store, agent, agent_ref="grow", goal="g", state={})
        w = Worker(store, agents={"grow": agent}, pipeline=0)
        asyncio.run(w.run(until_idle=True))
        # Awaited one by one: no commit ever carried two of the run's steps.
        assert w.committer.writes == w.committer.batches
        with pytest.raises(_UsageError, match="pipeline"):
            Worker(store, pipeline=-1)
    finally:
        store.close()
