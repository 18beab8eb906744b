"""A worker running an agent with MCP tools is SIGKILLed after an irreversible MCP effect's
intent and result are journaled, in the middle of its step; a new worker finishes the run
without calling the MCP server again for it, nor asking the model again for the step."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.crashkit import wait_for
from tests.mcpkit import ROOT, calls
from tether import start_run, verify_store
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools
from tether.testing.openai_server import FakeChatServer, completion, tool_call

REF = "tests.mcp_agents:shop"


def spawn(store: Path, ready: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TETHER_"))}
    full.update(env, PYTHONPATH=str(ROOT))
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "tests.mcp_agents", "worker", str(store),
                                 str(ready)], cwd=ROOT, env=full, stdout=out,
                                stderr=subprocess.STDOUT)


@pytest.mark.crash
def test_a_journaled_mcp_effect_is_not_repeated_after_a_sigkill(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    side, gate, db, log = (tmp_path / "calls.jsonl", tmp_path / "gate", tmp_path / "t.db",
                           tmp_path / "worker.log")
    replies = [completion(tool_calls=[tool_call("a", "book", '{"item": "lamp"}'),
                                      tool_call("b", "hold", '{"note": "x"}')]),
               completion("booked the lamp")]
    with FakeChatServer(replies) as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test",
               "MCP_CALLS": str(side)}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        agent = importlib.import_module("tests.mcp_agents").shop  # lists the server's tools
        store = SQLiteStore(db)
        allow_tools(store)
        run = start_run(store, agent, agent_ref=REF, goal="book a lamp")

        first = spawn(db, tmp_path / "w1.ready", {**env, "MCP_HOLD": str(gate)}, log)
        try:  # hold's intent is durable, so is book's result committed before it
            wait_for(lambda: [e for e in store.effects(run=run) if e.tool == "hold"], 60,
                     "the hold effect's intent")
        finally:
            first.kill()  # SIGKILL, mid-step: the step's checkpoint was never written
            first.wait(30)
        (book,) = [e for e in store.effects(run=run) if e.tool == "book"]
        assert book.status == "done"
        assert [c["tool"] for c in calls(side)] == ["book"]
        assert len(server.requests) == 1

        second = spawn(db, tmp_path / "w2.ready", env, log)
        assert second.wait(120) == 0, log.read_text()[-3000:]
        row = store.get_run(run)
        assert row is not None and row.status == "done", (row, log.read_text()[-3000:])
        assert len(server.requests) == 2  # step 1's answer came from the journal
        tool_results = [m["content"] for m in server.requests[1].body["messages"]
                        if m["role"] == "tool"]
        assert tool_results == ['{"result":"booked lamp"}', "held x"]
    booked = [c for c in calls(side) if c["tool"] == "book"]
    assert len(booked) == 1 and booked[0]["key"] == book.id  # once, with tether's key
    hold = [e for e in store.effects(run=run) if e.tool == "hold"]
    assert [e.status for e in hold] == ["done"]  # idempotent: retried with its key
    assert verify_store(store).ok
    store.close()
