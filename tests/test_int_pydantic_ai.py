"""tether.integrations.pydantic_ai on PydanticAI's real code: its OpenAI chat model over a
real loopback HTTP server (FakeChatServer), a real SQLite store and a real Worker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.toolsets import FunctionToolset

from tests import pydantic_ai_kit as kit
from tether import Worker, start_run, verify_store
from tether.approvals import decide
from tether.errors import ToolDefinitionError, UsageError
from tether.integrations.pydantic_ai import TetherAgent
from tether.runtime.operator import send_command
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools
from tether.testing.openai_server import FakeChatServer, Reply, completion, error, tool_call


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    kit.SENT.clear()
    s = SQLiteStore(tmp_path / "t.db")
    yield s
    assert verify_store(s).ok
    s.close()


def serve(*replies: Reply) -> FakeChatServer:
    return FakeChatServer(replies)


def drive(store: SQLiteStore, agent: TetherAgent) -> None:
    asyncio.run(Worker(store, agents={kit.REF: agent}, poll_interval=0.01).run(until_idle=True))


def events(store: SQLiteStore, run: str, kind: str) -> list[dict[str, Any]]:
    return [e.payload for e in store.events(run) if e.kind == kind]


def result_of(store: SQLiteStore, run: str) -> Any:
    (done,) = [p for p in events(store, run, "step.finished") if p.get("outcome") == "done"]
    return done["result"]


def told(server: FakeChatServer, n: int) -> list[dict[str, Any]]:
    """The tool messages of the server's ``n``-th request: what the model was told."""
    return [m for m in server.requests[n].body["messages"] if m["role"] == "tool"]


BOOK = tool_call("b1", "book", '{"city": "Paris", "nights": 2}')


def test_read_tool_then_an_undeclared_tool_waits_for_approval_and_runs_once(
        store: SQLiteStore) -> None:
    with serve(completion(tool_calls=[tool_call("f1", "forecast", '{"city": "Paris"}')]),
               completion(tool_calls=[BOOK]), completion("Booked 2 nights in Paris.")) as srv:
        agent = kit.trip(srv.base_url)
        assert {t.name: t.effect for t in agent.tools} == {
            "forecast": "read", "book": "irreversible", "wait": "irreversible"}
        run = start_run(store, agent, agent_ref=kit.REF, goal="Book Paris for 2 nights")
        drive(store, agent)
        row = store.get_run(run)
        assert row is not None and row.status == "awaiting_approval", row
        assert kit.SENT == [] and len(srv.requests) == 2
        (approval,) = store.approvals(run=run)
        assert approval.tool == "book" and approval.arguments == {"city": "Paris", "nights": 2}
        decide(store, approval.id, approve=True, who="human:test")
        drive(store, agent)
        row = store.get_run(run)
        assert row is not None and row.status == "done", row
        assert kit.SENT == ["Paris"]
        # The step re-run after the approval got its model call back from the journal.
        assert len(srv.requests) == 3
        assert told(srv, 2)[-1]["content"] == "booked 2 nights in Paris"
    assert result_of(store, run) == "Booked 2 nights in Paris."
    called = events(store, run, "model.called")
    assert [c["model"] for c in called] == ["gpt-4o-mini"] * 3
    first = called[0]["response"]
    assert first["tool_calls"] == [{"id": "f1", "name": "forecast", "arguments": '{"city": "Paris"}'}]
    assert first["usage"] == {"input_tokens": 10, "output_tokens": 5}
    assert called[0]["raw"]["kind"] == "response"  # PydanticAI's own serialisation
    assert events(store, run, "tool.called")[0]["result"] == "Paris: sunny, 21C"
    assert [e["tool"] for e in events(store, run, "effect.intent")] == ["book"]
    assert row.usage["input_tokens"] == 30  # each call counted once, not once per replay


