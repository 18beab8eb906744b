"""A LangGraph run survives a SIGKILL: a real worker subprocess (``python -m
tests.lg_agents``) dies inside a step after a model call and an effect were journaled;
a new worker finishes the run without sending the journaled model request again or
repeating the effect. The model is LangChain's ChatOpenAI over loopback HTTP; the tools
record what really happened in a side file (see tests/lg_agents.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests import lg_agents as lg
from tether import start_run, verify_store
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools
from tether.testing.openai_server import FakeChatServer, completion, tool_call

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.crash


def worker(db: Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """Run a worker subprocess until it has nothing left to do (or dies)."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "tests.lg_agents", str(db)], cwd=ROOT,
                          env=full, capture_output=True, timeout=90, check=False)


def killed_then_finished(tmp_path: Path, agent: Any, ref: str, goal: str,
                         server: FakeChatServer) -> tuple[SQLiteStore, str]:
    db, side = tmp_path / "crash.db", tmp_path / "side.jsonl"
    os.environ["LG_SIDE"] = str(side)  # read by lg.ran() in this process
    store = SQLiteStore(db)
    allow_tools(store)  # durability, not approvals: the effects are allowed outright
    run = start_run(store, agent, agent_ref=ref, goal=goal)
    env = {"LG_BASE_URL": server.base_url, "LG_SIDE": str(side), "LG_KILL": "notify"}
    first = worker(db, env)
    assert first.returncode == -signal.SIGKILL, first.stderr.decode()[-2000:]
    row = store.get_run(run)
    assert row is not None and row.status == "running"  # the dead worker's: nothing finished
    second = worker(db, env)
    assert second.returncode == 0, second.stderr.decode()[-2000:]
    row = store.get_run(run)
    assert row is not None and row.status == "done", row
    assert verify_store(store).ok
    return store, run


def test_a_step_killed_after_its_model_call_and_an_effect_is_finished_by_replay(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One node asks the model, books, then notifies: the worker dies inside notify.
    monkeypatch.setenv("LG_SIDE", str(tmp_path / "side.jsonl"))
    with FakeChatServer([completion("Chez Tether"), completion("unused")]) as server:
        store, run = killed_then_finished(tmp_path, lg.DIARY, lg.DIARY_REF, "Plan dinner", server)
        assert len(server.requests) == 1, "the journaled model request was sent again"
    did = lg.ran()
    assert [x["tool"] for x in did if x["tool"] == "book"] == ["book"]  # once, not again
    notified = [x for x in did if x["tool"] == "notify"]
    # The in-doubt notify is idempotent: retried once, under the same idempotency key.
    assert len(notified) == 2 and notified[0]["key"] == notified[1]["key"]
    assert notified[0]["pid"] != notified[1]["pid"]
    kinds = Counter(e.kind for e in store.events(run))
    assert kinds["model.called"] == 1 and kinds["effect.retried"] == 1
    store.close()


def test_a_toolnode_killed_between_parallel_tool_calls_replays_them_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LG_SIDE", str(tmp_path / "side.jsonl"))
    calls = [tool_call("a", "search", '{"query": "dinner"}'),
             tool_call("b", "book", '{"restaurant": "Chez Tether", "time": "19:00"}'),
             tool_call("c", "notify", '{"to": "ops@example.com", "text": "booked"}')]
    with FakeChatServer([completion(None, tool_calls=calls), completion("All done.")]) as server:
        store, run = killed_then_finished(tmp_path, lg.BOOKER, lg.REF, "Book dinner", server)
        assert len(server.requests) == 2  # each model request once
        told = [m for m in server.requests[1].body["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in told] == ["a", "b", "c"]
    assert all(not m["content"].startswith("error") for m in told), told
    assert Counter(x["tool"] for x in lg.ran()) == {"search": 1, "book": 1, "notify": 2}
    journaled = [(e.payload["i"], e.payload["tool"]) for e in store.events(run)
                 if e.kind in ("tool.called", "effect.intent")]
    assert journaled == [(0, "search"), (1, "book"), (2, "notify")]  # each once, in order
    assert [e.kind for e in store.events(run)].count("effect.retried") == 1
    store.close()
