"""Sync step functions run on the worker's own threads: however many block on their ctx
calls at once, the tools those calls run still get threads (no deadlock)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from tether import Done, StepAgent, Worker, start_run, tool
from tether.store.sqlite import SQLiteStore
from tether.tools.files import fs_write


@tool(effect="read")
def nap(seconds: float) -> str:
    """Sleep a little in a thread, like a blocking client call."""
    time.sleep(seconds)
    return "ok"


def _sync_step(ctx: Any, state: dict[str, Any]) -> Any:
    ctx.call(nap, seconds=0.05)
    ctx.call(fs_write, path=f"f{state['i']}.txt", content="x")
    return Done()


SYNC = StepAgent(_sync_step, name="sync", tools=[nap, fs_write])


def test_more_sync_steps_than_default_threads_all_finish(tmp_path: Path) -> None:
    # The loop's default pool has cpu+4 threads; three times as many sync steps, each
    # blocked on a ctx call whose tool needs a thread, used to hang the worker for good.
    runs = 3 * ((os.cpu_count() or 1) + 4)
    store = SQLiteStore(tmp_path / "t.db")
    ids = [start_run(store, SYNC, agent_ref="sync", goal="g", workspace=tmp_path / "ws",
                     state={"i": i}) for i in range(runs)]

    async def drive() -> None:
        await asyncio.wait_for(Worker(store, agents={"sync": SYNC}).run(until_idle=True), 60)

    asyncio.run(drive())
    assert {store.get_run(r).status for r in ids} == {"done"}  # type: ignore[union-attr]
    assert len(list((tmp_path / "ws").iterdir())) == runs
    store.close()
