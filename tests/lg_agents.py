"""LangGraph graphs for the LangGraph integration's tests (tests/test_int_langgraph*.py).

The chat model is LangChain's real ``ChatOpenAI`` pointed at the loopback
``FakeChatServer`` whose address is in ``$LG_BASE_URL``; the tools append what
they did to the file ``$LG_SIDE`` (one JSON line each, flushed and fsynced), which
is what really happened, to compare with what tether journaled.

Run as a module, it is a worker: ``python -m tests.lg_agents STORE`` drives the
store with the real :class:`tether.Worker` until no run is left to drive.
``$LG_KILL=TOOL`` makes that tool SIGKILL its own process the first time it runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from tether import Worker, current
from tether.integrations.langgraph import TetherChatModel, TetherGraph, wrap_tool

MODEL = "gpt-4o-mini"


def side(tool_name: str, **fields: Any) -> None:
    """Record, durably, that a tool really ran."""
    here = current()
    line = {"tool": tool_name, "key": here.idempotency_key if here else None,
            "pid": os.getpid(), **fields}
    with open(os.environ["LG_SIDE"], "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()
        os.fsync(f.fileno())
    if os.environ.get("LG_KILL") == tool_name:
        marker = Path(os.environ["LG_SIDE"] + ".killed")
        if not marker.exists():
            marker.write_text("1")
            os.kill(os.getpid(), signal.SIGKILL)


def ran(tool_name: str | None = None) -> list[dict[str, Any]]:
    """What the tools really did, in order."""
    path = Path(os.environ["LG_SIDE"])
    if not path.exists():
        return []
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [x for x in lines if tool_name is None or x["tool"] == tool_name]


@tool
def search(query: str) -> str:
    """Search the restaurant guide."""
    side("search", query=query)
    return f"Chez Tether has a table at 19:00 ({query})"


@tool
async def book(restaurant: str, time: str) -> str:
    """Book a table at a restaurant."""
    side("book", restaurant=restaurant, time=time)
    return f"booked {restaurant} at {time}"


@tool
async def notify(to: str, text: str) -> str:
    """Tell someone about the booking."""
    side("notify", to=to, text=text)
    return f"told {to}"


TOOLS = [search, book, notify]


def llm() -> TetherChatModel:
    """The model of the agent node: ChatOpenAI over loopback HTTP, through tether."""
    return TetherChatModel(ChatOpenAI(model=MODEL, base_url=os.environ["LG_BASE_URL"],
                                      api_key="test", max_retries=0))  # type: ignore[arg-type]


async def agent(state: MessagesState) -> dict[str, Any]:
    return {"messages": [await llm().bind_tools(TOOLS).ainvoke(state["messages"])]}


def build() -> StateGraph[Any, Any, Any, Any]:
    g = StateGraph(MessagesState)
    g.add_node("agent", agent)
    g.add_node("tools", ToolNode(TOOLS))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition, ["tools", END])
    g.add_edge("tools", "agent")
    return g


BOOKER = TetherGraph(build(), name="booker", effects={"search": "read"}, idempotent={"notify"})
REF = "tests.lg_agents:BOOKER"

# A node that asks the model and acts on the answer itself, in one superstep: one tether
# step holds a model call and two effects (the crash test kills it between them).
DIARY_BOOK = wrap_tool(book)
DIARY_NOTIFY = wrap_tool(notify, idempotent=True)


async def plan(state: MessagesState) -> dict[str, Any]:
    reply = await llm().ainvoke(state["messages"])
    booked = await DIARY_BOOK.langchain.ainvoke({"restaurant": str(reply.text), "time": "19:00"})
    await DIARY_NOTIFY.langchain.ainvoke({"to": "ops@example.com", "text": booked})
    return {"messages": [reply]}


def build_diary() -> StateGraph[Any, Any, Any, Any]:
    g = StateGraph(MessagesState)
    g.add_node("plan", plan)
    g.add_edge(START, "plan")
    g.add_edge("plan", END)
    return g


DIARY = TetherGraph(build_diary(), name="diary", tools=[DIARY_BOOK, DIARY_NOTIFY])
DIARY_REF = "tests.lg_agents:DIARY"
AGENTS = {REF: BOOKER, DIARY_REF: DIARY}


def main(argv: list[str]) -> None:
    from tether.store import open_store
    store = open_store(argv[0])
    try:
        asyncio.run(Worker(store, agents=AGENTS, poll_interval=0.01, lease_ttl=1.0)
                    .run(until_idle=True))
    finally:
        store.close()


if __name__ == "__main__":
    main(sys.argv[1:])
