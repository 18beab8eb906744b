"""LangGraph under tether (tether.integrations.langgraph), on real parts: LangGraph's own
Pregel loop and ToolNode, LangChain's ChatOpenAI over loopback HTTP to FakeChatServer,
a real SQLite store and a real Worker. One superstep per tether step."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import InjectedState, ToolNode, tools_condition
from langgraph.types import RetryPolicy, interrupt
from pydantic import BaseModel

from tests import lg_agents as lg
from tether import Worker, start_run, verify_store
from tether.approvals import decide
from tether.core.checkpoint import restore
from tether.errors import ToolDefinitionError, UsageError
from tether.integrations.langgraph import TetherGraph, wrap_tool
from tether.integrations.langgraph.codec import decode, encode
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools
from tether.testing.openai_server import FakeChatServer, Reply, completion, error, tool_call

BOOK = tool_call("c2", "book", '{"restaurant": "Chez Tether", "time": "19:00"}')


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SQLiteStore]:
    monkeypatch.setenv("LG_SIDE", str(tmp_path / "side.jsonl"))
    monkeypatch.delenv("LG_KILL", raising=False)
    s = SQLiteStore(tmp_path / "t.db")
    yield s
    assert verify_store(s).ok
    s.close()


@contextlib.contextmanager
def serve(monkeypatch: pytest.MonkeyPatch, *replies: Reply) -> Iterator[FakeChatServer]:
    with FakeChatServer(replies) as server:
        monkeypatch.setenv("LG_BASE_URL", server.base_url)
        yield server


def drive(store: SQLiteStore, agents: dict[str, Any] | None = None) -> None:
    asyncio.run(Worker(store, agents=agents or lg.AGENTS, poll_interval=0.01)
                .run(until_idle=True))


def finished(store: SQLiteStore, run: str) -> Any:
    """The run's result, from its ``run.done`` event (asserting it is done)."""
    row = store.get_run(run)
    assert row is not None and row.status == "done", row
    *_, done = [e for e in store.events(run) if e.kind == "run.done"]  # the last
    return done.payload["result"]


def state_of(store: SQLiteStore, run: str) -> dict[str, Any]:
    row = store.get_run(run)
    assert row is not None
    chain = store.checkpoint_chain(run, row.epoch, row.step)
    assert chain is not None
    return restore(chain.key_body, store.chunk, chain.deltas)