def test_a_denied_call_is_told_to_the_model_and_the_run_goes_on(store: SQLiteStore) -> None:
    with serve(completion(tool_calls=[BOOK]), completion("Could not book.")) as srv:
        agent = kit.trip(srv.base_url)
        run = start_run(store, agent, agent_ref=kit.REF, goal="Book Paris")
        drive(store, agent)
        (approval,) = store.approvals(run=run)
        decide(store, approval.id, approve=False, who="human:test", note="too expensive")
        drive(store, agent)
        row = store.get_run(run)
        assert row is not None and row.status == "done", row
        assert kit.SENT == [] and len(srv.requests) == 2
        (message,) = told(srv, 1)
        assert message["tool_call_id"] == "b1" and "too expensive" in message["content"]
    assert result_of(store, run) == "Could not book."


def test_malformed_arguments_are_told_to_the_model_and_nothing_runs(store: SQLiteStore) -> None:
    bad = [tool_call("x1", "book", '{"city": "Paris", "nights": "many"}'),
           tool_call("x2", "book", '{"city": "Par')]
    with serve(completion(tool_calls=bad), completion("Sorry.")) as srv:
        agent = kit.trip(srv.base_url)
        run = start_run(store, agent, agent_ref=kit.REF, goal="Book Paris")
        drive(store, agent)
        row = store.get_run(run)
        assert row is not None and row.status == "done", row
        assert kit.SENT == [] and store.approvals(run=run) == []
        retries = told(srv, 1)
        assert [m["tool_call_id"] for m in retries] == ["x1", "x2"]
        assert "nights" in retries[0]["content"] and "valid integer" in retries[0]["content"]
    rejected = events(store, run, "tool.called")
    assert [r["rejected"] for r in rejected] == [True, True]
    assert rejected[0]["raw_arguments"] == '{"city": "Paris", "nights": "many"}'
    assert events(store, run, "effect.intent") == []


def test_structured_output_is_the_runs_result(store: SQLiteStore) -> None:
    final = tool_call("o1", "final_result", '{"city": "Paris", "nights": 3}')
    with serve(completion(tool_calls=[tool_call("f1", "forecast", '{"city": "Paris"}')]),
               completion(tool_calls=[final])) as srv:
        agent = kit.trip(srv.base_url, structured=True)
        run = start_run(store, agent, agent_ref=kit.REF, goal="Plan Paris")
        drive(store, agent)
        row = store.get_run(run)
        assert row is not None and row.status == "done", row
        offered = {t["function"]["name"] for t in srv.requests[0].body["tools"]}
        assert "final_result" in offered
    assert result_of(store, run) == {"city": "Paris", "nights": 3}
    state = store.checkpoint_chain(run, row.epoch, row.step)
    assert state is not None


def test_a_token_budget_stops_the_run_before_the_next_request(store: SQLiteStore) -> None:
    forecast = tool_call("f1", "forecast", '{"city": "Paris"}')
    with serve(completion(tool_calls=[forecast]), completion(tool_calls=[forecast]),
               completion("never")) as srv:
        agent = kit.trip(srv.base_url, budget={"tokens": 25})
        run = start_run(store, agent, agent_ref=kit.REF, goal="Watch the weather")
        drive(store, agent)
        row = store.get_run(run)
        assert row is not None and row.status == "paused" and "budget tokens=25" in row.reason
        assert len(srv.requests) == 2  # 15 + 15 tokens: the third request is never sent


def test_changed_instructions_pause_the_run(store: SQLiteStore) -> None:
    with serve(completion(tool_calls=[BOOK]), completion("Booked.")) as srv:
        agent = kit.trip(srv.base_url)
        run = start_run(store, agent, agent_ref=kit.REF, goal="Book Paris")
        drive(store, agent)
        (approval,) = store.approvals(run=run)
        decide(store, approval.id, approve=True, who="human:test")
        changed = kit.trip(srv.base_url, instructions="Plan trips. Always book the suite.")
        assert changed.definition_hash() != agent.definition_hash()
        drive(store, changed)  # the definition changed: a person looks first
        row = store.get_run(run)
        assert row is not None and row.status == "paused", row
        assert "definition changed" in row.reason
        # Accept the change: the re-run step's request differs from the journaled one.
        send_command(store, run, "resume", {"accept_change": True}, who="human:test")
        drive(store, changed)
        row = store.get_run(run)
        assert row is not None and row.status == "paused" and "nondeterminism" in row.reason
        assert kit.SENT == [] and len(srv.requests) == 1
    assert json.dumps(events(store, run, "definition.changed"))


