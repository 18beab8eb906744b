"""The operations façade (``tether.Tether``) and ``tether checkpoints``, on a real store.

A run writes a file a step; it is rolled back to step 1 (a new epoch) and driven
on again, so its checkpoints include an abandoned branch.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether import Done, NotFound, StepAgent, Tether, UsageError, Worker, start_run
from tether.cli.app import app
from tether.store.sqlite import SQLiteStore
from tether.tools.files import fs_write

runner = CliRunner()


async def _writer(ctx: Any, state: dict[str, Any]) -> Any:
    n = state["n"] = state.get("n", 0) + 1
    await ctx.call(fs_write, path=f"step-{n}.txt", content=f"step {n}\n")
    return Done(n) if n >= 3 else None


WRITER = StepAgent(_writer, name="writer", tools=[fs_write])
AGENTS = {"writer": WRITER}


@pytest.fixture
def rolled_back(tmp_path: Path) -> tuple[Path, str]:
    """A store with one run: three steps, rolled back to step 1, then run to the end."""
    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    try:
        run = start_run(store, WRITER, agent_ref="writer", goal="g", name="w",
                        workspace=tmp_path / "ws")
        asyncio.run(Worker(store, agents=AGENTS).run(until_idle=True))
        ops = Tether(store, agents=AGENTS, who="human:ada")
        ops.rollback(run, 1)
        ops.resume(run)
        asyncio.run(Worker(store, agents=AGENTS).run(until_idle=True))
    finally:
        store.close()
    return db, run


def test_reads_give_state_checkpoints_and_events_of_the_current_history(
        rolled_back: tuple[Path, str]) -> None:
    db, run = rolled_back
    store = SQLiteStore(db, create=False)
    try:
        ops = Tether(store)
        assert ops.run("w").id == run and ops.run(run).epoch == 1
        assert [(c.epoch, c.step, c.current) for c in ops.checkpoints("w")] == [
            (0, 0, True), (0, 1, False), (0, 2, False), (0, 3, False),
            (1, 1, True), (1, 2, True), (1, 3, True)]
        first = ops.state("w", 0)
        assert (first.step, first.state.get("n")) == (0, None)
        assert ops.state("w").state["n"] == 3 and ops.state("w", 2).step == 2
        rolled = ops.events("w", kind="rollback")
        assert len(rolled) == 1 and rolled[0].payload["to_step"] == 1
        with pytest.raises(NotFound, match="no run 'nope'"):
            ops.checkpoints("nope")
        with pytest.raises(UsageError, match="step 9 is in the future"):
            ops.state("w", 9)
    finally:
        store.close()


def test_tether_checkpoints_lists_them_readably_and_as_json(
        rolled_back: tuple[Path, str]) -> None:
    db, run = rolled_back
    res = runner.invoke(app, ["--store", str(db), "checkpoints", "w"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == (f"checkpoints of w ({run}): 4 in its current history (epoch 1, step 3), "
                        "3 abandoned by rollbacks")
    assert lines[1].split() == ["epoch", "step", "kind", "bytes", "history"]
    rows = [line.split() for line in lines[2:]]
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [
        ("0", "0", "key", "current"), ("0", "1", "delta", "abandoned"),
        ("0", "2", "delta", "abandoned"), ("0", "3", "delta", "abandoned"),
        ("1", "1", "key", "current"), ("1", "2", "delta", "current"),
        ("1", "3", "delta", "current")]
    res = runner.invoke(app, ["--store", str(db), "checkpoints", "w", "--json"])
    assert res.exit_code == 0, res.output
    got = [json.loads(line) for line in res.output.splitlines()]
    assert [(g["run"], g["epoch"], g["step"], g["current"]) for g in got] == [
        (run, r[0], r[1], r[2]) for r in ((0, 0, True), (0, 1, False), (0, 2, False),
                                          (0, 3, False), (1, 1, True), (1, 2, True),
                                          (1, 3, True))]
    assert all(g["bytes"] > 0 and g["kind"] in ("key", "delta") for g in got)


def test_tether_checkpoints_of_an_unknown_run_is_one_clear_line(
        rolled_back: tuple[Path, str]) -> None:
    db, _ = rolled_back
    res = runner.invoke(app, ["--store", str(db), "checkpoints", "nope"])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        f"error: no run 'nope' in sqlite:///{db}; list runs with `tether runs`"]
