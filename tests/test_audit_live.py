"""verify_store on a live store: a worker commits while the audit reads.

The audit reads a run's events, then its checkpoints, then (after every run) the
batch chain. Without one snapshot for all of it, a step committed between those
reads looked like tampering: its checkpoint "no event journals it", its batch
"names a missing event" (seen once in tests/test_crash.py under load, while the
new owner took the runs over during the check). The commit here comes through a
second store on the same file, as another process's would, at the moment each
finding needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tether.audit import verify_store
from tether.core.checkpoint import CheckpointEncoder, checkpoint_info
from tether.core.ids import UlidSource
from tether.runtime.agent import StepAgent
from tether.runtime.journal import RunJournal
from tether.runtime.runs import start_run
from tether.store.sqlite import SQLiteStore


def commit_step(store: SQLiteStore, run: str) -> None:
    """One step of ``run`` as the executor commits it: events, checkpoint and row at once."""
    row = store.get_run(run)
    assert row is not None
    fence = store.acquire(run, "worker-b", 60, time.time())
    j = RunJournal(store, row, fence, UlidSource(time.time), time.time)
    step = row.step + 1
    j.append("step.started", {}, step=step)
    ck = CheckpointEncoder(run=run).encode(step, {"n": step}, force_key=True)
    j.checkpoint(ck)
    j.append("checkpoint", checkpoint_info(ck), step=step)
    j.append("step.finished", {"checkpoint": checkpoint_info(ck)}, step=step)
    j.flush_sync()
    store.release(run, "worker-b", fence or 0)


class _Audited(SQLiteStore):
    """The store the audit reads: calls ``before_checkpoints`` once, as the audit starts on
    a run's checkpoints (its events read already)."""

    before_checkpoints: Callable[[str], None] | None = None

    def checkpoint_bodies(self, run: str) -> Iterator[tuple[int, int, str, bytes]]:
        hook, self.before_checkpoints = self.before_checkpoints, None
        if hook is not None:
            hook(run)
        return super().checkpoint_bodies(run)


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[_Audited, SQLiteStore, list[str]]]:
    path = tmp_path / "live.db"
    worker = SQLiteStore(path)
    agent = StepAgent(lambda ctx, state: None, name="live")
    runs = sorted(start_run(worker, agent, agent_ref="tests:live", goal=f"goal {i}")
                  for i in range(2))
    for r in runs:
        commit_step(worker, r)
    audited = _Audited(path)
    yield audited, worker, runs
    audited.close()
    worker.close()


def test_a_commit_between_a_runs_events_and_its_checkpoints_is_not_a_finding(
        stores: tuple[_Audited, SQLiteStore, list[str]]) -> None:
    audited, worker, _ = stores
    audited.before_checkpoints = lambda run: commit_step(worker, run)
    rep = verify_store(audited)
    assert rep.ok, rep.problems
    assert audited.before_checkpoints is None, "the commit was made during the audit"
    after = verify_store(audited)  # the next audit sees the step, and it verifies
    assert after.ok and after.events == rep.events + 3, after.problems


def test_a_commit_after_a_run_was_read_is_not_a_finding(
        stores: tuple[_Audited, SQLiteStore, list[str]]) -> None:
    audited, worker, runs = stores
    done: list[int] = []

    def progress(n: int, total: int) -> None:
        if n == 1:  # the first run is read; the batches are read after the last one
            commit_step(worker, runs[0])
            done.append(n)

    rep = verify_store(audited, progress=progress)
    assert done == [1]
    assert rep.ok, rep.problems
    assert verify_store(audited).batches == rep.batches + 1
