"""tether.integrations.openai_agents: the SDK response journaled and rebuilt exactly, models
named by a string resolved through the SDK's real provider, structured final outputs,
guardrails once per run, and definitions tether could not gate refused when built."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from agents import (
    Agent,
    GuardrailFunctionOutput,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIProvider,
    RunConfig,
    WebSearchTool,
    function_tool,
    input_guardrail,
)
from agents.models.interface import ModelTracing
from openai import AsyncOpenAI
from pydantic import BaseModel

from tests import openai_agents_kit as kit
from tether import Worker, start_run, verify_store
from tether.errors import UsageError
from tether.integrations.openai_agents import TetherAgent, TetherModel
from tether.integrations.openai_agents.model import dump_response, load_response
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools
from tether.testing.openai_server import FakeChatServer, Reply, completion, tool_call

NO_RETRIES = {"max_retries": 0, "api_key": "test"}


def run_to_rest(tmp_path: Path, agent: TetherAgent, goal: str = "go") -> tuple[SQLiteStore, str]:
    store = SQLiteStore(tmp_path / "t.db")
    allow_tools(store)
    run = start_run(store, agent, agent_ref="x:agent", goal=goal)
    asyncio.run(Worker(store, agents={"x:agent": agent}, poll_interval=0.01).run(until_idle=True))
    assert verify_store(store).ok
    return store, run


def test_the_sdk_response_is_rebuilt_exactly_from_its_journaled_json() -> None:
    reply = completion("Half done.", tool_calls=[tool_call("c9", "book", '{"city": "Bergen"}')],
                       usage=(33, 4))
    with FakeChatServer([reply]) as server:
        model = OpenAIChatCompletionsModel(
            "gpt-4o-mini", openai_client=AsyncOpenAI(base_url=server.base_url, **NO_RETRIES))
        live = asyncio.run(model.get_response(
            "Be brief.", "book Bergen", ModelSettings(), [], None, [], ModelTracing.DISABLED,
            previous_response_id=None, conversation_id=None, prompt=None))
    raw = json.loads(json.dumps(dump_response(live)))  # as the journal keeps it
    again = load_response(raw)
    assert again.output == live.output
    assert again.to_input_items() == live.to_input_items()
    assert again.usage.input_tokens == 33 and again.usage.output_tokens == 4
    assert dump_response(again) == raw


def test_a_model_named_by_a_string_goes_through_the_sdk_provider(tmp_path: Path) -> None:
    with FakeChatServer([completion("Hello from the provider.")]) as server:
        provider = OpenAIProvider(openai_client=AsyncOpenAI(base_url=server.base_url,
                                                            **NO_RETRIES), use_responses=False)
        agent = TetherAgent(Agent(name="greeter", instructions="Greet.", model="served-model"),
                            name="greeter", model_provider=provider,
                            run_config=RunConfig(tracing_disabled=True))
        store, run = run_to_rest(tmp_path, agent)
        assert server.requests[0].body["model"] == "served-model"
    (called,) = [e.payload for e in store.events(run) if e.kind == "model.called"]
    assert called["model"] == "served-model"
    assert [e.payload["result"] for e in store.events(run) if e.kind == "run.done"] == [
        "Hello from the provider."]
    store.close()


class Plan(BaseModel):
    city: str
    days: int


def test_a_structured_final_output_is_the_runs_result(tmp_path: Path) -> None:
    with FakeChatServer([completion(json.dumps({"city": "Lima", "days": 3}))]) as server:
        model = OpenAIChatCompletionsModel(
            "gpt-4o-mini", openai_client=AsyncOpenAI(base_url=server.base_url, **NO_RETRIES))
        agent = TetherAgent(Agent(name="planner", instructions="Plan.", model=model,
                                  output_type=Plan),
                            name="planner", run_config=RunConfig(tracing_disabled=True))
        store, run = run_to_rest(tmp_path, agent)
        sent = server.requests[0].body
    assert sent["response_format"]["type"] == "json_schema"
    assert [e.payload["result"] for e in store.events(run) if e.kind == "run.done"] == [
        {"city": "Lima", "days": 3}]
    store.close()


def test_input_guardrails_run_once_per_run_not_once_per_turn(tmp_path: Path) -> None:
    seen: list[Any] = []

    @input_guardrail
    def note(ctx: Any, agent: Any, items: Any) -> GuardrailFunctionOutput:
        seen.append(items)
        return GuardrailFunctionOutput(output_info=None, tripwire_triggered=False)

    with FakeChatServer([completion(tool_calls=[tool_call("c1", "lookup", '{"city": "Oslo"}')]),
                         completion("Sunny.")]) as server:
        model = OpenAIChatCompletionsModel(
            "gpt-4o-mini", openai_client=AsyncOpenAI(base_url=server.base_url, **NO_RETRIES))
        agent = TetherAgent(Agent(name="w", model=model, tools=[kit.lookup],
                                  input_guardrails=[note]),
                            name="w", effects={"lookup": "read"},
                            run_config=RunConfig(tracing_disabled=True))
        store, run = run_to_rest(tmp_path, agent)
    assert store.get_run(run).status == "done"  # type: ignore[union-attr]
    assert len(seen) == 1
    store.close()


def test_streaming_is_refused_in_words() -> None:
    m = TetherModel(OpenAIChatCompletionsModel("m", openai_client=AsyncOpenAI(**NO_RETRIES)), "m")
    with pytest.raises(UsageError, match="streaming"):
        m.stream_response(None, "hi", ModelSettings(), [], None, [], ModelTracing.DISABLED,
                          previous_response_id=None, conversation_id=None, prompt=None)


@function_tool(needs_approval=True)
def wire(amount: int) -> str:
    """Wire money."""
    return str(amount)


RESEARCH = Agent(name="researcher", tools=[kit.book]).as_tool(
    tool_name="research", tool_description="Research a trip.")


def test_an_agent_tool_with_nothing_to_act_with_may_be_declared_read() -> None:
    summarise = Agent(name="summariser").as_tool(tool_name="summarise",
                                                 tool_description="Summarise a text.")
    wrapped = TetherAgent(Agent(name="a", tools=[summarise, RESEARCH]), name="x",
                          effects={"summarise": "read"})
    assert {t.name: t.effect for t in wrapped.tools} == {"summarise": "read",
                                                         "research": "irreversible"}


@pytest.mark.parametrize(("make", "why"), [
    (lambda: TetherAgent(Agent(name="a", tools=[WebSearchTool()]), name="x"),
     "is a WebSearchTool; tether gates function tools only"),
    (lambda: TetherAgent(Agent(name="a", tools=[wire]), name="x", effects={"wire": "read"}),
     "asks the SDK for approval"),
    (lambda: TetherAgent(Agent(name="a"), name="x", run_config=RunConfig(model="m")),
     "run_config.model overrides"),
    (lambda: TetherAgent(object(), name="x"), "wraps an OpenAI Agents SDK Agent"),
    (lambda: TetherAgent(Agent(name="a", tools=[kit.book]), name="x", effects={"book": "maybe"}),
     "tool book: effect must be one of"),
    # An agent as a tool runs its agent's tools inside one call, past the policy: it
    # once ran an irreversible nested tool with no approval when declared read.
    (lambda: TetherAgent(Agent(name="a", tools=[RESEARCH]), name="x",
                         effects={"research": "read"}),
     "research is an agent used as a tool .* cannot be declared 'read'"),
    (lambda: TetherAgent(Agent(name="a", tools=[RESEARCH]), name="x", idempotent={"research"}),
     "cannot be declared 'irreversible' idempotent"),
])
def test_what_tether_could_not_gate_is_refused_when_built(make: Any, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        make()


def test_wrapping_changes_none_of_the_users_objects() -> None:
    billing = Agent(name="billing", tools=[kit.book])
    triage = Agent(name="triage", tools=[kit.lookup], handoffs=[billing])
    before = (list(triage.tools), list(triage.handoffs), triage.model, kit.book.on_invoke_tool)
    wrapped = TetherAgent(triage, name="t")
    assert (list(triage.tools), list(triage.handoffs), triage.model,
            kit.book.on_invoke_tool) == before
    assert set(wrapped.agents) == {"triage", "billing"}
    assert wrapped.agents["triage"].handoffs == [wrapped.agents["billing"]]
    assert isinstance(wrapped.agents["billing"].model, TetherModel)
    assert {t.name: t.effect for t in wrapped.tools} == {"lookup": "irreversible",
                                                         "book": "irreversible"}
    assert wrapped.definition_hash() == TetherAgent(triage, name="t").definition_hash()
    assert wrapped.definition_hash() != TetherAgent(triage, name="t",
                                                    effects={"lookup": "read"}).definition_hash()


@function_tool(failure_error_function=None)
def brittle(note: str) -> str:
    """A tool whose failure should fail the run (as in the SDK)."""
    raise RuntimeError(f"brittle: {note}")


def test_a_tool_built_to_fail_the_run_fails_it_with_tethers_words(tmp_path: Path) -> None:
    with FakeChatServer([completion(tool_calls=[tool_call("c1", "brittle", '{"note": "x"}')])]
                        ) as server:
        model = OpenAIChatCompletionsModel(
            "gpt-4o-mini", openai_client=AsyncOpenAI(base_url=server.base_url, **NO_RETRIES))
        agent = TetherAgent(Agent(name="b", model=model, tools=[brittle]), name="b",
                            effects={"brittle": "read"}, run_config=RunConfig(tracing_disabled=True))
        store, run = run_to_rest(tmp_path, agent)
    row = store.get_run(run)
    assert row is not None and row.status == "failed"
    # tether's ToolFailed, unwrapped from the SDK's UserError("Error running tool ...")
    assert f"run {run} step 1: ToolFailed: tool brittle failed: RuntimeError: brittle: x" in row.reason
    assert "Error running tool" not in row.reason
    store.close()


ASKED = ["Book what is asked."]


def _instructions(ctx: Any, agent: Any) -> str:
    return ASKED[0]


def test_a_turn_that_asks_the_model_something_else_on_replay_pauses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tether.approvals import decide
    monkeypatch.setenv(kit.SIDE_ENV, str(tmp_path / "side.log"))
    turn1 = completion(tool_calls=[tool_call("c1", "book", '{"city": "Oslo"}')])
    with FakeChatServer([turn1, completion("done")]) as server:
        model = OpenAIChatCompletionsModel(
            "gpt-4o-mini", openai_client=AsyncOpenAI(base_url=server.base_url, **NO_RETRIES))
        agent = TetherAgent(Agent(name="d", instructions=_instructions, model=model,
                                  tools=[kit.book]), name="d",
                            run_config=RunConfig(tracing_disabled=True))
        store = SQLiteStore(tmp_path / "t.db")
        run = start_run(store, agent, agent_ref="x:d", goal="go")
        asyncio.run(Worker(store, agents={"x:d": agent}, poll_interval=0.01)
                    .run(until_idle=True))
        assert store.get_run(run).status == "awaiting_approval"  # type: ignore[union-attr]
        (approval,) = store.approvals(run=run)
        decide(store, approval.id, approve=True, who="human:test")
        ASKED[0] = "Book something else."  # the re-run turn would now ask another question
        try:
            asyncio.run(Worker(store, agents={"x:d": agent}, poll_interval=0.01)
                        .run(until_idle=True))
        finally:
            ASKED[0] = "Book what is asked."
        assert len(server.requests) == 1
    row = store.get_run(run)
    assert row is not None and row.status == "paused" and "nondeterminism" in row.reason, row
    assert not (tmp_path / "side.log").exists()  # the booking never ran
    assert verify_store(store).ok
    store.close()


SENT: list[str] = []


@function_tool(timeout=0.05)
async def charge(card: str) -> str:
    """Charge a card (the request leaves, the answer never comes)."""
    SENT.append(card)
    await asyncio.Event().wait()  # never set: only the timeout ends it
    return "charged"


@function_tool(timeout=0.05)
async def quote(card: str) -> str:
    """Quote a price (a read that never answers)."""
    await asyncio.Event().wait()
    return "42"


def test_an_effect_cut_off_by_its_sdk_timeout_is_in_doubt_a_read_is_told(tmp_path: Path) -> None:
    # Before, the SDK's "timed out" text was journaled as the effect's result (done) and
    # told to the model, which could charge again though the first charge may have gone.
    SENT.clear()
    with FakeChatServer([completion(tool_calls=[tool_call("q", "quote", '{"card": "c1"}'),
                                                tool_call("c", "charge", '{"card": "c1"}')]),
                         completion("never asked")]) as server:
        model = OpenAIChatCompletionsModel("gpt-4o-mini", openai_client=AsyncOpenAI(
            base_url=server.base_url, **NO_RETRIES))
        agent = TetherAgent(Agent(name="till", model=model, tools=[quote, charge]), name="till",
                            effects={"quote": "read"}, run_config=RunConfig(tracing_disabled=True))
        store, run = run_to_rest(tmp_path, agent)
        assert len(server.requests) == 1
    row = store.get_run(run)
    assert row is not None and row.status == "paused", row
    assert "cut off by its timeout" in row.reason and "tether resolve" in row.reason
    (effect,) = store.effects(run=run)
    assert (effect.tool, effect.status) == ("charge", "in_doubt") and SENT == ["c1"]
    (read,) = [e for e in store.events(run) if e.kind == "tool.called"]
    assert read.payload["result"] == "Tool 'quote' timed out after 0.05 seconds."


@pytest.mark.parametrize("garbage", [Reply(200, "<html>bad gateway</html>"),
                                     Reply(200, {"id": "x", "object": "chat.completion"})])
def test_a_provider_answering_garbage_pauses_the_run_naming_the_model(
        tmp_path: Path, garbage: Reply) -> None:
    # Before, the SDK's JSONDecodeError / ModelBehaviorError failed the run as the agent's bug.
    with FakeChatServer([garbage]) as server:
        model = OpenAIChatCompletionsModel("gpt-4o-mini", openai_client=AsyncOpenAI(
            base_url=server.base_url, **NO_RETRIES))
        agent = TetherAgent(Agent(name="a", model=model), name="a",
                            run_config=RunConfig(tracing_disabled=True))
        store, run = run_to_rest(tmp_path, agent)
    row = store.get_run(run)
    assert row is not None and row.status == "paused", row
    assert "model gpt-4o-mini failed at step 1" in row.reason
    assert "the provider's answer is not a model response" in row.reason
