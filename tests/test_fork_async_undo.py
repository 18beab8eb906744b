"""A fork rewinds its workspace copy with the parent's undos: an async undo is awaited
(it used to be called, its coroutine dropped, and the effect still listed as undone),
and one that fails stops the fork with one clear error, leaving no half-rewound copy."""

from __future__ import annotations

import asyncio
import gc
import warnings
from pathlib import Path
from typing import Any

import pytest

from tether import Done, StepAgent, Tether, Worker, start_run, tool
from tether.errors import UsageError
from tether.runtime.operator import run_state
from tether.store.sqlite import SQLiteStore
from tether.tools.base import current, register_undo

BROKEN: set[str] = set()
"""Stamps whose undo fails (the service it calls is down)."""


@tool(effect="reversible")
async def unstamp(name: str) -> str:
    """Remove a stamp file from the workspace (the undo of :func:`stamp`)."""
    await asyncio.sleep(0)  # a real suspension point: only an awaited undo gets past it
    if name in BROKEN:
        raise ConnectionError(f"the stamp service is down; {name} stays")
    root = current().workspace
    assert root is not None
    (root / name).unlink()
    return f"removed {name}"


@tool(effect="reversible")
async def stamp(name: str) -> str:
    """Write a stamp file into the workspace; undone by :func:`unstamp`."""
    root = current().workspace
    assert root is not None
    (root / name).write_text("stamped\n")
    register_undo(unstamp, name=name)
    return f"wrote {name}"


async def _stamper(ctx: Any, state: dict[str, Any]) -> Any:
    n = state["n"] = state.get("n", 0) + 1
    await ctx.call(stamp, name=f"stamp-{n}.txt")
    return Done() if n >= 3 else None


STAMPER = StepAgent(_stamper, name="stamper", tools=[stamp, unstamp])
AGENTS = {"stamper": STAMPER}


def test_a_fork_awaits_an_async_undo_on_its_copy(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "f.db")
    try:
        ws = tmp_path / "ws"
        run = start_run(store, STAMPER, agent_ref="stamper", goal="g", workspace=ws)
        asyncio.run(Worker(store, agents=AGENTS).run(until_idle=True))
        assert sorted(p.name for p in ws.iterdir()) == [f"stamp-{n}.txt" for n in (1, 2, 3)]
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            child = Tether(store, agents=AGENTS, who="human:ops").fork(run, 1).id
            gc.collect()  # a dropped coroutine warns when it is collected
        assert not [w for w in seen if "never awaited" in str(w.message)], seen
        row = store.get_run(child)
        assert row is not None
        copy = Path(row.spec["workspace"])
        # The undos of steps 3 and 2 ran on the copy; the parent's files are untouched.
        assert sorted(p.name for p in copy.iterdir()) == ["stamp-1.txt"]
        assert sorted(p.name for p in ws.iterdir()) == [f"stamp-{n}.txt" for n in (1, 2, 3)]
        undone = row.spec["forked_from"]["workspace_undone"]
        assert len(undone) == 2
        assert run_state(store, child)[2]["n"] == 1
    finally:
        store.close()


def test_a_failing_undo_stops_the_fork_cleanly_and_it_can_be_tried_again(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "f.db")
    try:
        ws = tmp_path / "ws"
        run = start_run(store, STAMPER, agent_ref="stamper", goal="g", workspace=ws)
        asyncio.run(Worker(store, agents=AGENTS).run(until_idle=True))
        runs = len(store.list_runs())
        BROKEN.add("stamp-2.txt")
        try:
            with pytest.raises(UsageError, match=r"undo of effect \w+ \(stamp\) with unstamp "
                               r"failed: ConnectionError: the stamp service is down"):
                Tether(store, agents=AGENTS, who="human:ops").fork(run, 1)
        finally:
            BROKEN.clear()
        assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["ws"]  # no half copy
        assert len(store.list_runs()) == runs  # and no child
        # The cause fixed, it simply works.
        child = Tether(store, agents=AGENTS, who="human:ops").fork(run, 1).id
        row = store.get_run(child)
        assert row is not None
        assert sorted(p.name for p in Path(row.spec["workspace"]).iterdir()) == ["stamp-1.txt"]
    finally:
        store.close()


def test_a_rollback_awaits_an_async_undo(tmp_path: Path) -> None:
    # The same path as the fork's rewind (tether.tools.running.run_tool_blocking), on the
    # run's own workspace, journaled.
    store = SQLiteStore(tmp_path / "r.db")
    try:
        ws = tmp_path / "ws"
        run = start_run(store, STAMPER, agent_ref="stamper", goal="g", workspace=ws)
        asyncio.run(Worker(store, agents=AGENTS).run(until_idle=True))
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            Tether(store, agents=AGENTS, who="human:ops").rollback(run, 1)
            gc.collect()
        assert not [w for w in seen if "never awaited" in str(w.message)], seen
        assert sorted(p.name for p in ws.iterdir()) == ["stamp-1.txt"]
        undone = [e.payload["result"] for e in store.events(run) if e.kind == "effect.undone"]
        assert undone == ["removed stamp-3.txt", "removed stamp-2.txt"]
    finally:
        store.close()
