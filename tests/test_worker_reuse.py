"""A Worker object can run again: each ``run()`` drives what is runnable then and
returns its own stats; running one Worker twice at once is refused clearly; and a
run whose task is cancelled while its lease is released still leaves the worker."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tether import Done, StepAgent, Worker, start_run
from tether.errors import UsageError
from tether.store.sqlite import SQLiteStore


def _step(ctx: Any, state: dict[str, Any]) -> Any:
    state["n"] = state.get("n", 0) + 1
    return Done({"n": state["n"]}) if state["n"] >= 2 else None


AGENT = StepAgent(_step, name="twice")


def test_a_worker_runs_again_with_fresh_stats(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "w.db")
    try:
        w = Worker(store, agents={"twice": AGENT})
        first = start_run(store, AGENT, agent_ref="twice", goal="g")
        stats1 = asyncio.run(w.run(until_idle=True))
        assert (stats1.runs_driven, stats1.finished) == (1, {"done": 1})
        second = [start_run(store, AGENT, agent_ref="twice", goal="g") for _ in range(2)]
        stats2 = asyncio.run(w.run(until_idle=True))  # a new event loop, as the CLI does
        assert (stats2.runs_driven, stats2.finished) == (2, {"done": 2})
        # The drive log is per run() too: only this run()'s runs, not the first one's.
        assert set(stats2.final) == set(second) and stats2.steps == 2 * stats1.steps > 0
        for rid in (first, *second):
            row = store.get_run(rid)
            assert row is not None and row.status == "done", rid
        assert (asyncio.run(w.run(until_idle=True)).runs_driven) == 0  # nothing left
    finally:
        store.close()


def test_running_one_worker_twice_at_once_is_refused(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "w.db")
    try:
        w = Worker(store, agents={"twice": AGENT})

        async def both() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(w.run(stop=stop))
            await asyncio.sleep(0)  # the first run() is under way
            with pytest.raises(UsageError, match="already running"):
                await w.run(until_idle=True)
            stop.set()
            await task

        asyncio.run(both())
        start_run(store, AGENT, agent_ref="twice", goal="g")
        assert asyncio.run(w.run(until_idle=True)).finished == {"done": 1}  # still usable
    finally:
        store.close()


class _SlowRelease(SQLiteStore):
    """A real store whose first release lingers until the worker's heartbeat has renewed
    the leases once more: the heartbeat then finds that lease gone while its run is still
    in the worker's hands (a slow fsync under load does the same, by chance)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.releasing = threading.Event()
        self.renewed_after = threading.Event()

    def release(self, run: str, owner: str, token: int) -> None:
        super().release(run, owner, token)
        if not self.releasing.is_set():
            self.releasing.set()
            self.renewed_after.wait(5)  # a barrier, with a bound in case no heartbeat comes

    def renew(self, leases: dict[str, int], owner: str, ttl: float, now: float) -> list[str]:
        lost = super().renew(leases, owner, ttl, now)
        if self.releasing.is_set():
            self.renewed_after.set()
        return lost


def test_a_heartbeat_during_a_release_does_not_strand_the_run(tmp_path: Path) -> None:
    # The heartbeat saw the released lease as lost and cancelled the run's task inside its
    # release: the task died before leaving `active`, and the worker waited for it forever.
    store = _SlowRelease(tmp_path / "w.db")
    try:
        rid = start_run(store, AGENT, agent_ref="twice", goal="g")
        w = Worker(store, agents={"twice": AGENT}, lease_ttl=0.3)  # a heartbeat every 0.1 s

        async def drive() -> Any:
            return await asyncio.wait_for(w.run(until_idle=True), 20)  # a hang, not a speed

        stats = asyncio.run(drive())
        assert store.renewed_after.is_set()  # the heartbeat did come during the release
        assert stats.finished == {"done": 1} and not w.active
        row = store.get_run(rid)
        assert row is not None and row.status == "done"
    finally:
        store.close()


def test_a_run_finished_elsewhere_between_listing_and_lease_is_skipped_and_let_go(
        tmp_path: Path) -> None:
    """Two workers list the same running run; one finishes it and lets it go; the other's
    lease then lands on a done run: it must not drive it, nor count it as finished by it
    (the benchmark saw 5 runs 'done' for 4), and must let the lease go at once."""
    from tether.runtime.loading import SkipRun
    store = SQLiteStore(tmp_path / "w.db")
    try:
        rid = start_run(store, AGENT, agent_ref="twice", goal="g")
        asyncio.run(Worker(store, agents={"twice": AGENT}).run(until_idle=True))
        row = store.get_run(rid)
        assert row is not None and row.status == "done"
        late = Worker(store, agents={"twice": AGENT})
        token = store.acquire(rid, late.owner, 30.0, time.time())
        assert token is not None
        taken = late.loader._taken(rid, token, (), {})
        assert taken.executor is None and isinstance(taken.error, SkipRun)
        assert "is done already" in str(taken.error)
        assert store.acquire(rid, "worker:other", 30.0, time.time()) is not None, "still held"
    finally:
        store.close()
