"""tether.integrations.openai_agents on the real OpenAI Agents SDK: its
``OpenAIChatCompletionsModel`` over loopback HTTP (FakeChatServer), a real SQLite store and a
real Worker. One tether step per model turn; tools gated by the policy; the model told of
what was refused, malformed or failed; handoffs; replay without calling the model again."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, OpenAIChatCompletionsModel, RunConfig, function_tool, handoff
from openai import AsyncOpenAI
from pydantic import BaseModel

from tests import crashkit as ck
from tests import openai_agents_kit as kit
from tether import Worker, start_run, verify_store
from tether.approvals import decide
from tether.errors import UsageError
from tether.integrations.openai_agents import TetherAgent
from tether.runtime.operator import send_command
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools
from tether.testing.openai_server import FakeChatServer, Reply, completion, tool_call


@dataclass
class World:
    store: SQLiteStore
    server: FakeChatServer
    agent: TetherAgent
    side: Path

    def start(self, goal: str = "plan my trip") -> str:
        return start_run(self.store, self.agent, agent_ref=kit.REF, goal=goal)

    def drive(self) -> None:
        asyncio.run(Worker(self.store, agents={kit.REF: self.agent}, poll_interval=0.01)
                    .run(until_idle=True))

    def kinds(self, run: str) -> list[str]:
        return [e.kind for e in self.store.events(run)]

    def payloads(self, run: str, kind: str) -> list[dict[str, Any]]:
        return [e.payload for e in self.store.events(run) if e.kind == kind]

    def result(self, run: str) -> Any:
        (done,) = self.payloads(run, "run.done")
        return done["result"]

    def status(self, run: str) -> str:
        row = self.store.get_run(run)
        assert row is not None
        return row.status

    def sent(self, n: int) -> list[dict[str, Any]]:
        """The messages of the n-th request the server got (0-based)."""
        return list(self.server.requests[n].body["messages"])


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    side = tmp_path / "side.log"
    monkeypatch.setenv(kit.SIDE_ENV, str(side))
    monkeypatch.delenv(kit.HOLD_ENV, raising=False)
    store = SQLiteStore(tmp_path / "t.db")
    with FakeChatServer() as server:
        yield World(store, server, kit.build(server.base_url), side)
    assert verify_store(store).ok
    store.close()


def call(cid: str, name: str, args: dict[str, Any] | str) -> dict[str, Any]:
    return tool_call(cid, name, args if isinstance(args, str) else json.dumps(args))


def test_a_read_tool_then_an_answer_one_step_per_turn(world: World) -> None:
    world.server.push(completion(tool_calls=[call("c1", "lookup", {"city": "Oslo"})],
                                 usage=(50, 7)),
                      completion("Oslo is sunny.", usage=(80, 5)))
    run = world.start("weather in Oslo?")
    world.drive()
    row = world.store.get_run(run)
    assert row is not None and row.status == "done", row
    assert world.result(run) == "Oslo is sunny."
    assert row.step == 2  # one step per model turn
    called = world.payloads(run, "model.called")
    assert [c["model"] for c in called] == ["gpt-4o-mini", "gpt-4o-mini"]
    first = called[0]["response"]
    assert first["tool_calls"] == [{"id": "c1", "name": "lookup", "arguments": '{"city": "Oslo"}'}]
    assert first["usage"] == {"input_tokens": 50, "output_tokens": 7}
    assert called[1]["response"]["content"] == "Oslo is sunny."
    assert called[0]["raw"]["output"][0]["type"] == "function_call"
    (read,) = world.payloads(run, "tool.called")
    assert read["tool"] == "lookup" and read["result"] == "sunny in Oslo"
    # The SDK sent the tool's result to the model, as Chat Completions messages.
    assert world.sent(1)[-1] == {"role": "tool", "tool_call_id": "c1", "content": "sunny in Oslo"}
    assert world.sent(0)[0] == {"role": "system", "content": "You help travellers."}
    assert row.usage["input_tokens"] == 130


def test_an_undeclared_tool_waits_for_approval_then_runs_once(world: World) -> None:
    world.server.push(completion(tool_calls=[call("c1", "book", {"city": "Rome"})]),
                      completion("Booked."))
    run = world.start("book Rome")
    world.drive()
    assert world.status(run) == "awaiting_approval"
    assert kit.read_side(world.side) == [] and len(world.server.requests) == 1
    (approval,) = world.store.approvals(run=run)
    decide(world.store, approval.id, approve=True, who="human:test")
    world.drive()
    assert world.status(run) == "done"
    assert [x["arg"] for x in kit.read_side(world.side)] == ["Rome"]
    # The approved turn came back from the journal: the model was asked twice in all.
    assert len(world.server.requests) == 2
    assert world.sent(1)[-1]["content"] == "booked Rome"
    assert [e.status for e in world.store.effects(run=run)] == ["done"]


def test_a_denied_call_is_told_to_the_model_and_the_run_goes_on(world: World) -> None:
    world.server.push(completion(tool_calls=[call("c1", "book", {"city": "Rome"})]),
                      completion("I could not book it."))
    run = world.start("book Rome")
    world.drive()
    (approval,) = world.store.approvals(run=run)
    decide(world.store, approval.id, approve=False, who="human:test", note="too expensive")
    world.drive()
    assert world.status(run) == "done"
    assert kit.read_side(world.side) == []
    told = world.sent(1)[-1]
    assert told["role"] == "tool" and told["tool_call_id"] == "c1"
    assert told["content"].startswith("error:") and "too expensive" in told["content"]


@pytest.mark.parametrize(("arguments", "why"), [
    ('{"city": ', "not valid JSON"),
    ('{"town": "Rome"}', "'city' is a required property"),
])
def test_malformed_arguments_are_told_to_the_model_and_nothing_runs(
        world: World, arguments: str, why: str) -> None:
    allow_tools(world.store)
    world.server.push(completion(tool_calls=[call("c1", "book", arguments)]),
                      completion("Sorry."))
    run = world.start("book Rome")
    world.drive()
    assert world.status(run) == "done"
    assert kit.read_side(world.side) == []
    (rejected,) = world.payloads(run, "tool.called")
    assert rejected["rejected"] and why in rejected["error"]
    told = world.sent(1)[-1]
    assert told["role"] == "tool" and why in told["content"]
    assert "effect.intent" not in world.kinds(run)


def test_a_failing_tool_is_told_with_the_sdk_formatter(world: World) -> None:
    world.server.push(completion(tool_calls=[call("c1", "explode", {"reason": "boom"})]),
                      completion("It failed."))
    run = world.start("try it")
    world.drive()
    assert world.status(run) == "done"
    (failed,) = world.payloads(run, "tool.called")
    assert "RuntimeError: exploded: boom" in failed["error"]
    told = world.sent(1)[-1]["content"]
    assert told == "An error occurred while running the tool. Please try again."


def test_a_handoff_moves_the_turn_to_the_other_agent(world: World) -> None:
    allow_tools(world.store)
    world.server.push(completion(tool_calls=[call("c1", "transfer_to_billing", {})]),
                      completion(tool_calls=[call("c2", "book", {"city": "Lima"})]),
                      completion("Lima is booked."))
    run = world.start("book Lima")
    world.drive()
    row = world.store.get_run(run)
    assert row is not None and row.status == "done" and world.result(run) == "Lima is booked."
    assert world.sent(0)[0]["content"] == "You help travellers."
    assert world.sent(1)[0]["content"] == "You book trips."  # billing's turn
    tools_offered = [t["function"]["name"] for t in world.server.requests[1].body["tools"]]
    assert tools_offered == ["book"]
    assert [x["arg"] for x in kit.read_side(world.side)] == ["Lima"]
    (intent,) = world.payloads(run, "effect.intent")
    assert intent["tool"] == "book"


def test_the_provider_failing_pauses_the_run(world: World) -> None:
    # No scripted reply: the server answers 410, which the client does not retry.
    run = world.start("anything")
    world.drive()
    row = world.store.get_run(run)
    assert row is not None and row.status == "paused"
    assert "model gpt-4o-mini failed at step 1" in row.reason
    assert "no scripted reply" in row.reason


@pytest.mark.parametrize(("budget", "asked"), [({"steps": 1}, 1), ({"tool_calls": 1}, 1)])
def test_a_budget_pauses_the_run_from_inside_the_sdk_loop(
        world: World, budget: dict[str, float], asked: int) -> None:
    # steps: the second turn is refused; tool_calls: the second call of turn 1 is, from
    # inside the SDK's tool execution, and the signal comes out of Runner.run untouched.
    world.agent = kit.build(world.server.base_url)
    world.agent.budget = budget
    world.server.push(completion(tool_calls=[call("c1", "lookup", {"city": "Oslo"}),
                                             call("c2", "lookup", {"city": "Rome"})]),
                      completion("never asked"))
    run = world.start()
    world.drive()
    row = world.store.get_run(run)
    assert row is not None and row.status == "paused" and "budget" in row.reason, row
    assert len(world.server.requests) == asked
    assert "run.failed" not in world.kinds(run)


def test_bad_definitions_are_refused_naming_the_tool_or_agent() -> None:
    @function_tool
    def other_book(city: str) -> str:
        """Another."""
        return city
    other_book.name = "book"
    a = Agent(name="a", tools=[kit.book])
    b = Agent(name="b", tools=[other_book], handoffs=[a])
    with pytest.raises(UsageError, match="two different tools named 'book'"):
        TetherAgent(b, name="x")
    with pytest.raises(UsageError, match="name tools no agent has: bok"):
        TetherAgent(a, name="x", effects={"bok": "read"})
    with pytest.raises(UsageError, match="two agents are named 'a'"):
        TetherAgent(Agent(name="a", handoffs=[a]), name="x")


@pytest.mark.parametrize("book_first", [True, False])
def test_a_turn_with_two_calls_waits_for_one_approval_and_replays_the_other(
        world: World, book_first: bool) -> None:
    calls = [call("c1", "book", {"city": "Rome"}), call("c2", "lookup", {"city": "Rome"})]
    world.server.push(completion(tool_calls=calls if book_first else calls[::-1]),
                      completion("Booked; sunny."))
    run = world.start("book Rome")
    world.drive()
    assert world.status(run) == "awaiting_approval"
    # A call after the one waiting did not run; one before it ran and was journaled.
    assert len(world.payloads(run, "tool.called")) == (0 if book_first else 1)
    (approval,) = world.store.approvals(run=run)
    decide(world.store, approval.id, approve=True, who="human:test")
    world.drive()
    assert world.status(run) == "done"
    assert len(world.server.requests) == 2 and [x["arg"] for x in kit.read_side(world.side)] == ["Rome"]
    assert len(world.payloads(run, "tool.called")) == 1  # the read, once, live or replayed
    told = {m["tool_call_id"]: m["content"] for m in world.sent(1) if m["role"] == "tool"}
    assert told == {"c1": "booked Rome", "c2": "sunny in Rome"}


def test_a_stop_cancels_the_sdk_model_call_and_stops_the_run(world: World, tmp_path: Path) -> None:
    world.server.push(Reply(200, completion("late").body, delay=30.0))
    run = world.start()
    done = threading.Event()

    def work() -> None:
        store = SQLiteStore(tmp_path / "t.db")
        try:
            asyncio.run(Worker(store, agents={kit.REF: world.agent}, poll_interval=0.01)
                        .run(until_idle=True))
        finally:
            store.close()
            done.set()
    t = threading.Thread(target=work, daemon=True)
    t.start()
    ck.wait_for(lambda: len(world.server.requests) == 1, 30, "the model call to be in flight")
    send_command(world.store, run, "stop", who="human:ops")
    assert done.wait(30), "the worker did not come to rest after the stop"
    t.join(10)
    assert world.status(run) == "stopped"
    kinds = world.kinds(run)
    assert "run.stopped" in kinds and "model.called" not in kinds and "run.failed" not in kinds


def test_a_call_of_a_tool_that_does_not_exist_is_told_to_the_model(world: World) -> None:
    # The SDK's default raises ModelBehaviorError and the run fails for the model's mistake;
    # tether's own agent tells the model which tools exist, journaled as a rejected call.
    world.server.push(completion(tool_calls=[call("c1", "bok", {"city": "Rome"}),
                                             call("c2", "lookup", {"city": "Rome"})]),
                      completion("Rome is sunny; I cannot book."))
    run = world.start("book Rome")
    world.drive()
    assert world.status(run) == "done", world.store.get_run(run)
    assert kit.read_side(world.side) == []
    called = {p["tool"]: p for p in world.payloads(run, "tool.called")}
    assert called["lookup"]["result"] == "sunny in Rome"
    rejected = called["bok"]
    why = ("unknown tool 'bok'; available: book, explode, lookup, notify, "
           "transfer_to_billing")
    assert rejected["rejected"] and why in rejected["error"]
    assert rejected["raw_arguments"] == '{"city": "Rome"}'
    told = {m.get("tool_call_id"): m["content"] for m in world.sent(1) if m["role"] == "tool"}
    assert told == {"c1": f"error: tool bok: {why}", "c2": "sunny in Rome"}


def test_a_handoff_called_with_malformed_input_pauses_naming_it(world: World) -> None:
    # A handoff's output is its transfer message: the SDK has no way to tell the model its
    # arguments were wrong. Failing the run for it is wrong; it pauses, saying what to do.
    class Reason(BaseModel):
        why: str

    handed: list[str] = []
    client = AsyncOpenAI(base_url=world.server.base_url, api_key="test", max_retries=0)
    model = OpenAIChatCompletionsModel("gpt-4o-mini", openai_client=client)
    billing = Agent(name="billing", instructions="You book trips.", model=model)
    triage = Agent(name="triage", instructions="You help.", model=model, handoffs=[
        handoff(billing, input_type=Reason, on_handoff=lambda _c, r: handed.append(r.why))])
    agent = TetherAgent(triage, name="travel", run_config=RunConfig(tracing_disabled=True))
    w = dataclasses.replace(world, agent=agent)
    w.server.push(completion(tool_calls=[call("c1", "transfer_to_billing", '{"why": 3')]))
    run = w.start("book Rome")
    w.drive()
    row = w.store.get_run(run)
    assert row is not None and row.status == "paused", row
    assert f"run {run} step 1: the model called handoff transfer_to_billing" in row.reason
    assert f"tether rollback {run} --to K" in row.reason
    (rejected,) = w.payloads(run, "tool.called")
    assert rejected["rejected"] and rejected["tool"] == "transfer_to_billing"
    assert handed == []
