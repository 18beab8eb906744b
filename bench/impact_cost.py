"""Impact cost: ``impact(store, "RUN@STEP")`` over a swarm of 100 runs and ~100,000 events.

The history is built by the real runtime, not by inserting rows: 100 runs of
one :class:`~tether.runtime.agent.StepAgent` in one swarm on one SQLite file,
driven by a :class:`~tether.runtime.worker.Worker` (``run(until_idle=True)``)
in one shared workspace. The swarm is a pipeline of :data:`STAGES` stages of
:data:`LANES` runs each (run ``s{stage}-l{lane}``). Every step of a run:

* ``ctx.receive()``: takes its inbox (``message.received`` cites each
  ``message.sent``). A run past stage 0 works only on credit, one per message
  from its upstream partner (same lane, previous stage); with none in hand it
  returns ``AwaitMessages()`` and sleeps until a message arrives;
* on a work step: ``ctx.board.get`` of the key a random run of the previous
  stage (stage 0: of its own stage) writes, then ``ctx.board.set`` of its own
  key; ``fs_read`` of its upstream partner's output file (stage 0: a random
  run's), ``fs_write`` of its own output file and ``fs_append`` to a shared,
  rotating log (``log/s{stage}-{work // 5}-{lane % 4}.log``, so several runs
  append to each); one ``ctx.send`` to its downstream partner and, with
  probability :data:`CROSS_TALK`, one more to a random run of the swarm;
* ``Done()`` after :data:`WORK_STEPS` work steps.

Every cross-run read above becomes a provenance link (message, board, file),
so an early step of a stage-0 run reaches most of the swarm. Random choices
come from a generator seeded by (seed, run, work step), so the graph is the
same from run to run of the benchmark up to the interleaving the worker picks.

Building uses ``SQLiteStore(path, synchronous="NORMAL")`` and the worker's
default commit pipeline (4): the build is not what is measured. Timed, on the
finished store, ``repeats`` times from each of two origins (step 1 of the first
stage-0 run, the target's measurement; the middle step of the first last-stage
run, informational): ``impact(store, "RUN@STEP")``, then ``Impact.to_json()``
and its ``orjson.dumps`` (what ``tether impact --json`` prints). Before timing,
one call per origin is checked against the links table: the runs the impact
names are exactly those reachable from the origin through stored links. One
more call runs on a wrapper of the store that times each store method it
calls, which splits the time between the walk (``Store.downstream``) and the
description of the affected runs (``Store.produced``).
"""

from __future__ import annotations

import asyncio
import gc
import random
import shutil
import time
import uuid
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson

from bench.stats import percentile
from bench.workload import fresh_db, remove_db
from tether.provenance.impact import impact
from tether.runtime.agent import StepAgent
from tether.runtime.outcome import AwaitMessages, Continue, Done
from tether.runtime.runs import start_run
from tether.runtime.worker import Worker
from tether.store.protocol import Store
from tether.store.records import Link, Produced
from tether.store.sqlite import SQLiteStore
from tether.tools.files import fs_append, fs_read, fs_write

AGENT_REF = "bench.impact_cost:STAGE"
SWARM = "impact-bench"
STAGES = 5
LANES = 20
RUNS = STAGES * LANES
WORK_STEPS = 91
"""Work steps per run: about 1,010 events per run, so the swarm holds just over 100,000."""
CROSS_TALK = 0.25
"""Probability that a work step also messages a random run of the swarm."""
SEED = 4
_TEXT = "A line of findings that the next stage reads and builds on. "


def run_name(stage: int, lane: int) -> str:
    return f"s{stage}-l{lane:02d}"


async def _stage(ctx: Any, state: dict[str, Any]) -> Continue | Done | AwaitMessages:
    stage, lane, work = state["stage"], state["lane"], state["work"]
    me = run_name(stage, lane)
    upstream = run_name(stage - 1, lane) if stage else None
    got = await ctx.receive()
    state["credits"] += sum(1 for m in got if m.topic == "pipeline")
    if stage and state["credits"] <= 0:
        return AwaitMessages()
    rng = random.Random(f"{state['seed']}:{me}:{work}")
    src_stage = stage - 1 if stage else 0
    peer = run_name(src_stage, rng.randrange(LANES))
    seen = await ctx.board.get(f"{peer}/latest")
    await ctx.board.set(f"{me}/latest", {"work": work, "saw": seen.version if seen else None})
    src = upstream or run_name(0, rng.randrange(LANES))
    await ctx.call("fs_read", path=f"out/{src}.txt")
    line = f"{me} work {work}: {_TEXT}\n"
    await ctx.call("fs_write", path=f"out/{me}.txt", content=line)
    await ctx.call("fs_append", path=f"log/s{stage}-{work // 5}-{lane % 4}.log", content=line)
    if stage + 1 < STAGES:
        await ctx.send(run_name(stage + 1, lane), {"work": work}, topic="pipeline")
    if rng.random() < CROSS_TALK:
        other = run_name(rng.randrange(STAGES), rng.randrange(LANES))
        if other != me:
            await ctx.send(other, {"work": work, "note": "fyi"}, topic="chat")
    state["work"] = work + 1
    if stage:
        state["credits"] -= 1
    return Done() if state["work"] >= state["steps"] else Continue()