def test_arguments_an_approver_edited_are_what_the_tool_gets(store: SQLiteStore) -> None:
    with serve(completion(tool_calls=[BOOK]), completion("Booked one night.")) as srv:
        agent = kit.trip(srv.base_url)
        run = start_run(store, agent, agent_ref=kit.REF, goal="Book Paris")
        drive(store, agent)
        (approval,) = store.approvals(run=run)
        decide(store, approval.id, approve=True, who="human:test",
               arguments={"city": "Lyon", "nights": 1}, agents={kit.REF: agent})
        drive(store, agent)
        row = store.get_run(run)
        assert row is not None and row.status == "done", row
        assert kit.SENT == ["Lyon"] and len(srv.requests) == 2
        assert told(srv, 1)[-1]["content"] == "booked 1 nights in Lyon"


def test_a_failing_provider_pauses_the_run_naming_the_model(store: SQLiteStore) -> None:
    with serve(error(400, "this model does not exist here")) as srv:
        agent = kit.trip(srv.base_url)
        run = start_run(store, agent, agent_ref=kit.REF, goal="Book Paris")
        drive(store, agent)
        row = store.get_run(run)
        assert row is not None and row.status == "paused", row
        assert "model gpt-4o-mini failed at step 1" in row.reason
        assert "this model does not exist here" in row.reason
        assert events(store, run, "model.called") == []


def test_a_secret_in_a_providers_error_never_reaches_the_store(
        store: SQLiteStore, tmp_path: Path) -> None:
    key = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0uvwxyz12"
    with serve(error(401, f"Incorrect API key provided: {key}")) as srv:
        agent = kit.trip(srv.base_url)
        run = start_run(store, agent, agent_ref=kit.REF, goal="Book Paris")
        drive(store, agent)
        row = store.get_run(run)
        assert row is not None and row.status == "paused", row
        assert "Incorrect API key provided" in row.reason and key not in row.reason
    store.close()  # the WAL folded into the file: every byte the store keeps is there
    kept = b"".join(f.read_bytes() for f in tmp_path.glob("t.db*"))
    assert kept.count(key.encode()) == 0 and kept.count(key[:20].encode()) == 0


def test_native_tools_the_provider_would_run_are_refused_before_the_request(
        store: SQLiteStore) -> None:
    from pydantic_ai.capabilities import NativeTool
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.native_tools import MCPServerTool
    with serve(completion("paid")) as srv:  # a Responses model sends native tools along
        remote = Agent(OpenAIResponsesModel("gpt-4o-mini", provider=OpenAIProvider(
            base_url=srv.base_url, api_key="test")), name="remote", capabilities=[
                NativeTool(MCPServerTool(id="bank", url="https://bank.example/mcp"))])
        agent = TetherAgent(remote)
        run = start_run(store, agent, agent_ref=kit.REF, goal="Pay the invoice")
        drive(store, agent)
        row = store.get_run(run)
        assert row is not None and row.status == "failed", row
        assert f"run {run} step 1" in row.reason and "native tools MCPServerTool" in row.reason
        assert srv.requests == []  # nothing reached the provider
    assert events(store, run, "model.called") == []