def sent_messages(server: FakeChatServer, n: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = server.requests[n].body["messages"]
    return messages


def test_a_tool_calling_loop_runs_one_superstep_a_step_and_waits_for_approval(
        store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(monkeypatch,
               completion(None, tool_calls=[tool_call("c1", "search", '{"query": "dinner"}')],
                          usage=(40, 7)),
               completion(None, tool_calls=[BOOK]),
               completion("Booked Chez Tether at 19:00.")) as server:
        run = start_run(store, lg.BOOKER, agent_ref=lg.REF, goal="Book dinner")
        drive(store)  # agent, tools (search: read, runs), agent, tools (book: irreversible)
        row = store.get_run(run)
        assert row is not None and row.status == "awaiting_approval", row
        assert [x["tool"] for x in lg.ran()] == ["search"]
        assert len(server.requests) == 2
        (approval,) = store.approvals(run=run)
        decide(store, approval.id, approve=True, who="human:test")
        drive(store)
        assert finished(store, run) == "Booked Chez Tether at 19:00."
        assert len(server.requests) == 3, "a journaled model request was sent again"
    assert [x["tool"] for x in lg.ran()] == ["search", "book"]
    events = list(store.events(run))
    # One superstep a step: agent, tools, agent, tools, agent.
    assert [e.step for e in events if e.kind == "step.finished"] == [1, 2, 3, 4, 5]
    called = [e for e in events if e.kind == "model.called"]
    assert [e.step for e in called] == [1, 3, 5]
    first = called[0].payload
    assert first["model"] == lg.MODEL and first["cost_usd"] > 0
    assert first["response"]["tool_calls"] == [
        {"id": "c1", "name": "search", "arguments": '{"query":"dinner"}'}]
    assert first["response"]["usage"] == {"input_tokens": 40, "output_tokens": 7}
    assert first["raw"]["message"]["id"][-1] == "AIMessage"
    assert [e.payload["tool"] for e in events if e.kind == "effect.intent"] == ["book"]
    # The ToolNode's results went back to the model as tool messages.
    assert sent_messages(server, 1)[-1] == {"role": "tool", "tool_call_id": "c1", "content":
                                            "Chez Tether has a table at 19:00 (dinner)"}
    # The graph's state is the run's state, as JSON: LangChain's own form of each message.
    state = state_of(store, run)
    values = decode(state["graph"]["checkpoint"])["channel_values"]
    assert [type(m).__name__ for m in values["messages"]] == [
        "HumanMessage", "AIMessage", "ToolMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert json.loads(json.dumps(state)) == state


def test_a_denied_tool_is_told_to_the_model_and_the_run_goes_on(
        store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(monkeypatch, completion(None, tool_calls=[BOOK]),
               completion("I could not book it.")) as server:
        run = start_run(store, lg.BOOKER, agent_ref=lg.REF, goal="Book dinner")
        drive(store)
        (approval,) = store.approvals(run=run)
        decide(store, approval.id, approve=False, who="human:test", note="too expensive")
        drive(store)
        assert finished(store, run) == "I could not book it."
        told = sent_messages(server, 1)[-1]
    assert lg.ran() == []
    assert told["role"] == "tool" and told["tool_call_id"] == "c2"
    assert "book" in told["content"] and "too expensive" in told["content"]


def test_malformed_arguments_are_told_to_the_model_and_nothing_runs(
        store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    allow_tools(store)
    bad = tool_call("c3", "book", '{"restaurant": 3}')
    with serve(monkeypatch, completion(None, tool_calls=[bad]), completion("Gave up.")) as server:
        run = start_run(store, lg.BOOKER, agent_ref=lg.REF, goal="Book dinner")
        drive(store)
        told = sent_messages(server, 1)[-1]
    assert finished(store, run) == "Gave up."
    assert lg.ran() == []
    assert told["role"] == "tool" and "is not of type 'string'" in told["content"]
    assert "'time' is a required property" in told["content"]
    (rejected,) = [e.payload for e in store.events(run) if e.kind == "tool.called"]
    assert rejected["rejected"] and rejected["tool"] == "book"


def test_parallel_tool_calls_are_journaled_in_the_order_the_model_asked(
        store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    allow_tools(store)
    calls = [tool_call("a", "notify", '{"to": "x@example.com", "text": "hi"}'),
             tool_call("b", "search", '{"query": "q"}'), BOOK]
    with serve(monkeypatch, completion(None, tool_calls=calls), completion("done")) as server:
        run = start_run(store, lg.BOOKER, agent_ref=lg.REF, goal="Do three things")
        drive(store)
        answered = [m["tool_call_id"] for m in sent_messages(server, 1) if m["role"] == "tool"]
    journaled = [(e.payload["i"], e.payload["tool"]) for e in store.events(run)
                 if e.kind in ("tool.called", "effect.intent")]
    assert journaled == [(0, "notify"), (1, "search"), (2, "book")]
    assert [x["tool"] for x in lg.ran()] == ["notify", "search", "book"]
    assert answered == ["a", "b", "c2"]


def test_a_budget_stops_the_graph_between_supersteps(
        store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(monkeypatch, completion(None, tool_calls=[tool_call("c1", "search", '{"query": "a"}')],
                                       usage=(900, 200)),
               completion("never asked")) as server:
        run = start_run(store, lg.BOOKER, agent_ref=lg.REF, goal="Search", budget={"tokens": 1000})
        drive(store)
        assert len(server.requests) == 1
    row = store.get_run(run)
    assert row is not None and row.status == "paused" and "tokens" in row.reason


def test_a_failing_provider_pauses_the_run_naming_the_model(
        store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(monkeypatch, error(503, "overloaded")):
        run = start_run(store, lg.BOOKER, agent_ref=lg.REF, goal="Book dinner")
        drive(store)
    row = store.get_run(run)
    assert row is not None and row.status == "paused"
    assert f"model {lg.MODEL} failed at step 1" in row.reason and "overloaded" in row.reason


# -- signals LangGraph must not swallow ----------------------------------------------
SWALLOW_NOTE = wrap_tool(lg.book)


async def swallowing(state: MessagesState) -> dict[str, Any]:
    try:  # node code that catches everything must still not carry on past a pause
        await SWALLOW_NOTE.langchain.ainvoke({"restaurant": "X", "time": "20:00"})
    except BaseException:
        return {"messages": [AIMessage("carried on")]}
    return {"messages": [AIMessage("booked")]}


def swallower() -> StateGraph[Any, Any, Any, Any]:
    g = StateGraph(MessagesState)
    g.add_node("act", swallowing)
    g.add_edge(START, "act")
    g.add_edge("act", END)
    return g


def tolerant() -> StateGraph[Any, Any, Any, Any]:
    g = StateGraph(MessagesState)
    g.add_node("agent", lg.agent)
    g.add_node("tools", ToolNode(lg.TOOLS, handle_tool_errors=True))  # catches Exception
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition, ["tools", END])
    g.add_edge("tools", "agent")
    return g


@pytest.mark.parametrize("which", ["node catches BaseException", "ToolNode handles errors"])
def test_an_approval_wait_is_never_swallowed_by_langgraph(
        store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, which: str) -> None:
    if which == "node catches BaseException":
        agent = TetherGraph(swallower(), name="swallower", tools=[SWALLOW_NOTE])
        replies: tuple[Reply, ...] = ()
    else:
        agent = TetherGraph(tolerant(), name="tolerant")
        replies = (completion(None, tool_calls=[BOOK]), completion("ok"))
    with serve(monkeypatch, *replies):
        run = start_run(store, agent, agent_ref="x:agent", goal="Book")
        drive(store, {"x:agent": agent})
        row = store.get_run(run)
        assert row is not None and row.status == "awaiting_approval", row
        assert lg.ran() == []
        (approval,) = store.approvals(run=run)
        decide(store, approval.id, approve=True, who="human:test")
        drive(store, {"x:agent": agent})
    assert finished(store, run) in ("booked", "ok")
    assert [x["tool"] for x in lg.ran()] == ["book"]


# -- a sync node, bad input, the codec ------------------------------------------------
def sync_agent(state: MessagesState) -> dict[str, Any]:
    return {"messages": [lg.llm().invoke(state["messages"])]}


def test_a_sync_node_calls_the_model_through_tether(
        store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    g = StateGraph(MessagesState)
    g.add_node("agent", sync_agent)
    g.add_edge(START, "agent")
    g.add_edge("agent", END)
    agent = TetherGraph(g, name="sync")
    with serve(monkeypatch, completion("hello")) as server:
        run = start_run(store, agent, agent_ref="x:sync", goal="Say hello")
        drive(store, {"x:sync": agent})
        assert len(server.requests) == 1
    assert finished(store, run) == "hello"
    assert [e.kind for e in store.events(run)].count("model.called") == 1


def test_the_wrappers_outside_a_tether_step_say_how_to_fix_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LG_BASE_URL", "http://127.0.0.1:9/v1")
    with pytest.raises(UsageError, match="outside an async step run by tether"):
        asyncio.run(lg.llm().ainvoke([HumanMessage("hi")]))
    with pytest.raises(UsageError, match="synchronously outside a tether step"):
        lg.llm().invoke([HumanMessage("hi")])


@tool
def peek(key: str, state: Annotated[dict[str, Any], InjectedState]) -> str:
    """Read the graph's state."""
    return str(state.get(key))


def test_a_tool_with_injected_arguments_is_refused_naming_it() -> None:
    with pytest.raises(ToolDefinitionError, match=r"tool peek: takes injected arguments \['state'\]"):
        wrap_tool(peek)
    with pytest.raises(UsageError, match=r"effects .* must each be one of"):
        TetherGraph(lg.build(), name="bad", effects={"search": "harmless"})  # type: ignore[dict-item]


@pytest.mark.parametrize("value", [
    {"messages": [HumanMessage("hi", id="1"), AIMessage("", tool_calls=[
        {"name": "f", "args": {"a": 1}, "id": "t", "type": "tool_call"}]),
                  ToolMessage("r", tool_call_id="t")]},
    {"$ref": 1, "t": (1, "a", None), 3: [1.5, True]},
    {"s": {1, 2}, "nan": float("nan")},
])
def test_the_codec_gives_back_what_it_was_given(value: dict[str, Any]) -> None:
    encoded = encode(value)
    assert json.loads(json.dumps(encoded, allow_nan=False)) == encoded
    back = decode(encoded)
    if "nan" in value:
        assert back["s"] == value["s"] and back["nan"] != back["nan"]
    else:
        assert back == value


# -- structured output, LangGraph's interrupt() ----------------------------------------
class Pick(BaseModel):
    """The restaurant picked."""

    restaurant: str


async def picking(state: MessagesState) -> dict[str, Any]:
    pick = await lg.llm().with_structured_output(Pick).ainvoke(state["messages"])
    assert isinstance(pick, Pick)
    return {"messages": [AIMessage(f"picked {pick.restaurant}")]}


async def asking(state: MessagesState) -> dict[str, Any]:
    return {"messages": [AIMessage(str(interrupt("which restaurant?")))]}


def one_node(fn: Any) -> StateGraph[Any, Any, Any, Any]:
    g = StateGraph(MessagesState)
    g.add_node("only", fn)
    g.add_edge(START, "only")
    g.add_edge("only", END)
    return g


def test_structured_output_goes_through_tether(
        store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    agent = TetherGraph(one_node(picking), name="picker")
    answer = completion(None, tool_calls=[tool_call("p", "Pick", '{"restaurant": "Chez Tether"}')])
    with serve(monkeypatch, answer) as server:
        run = start_run(store, agent, agent_ref="x:picker", goal="Pick one")
        drive(store, {"x:picker": agent})
        assert server.requests[0].body["tools"][0]["function"]["name"] == "Pick"
    assert finished(store, run) == "picked Chez Tether"


def test_langgraph_interrupt_fails_the_run_saying_what_to_use(store: SQLiteStore) -> None:
    agent = TetherGraph(one_node(asking), name="asker")
    run = start_run(store, agent, agent_ref="x:asker", goal="Ask")
    drive(store, {"x:asker": agent})
    row = store.get_run(run)
    assert row is not None and row.status == "failed"
    assert "interrupt()" in row.reason and "tether policy" in row.reason


def test_effects_naming_no_tool_of_the_graph_are_refused() -> None:
    with pytest.raises(UsageError, match=r"name tools the graph does not have: \['serach'\]"):
        TetherGraph(lg.build(), name="typo", effects={"serach": "read"})


def test_the_definition_is_the_graphs_shape_code_and_tools() -> None:
    same = TetherGraph(lg.build(), name="booker", effects={"search": "read"}, idempotent={"notify"})
    assert same.definition_hash() == lg.BOOKER.definition_hash()
    other = TetherGraph(lg.build(), name="booker", effects={"search": "read"})
    assert other.definition_hash() != lg.BOOKER.definition_hash()  # notify not idempotent
    assert TetherGraph(one_node(picking), name="n").definition_hash() != TetherGraph(
        one_node(asking), name="n").definition_hash()


class Fan(MessagesState):
    """Two branches' answers."""

    left: str
    right: str


async def left(state: Fan) -> dict[str, Any]:
    return {"left": str((await lg.llm().ainvoke([HumanMessage("left?")])).text)}


async def right(state: Fan) -> dict[str, Any]:
    return {"right": str((await lg.llm().ainvoke([HumanMessage("right?")])).text)}


def test_parallel_nodes_share_a_superstep_and_ask_in_langgraphs_order(
        store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    g = StateGraph(Fan)
    g.add_node("left", left)
    g.add_node("right", right)
    g.add_edge(START, "left")
    g.add_edge(START, "right")
    g.add_edge("left", END)
    g.add_edge("right", END)
    agent = TetherGraph(g, name="fan")
    with serve(monkeypatch, completion("L"), completion("R")) as server:
        run = start_run(store, agent, agent_ref="x:fan", goal="Both")
        drive(store, {"x:fan": agent})
        asked = [r.body["messages"][-1]["content"] for r in server.requests]
    assert asked == ["left?", "right?"]
    assert [(e.step, e.payload["i"]) for e in store.events(run) if e.kind == "model.called"] == [
        (1, 0), (1, 1)]
    values = decode(state_of(store, run)["graph"]["checkpoint"])["channel_values"]
    assert (values["left"], values["right"]) == ("L", "R")


def test_pause_points_and_rollback_land_between_supersteps(
        store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from tether.ops import Tether as Ops
    from tether.provenance.rollback import rollback
    agent = TetherGraph(lg.build(), name="reviewed", effects={"search": "read"},
                        pause_points={"every_steps": 1})
    agents = {"x:reviewed": agent}
    search = completion(None, tool_calls=[tool_call("c1", "search", '{"query": "dinner"}')])
    with serve(monkeypatch, search, completion("Chez Tether."), completion("Chez Tether!")):
        run = start_run(store, agent, agent_ref="x:reviewed", goal="Find dinner")
        reviews = 0
        while store.get_run(run).status != "done":  # type: ignore[union-attr]
            drive(store, agents)
            row = store.get_run(run)
            assert row is not None
            if row.status == "paused":
                assert "review point" in row.reason
                reviews += 1
                Ops(store, agents=agents).resume(run)
        assert reviews == 2  # after the agent's superstep and after the tools'
        assert finished(store, run) == "Chez Tether."
        rollback(store, run, 2, agents=agents)  # back to after the tools' superstep
        values = decode(state_of(store, run)["graph"]["checkpoint"])["channel_values"]
        assert [type(m).__name__ for m in values["messages"]] == [
            "HumanMessage", "AIMessage", "ToolMessage"]
        Ops(store, agents=agents).resume(run)
        drive(store, agents)  # step 3 again: the model is asked again, from the same state
    assert finished(store, run) == "Chez Tether!"


async def configured(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
    return {"messages": [AIMessage(f"table for {config['configurable']['party']}")]}


def test_config_reaches_the_nodes_every_step(store: SQLiteStore) -> None:
    agent = TetherGraph(one_node(configured), name="configured",
                        config={"configurable": {"party": 4}})
    run = start_run(store, agent, agent_ref="x:configured", goal="Book")
    drive(store, {"x:configured": agent})
    assert finished(store, run) == "table for 4"


# -- a step re-run after an approval: replayed, or paused when it asks something else ----
PROMPT = ["You book tables."]
PLAN_BOOK = wrap_tool(lg.book)


async def plan_and_book(state: MessagesState) -> dict[str, Any]:
    reply = await lg.llm().ainvoke([SystemMessage(PROMPT[0]), *state["messages"]])
    done = await PLAN_BOOK.langchain.ainvoke({"restaurant": str(reply.text), "time": "19:00"})
    return {"messages": [reply, AIMessage(str(done))]}


@pytest.mark.parametrize("changed", [False, True])
def test_a_step_re_run_after_approval_replays_its_model_call_or_pauses_if_it_changed(
        store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, changed: bool) -> None:
    agent = TetherGraph(one_node(plan_and_book), name="planner", tools=[PLAN_BOOK])
    agents = {"x:planner": agent}
    with serve(monkeypatch, completion("Chez Tether"), completion("Elsewhere")) as server:
        run = start_run(store, agent, agent_ref="x:planner", goal="Book")
        drive(store, agents)  # the model answers, then book waits for a person
        (approval,) = store.approvals(run=run)
        decide(store, approval.id, approve=True, who="human:test")
        if changed:
            monkeypatch.setattr(sys.modules[__name__], "PROMPT", ["You book tables, cheaply."])
        drive(store, agents)  # the step again: its model call comes from the journal
        assert len(server.requests) == 1, "the journaled model request was sent again"
    row = store.get_run(run)
    assert row is not None
    if changed:
        assert row.status == "paused" and "nondeterminism" in row.reason, row
        assert lg.ran() == []
    else:
        assert finished(store, run) == "booked Chez Tether at 19:00"
        assert [x["restaurant"] for x in lg.ran()] == ["Chez Tether"]


def subgraph_booker() -> StateGraph[Any, Any, Any, Any]:
    """The booker's tool-calling loop, compiled and added to a parent graph as one node."""
    outer = StateGraph(MessagesState)
    outer.add_node("booker", lg.build().compile())
    outer.add_edge(START, "booker")
    outer.add_edge("booker", END)
    return outer


def test_a_subgraphs_tool_node_is_gated_like_the_parents(
        store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # A ToolNode inside a compiled subgraph once ran its tools past the policy, unjournaled.
    agent = TetherGraph(subgraph_booker(), name="nested", effects={"search": "read"})
    assert sorted(t.name for t in agent.tools) == ["book", "notify", "search"]
    with serve(monkeypatch, completion(None, tool_calls=[BOOK]), completion("Booked.")) as server:
        run = start_run(store, agent, agent_ref="x:nested", goal="Book dinner")
        drive(store, {"x:nested": agent})
        row = store.get_run(run)
        assert row is not None and row.status == "awaiting_approval", row
        assert lg.ran() == []
        (approval,) = store.approvals(run=run)
        decide(store, approval.id, approve=True, who="human:test")
        drive(store, {"x:nested": agent})
        assert finished(store, run) == "Booked."
        assert len(server.requests) == 2, "a journaled model request was sent again"
    assert [x["tool"] for x in lg.ran()] == ["book"]
    assert [e.payload["tool"] for e in store.events(run) if e.kind == "effect.intent"] == ["book"]


@tool("book")
def book_preview(restaurant: str, time: str) -> str:
    """Preview a booking (a different tool under the booker's tool name)."""
    return f"{restaurant} at {time} looks free"


def test_two_tools_of_one_name_are_refused_when_the_graph_is_wrapped() -> None:
    # Before, the tools= one (read) silently replaced the ToolNode's book: the model's book
    # call ran the preview's code, as a read, without an approval.
    with pytest.raises(UsageError, match="two tools are named 'book'"):
        TetherGraph(lg.build(), name="clash", tools=[wrap_tool(book_preview, effect="read")])
    with pytest.raises(UsageError, match="two tools are named 'book'"):  # one tool, two ways
        TetherGraph(lg.build(), name="clash", tools=[wrap_tool(lg.book, effect="read")])
    same = TetherGraph(lg.build(), name="same", tools=[wrap_tool(lg.book)])  # as the node's
    assert sorted((t.name, t.effect) for t in same.tools) == [
        ("book", "irreversible"), ("notify", "irreversible"), ("search", "irreversible")]


RETRY = RetryPolicy(max_attempts=2, initial_interval=0.0, jitter=False, retry_on=ValueError)


def test_a_graph_whose_nodes_langgraph_retries_is_refused_naming_them() -> None:
    # A retry re-ran the node inside the step, and with it the tool calls it had made, as
    # new calls: a node that booked, then raised, booked twice (measured: two effect.done).
    async def flaky(state: MessagesState) -> dict[str, Any]:
        return {}

    why = "a retry re-runs the node and every tool call it made"
    g = StateGraph(MessagesState)
    g.add_node("plan", flaky)
    g.add_node("act", flaky, retry_policy=RETRY)
    g.add_edge(START, "plan")
    g.add_edge("plan", "act")
    g.add_edge("act", END)
    with pytest.raises(UsageError, match=rf"agent r: node\(s\) act have a LangGraph retry "
                                         rf"policy .*{why}"):
        TetherGraph(g, name="r")
    with pytest.raises(UsageError, match=r"node\(s\) act have"):  # compiled, likewise
        TetherGraph(g.compile(), name="r")
    default = one_node(flaky).set_node_defaults(retry_policy=RETRY)
    with pytest.raises(UsageError, match=r"node\(s\) only have"):
        TetherGraph(default, name="r")
    outer = StateGraph(MessagesState)  # in a subgraph, named by its path
    outer.add_node("booker", g.compile())
    outer.add_edge(START, "booker")
    outer.add_edge("booker", END)
    with pytest.raises(UsageError, match=r"node\(s\) booker/act have"):
        TetherGraph(outer, name="r")