STAGE = StepAgent(_stage, name="stage", tools=[fs_read, fs_write, fs_append])


@dataclass(frozen=True, slots=True)
class ImpactTiming:
    """Repeated ``impact`` calls from one origin."""

    label: str
    origin: str
    """``RUN@STEP`` as given to ``impact`` (the run's name, for the report)."""
    reached_runs: int
    """Runs the impact names (the origin's included)."""
    reached_steps: int
    """Steps the impact names (``to_json()["steps"]``)."""
    impact_s: tuple[float, ...]
    """Seconds per ``impact`` call, in call order (the first is the coldest)."""
    json_s: tuple[float, ...]
    """Seconds per ``Impact.to_json()`` + ``orjson.dumps`` (what ``tether impact --json`` does)."""
    json_bytes: int

    def q(self, q: float) -> float:
        return percentile(self.impact_s, q)


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Where one instrumented ``impact`` call spent its time, by the store methods it called."""

    total: float
    walk: float
    """Seconds in ``downstream`` (the breadth-first walk over the links, in the store)."""
    reached: int
    """(run, epoch)s ``downstream`` returned."""
    describe: float
    """Seconds in ``produced`` (the effects, messages and versions of each affected run)."""
    describe_calls: int
    describe_rows: int
    """Effects, messages and versions ``produced`` returned, summed over its calls."""
    other: float
    """Seconds in every other store method (``find_run``, ``get_run``, ...)."""

    @property
    def python(self) -> float:
        """Seconds outside the store: the walk's own bookkeeping and the filtering."""
        return self.total - self.walk - self.describe - self.other


@dataclass(frozen=True, slots=True)
class ImpactSample:
    """One swarm built by the worker, and the impact timings taken on it."""

    runs: int
    work_steps: int
    """Work steps per run."""
    steps: int
    """Steps the runs completed: work steps plus the steps that returned ``AwaitMessages``."""
    events: int
    """Events in the store: the sum of every run's last sequence number."""
    links: dict[str, int]
    """Cross-run provenance links the runtime derived while building, by kind."""
    build: float
    """Seconds to start the runs and drive them to the end (not part of the target)."""
    main: ImpactTiming
    """From step 1 of the first stage-0 run: the target's measurement."""
    late: ImpactTiming
    """From the middle of a last-stage run (informational)."""
    breakdown: Breakdown
    profile: str = ""


class _Timed:
    """A store that times the methods ``impact`` calls on it, delegating everything."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self.rows: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if not callable(attr):
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = attr(*args, **kwargs)
            self.seconds[name] += time.perf_counter() - t0
            self.calls[name] += 1
            if isinstance(out, list):
                self.rows[name] += len(out)
            elif isinstance(out, Produced):
                self.rows[name] += len(out.effects) + len(out.messages) + len(out.versions)
            return out

        return timed


def breakdown(store: SQLiteStore, ref: str) -> Breakdown:
    """One ``impact`` call on a store that times each method it calls."""
    timed = _Timed(store)
    gc.collect()
    t0 = time.perf_counter()
    impact(cast(Store, timed), ref)
    total = time.perf_counter() - t0
    sec = timed.seconds
    walk, desc = sec["downstream"], sec["produced"]
    return Breakdown(total, walk, timed.rows["downstream"], desc, timed.calls["produced"],
                     timed.rows["produced"], sum(sec.values()) - walk - desc)


def _links_reach(links: list[Link], origin: tuple[str, int, int]) -> set[str]:
    """Runs reachable from ``origin`` through ``links``, walked independently of ``impact``."""
    by_src: dict[tuple[str, int], list[tuple[int, str, int, int]]] = {}
    for ln in links:
        by_src.setdefault((ln.src_run, ln.src_epoch), []).append(
            (ln.src_step, ln.dst_run, ln.dst_epoch, ln.dst_step))
    first: dict[tuple[str, int], int] = {}
    todo = deque([origin])
    while todo:
        run, ep, s = todo.popleft()
        if first.get((run, ep), s + 1) <= s:
            continue
        first[(run, ep)] = s
        todo.extend((d, de, ds) for ss, d, de, ds in by_src.get((run, ep), ()) if ss >= s)
    return {r for r, _ in first}


def build_swarm(store: SQLiteStore, ws: Path, work_steps: int, seed: int) -> list[str]:
    """Start the swarm's runs in ``ws`` and drive them all to ``Done``; their ids, stage by stage."""
    (ws / "out").mkdir(parents=True)
    (ws / "log").mkdir()
    for stage in range(STAGES):  # the checkout the swarm starts from: one output file per run
        for lane in range(LANES):
            (ws / "out" / f"{run_name(stage, lane)}.txt").write_text("(nothing yet)\n")
    ids = [start_run(store, STAGE, agent_ref=AGENT_REF, goal="pipeline stage",
                     name=run_name(stage, lane), swarm=SWARM, workspace=ws,
                     state={"stage": stage, "lane": lane, "work": 0, "credits": 0,
                            "steps": work_steps, "seed": seed})
           for stage in range(STAGES) for lane in range(LANES)]
    asyncio.run(Worker(store, agents={AGENT_REF: STAGE}).run(until_idle=True))
    for rid in ids:
        row = store.get_run(rid)
        if row is None or row.status != "done":
            raise RuntimeError(f"run {rid} did not finish: {row}")
    return ids


