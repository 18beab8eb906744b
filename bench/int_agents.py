"""The agent the integrations benchmark runs, written once per framework.

The same small tool-calling agent in PydanticAI, the OpenAI Agents SDK and LangGraph:
its model is the framework's own OpenAI chat client pointed at a loopback
:class:`~tether.testing.openai_server.FakeChatServer` scripted with :func:`script`
(N answers each asking the read tool ``lookup`` once, then a final text), so every
framework pays the same server. ``lookup`` returns ~200 characters, which the
history keeps: turn k sends the model about 2k + 1 messages.

``lookup`` notes the time and the process's CPU time each time it runs
(:data:`TICKS`): one tick per turn, the same point of the turn in every framework,
whatever the framework does between its turns.

Each ``*_plain`` function runs the framework alone; each ``*_tether`` builds the
agent wrapped by its tether integration (``TetherAgent``, ``TetherGraph``), which
the benchmark starts as a run and drives with a real :class:`tether.Worker`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tether.testing.openai_server import Reply, completion, tool_call

MODEL = "gpt-4o-mini"
"""The name every client asks for (priced by tether's default price table)."""
GOAL = "Look up each city the guide names, one at a time."
INSTRUCTIONS = "You look things up. One lookup per turn."
_FILLER = ("The guide lists the opening hours, the nearest station, two museums, a park and "
           "a market that is open on Sundays. ")
FINAL = "All cities looked up."
TICKS: list[tuple[float, float]] = []
"""(perf_counter, process_time) at each ``lookup`` call of the run in progress."""


def lookup(city: str) -> str:
    """Look up a city in the guide."""
    TICKS.append((time.perf_counter(), time.process_time()))
    return f"{city}: {_FILLER}"[:200]


def script(turns: int) -> list[Reply]:
    """The server's answers: ``turns`` tool calls (one ``lookup`` each), then a text."""
    calls = [completion(None, tool_calls=[tool_call(f"call_{k}", "lookup",
                                                    json.dumps({"city": f"city-{k}"}))])
             for k in range(1, turns + 1)]
    return [*calls, completion(FINAL)]


# -- PydanticAI ---------------------------------------------------------------------
def pydantic_agent(url: str) -> Any:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider
    model = OpenAIChatModel(MODEL, provider=OpenAIProvider(base_url=url, api_key="bench"))
    agent: Any = Agent(model, name="bench-pai", instructions=INSTRUCTIONS)
    agent.tool_plain(lookup)
    return agent


async def pydantic_plain(url: str, turns: int) -> str:
    from pydantic_ai.usage import UsageLimits
    result = await pydantic_agent(url).run(GOAL, usage_limits=UsageLimits(request_limit=None))
    return str(result.output)


def pydantic_tether(url: str) -> Any:
    from tether.integrations.pydantic_ai import TetherAgent
    return TetherAgent(pydantic_agent(url), effects={"lookup": "read"})


# -- OpenAI Agents SDK --------------------------------------------------------------
def _agents_sdk(url: str) -> tuple[Any, Any]:
    from agents import Agent, OpenAIChatCompletionsModel, RunConfig, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI
    set_tracing_disabled(True)  # the SDK's trace export would reach api.openai.com
    client = AsyncOpenAI(base_url=url, api_key="bench", max_retries=0)
    model = OpenAIChatCompletionsModel(MODEL, openai_client=client)
    agent = Agent(name="bench-oa", instructions=INSTRUCTIONS, model=model,
                  tools=[function_tool(lookup)])
    return agent, RunConfig(tracing_disabled=True)


async def agents_plain(url: str, turns: int) -> str:
    from agents import Runner
    agent, config = _agents_sdk(url)
    result = await Runner.run(agent, GOAL, max_turns=turns + 5, run_config=config)
    return str(result.final_output)


def agents_tether(url: str) -> Any:
    from tether.integrations.openai_agents import TetherAgent
    agent, config = _agents_sdk(url)
    return TetherAgent(agent, name="bench-oa", effects={"lookup": "read"}, run_config=config)


# -- LangGraph ----------------------------------------------------------------------
def langgraph_builder(url: str, *, tether: bool) -> Any:
    """The ReAct loop: an ``agent`` node asking ChatOpenAI (wrapped in ``TetherChatModel``
    under tether), a ``ToolNode`` with ``lookup``, and back."""
    from langchain_core.tools import StructuredTool
    from langchain_openai import ChatOpenAI
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition
    chat: Any = ChatOpenAI(model=MODEL, base_url=url, api_key="bench",  # type: ignore[arg-type]
                           max_retries=0)
    if tether:
        from tether.integrations.langgraph import TetherChatModel
        chat = TetherChatModel(chat)
    tool = StructuredTool.from_function(lookup)
    bound = chat.bind_tools([tool])

    async def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await bound.ainvoke(state["messages"])]}

    g: Any = StateGraph(MessagesState)
    g.add_node("agent", agent)
    g.add_node("tools", ToolNode([tool]))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition, ["tools", END])
    g.add_edge("tools", "agent")
    return g


def _lg_input() -> dict[str, Any]:
    from langchain_core.messages import HumanMessage, SystemMessage
    return {"messages": [SystemMessage(INSTRUCTIONS), HumanMessage(GOAL)]}


def _lg_text(values: dict[str, Any]) -> str:
    return str(values["messages"][-1].text)


async def langgraph_plain(url: str, turns: int) -> str:
    app = langgraph_builder(url, tether=False).compile()
    out = await app.ainvoke(_lg_input(), {"recursion_limit": 2 * turns + 10})
    return _lg_text(out)


async def langgraph_saver(url: str, turns: int, db: Path) -> str:
    """The graph with LangGraph's own durable checkpointer: ``AsyncSqliteSaver`` (the async
    form of ``SqliteSaver``; the node is async) on a file in WAL mode at ``synchronous=FULL``,
    ``durability="sync"``: each superstep's checkpoint is on disk before the next starts."""
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    async with aiosqlite.connect(db) as conn:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        app = langgraph_builder(url, tether=False).compile(checkpointer=saver)
        config: Any = {"configurable": {"thread_id": "bench"}, "recursion_limit": 2 * turns + 10}
        out = await app.ainvoke(_lg_input(), config, durability="sync")
        return _lg_text(out)


def langgraph_tether(url: str) -> Any:
    from tether.integrations.langgraph import TetherGraph

    def given(goal: str) -> dict[str, Any]:
        return _lg_input()

    return TetherGraph(langgraph_builder(url, tether=True), name="bench-lg",
                       effects={"lookup": "read"}, input=given)
