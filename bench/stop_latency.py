"""Stop latency: from a stop command's commit to the run's ``run.stopped`` commit, under load.

The parent (this benchmark, standing in for an operator's ``tether stop``)
starts R runs on a SQLite file (``synchronous=FULL``) and launches a real
:class:`tether.runtime.worker.Worker` with default settings in a subprocess
(``python -m bench.stop_latency``): every run's step awaits an in-process async
model that takes longer than the whole measurement, so all R runs are active
and inside their model call. Once the worker reports all R inside, the parent
writes stop commands with ``store.add_command`` for a sample of runs:

* one at a time: a command, then wait for that run's ``run.stopped`` commit,
  then a random pause of 0-100 ms so commands land at every phase of the
  worker's command poll;
* a burst: one command per run, back to back (each its own transaction), as
  ``tether stop --all`` would write them.

Latency of a run = time of its ``run.stopped`` commit - time of its command's
commit. The command's commit time is ``time.time()`` in the parent right after
``add_command`` returns (its transaction committed). The ``run.stopped``
commit time is ``time.time()`` in the worker right after the ``store.commit``
carrying that event returns (a wrapper on the store in the worker's writer
thread, which writes it to stdout). Both processes read the same wall clock
(CLOCK_REALTIME, microsecond resolution as a float). From the journal, the
``command`` and ``run.stopped`` events' ``time`` fields (the run's clock, wall
time here, stamped when journaled, before the commit) split the latency into
"picked up and journaled" and "made durable".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import queue
import random
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bench.swarm import AGENT_REF, start_runs
from bench.workload import fresh_db, remove_db
from tether.core.ids import parse_iso
from tether.models.base import Message, ModelResponse, ToolSpec
from tether.runtime.agent import StepAgent
from tether.runtime.outcome import Continue
from tether.runtime.worker import Worker
from tether.store.records import Write
from tether.store.sqlite import SQLiteStore

MODEL_SECONDS = 600.0
"""How long each model call awaits: longer than any measurement, so runs stay inside it."""
WHO = "human:bench"


class SlowModel:
    """An in-process async model that awaits ``delay`` seconds; counts the calls inside it."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.inside = 0

    @property
    def name(self) -> str:
        return "slow"

    async def complete(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
        self.inside += 1
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.inside -= 1
        return ModelResponse(content="late", model="slow")


def slow_agent(model: Any) -> StepAgent:
    async def chat(ctx: Any, state: dict[str, Any]) -> Continue:
        state["messages"].append((await ctx.model(state["messages"])).as_message())
        return Continue()

    return StepAgent(chat, name="chat", model=model, init=lambda goal: {"messages": []})


@dataclass(frozen=True, slots=True)
class StopSample:
    """One way of stopping a sample of ``stopped`` runs among ``runs`` active ones."""

    mode: str
    runs: int
    latencies: tuple[float, ...]
    """Sorted seconds from each command's commit to its run's ``run.stopped`` commit."""
    picked: tuple[float, ...]
    """Sorted seconds from each command's commit to the ``command`` event's journal time."""
    durable: tuple[float, ...]
    """Sorted seconds from the ``run.stopped`` event's journal time to its commit."""
    ready: float
    """Seconds from launching the worker to all runs inside their model call."""



class _Reports:
    """Reads the worker's stdout: ``ready`` once, then ``stopped RUN TIME`` per committed stop."""

    def __init__(self, stream: IO[str]) -> None:
        self.ready: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.stopped: dict[str, float] = {}
        self.cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            parts = line.split()
            if parts[:1] == ["stopped"] and len(parts) == 3:
                with self.cond:
                    self.stopped[parts[1]] = float(parts[2])
                    self.cond.notify_all()
            elif parts:
                self.ready.put(line.strip())
        self.ready.put("eof")
        with self.cond:
            self.cond.notify_all()

    def wait(self, runs: Sequence[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(r in self.stopped for r in runs):
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    missing = sum(r not in self.stopped for r in runs)
                    raise RuntimeError(f"{missing} of {len(runs)} runs not stopped after {timeout:g} s")
                self.cond.wait(left)


def _journal_times(store: SQLiteStore, run: str, cid: int) -> tuple[float, float]:
    """Journal times of the run's ``command`` event for ``cid`` and of its ``run.stopped``."""
    cmd = stop = None
    for e in store.events(run):
        if e.kind == "command" and e.payload.get("command") == cid:
            cmd = parse_iso(e.time)
        elif e.kind == "run.stopped":
            stop = parse_iso(e.time)
    if cmd is None or stop is None:
        raise RuntimeError(f"run {run}: no command or run.stopped event in the journal")
    return cmd, stop


def _stop(store: SQLiteStore, run: str) -> tuple[int, float]:
    cid = store.add_command(run, "stop", {}, WHO, time.time())
    return cid, time.time()  # the command's transaction has committed


def run_stop(runs: int, sample: int, workdir: Path, seed: int = 11) -> list[StopSample]:
    """Start ``runs`` runs in a worker subprocess; stop ``sample`` one at a time, then ``sample``
    more in a burst."""
    if 2 * sample > runs:
        raise ValueError(f"cannot stop 2 × {sample} of {runs} runs")
    path = fresh_db(workdir, f"tether-stop{runs}")
    store = start_runs(path, slow_agent(SlowModel(MODEL_SECONDS)), runs)
    ids = [r.id for r in store.list_runs()]
    rng = random.Random(seed)
    picks = rng.sample(ids, 2 * sample)
    errlog = path.with_suffix(".stderr")
    cmd = [sys.executable, "-m", "bench.stop_latency", "--db", str(path), "--runs", str(runs)]
    t0 = time.perf_counter()
    with errlog.open("w") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                cwd=Path(__file__).resolve().parent.parent)
    try:
        assert proc.stdout is not None
        reports = _Reports(proc.stdout)
        if (line := reports.ready.get(timeout=300)) != "ready":
            raise RuntimeError(f"the worker did not get ready ({line}): {errlog.read_text()[-2000:]}")
        ready = time.perf_counter() - t0
        time.sleep(0.5)  # the runs' step.started commits settle
        out = []
        sent: dict[str, tuple[int, float]] = {}
        for run in picks[:sample]:
            sent[run] = _stop(store, run)
            reports.wait([run], 30)
            time.sleep(rng.uniform(0, 0.1))
        out.append(_sample("one at a time", runs, sent, reports, store, ready))
        burst = picks[sample:]
        sent = {run: _stop(store, run) for run in burst}
        reports.wait(burst, 60)
        out.append(_sample(f"burst of {len(burst)}", runs, sent, reports, store, ready))
        return out
    finally:
        proc.kill()  # whatever happened: the worker never outlives the benchmark
        proc.wait()
        store.close()
        remove_db(path)
        errlog.unlink(missing_ok=True)


def _sample(mode: str, runs: int, sent: dict[str, tuple[int, float]], reports: _Reports,
            store: SQLiteStore, ready: float) -> StopSample:
    lat, picked, durable = [], [], []
    for run, (cid, t_cmd) in sent.items():
        t_commit = reports.stopped[run]
        j_cmd, j_stop = _journal_times(store, run, cid)
        lat.append(t_commit - t_cmd)
        picked.append(j_cmd - t_cmd)
        durable.append(t_commit - j_stop)
    return StopSample(mode, runs, tuple(sorted(lat)), tuple(sorted(picked)), tuple(sorted(durable)), ready)


# -- the worker subprocess ------------------------------------------------------------------------

def _report_commits(store: SQLiteStore, out: IO[str]) -> None:
    """Wrap ``store.commit`` to print ``stopped RUN TIME`` once a ``run.stopped`` event is durable."""
    inner = store.commit
    lock = threading.Lock()

    def commit(writes: Sequence[Write]) -> list[BaseException | None]:
        results = inner(writes)
        t = time.time()
        lines = [f"stopped {w.run} {t:.6f}\n" for w, err in zip(writes, results, strict=True)
                 if err is None and any(e.kind == "run.stopped" for e in w.events)]
        if lines:
            with lock:
                out.write("".join(lines))
                out.flush()
        return results

    store.commit = commit  # type: ignore[method-assign]


def _die_with_parent() -> None:
    """Exit when the parent closes our stdin (it finished, or died)."""
    with contextlib.suppress(Exception):
        sys.stdin.read()
    os._exit(0)


async def _serve(worker: Worker, model: SlowModel, runs: int) -> None:
    task = asyncio.create_task(worker.run())
    # Polled: the condition is the model's own counter, which signals no event.
    while model.inside < runs:
        if task.done():
            await task
            raise RuntimeError("the worker stopped before every run was inside its model call")
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    await task


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="worker subprocess of the stop-latency benchmark")
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--runs", type=int, required=True)
    args = ap.parse_args(argv)
    threading.Thread(target=_die_with_parent, daemon=True).start()
    model = SlowModel(MODEL_SECONDS)
    store = SQLiteStore(args.db, synchronous="FULL")
    _report_commits(store, sys.stdout)
    worker = Worker(store, agents={AGENT_REF: slow_agent(model)})
    asyncio.run(_serve(worker, model, args.runs))


if __name__ == "__main__":
    main()
