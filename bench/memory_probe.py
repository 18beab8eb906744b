"""Memory held per idle run, measured in a fresh process so nothing else muddies it.

``python -m bench.memory_probe --runs R --mode await|sleep [--tracemalloc] --workdir DIR``
starts R runs, drives them with one worker until every run is idle, then
prints one JSON object with the process's memory just before the worker
started and while all R runs are idle:

``await``
    every run is inside its step, awaiting the in-process model (its task,
    executor, state and journal buffer are alive);
``sleep``
    every run has finished a step and returned ``SleepUntil`` an hour ahead
    (the worker keeps no task for it; what is left is whatever the worker
    retains about the run).

With ``--tracemalloc`` the figure is Python heap (bytes allocated since the
worker was created and still held); without it, resident set size from
``/proc/self/statm``. The parent runs two sizes and takes the slope, which
cancels what the worker and the interpreter cost once.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench.swarm import AGENT_REF, start_runs
from bench.workload import fresh_db, remove_db
from tether.models.base import Message, ModelResponse, ToolSpec
from tether.runtime.agent import StepAgent
from tether.runtime.outcome import Done, SleepUntil
from tether.runtime.worker import Worker


def rss_bytes() -> int:
    """Resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _memory(traced: bool) -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0] if traced else rss_bytes()


class GateModel:
    """A model whose calls wait until the probe opens the gate."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.waiting = 0

    @property
    def name(self) -> str:
        return "gate"

    async def complete(self, messages: list[Message], tools: list[ToolSpec]) -> ModelResponse:
        self.waiting += 1
        await self.gate.wait()
        return ModelResponse(content="ok", model="gate")


def _agent(mode: str, model: GateModel, slept: list[int]) -> StepAgent:
    async def idle(ctx: Any, state: dict[str, Any]) -> Done | SleepUntil:
        if mode == "await":
            state["messages"].append((await ctx.model(state["messages"])).as_message())
            return Done()
        slept[0] += 1
        return SleepUntil(time.time() + 3600)

    return StepAgent(idle, name="idle", model=model, init=lambda goal: {"messages": []})


async def _probe(worker: Worker, runs: int, mode: str, model: GateModel, slept: list[int],
                 traced: bool) -> dict[str, Any]:
    stop = asyncio.Event()
    before = _memory(traced)
    task = asyncio.create_task(worker.run(stop=stop, until_idle=mode == "await"))
    # Polled: the condition is the worker's own state, which signals no event.
    while (model.waiting if mode == "await" else slept[0]) < runs or (  # noqa: ASYNC110
            mode == "sleep" and worker.active):
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # let the last commits and lease releases land
    during = _memory(traced)
    model.gate.set()
    stop.set()
    await task
    return {"runs": runs, "mode": mode, "tracemalloc": traced, "before": before, "idle": during}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--mode", choices=("await", "sleep"), required=True)
    ap.add_argument("--tracemalloc", action="store_true")
    ap.add_argument("--workdir", type=Path, required=True)
    args = ap.parse_args(argv)
    model, slept = GateModel(), [0]
    agent = _agent(args.mode, model, slept)
    path = fresh_db(args.workdir, f"tether-mem-{args.mode}")
    store = start_runs(path, agent, args.runs)
    try:
        if args.tracemalloc:
            tracemalloc.start()
        worker = Worker(store, agents={AGENT_REF: agent})
        out = asyncio.run(_probe(worker, args.runs, args.mode, model, slept, args.tracemalloc))
    finally:
        store.close()
        remove_db(path)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