def test_an_effect_cut_off_by_pydantic_ais_tool_timeout_is_in_doubt(store: SQLiteStore) -> None:
    # Before, the timeout's retry prompt was journaled as the effect's failure and told to
    # the model, which charged again: two charges sent.
    sent: list[str] = []
    charge = tool_call("c", "charge_card", '{"card": "c1"}')
    with serve(completion(tool_calls=[charge]), completion(tool_calls=[charge]),
               completion("done")) as srv:
        till = Agent(OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(
            base_url=srv.base_url, api_key="test")), name="till", tool_timeout=0.05)

        @till.tool_plain
        async def charge_card(card: str) -> str:
            """Charge a card (the request leaves, the answer never comes)."""
            sent.append(card)
            await asyncio.Event().wait()  # never set: only the timeout ends it
            return "charged"
        agent = TetherAgent(till, effects={})
        allow_tools(store)
        run = start_run(store, agent, agent_ref=kit.REF, goal="Charge c1")
        drive(store, agent)
        assert len(srv.requests) == 1
    row = store.get_run(run)
    assert row is not None and row.status == "paused", row
    assert "charge_card was cut off by its timeout" in row.reason
    assert [(e.tool, e.status) for e in store.effects(run=run)] == [("charge_card", "in_doubt")]
    assert sent == ["c1"]


def test_monitors_read_the_tool_calls_pydantic_ai_asked_for(store: SQLiteStore) -> None:
    same = tool_call("f", "forecast", '{"city": "Paris"}')
    with serve(*[completion(tool_calls=[same]) for _ in range(6)]) as srv:
        agent = kit.trip(srv.base_url)
        run = start_run(store, agent, agent_ref=kit.REF, goal="Watch the weather")
        drive(store, agent)
        row = store.get_run(run)
        assert row is not None and row.status == "paused", row
        assert "monitor 'loops'" in row.reason and "forecast" in row.reason, row.reason
        # The 5th identical call was refused (the model was told), the 6th paused the run.
        assert len(srv.requests) == 6
        assert "asked for the 5th time" in told(srv, 5)[-1]["content"]
    assert len(events(store, run, "tool.called")) == 4


def test_bad_configuration_is_refused_when_the_agent_is_built() -> None:
    local = Agent(kit.chat_model("http://127.0.0.1:9/v1"), name="local")
    with pytest.raises(UsageError, match=r"wraps a pydantic_ai\.Agent, not str"):
        TetherAgent("trip")  # type: ignore[arg-type]
    with pytest.raises(ToolDefinitionError, match=r"agent local: effects \{'x': 'write'\} are "
                                                    "not effect classes; use one of read"):
        TetherAgent(local, effects={"x": "write"})  # type: ignore[dict-item]
    with pytest.raises(UsageError, match="needs a name"):
        TetherAgent(Agent(kit.chat_model("http://127.0.0.1:9/v1")))
    unpriced = Agent(OpenAIChatModel("my-local-llm", provider=OpenAIProvider(
        base_url="http://127.0.0.1:9/v1", api_key="test")), name="cheap")
    with pytest.raises(UsageError, match="agent cheap: budget cost_usd caps cost in USD, but "
                                         "model 'my-local-llm' has no price"):
        TetherAgent(unpriced, budget={"cost_usd": 1.0})
    assert TetherAgent(unpriced, budget={"tokens": 1000}).budget == {"tokens": 1000}


@dataclass
class Swallow(AbstractCapability[Any]):
    """A user's capability that swallows everything a tool raises (BaseException too)."""

    async def wrap_tool_execute(self, ctx: Any, *, call: Any, tool_def: Any, args: Any,
                                handler: Any) -> Any:
        try:
            return await handler(args)
        except BaseException:  # what a careless capability does
            return "swallowed"


def test_a_signal_the_framework_swallowed_is_raised_again(store: SQLiteStore) -> None:
    with serve(completion(tool_calls=[BOOK]), completion("Booked.")) as srv:
        def book(city: str, nights: int) -> str:
            """Book a hotel."""
            kit.SENT.append(city)
            return "booked"
        careless = TetherAgent(Agent(kit.chat_model(srv.base_url), name="trip", tools=[book],
                                     capabilities=[Swallow()]))
        run = start_run(store, careless, agent_ref=kit.REF, goal="Book Paris")
        drive(store, careless)
        row = store.get_run(run)
        assert row is not None and row.status == "awaiting_approval", row
        # The step did not finish with the model told "swallowed": it waits for the person.
        assert [p["outcome"] for p in events(store, run, "step.finished")] == []
        (approval,) = store.approvals(run=run)
        decide(store, approval.id, approve=True, who="human:test")
        drive(store, careless)
        row = store.get_run(run)
        assert row is not None and row.status == "done", row
        assert kit.SENT == ["Paris"] and len(srv.requests) == 2
        assert told(srv, 1)[-1]["content"] == "booked"


