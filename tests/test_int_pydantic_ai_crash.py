"""A PydanticAI agent's worker SIGKILLed mid-step, after its model call and an effect were
journaled: a new worker finishes the run without asking the model again or repeating
the effect. Real subprocess, real SIGKILL, real loopback HTTP server, real SQLite file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests import crashkit as ck
from tests import pydantic_ai_kit as kit
from tether import start_run, verify_store
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools
from tether.testing.openai_server import FakeChatServer, completion, tool_call

pytestmark = pytest.mark.crash


def journaled(store: SQLiteStore, run: str) -> bool:
    """Step 1's model call and booking are durable (the next effect's write-ahead intent
    commits what came before it)."""
    kinds = [(e.step, e.kind) for e in store.events(run)]
    return (1, "model.called") in kinds and (1, "effect.done") in kinds


def test_a_killed_worker_neither_asks_the_model_again_nor_repeats_the_effect(
        tmp_path: Path) -> None:
    db, side, blocked = tmp_path / "crash.db", tmp_path / "side.log", tmp_path / "blocked"
    turn = [tool_call("b1", "book", '{"city": "Oslo", "nights": 1}'),
            tool_call("w1", "wait", '{"tag": "confirmation"}')]
    with FakeChatServer([completion(tool_calls=turn), completion("Booked Oslo.")]) as srv:
        store = SQLiteStore(db)
        try:
            allow_tools(store, "book", "wait")
            run = start_run(store, kit.TRIP, agent_ref=kit.REF, goal="Book Oslo, then wait")
            env = {**os.environ, "PYTHONPATH": str(ck.ROOT), "PAI_URL": srv.base_url,
                   "PAI_SIDE": str(side), "PAI_BLOCK": str(blocked)}
            log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - closed below
            proc = ck.subprocess.Popen(
                [sys.executable, "-m", "tests.pydantic_ai_kit", str(db), "--ready",
                 str(tmp_path / "ready")], cwd=ck.ROOT, env=env, stdout=log,
                stderr=ck.subprocess.STDOUT)
            try:
                # Killed inside the step: its model call and the booking are journaled,
                # the second tool of the same turn is still running.
                ck.wait_for(lambda: blocked.exists() and journaled(store, run), 60,
                            "the worker to book and block")
            finally:
                proc.kill()  # SIGKILL
                proc.wait(timeout=30)
                log.close()
            assert len(srv.requests) == 1
            assert ck.status_of(store, run) == "running"  # the kill left it mid-step
            ck.finish(store, agents={kit.REF: kit.trip(srv.base_url)})
            row = store.get_run(run)
            assert row is not None and row.status == "done", (row, (tmp_path / "worker.log")
                                                              .read_text()[-2000:])
            # The step re-ran: its model call came from the journal (one request for it),
            # the booking was not made again, the unfinished wait (idempotent) was retried
            # with its key in the new worker.
            assert len(srv.requests) == 2
            lines = side.read_text(encoding="utf-8").splitlines()
            assert len(lines) == 1 and lines[0].startswith("book Oslo 1 ")
            assert int(lines[0].split()[-1]) == proc.pid
            told = [m for m in srv.requests[1].body["messages"] if m["role"] == "tool"]
            assert [m["content"] for m in told] == ["booked 1 nights in Oslo",
                                                    "waited for confirmation"]
            assert [e.step for e in store.events(run) if e.kind == "model.called"] == [1, 2]
            assert verify_store(store).ok
        finally:
            store.close()
