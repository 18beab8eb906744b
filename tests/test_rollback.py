"""Rollback: the workspace and the state go back to step K, byte for byte, in a new epoch."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether import Done, StepAgent, Tether, Worker, start_run, tool, verify_store
from tether.cli.app import app
from tether.errors import UsageError
from tether.provenance import rollback as rb
from tether.runtime.operator import run_state, send_command
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools
from tether.tools.files import fs_append, fs_mkdir, fs_write

OUTBOX: list[str] = []


@tool(effect="irreversible")
def announce(text: str) -> str:
    """Tell the world (irreversible)."""
    OUTBOX.append(text)
    return "announced"


async def _writer(ctx: Any, state: dict[str, Any]) -> Any:
    n = state.get("n", 0) + 1
    state["n"] = n
    if n == 1:
        await ctx.call(fs_mkdir, path="notes")
    await ctx.call(fs_write, path=f"notes/step-{n}.txt", content=f"step {n}\n")
    await ctx.call(fs_append, path="log.txt", content=f"line {n}\n")
    if n == 4 and state.get("loud"):
        await ctx.call(announce, text="step 4 reached")
    return Done() if n >= 5 else None


WRITER = StepAgent(_writer, name="writer", tools=[fs_mkdir, fs_write, fs_append, announce])
AGENTS = {"writer": WRITER}


def snapshot(root: Path) -> dict[str, tuple[bytes | None, int]]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None,
                                       p.stat().st_mode)
            for p in sorted(root.rglob("*"))}


def drive(store: SQLiteStore) -> None:
    asyncio.run(Worker(store, agents=AGENTS, poll_interval=0.01).run(until_idle=True))


def start(store: SQLiteStore, ws: Path, **state: Any) -> str:
    return start_run(store, WRITER, agent_ref="writer", goal="write", workspace=ws,
                     state=dict(state), pause_points={"every_steps": 2})


def test_rollback_restores_files_and_state_then_the_run_goes_on(store: SQLiteStore,
                                                                tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    run = start(store, ws)
    drive(store)  # pauses after step 2 (pause point)
    at_two = snapshot(ws)
    _, _, state_two = run_state(store, run, 2)
    for _ in range(2):
        send_command(store, run, "resume", who="human:t")
        drive(store)
    assert store.get_run(run).status == "done"  # type: ignore[union-attr]
    assert snapshot(ws) != at_two

    p = rb.plan(store, run, 2)
    assert [u.effect.step for u in p.undo] == [5, 5, 4, 4, 3, 3]  # newest first
    assert not p.irreversible and not p.in_doubt
    rb.rollback(store, run, 2, who="human:ops")
    assert snapshot(ws) == at_two
    row = store.get_run(run)
    assert row is not None and (row.epoch, row.step, row.status) == (1, 2, "paused")
    assert run_state(store, run)[2] == state_two
    kinds = [e.kind for e in store.events(run)]
    assert kinds.count("effect.undone") == 6 and kinds.count("rollback") == 1
    assert {e.status for e in store.effects(run=run) if e.step > 2} == {"undone"}
    assert verify_store(store).ok
    # Rolling back again changes nothing more: every undo already took effect once.
    rb.rollback(store, run, 2, who="human:ops")
    assert snapshot(ws) == at_two and [e.kind for e in store.events(run)].count(
        "effect.undone") == 6

    send_command(store, run, "resume", who="human:t")
    drive(store)
    send_command(store, run, "resume", who="human:t")
    drive(store)
    row = store.get_run(run)
    assert row is not None and row.status == "done" and row.epoch == 1
    assert (ws / "log.txt").read_text() == "".join(f"line {n}\n" for n in range(1, 6))
    assert verify_store(store).ok


def test_irreversible_effects_and_foreign_changes_need_consent(store: SQLiteStore,
                                                               tmp_path: Path) -> None:
    OUTBOX.clear()
    ws = tmp_path / "ws"
    allow_tools(store, "announce")  # about rollback's consent, not the policy's
    run = start(store, ws, loud=True)
    for _ in range(3):
        drive(store)
        send_command(store, run, "resume", who="human:t")
    drive(store)
    assert OUTBOX == ["step 4 reached"]
    with pytest.raises(UsageError, match="accept-irreversible"):
        rb.rollback(store, run, 2, who="human:ops")
    (ws / "notes" / "step-5.txt").write_text("edited by a person\n")
    with pytest.raises(UsageError, match="changed since effect"):
        rb.rollback(store, run, 2, who="human:ops", accept_irreversible=True)
    assert (ws / "notes" / "step-5.txt").read_text() == "edited by a person\n"  # untouched
    p = rb.rollback(store, run, 2, who="human:ops", accept_irreversible=True, force=True)
    assert [e.tool for e in p.irreversible] == ["announce"]
    assert not (ws / "notes" / "step-5.txt").exists() and OUTBOX == ["step 4 reached"]
    left = next(e for e in store.events(run) if e.kind == "rollback").payload["left"]
    assert left == [p.irreversible[0].id]


def test_bad_input_and_the_plan(store: SQLiteStore, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    run = start(store, ws)
    drive(store)
    with pytest.raises(UsageError, match="in the future"):
        rb.plan(store, run, 9)
    with pytest.raises(UsageError, match=">= 0"):
        rb.plan(store, run, -1)
    runner = CliRunner()
    db = str(store.path)
    before = snapshot(ws)
    res = runner.invoke(app, ["--store", db, "rollback", run, "--to", "1", "--plan"])
    assert res.exit_code == 0, res.output
    assert "undo    step 2 fs_append" in res.output and "restore the state of step 1" in res.output
    assert snapshot(ws) == before and store.get_run(run).epoch == 0  # type: ignore[union-attr]
    res = runner.invoke(app, ["--store", db, "rollback", "nope", "--to", "1"])
    assert res.exit_code == 2 and "no run 'nope'" in res.output
    res = runner.invoke(app, ["--store", db, "rollback", run, "--to", "1"])
    assert res.exit_code == 0, res.output
    assert store.get_run(run).epoch == 1  # type: ignore[union-attr]


@pytest.mark.crash
def test_kill_9_during_a_rollback_then_resume_it(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests import sample_agents
    repo = Path(__file__).resolve().parents[1]
    db, ws, marker = tmp_path / "t.db", tmp_path / "ws", tmp_path / "marker"
    store = SQLiteStore(db)
    run = start_run(store, sample_agents.putter, agent_ref="tests.sample_agents:putter",
                    goal="put", workspace=ws, state={})
    asyncio.run(Worker(store).run(until_idle=True))
    assert sorted(p.name for p in ws.iterdir()) == ["f1.txt", "f2.txt", "f3.txt"]
    exe = Path(sys.executable).with_name("tether")
    env = {**os.environ, "TETHER_TEST_MARKER": str(marker), "PYTHONPATH": str(repo)}
    proc = subprocess.Popen([str(exe), "--store", str(db), "rollback", run, "--to", "0"],
                            env=env, cwd=repo)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline, "the rollback never reached its first undo"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert store.get_run(run).epoch == 0  # type: ignore[union-attr]  # not finished
    res = send_command(store, run, "resume", who="human:ops")
    assert res.outcome.startswith("ignored: a rollback to step 0 is unfinished")
    # Run again at once: the dead process's lease is taken over, the rollback resumes.
    rb.rollback(store, run, 0, who="human:ops", tools={"slow_undo": sample_agents.slow_undo,
                                                       "put": sample_agents.put})
    assert [p.read_text() for p in sorted(ws.iterdir())] == ["", "", ""]
    row = store.get_run(run)
    assert row is not None and (row.epoch, row.step) == (1, 0)
    undone = [e.payload["effect"] for e in store.events(run) if e.kind == "effect.undone"]
    assert len(undone) == len(set(undone)) == 3  # each undo recorded exactly once
    assert verify_store(store).ok
    store.close()


def test_fork_at_a_step_with_edited_state_in_a_rewound_copy(store: SQLiteStore,
                                                             tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    run = start(store, ws)
    drive(store)
    at_two = snapshot(ws)
    for _ in range(2):
        send_command(store, run, "resume", who="human:t")
        drive(store)
    parent_files = snapshot(ws)
    child = Tether(store, agents=AGENTS, who="human:ops").fork(run, 2, edits={"hint": "be brief"}).id
    row = store.get_run(child)
    assert row is not None and row.parent == run
    assert row.spec["forked_from"]["step"] == 2 and row.spec["forked_from"]["epoch"] == 0
    child_ws = Path(row.spec["workspace"])
    assert child_ws != ws and snapshot(child_ws) == at_two
    _, _, state = run_state(store, child)
    assert state["n"] == 2 and state["hint"] == "be brief"
    asyncio.run(Worker(store, agents=AGENTS).run(until_idle=True))
    assert snapshot(ws) == parent_files  # the parent's workspace is untouched
    assert (child_ws / "notes" / "step-3.txt").exists()
    assert verify_store(store).ok
    res = CliRunner().invoke(app, ["--store", str(store.path), "fork", run, "--at", "1",
                                   "--set", "hint=not json"])
    assert res.exit_code == 2 and "--set hint is not valid JSON" in res.output


UNDO_CALLS: list[int] = []


@tool(effect="reversible")
def refund(amount: int) -> str:
    """Give money back (not idempotent: twice would refund twice). Fails on its first call."""
    UNDO_CALLS.append(amount)
    if len(UNDO_CALLS) == 1:
        raise RuntimeError("the payment service hung up")
    return f"refunded {amount}"


@tool(effect="reversible")
def pay(amount: int) -> str:
    """Take money; undone by ``refund``."""
    from tether.tools import register_undo
    register_undo(refund, amount=amount)
    return f"paid {amount}"


async def _payer(ctx: Any, state: dict[str, Any]) -> Any:
    state["n"] = state.get("n", 0) + 1
    await ctx.call(pay, amount=state["n"])
    return Done() if state["n"] >= 2 else None


@pytest.mark.parametrize("happened", [True, False])
def test_an_interrupted_undo_that_is_not_idempotent_is_settled_by_an_operator(
        tmp_path: Path, happened: bool) -> None:
    UNDO_CALLS.clear()
    agent = StepAgent(_payer, name="payer", tools=[pay, refund])
    store = SQLiteStore(tmp_path / "t.db")
    run = start_run(store, agent, agent_ref="payer", goal="pay")
    asyncio.run(Worker(store, agents={"payer": agent}).run(until_idle=True))
    tools = {"refund": refund}
    with pytest.raises(UsageError, match=r"with refund failed: RuntimeError: the payment "
                                          r"service hung up.*tether resolve"):
        rb.rollback(store, run, 1, who="human:ops", tools=tools)
    assert [e.kind for e in store.events(run)].count("effect.undo_failed") == 1
    eff = next(e for e in store.effects(run=run) if e.step == 2)
    # The undo was started (write-ahead) and may or may not have happened: never guessed.
    with pytest.raises(UsageError, match=f"tether resolve {eff.id} --undone"):
        rb.rollback(store, run, 1, who="human:ops", tools=tools)
    assert store.get_run(run).status == "paused"  # type: ignore[union-attr]
    out = CliRunner().invoke(app, ["--store", str(tmp_path / "t.db"), "resolve", eff.id,
                                   "--undone" if happened else "--not-undone"])
    assert out.exit_code == 0, out.output
    rb.rollback(store, run, 1, who="human:ops", tools=tools)
    # Settled as done: not run again. Settled as not done: run again, once.
    assert len(UNDO_CALLS) == (1 if happened else 2)
    assert store.effect(eff.id).status == "undone"  # type: ignore[union-attr]
    kinds = [e.kind for e in store.events(run)]
    assert kinds.count("effect.undo_settled") == 1
    assert kinds.count("effect.undone") == (0 if happened else 1)
    row = store.get_run(run)
    assert row is not None and row.epoch == 1 and row.step == 1
    out = CliRunner().invoke(app, ["--store", str(tmp_path / "t.db"), "resolve", eff.id,
                                   "--undone"])
    assert out.exit_code == 2 and "no unfinished undo" in out.output
    assert verify_store(store).ok


def test_history_after_rolling_back_past_an_earlier_rollback(tmp_path: Path) -> None:
    # e0 runs 1..5; back to 4 (e1 starts at 4) and one more step; back to 2 (e2 starts at
    # 2): epoch 1 is abandoned whole, and steps 3.. of the history are epoch 2's.
    from tether.history import lineage, ran_in
    store = SQLiteStore(tmp_path / "t.db")
    agent = StepAgent(_writer, name="writer", tools=[fs_mkdir, fs_write, fs_append, announce])
    ws = tmp_path / "ws"
    run = start_run(store, agent, agent_ref="writer", goal="g", workspace=ws)
    drive = lambda: asyncio.run(Worker(store, agents={"writer": agent}).run(until_idle=True))  # noqa: E731
    drive()
    rb.rollback(store, run, 4, who="human:ops")
    send_command(store, run, "resume", who="human:ops")
    drive()
    rb.rollback(store, run, 2, who="human:ops")
    row = store.get_run(run)
    assert row is not None and row.epoch == 2
    segs = [(s.epoch, s.start, s.end) for s in lineage(store, row)]
    assert segs == [(0, 0, 2), (2, 2, None)]
    assert ran_in(lineage(store, row), 2) == 0 and ran_in(lineage(store, row), 3) == 2
    send_command(store, run, "resume", who="human:ops")
    drive()
    row = store.get_run(run)
    assert row is not None
    assert (ws / "log.txt").read_text() == "".join(f"line {n}\n" for n in range(1, 6))
    # Back to 1 from epoch 3's history: only epoch 0's step 2 and epoch 2's 3..5 are undone.
    p = rb.plan(store, run, 1)
    assert sorted((u.effect.epoch, u.effect.step) for u in p.undo) == [
        (0, 2), (0, 2), (2, 3), (2, 3), (2, 4), (2, 4), (2, 5), (2, 5)]
    rb.rollback(store, run, 1, who="human:ops")
    assert (ws / "log.txt").read_text() == "line 1\n"
    assert sorted(p.name for p in (ws / "notes").iterdir()) == ["step-1.txt"]
    assert verify_store(store).ok