def test_review_points_count_model_turns(store: SQLiteStore) -> None:
    forecast = tool_call("f1", "forecast", '{"city": "Paris"}')
    with serve(completion(tool_calls=[forecast]), completion(tool_calls=[forecast]),
               completion("Sunny.")) as srv:
        agent = kit.trip(srv.base_url, pause_points={"every_steps": 2})
        run = start_run(store, agent, agent_ref=kit.REF, goal="Watch the weather")
        drive(store, agent)
        row = store.get_run(run)
        assert row is not None and row.status == "paused" and row.step == 2, row
        assert len(srv.requests) == 2
        send_command(store, run, "resume", None, who="human:test")
        drive(store, agent)
        row = store.get_run(run)
        assert row is not None and row.status == "done" and len(srv.requests) == 3


def test_without_the_extra_the_import_names_the_install_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import sys
    monkeypatch.setitem(sys.modules, "pydantic_ai", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "tether.integrations.pydantic_ai")
    with pytest.raises(ImportError, match=r"needs the pydantic-ai extra: pip install "
                                          r"'tether\[pydantic-ai\]'"):
        importlib.import_module("tether.integrations.pydantic_ai")


def _lookup(city: str) -> str:
    """Look a city up."""
    return f"{city}: 2.1M people"


def test_effects_naming_a_tool_the_agent_has_not_are_refused_when_built() -> None:
    # Before, a typo was ignored: the tool stayed irreversible, not what was declared.
    local = Agent(kit.chat_model("http://127.0.0.1:9/v1"), name="local", tools=[_lookup])
    with pytest.raises(ToolDefinitionError, match="agent local: effects/idempotent name tools "
                                                  "it does not have: lookup, lukup; its tools: "
                                                  "_lookup"):
        TetherAgent(local, effects={"lookup": "read"}, idempotent={"lukup"})
    assert TetherAgent(local, effects={"_lookup": "read"}).tools[0].effect == "read"


def test_effects_naming_a_prefixed_toolsets_tool_unprefixed_fail_the_first_step(
        store: SQLiteStore) -> None:
    # A prefixed toolset's tools are listed only at run time, under their prefixed names:
    # effects={"_lookup": ...} named none of them and was silently ignored.
    with serve(completion(tool_calls=[tool_call("l1", "geo__lookup", '{"city": "Oslo"}')]),
               completion("Oslo has 2.1M people.")) as srv:
        geo = Agent(kit.chat_model(srv.base_url), name="geo",
                    toolsets=[FunctionToolset([_lookup]).prefixed("geo")])
        wrong = TetherAgent(geo, effects={"_lookup": "read"})  # not known until a run
        run = start_run(store, wrong, agent_ref=kit.REF, goal="Oslo?")
        drive(store, wrong)
        row = store.get_run(run)
        assert row is not None and row.status == "failed", row
        assert (f"run {run}: agent geo: effects/idempotent name tools the agent does not offer: "
                "_lookup; the tools it offers: geo__lookup") in row.reason
        assert srv.requests == []  # refused before the model was asked
        right = TetherAgent(geo, effects={"geo__lookup": "read"})
        run = start_run(store, right, agent_ref=kit.REF, goal="Oslo?")
        drive(store, right)
        assert result_of(store, run) == "Oslo has 2.1M people."
        (read,) = events(store, run, "tool.called")  # a read: no approval asked
        assert read["tool"] == "geo__lookup" and read["result"] == "Oslo: 2.1M people"
