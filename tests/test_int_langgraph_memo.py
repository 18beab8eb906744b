"""The LangGraph codec's memory between steps (tether.integrations.langgraph.memo): an
unchanged message is encoded as the form it was decoded from, anything a node changed is
encoded afresh, and no step's objects reach another's. On LangChain's real messages,
LangGraph's real Pregel loop, a real SQLite store and a real Worker."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

from langchain_core.load import dumpd
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from tether import Worker, start_run, verify_store
from tether.core.checkpoint import restore
from tether.integrations.langgraph import TetherGraph
from tether.integrations.langgraph.codec import decode, encode, revive
from tether.integrations.langgraph.memo import Memo, clone, same, unchanged
from tether.integrations.langgraph.saver import StepSaver
from tether.store.sqlite import SQLiteStore


def _ai(i: int) -> AIMessage:
    return AIMessage("", id=f"ai-{i}", tool_calls=[
        {"id": f"c{i}", "name": "lookup", "args": {"city": f"city-{i}"}}],
        response_metadata={"token_usage": {"prompt_tokens": 10, "completion_tokens": 5}},
        usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15})


def _history(n: int) -> list[Any]:
    out: list[Any] = [HumanMessage("go", id="h")]
    for i in range(n):
        out += [_ai(i), ToolMessage(f"city-{i}: sunny", tool_call_id=f"c{i}", id=f"t-{i}")]
    return out


def test_unchanged_messages_keep_their_form_and_changed_ones_are_encoded_afresh() -> None:
    form = encode({"messages": _history(3)})
    memo = Memo(revive)
    got = decode(form, memo)
    assert got == decode(form)  # what the plain codec gives
    msgs = got["messages"]
    msgs[1].response_metadata["token_usage"]["prompt_tokens"] = 11  # nested, in place
    msgs[3].content = "changed"
    msgs.append(AIMessage("new", id="n"))
    again = encode(got, memo)
    assert again == encode(got)  # what the plain codec writes, changes included
    kept = [a["$lc"] is b["$lc"] for a, b in zip(again["messages"], form["messages"], strict=False)]
    assert [i for i, k in enumerate(kept) if not k] == [1, 3]  # the rest reused as they were
    assert decode(again)["messages"][1].response_metadata["token_usage"]["prompt_tokens"] == 11


def test_a_step_never_sees_what_another_step_did_to_its_objects() -> None:
    form = encode(_history(1))
    first = decode(form, Memo(revive))
    first[1].tool_calls[0]["args"]["city"] = "elsewhere"
    first[0].content = "edited"
    second = decode(form, Memo(revive))  # the cached originals, copied afresh
    assert second == decode(form) and second[1].tool_calls[0]["args"]["city"] == "city-0"
    assert all(a is not b for a, b in zip(first, second, strict=True))


def test_strict_comparison_tells_one_true_and_one_point_zero_apart() -> None:
    for was, now in ((1, True), (1, 1.0), ([1], (1,)), (None, math.nan),
                     (math.nan, float("nan"))):  # two NaN objects: never known equal
        a = AIMessage("x", id="a", response_metadata={"v": was})
        b = clone(a)
        b.response_metadata["v"] = now
        assert not unchanged(b, a) and not same(b, a), (was, now)
    memo = Memo(revive)
    (msg,) = decode([{"$lc": dumpd(AIMessage("x", id="a", response_metadata={"v": 1}))}], memo)
    msg.response_metadata["v"] = True
    assert encode([msg], memo)[0]["$lc"]["kwargs"]["response_metadata"] == {"v": True}


def test_a_form_holding_nan_is_never_taken_for_one_holding_null() -> None:
    a = {"$lc": dumpd(AIMessage("x", id="same", response_metadata={"v": None}))}
    b = {"$lc": dumpd(AIMessage("x", id="same", response_metadata={"v": math.nan}))}
    memo = Memo(revive)
    assert decode(a, memo).response_metadata["v"] is None
    assert math.isnan(decode(b, memo).response_metadata["v"])  # same orjson key, not reused


def test_the_saver_round_trips_a_checkpoint_with_its_writes() -> None:
    saver = StepSaver("run")
    cp: Any = {"v": 1, "id": "cp1", "ts": "t", "channel_values": {"messages": _history(2)},
               "channel_versions": {"messages": 3}, "versions_seen": {}, "updated_channels": None}
    config: Any = {"configurable": {"thread_id": "run", "checkpoint_ns": ""}}
    saver.put(config, cp, {"step": 1}, {})
    saver.put_writes({"configurable": {"checkpoint_id": "cp1"}}, [("messages", [_ai(9)])], "t1")
    first = saver.snapshot()
    assert first is not None
    second = StepSaver("run")
    second.restore(first)
    assert second.snapshot() == first


def _editing_graph() -> StateGraph[Any, Any, Any, Any]:
    """A node that edits the conversation's first message in place, then appends one."""
    async def edit(state: MessagesState) -> dict[str, Any]:
        msgs = state["messages"]
        msgs[0].content = f"{msgs[0].content}!"
        msgs[0].additional_kwargs.setdefault("edits", []).append(len(msgs))
        return {"messages": [AIMessage(f"reply {len(msgs)}", id=f"r{len(msgs)}")]}

    def again(state: MessagesState) -> str:
        return "edit" if len(state["messages"]) < 5 else END

    g: Any = StateGraph(MessagesState)
    g.add_node("edit", edit)
    g.add_edge(START, "edit")
    g.add_conditional_edges("edit", again, ["edit", END])
    return g


def test_in_place_edits_of_old_messages_are_checkpointed_as_langgraph_alone_sees_them(
        tmp_path: Path) -> None:
    alone = asyncio.run(_editing_graph().compile().ainvoke(
        {"messages": [HumanMessage("hi", id="h")]}))["messages"]
    agent = TetherGraph(_editing_graph(), name="editor",
                        input=lambda goal: {"messages": [HumanMessage(goal, id="h")]})
    store = SQLiteStore(tmp_path / "t.db")
    try:
        run = start_run(store, agent, agent_ref="tests:editor", goal="hi")
        asyncio.run(Worker(store, agents={"tests:editor": agent}, poll_interval=0.01)
                    .run(until_idle=True))
        row = store.get_run(run)
        assert row is not None and row.status == "done" and row.step == 4, row
        chain = store.checkpoint_chain(run, row.epoch, row.step)
        assert chain is not None
        state = restore(chain.key_body, store.chunk, chain.deltas)
        assert verify_store(store).ok
    finally:
        store.close()
    values = decode(state["graph"]["checkpoint"])["channel_values"]["messages"]
    assert values == alone
    assert values[0].content == "hi!!!!" and values[0].additional_kwargs == {"edits": [1, 2, 3, 4]}
