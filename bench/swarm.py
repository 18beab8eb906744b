"""Many concurrent runs whose model is an in-process async model awaiting ``delay`` seconds.

Each run makes one model call per step and appends the answer to its
conversation. With R runs and a model that takes ``delay`` seconds, the ideal
is R / delay steps per second: every run always waiting on its model, tether
costing nothing between calls. Reported:

* end to end: R x S steps over the worker's whole wall time (start-up, which
  takes R leases and restores R runs, and the last commits included), against
  the ideal S x delay seconds;
* steady state: per run, the time between its first and its last model call
  over S - 1 steps, against ``delay`` (start-up and the final step excluded);
* the gap: time from a model call's return to the same run's next call, that
  is everything tether does for a step (journal, checkpoint, group commit,
  scheduling) plus waiting for the event loop behind the other runs.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.workload import fresh_db, remove_db
from tether.models.base import Message, ModelResponse, ToolSpec, Usage
from tether.runtime.agent import StepAgent
from tether.runtime.outcome import Continue, Done
from tether.runtime.runs import start_run
from tether.runtime.worker import Worker
from tether.store.sqlite import SQLiteStore

AGENT_REF = "bench:chat"
ANSWER = "An answer of about two hundred bytes, the size of the messages the loop appends. " * 2


class SleepyModel:
    """An in-process async model: it awaits ``delay`` seconds and answers ~200 bytes."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    @property
    def name(self) -> str:
        return "sleepy"

    async def complete(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
        await asyncio.sleep(self.delay)
        return ModelResponse(content=ANSWER[:170], usage=Usage(50 * len(messages), 50),
                             model="sleepy", finish_reason="stop")


def chat_agent(model: Any, steps: int,
               timeline: dict[str, list[tuple[float, float]]] | None = None) -> StepAgent:
    """One model call per step; done after ``steps``. Records (call, return) times per run."""

    async def chat(ctx: Any, state: dict[str, Any]) -> Continue | Done:
        msgs = state["messages"]
        t0 = time.perf_counter()
        resp = await ctx.model(msgs)
        if timeline is not None:
            timeline[ctx.run_id].append((t0, time.perf_counter()))
        msgs.append(resp.as_message())
        return Done() if len(msgs) >= steps else Continue()

    return StepAgent(chat, name="chat", model=model, init=lambda goal: {"messages": []})


def start_runs(path: Path, agent: StepAgent, runs: int) -> SQLiteStore:
    """A store at ``path`` with ``runs`` fresh runs of ``agent``."""
    store = SQLiteStore(path, synchronous="FULL")
    for _ in range(runs):
        start_run(store, agent, agent_ref=AGENT_REF, goal="chat", state={"messages": []})
    return store


@dataclass(frozen=True, slots=True)
class SwarmSample:
    runs: int
    steps: int
    delay: float
    wall: float
    cpu_per_step: float
    steady_period: float
    """Median over runs of (last call - first call) / (steps - 1)."""
    gaps: tuple[float, ...]
    """Sorted return-to-next-call times of every run."""
    startup: float
    """From the worker's start to the first model call of any run."""
    tail: float
    """From the last model answer to the worker's return."""

    @property
    def end_to_end_ratio(self) -> float:
        return self.steps * self.delay / self.wall

    @property
    def steady_ratio(self) -> float:
        return self.delay / self.steady_period if self.steady_period else float("nan")

    def gap(self, q: float) -> float:
        return self.gaps[min(int(q * len(self.gaps)), len(self.gaps) - 1)] if self.gaps else 0.0


def run_swarm(runs: int, steps: int, delay: float, workdir: Path) -> SwarmSample:
    """Drive ``runs`` runs of ``steps`` model-bound steps in one worker."""
    path = fresh_db(workdir, f"tether-swarm{runs}")
    timeline: dict[str, list[tuple[float, float]]] = defaultdict(list)
    agent = chat_agent(SleepyModel(delay), steps, timeline)
    store = start_runs(path, agent, runs)
    try:
        worker = Worker(store, agents={AGENT_REF: agent})
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        stats = asyncio.run(worker.run(until_idle=True))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if (stats.finished or {}).get("done") != runs:
            raise RuntimeError(f"swarm runs did not all finish: {stats.finished}")
    finally:
        store.close()
        remove_db(path)
    return _sample(runs, steps, delay, (t0, wall), cpu, timeline)


def _sample(runs: int, steps: int, delay: float, span: tuple[float, float], cpu: float,
            timeline: dict[str, list[tuple[float, float]]]) -> SwarmSample:
    start, wall = span
    gaps: list[float] = []
    periods: list[float] = []
    for calls in timeline.values():
        gaps.extend(nxt[0] - prev[1] for prev, nxt in itertools.pairwise(calls))
        if len(calls) > 1:
            periods.append((calls[-1][0] - calls[0][0]) / (len(calls) - 1))
    periods.sort()
    period = periods[len(periods) // 2] if periods else 0.0
    first = min((c[0][0] for c in timeline.values() if c), default=start)
    last = max((c[-1][1] for c in timeline.values() if c), default=start + wall)
    return SwarmSample(runs, steps, delay, wall, cpu / (runs * steps), period, tuple(sorted(gaps)),
                       first - start, start + wall - last)
