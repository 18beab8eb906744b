"""The hooks framework integrations plug into, on a real SQLite store and a real Worker:
``ctx.model_call`` (a framework's own model call through the journal), ``current_step()``
and ``schema_tool`` (a tool described by a JSON schema)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tether import (
    Agent,
    Continue,
    Done,
    ForeignResponse,
    ModelResponse,
    ScriptedModel,
    StepAgent,
    ToolCall,
    Usage,
    Worker,
    current_step,
    schema_tool,
    start_run,
    tool,
)
from tether.approvals import decide
from tether.errors import ModelError, ToolDefinitionError, UsageError
from tether.store.sqlite import SQLiteStore

CALLS: list[dict[str, Any]] = []
SECRET = "sk-proj-" + "A1b2C3d4E5f6G7h8J9k0L1m2N3p4Q5r6S7t8"  # a real-looking OpenAI key
SENT: list[str] = []
ASKED = ["as the goal says"]  # what the framework asks besides the goal (a test changes it)


async def framework_call(request: dict[str, Any]) -> ForeignResponse:
    """What an integration's wrapped model does: the framework's own call, then both shapes."""
    CALLS.append(request)
    raw = {"kind": "framework-response", "parts": [{"text": f"answer {len(CALLS)}",
                                                      "leaked": SECRET}]}
    summary = ModelResponse(content=f"answer {len(CALLS)}", usage=Usage(120, 30),
                            model="gpt-4o-mini")
    return ForeignResponse(summary, raw)


async def send_mail(to: str, body: str) -> str:
    SENT.append(to)
    return f"sent to {to}"

MAIL = schema_tool("send_mail", send_mail, description="Send an e-mail.", schema={
    "type": "object", "properties": {"to": {"type": "string", "format": "email"},
                                     "body": {"type": "string"}},
    "required": ["to", "body"], "additionalProperties": False})


async def framework_step(ctx: Any, state: dict[str, Any]) -> Any:
    # The framework's code reaches the step by the ambient accessor, not by ``ctx``.
    here = current_step()
    assert here is ctx
    request = {"messages": [{"text": ctx.goal}, {"text": ASKED[0]}], "step": ctx.step}
    raw = await here.model_call("gpt-4o-mini", request, lambda: framework_call(request))
    state.setdefault("seen", []).append(raw)
    if ctx.step == 1:
        state["mailed"] = await ctx.call(MAIL, to="ops@example.com", body=raw["parts"][0]["text"])
        return Continue()
    return Done("ok")

FRAMEWORK = StepAgent(framework_step, name="framework", tools=[MAIL])
AGENTS = {"tests.test_model_call:FRAMEWORK": FRAMEWORK}


def drive(store: SQLiteStore) -> None:
    asyncio.run(Worker(store, agents=AGENTS, poll_interval=0.01).run(until_idle=True))


@pytest.fixture
def store(tmp_path: Path) -> Any:
    CALLS.clear()
    SENT.clear()
    s = SQLiteStore(tmp_path / "t.db")
    yield s
    s.close()


def test_a_framework_call_is_journaled_redacted_priced_and_replayed(store: SQLiteStore) -> None:
    run = start_run(store, FRAMEWORK, agent_ref="tests.test_model_call:FRAMEWORK", goal="mail ops")
    drive(store)  # step 1: the model call, then the irreversible mail waits for a person
    row = store.get_run(run)
    assert row is not None and row.status == "awaiting_approval"
    assert len(CALLS) == 1 and SENT == []
    (called,) = [e for e in store.events(run) if e.kind == "model.called"]
    p = called.payload
    assert p["model"] == "gpt-4o-mini" and p["response"]["content"] == "answer 1"
    assert p["response"]["usage"] == {"input_tokens": 120, "output_tokens": 30}
    assert p["cost_usd"] > 0
    assert p["raw"]["kind"] == "framework-response"
    assert SECRET not in json.dumps(p) and "leaked" in p["raw"]["parts"][0]
    (approval,) = store.approvals(run=run)
    decide(store, approval.id, approve=True, who="human:test")
    drive(store)  # step 1 re-runs: the model call comes back from the journal, not the model
    row = store.get_run(run)
    assert row is not None and row.status == "done", row
    assert len(CALLS) == 2, "the journaled call of step 1 was made again"  # the 2nd is step 2's
    assert SENT == ["ops@example.com"]
    steps = [e.step for e in store.events(run) if e.kind == "model.called"]
    assert steps == [1, 2]
    assert row.usage["input_tokens"] == 240  # counted once per call, not once per replay


def test_a_changed_request_on_replay_is_nondeterminism(store: SQLiteStore) -> None:
    run = start_run(store, FRAMEWORK, agent_ref="tests.test_model_call:FRAMEWORK", goal="mail ops")
    drive(store)
    (approval,) = store.approvals(run=run)
    decide(store, approval.id, approve=True, who="human:test")
    ASKED[0] = "something else"  # the framework would now ask another question at step 1
    try:
        drive(store)
    finally:
        ASKED[0] = "as the goal says"
    row = store.get_run(run)
    assert row is not None and row.status == "paused" and "nondeterminism" in row.reason
    assert len(CALLS) == 1 and SENT == []


async def failing(ctx: Any, state: dict[str, Any]) -> Any:
    async def down() -> ForeignResponse:
        raise ModelError("503 from the provider", provider_message="overloaded", retryable=True)
    await ctx.model_call("gpt-4o-mini", {"q": 1}, down)
    return Done("unreachable")


def test_a_failing_provider_pauses_the_run_naming_the_model(store: SQLiteStore) -> None:
    agent = StepAgent(failing, name="failing")
    run = start_run(store, agent, agent_ref="x:failing", goal="g")
    asyncio.run(Worker(store, agents={"x:failing": agent}).run(until_idle=True))
    row = store.get_run(run)
    assert row is not None and row.status == "paused"
    assert "model gpt-4o-mini failed at step 1" in row.reason


def test_current_step_outside_a_step_says_how_to_fix_it() -> None:
    with pytest.raises(UsageError, match="outside an async step run by tether"):
        current_step()


def test_schema_tool_checks_arguments_and_tells_the_model(store: SQLiteStore) -> None:
    assert MAIL.validate({"to": "a@b.c", "body": "x"}) == {"to": "a@b.c", "body": "x"}
    with pytest.raises(UsageError, match=r"body: 3 is not of type 'string'"):
        MAIL.validate({"to": "a@b.c", "body": 3})
    with pytest.raises(UsageError, match=r"\(arguments\): 'body' is a required property"):
        MAIL.validate({"to": "a@b.c"})
    with pytest.raises(UsageError, match="Additional properties are not allowed"):
        MAIL.validate({"to": "a@b.c", "body": "x", "cc": "d@e.f"})
    assert MAIL.spec()["parameters"]["required"] == ["to", "body"]
    assert MAIL.effect == "irreversible"  # undeclared: the safe assumption

    model = ScriptedModel([
        ModelResponse(None, (ToolCall("c1", "send_mail", '{"to": "ops@example.com"}'),)),
        ModelResponse("gave up")])
    agent = Agent("mailer", model=model, instructions="Mail ops.", tools=[MAIL])
    run = start_run(store, agent, agent_ref="x:mailer", goal="g")
    asyncio.run(Worker(store, agents={"x:mailer": agent}).run(until_idle=True))
    assert SENT == []
    told = [e.payload for e in store.events(run) if e.kind == "tool.called"]
    assert told and told[0]["rejected"] and "'body' is a required property" in told[0]["error"]


@pytest.mark.parametrize(("schema", "why"), [
    ({"type": "array"}, "must describe an object"),
    ({"type": "object", "properties": {"a": {"type": "no-such-type"}}}, "is not valid"),
    ({"type": "object", "required": "a"}, "is not valid"),
])
def test_schema_tool_refuses_a_broken_schema_naming_the_tool(schema: dict[str, Any],
                                                             why: str) -> None:
    with pytest.raises(ToolDefinitionError, match=f"tool broken: .*{why}"):
        schema_tool("broken", send_mail, schema=schema)
    with pytest.raises(ToolDefinitionError, match="effect must be one of"):
        schema_tool("broken", send_mail, schema={"type": "object"}, effect="maybe")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", " ", "\t\n"])
def test_an_empty_or_blank_tool_name_is_refused(name: str) -> None:
    # A tool the model cannot call and no policy rule can name; tool(name="") took the
    # function's name silently, schema_tool("") made a nameless tool.
    said = re.escape(f"a tool's name must not be empty or only whitespace, got {name!r}")
    with pytest.raises(ToolDefinitionError, match=said):
        schema_tool(name, send_mail, schema={"type": "object"})
    with pytest.raises(ToolDefinitionError, match=said):
        tool(name=name)(send_mail)


def test_dotted_and_slashed_tool_names_stay_allowed() -> None:
    # MCP servers name tools so ("files/read", "db.query"); the MCP docs say providers may not.
    for name in ("files/read", "db.query"):
        assert schema_tool(name, send_mail, schema={"type": "object"}).name == name
        assert tool(name=name)(send_mail).name == name