def time_impact(store: SQLiteStore, label: str, ref: str, repeats: int,
                links: list[Link]) -> ImpactTiming:
    """``repeats`` calls of ``impact(store, ref)``, each followed by its JSON, after one check."""
    imp = impact(store, ref)
    expected = _links_reach(links, imp.origin)
    if imp.runs() != expected:
        raise RuntimeError(f"impact of {ref} names {len(imp.runs())} runs; the stored links "
                           f"reach {len(expected)}")
    times, jtimes = [], []
    size = 0
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        imp = impact(store, ref)
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        size = len(orjson.dumps(imp.to_json()))
        jtimes.append(time.perf_counter() - t0)
    steps = int(imp.to_json()["steps"])
    return ImpactTiming(label, ref, len(imp.runs()), steps, tuple(times), tuple(jtimes), size)


def _profile(store: SQLiteStore, ref: str, top: int = 25) -> str:
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    impact(store, ref)
    prof.disable()
    out = io.StringIO()
    out.write(f"impact(store, {ref!r})\n")
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(top)
    out.write("\n")
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def run_impact(workdir: Path, *, work_steps: int = WORK_STEPS, repeats: int = 9, seed: int = SEED,
               profile: bool = False) -> ImpactSample:
    """Build a fresh swarm, check the impact against the stored links, then time it.

    The first check call also warms SQLite's page cache, as an operator's second
    ``tether impact`` would find it.
    """
    path = fresh_db(workdir, "tether-impact")
    ws = workdir / f"impact-ws-{uuid.uuid4().hex[:8]}"
    store = SQLiteStore(path, synchronous="NORMAL")
    try:
        t0 = time.perf_counter()
        ids = build_swarm(store, ws, work_steps, seed)
        build = time.perf_counter() - t0
        rows = [r for r in map(store.get_run, ids) if r is not None]
        links = store.links()
        kinds = Counter(ln.kind for ln in links)
        last = rows[(STAGES - 1) * LANES]
        main = time_impact(store, "step 1 of a stage-0 run", f"{rows[0].name}@1", repeats, links)
        late = time_impact(store, f"step {last.step // 2} of {last.step} of a last-stage run",
                           f"{last.name}@{last.step // 2}", repeats, links)
        parts = breakdown(store, main.origin)
        prof = _profile(store, main.origin) if profile else ""
        return ImpactSample(len(rows), work_steps, sum(r.step for r in rows),
                            sum(r.seq for r in rows), dict(kinds), build, main, late, parts, prof)
    finally:
        store.close()
        remove_db(path)
        shutil.rmtree(ws, ignore_errors=True)


def describe(s: ImpactSample) -> str:
    """One line for the log."""
    m, b = s.main, s.breakdown
    return (f"{s.runs} runs, {s.events:,} events, {s.steps:,} steps, {sum(s.links.values()):,} "
            f"links, built in {s.build:.1f} s; impact {m.origin}: {m.reached_runs} runs, "
            f"{m.reached_steps:,} steps, median {m.q(0.5) * 1e3:.1f} ms, p95 {m.q(0.95) * 1e3:.1f} "
            f"ms, max {max(m.impact_s) * 1e3:.1f} ms (to_json + dumps {percentile(m.json_s, 0.5) * 1e3:.1f}"
            f" ms, {m.json_bytes:,} B); walk {b.walk * 1e3:.0f} ms ({b.reached} reached), "
            f"describe {b.describe * 1e3:.0f} ms ({b.describe_rows:,} rows); "
            f"late origin {s.late.origin}: {s.late.reached_runs} runs, median {s.late.q(0.5) * 1e3:.1f} ms")


if __name__ == "__main__":
    import sys
    import tempfile

    n = int(sys.argv[1]) if len(sys.argv) > 1 else WORK_STEPS
    with tempfile.TemporaryDirectory(prefix="tether-impact-") as d:
        s = run_impact(Path(d), work_steps=n, profile=len(sys.argv) > 2)
        print(describe(s))
        if s.profile:
            print(s.profile)
