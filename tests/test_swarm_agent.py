"""The tool-calling Agent with swarm=True: its model messages other runs and shares a
blackboard through the journaled ctx calls (provenance, replay), not through tool effects."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tether import Agent, ScriptedModel, Worker, start_run, verify_store
from tether.models.base import ModelResponse, ToolCall
from tether.provenance.impact import impact
from tether.runtime.operator import run_state
from tether.runtime.swarm_tools import SWARM_TOOL_NAMES
from tether.store.sqlite import SQLiteStore


def _call(name: str, **args: object) -> ModelResponse:
    return ModelResponse(None, [ToolCall(f"c-{name}", name, json.dumps(args))])


WRITER = Agent("writer", model=ScriptedModel([
    _call("board_set", key="plan", value="ship on friday"),
    _call("send_message", to="reader", text="the plan is on the board", topic="news"),
    _call("send_message", to="nobody-at-all", text="hello?"),
    ModelResponse("done"),
]), instructions="Share the plan.", swarm=True)

READER = Agent("reader", model=ScriptedModel([
    _call("read_inbox"),
    _call("board_get", key="plan"),
    _call("board_set", key="plan", value=""),  # an empty value is fine; an empty key is not
    _call("board_set", key="", value="x"),
    ModelResponse("read it"),
]), instructions="Read the plan.", swarm=True)


def test_an_agents_model_messages_other_runs_and_shares_the_board(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    r = start_run(store, READER, agent_ref="reader", goal="read", name="reader", swarm="team")
    w = start_run(store, WRITER, agent_ref="writer", goal="share", name="writer", swarm="team")
    asyncio.run(Worker(store, agents={"writer": WRITER}, only={w}).run(until_idle=True))
    tool_msgs = [m["content"] for m in _state(store, w)["messages"] if m["role"] == "tool"]
    assert tool_msgs[0] == "wrote 'plan'" and tool_msgs[1].startswith("sent (message ")
    # A recipient that does not exist: the model is told, and the run goes on.
    assert "no run or agent named 'nobody-at-all' in swarm team" in tool_msgs[2]
    assert _status(store, w) == "done"
    asyncio.run(Worker(store, agents={"reader": READER}).run(until_idle=True))
    seen = [m["content"] for m in _state(store, r)["messages"] if m["role"] == "tool"]
    [got] = json.loads(seen[0])
    assert got == {"from": w, "topic": "news", "body": "the plan is on the board"}
    entry = json.loads(seen[1])
    assert entry["value"] == "ship on friday" and entry["version"] == 1 and entry["writer"] == w
    assert seen[2] == "wrote 'plan'"
    assert seen[3].startswith("error: tool board_set: ") and "key" in seen[3]
    kinds = [e.kind for e in store.events(r)]
    assert "blackboard.read" in kinds and "effect.intent" not in kinds  # journaled ctx calls
    # Provenance: the writer's step 1 reached the reader through the board.
    assert {a.run.id for a in impact(store, "writer@1").affected} == {w, r}
    assert verify_store(store).ok
    store.close()


def test_swarm_tools_are_offered_only_when_asked() -> None:
    plain = Agent("a", model=ScriptedModel([ModelResponse("x")]), instructions="i")
    swarm = Agent("a", model=ScriptedModel([ModelResponse("x")]), instructions="i", swarm=True)
    assert plain.definition_hash() != swarm.definition_hash()
    names = {t["name"] for t in swarm._offered if isinstance(t, dict)}
    assert names == SWARM_TOOL_NAMES


def _status(store: SQLiteStore, run: str) -> str:
    row = store.get_run(run)
    assert row is not None
    return row.status


def _state(store: SQLiteStore, run: str) -> dict[str, Any]:
    return run_state(store, run)[2]
