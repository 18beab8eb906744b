"""tether's side: the growing-conversation loop through the real Worker and SQLiteStore.

Every run goes through the public path an operator's worker takes: a run
started with :func:`tether.runtime.runs.start_run`, driven by
:class:`tether.runtime.worker.Worker` (leases, journal, group committer) on a
real file at ``synchronous=FULL``.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.workload import append_message, db_bytes, fresh_db, remove_db
from tether.core.checkpoint import restore
from tether.runtime.agent import StepAgent
from tether.runtime.outcome import Continue, Done
from tether.runtime.runs import start_run
from tether.runtime.worker import Worker
from tether.store.sqlite import SQLiteStore

AGENT_REF = "bench:grow"


def grow_agent(n: int, stamps: list[tuple[float, float]] | None = None) -> StepAgent:
    """A step agent that appends one message per step and is done after ``n``.

    ``stamps``, when given, receives ``(perf_counter(), thread_time())`` at the start of
    every step, on the event loop's thread: the gaps between them are the per-step wall
    and event-loop CPU times within the run (see :func:`tenths`).
    """

    async def grow(ctx: Any, state: dict[str, Any]) -> Continue | Done:
        if stamps is not None:
            stamps.append((time.perf_counter(), time.thread_time()))
        return Done() if append_message(state, n) else Continue()

    return StepAgent(grow, name="grow", init=lambda goal: {"messages": []})


def bare_step_seconds(n: int) -> float:
    """Seconds per call of the bare step body (the ~0 cost the overhead excludes)."""
    state: dict[str, Any] = {"messages": []}
    t0 = time.perf_counter()
    while not append_message(state, n):
        pass
    return (time.perf_counter() - t0) / n


@dataclass(slots=True)
class LoopSample:
    """One run of the loop at one N."""

    n: int
    seconds_per_step: float
    bytes_before: int
    bytes_after: int
    load_seconds: list[float] = field(default_factory=list)
    list_seconds: list[float] = field(default_factory=list)
    tenths: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    """Mean seconds per step over the run's first and last tenth of steps, start to start:
    (wall first, wall last, event-loop CPU first, event-loop CPU last). With checkpoints
    that cost what changed, last and first agree."""

    @property
    def bytes_per_step(self) -> float:
        return (self.bytes_after - self.bytes_before) / self.n


def _start(path: Path, agent: StepAgent, runs: int) -> list[str]:
    store = SQLiteStore(path, synchronous="FULL")
    try:
        return [start_run(store, agent, agent_ref=AGENT_REF, goal="grow the conversation",
                          state={"messages": []}) for _ in range(runs)]
    finally:
        store.close()


def _drive(path: Path, agent: StepAgent,
           instrument: Callable[[SQLiteStore], None] | None = None) -> tuple[float, Worker]:
    """Run a worker until idle; return its wall time and the worker."""
    store = SQLiteStore(path, synchronous="FULL")
    if instrument:
        instrument(store)
    worker = Worker(store, agents={AGENT_REF: agent})
    gc.collect()
    t0 = time.perf_counter()
    stats = asyncio.run(worker.run(until_idle=True))
    wall = time.perf_counter() - t0
    store.close()
    if set(stats.finished or {}) != {"done"}:
        raise RuntimeError(f"tether bench runs did not all finish: {stats.finished}")
    return wall, worker


def run_loop(n: int, workdir: Path, *, read_repeats: int = 0) -> LoopSample:
    """One run of N steps; optionally time state loads and checkpoint listings after it."""
    path = fresh_db(workdir, f"tether-n{n}")
    try:
        stamps: list[tuple[float, float]] = []
        agent = grow_agent(n, stamps)
        (rid,) = _start(path, agent, 1)
        before = db_bytes(path)
        wall, _ = _drive(path, agent)
        sample = LoopSample(n, wall / n, before, db_bytes(path))
        sample.tenths = tenths(stamps)
        if read_repeats:
            _time_reads(path, rid, n, read_repeats, sample)
        return sample
    finally:
        remove_db(path)


def tenths(stamps: list[tuple[float, float]]) -> tuple[float, float, float, float]:
    """Mean gap between successive step starts over the first and the last tenth of a run,
    in wall time and in event-loop CPU time.

    Gaps, not single step bodies: each includes the checkpoint encoding, the journal and
    the commit hand-off of the step before, which is where a cost that grows with the
    state would show. The CPU gaps leave out waiting for the disk, which other work on
    the machine makes noisy.
    """
    out: list[float] = []
    for i in (0, 1):
        gaps = [b[i] - a[i] for a, b in itertools.pairwise(stamps)]
        k = max(len(gaps) // 10, 1)
        out += [sum(gaps[:k]) / k, sum(gaps[-k:]) / k]
    wall_first, wall_last, cpu_first, cpu_last = out
    return wall_first, wall_last, cpu_first, cpu_last


def _time_reads(path: Path, rid: str, n: int, repeats: int, sample: LoopSample) -> None:
    """Latest-state load (chain + restore) and listing of all checkpoints, each timed."""
    store = SQLiteStore(path, create=False)
    try:
        row = store.get_run(rid)
        assert row is not None
        for _ in range(repeats):
            t0 = time.perf_counter()
            chain = store.checkpoint_chain(rid, row.epoch, row.step)
            assert chain is not None
            state = restore(chain.key_body, store.chunk, chain.deltas)
            t1 = time.perf_counter()
            steps = store.checkpoint_steps(rid, row.epoch)
            t2 = time.perf_counter()
            if len(state["messages"]) != n or len(steps) != n + 1:
                raise RuntimeError(f"tether restored {len(state['messages'])} messages and "
                                   f"listed {len(steps)} checkpoints, expected {n} and {n + 1}")
            sample.load_seconds.append(t1 - t0)
            sample.list_seconds.append(t2 - t1)
    finally:
        store.close()


@dataclass(slots=True)
class ConcurrentSample:
    """Many runs driven by one worker at once."""

    runs: int
    steps: int
    seconds_per_step: float
    cpu_per_step: float
    writes_per_batch: float


def run_concurrent(runs: int, steps: int, workdir: Path) -> ConcurrentSample:
    """``runs`` runs of ``steps`` steps each, all in one worker: wall / total steps."""
    path = fresh_db(workdir, f"tether-c{runs}")
    try:
        agent = grow_agent(steps)
        _start(path, agent, runs)
        c0 = time.process_time()
        wall, worker = _drive(path, agent)
        cpu = time.process_time() - c0
        total = runs * steps
        per_batch = worker.committer.writes / max(worker.committer.batches, 1)
        return ConcurrentSample(runs, steps, wall / total, cpu / total, per_batch)
    finally:
        remove_db(path)
