"""A worker running an OpenAI Agents SDK agent is SIGKILLed in the middle of a turn, after
the turn's model call and an effect were journaled (and while a second, idempotent effect
is in flight); a new worker finishes the run without sending the model that request
again, without repeating the first effect, and retries the second with its own key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import crashkit as ck
from tests import openai_agents_kit as kit
from tether import start_run, verify_store
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools
from tether.testing.openai_server import FakeChatServer, completion, tool_call

ROOT = Path(__file__).resolve().parents[1]


def _journaled(store: SQLiteStore, run: str) -> bool:
    """The turn's model call and the booking's result are committed."""
    kinds = [e.kind for e in store.events(run)]
    return "model.called" in kinds and "effect.done" in kinds


@pytest.mark.crash
def test_a_killed_turn_replays_without_asking_the_model_or_booking_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db, side, hold = tmp_path / "t.db", tmp_path / "side.log", tmp_path / "hold"
    monkeypatch.setenv(kit.SIDE_ENV, str(side))
    monkeypatch.delenv(kit.HOLD_ENV, raising=False)
    turn1 = completion(tool_calls=[tool_call("c1", "book", json.dumps({"city": "Oslo"})),
                                   tool_call("c2", "notify", json.dumps({"city": "Oslo"}))])
    with FakeChatServer([turn1, completion("Booked and told.")]) as server:
        store = SQLiteStore(db)
        allow_tools(store, "book", "notify")
        agent = kit.build(server.base_url)
        run = start_run(store, agent, agent_ref=kit.REF, goal="book Oslo")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OA_BASE_URL": server.base_url,
               kit.SIDE_ENV: str(side), kit.HOLD_ENV: str(hold)}
        with open(tmp_path / "worker.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "tests.openai_agents_kit", str(db)],
                                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            # notify (after book, in the same turn) holds the turn open until killed; its
            # intent, committed before it runs, made book's result durable
            ck.wait_for(lambda: hold.exists() and _journaled(store, run), 60,
                        "the turn's model call and effect to be journaled")
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
        killed = proc.pid
        assert len(server.requests) == 1
        row = store.get_run(run)
        assert row is not None and row.status == "running" and row.step == 0  # turn 1 unfinished

        ck.finish(store, agents={kit.REF: agent})  # a new worker, here

        row = store.get_run(run)
        assert row is not None and row.status == "done", (row, (tmp_path / "worker.log").read_text())
        assert len(server.requests) == 2, "the journaled request of turn 1 was sent again"
        assert server.requests[0].body != server.requests[1].body
        lines = kit.read_side(side)
        assert [(x["tool"], x["pid"]) for x in lines] == [("book", killed), ("notify", os.getpid())]
        events = store.events(run)
        assert [e.step for e in events if e.kind == "model.called"] == [1, 2]
        assert [e.kind for e in events].count("effect.done") == 2
        intents = {e.payload["tool"]: e.id for e in events if e.kind == "effect.intent"}
        assert lines[1]["key"] == intents["notify"], "the retry used the effect's own key"
        # Turn 2's request holds both results of turn 1: the replayed one and the retried one.
        told = [m for m in server.requests[1].body["messages"] if m["role"] == "tool"]
        assert [m["content"] for m in told] == ["booked Oslo", "notified about Oslo"]
        assert verify_store(store).ok
        store.close()
