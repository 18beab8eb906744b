"""What the built-in monitors cost a step: each one, and all of them on against all off.

Three measures, each CPU time (``process_time`` or the event loop's ``thread_time``),
so waiting for the disk is left out:

* **alone**: a monitor's own ``observe`` over the steps of
  :mod:`bench.monitor_step_cost` (``model.called``, ``tool.called``,
  ``step.finished``), as that module measures it;
* **hosted**: the same events through the worker's host
  (:class:`~tether.runtime.monitoring.MonitorHost`: the journal's listener, the
  :class:`~tether.core.monitors.watch.Watch` and the view each monitor gets), with
  only that monitor on, less the host with every monitor off; and all of them on;
* **per step, end to end**: the core benchmark's loop (``bench.tether_loop``: one
  run of N growing-conversation steps through a real ``Worker`` on a real SQLite
  file), with a policy that switches every registered monitor off and one that
  leaves them on, run alternately in pairs; the figure is the median over the pairs
  of (on - off) event-loop CPU per step, so load that comes and goes on the machine
  falls on both sides of a pair.

Usage: ``python -m bench.monitor_cost [--pairs 7] [--steps 1000] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.monitor_step_cost import Nothing, events, per_step
from bench.tether_loop import AGENT_REF, _start, grow_agent
from bench.workload import fresh_db, remove_db
from tether.core.events import Event
from tether.core.ids import UlidSource
from tether.core.monitors import KINDS, MonitorSettings
from tether.core.monitors.settings import compile_monitors
from tether.core.policy import parse_policy
from tether.policies import apply_policy
from tether.runtime.journal import RunJournal
from tether.runtime.monitoring import MonitorHost
from tether.runtime.stepping import StepRuntime
from tether.runtime.worker import Worker
from tether.store.sqlite import SQLiteStore

ROUNDS = 7


@dataclass(slots=True)
class MonitorCost:
    """One monitor's CPU per step (µs)."""

    name: str
    alone: float
    hosted: float


@dataclass(slots=True)
class Costs:
    """Everything :func:`measure` finds (µs of CPU per step)."""

    steps: int
    """Steps of the end-to-end run."""
    floor: float
    """A monitor that does nothing, called directly."""
    host_off: float
    """The host with every monitor off (the journal's listener returns at once)."""
    host_on: float
    """The host with every default monitor on, less ``host_off``."""
    monitors: list[MonitorCost] = field(default_factory=list)
    pairs: list[tuple[float, float]] = field(default_factory=list)
    """End to end: (on, off) event-loop CPU per step, one pair per repeat."""

    @property
    def deltas(self) -> list[float]:
        return [on - off for on, off in self.pairs]

    @property
    def delta(self) -> float:
        return statistics.median(self.deltas) if self.pairs else float("nan")


def _policy(on: bool) -> str:
    """A policy that changes nothing but the monitors: all on (their defaults) or all off."""
    return "".join(f"[monitors.{n}]\nenabled = {'true' if on else 'false'}\n\n"
                   for n in sorted(KINDS))


class _Clock:
    """The run's clock as the host reads it (a view per event reads it once)."""

    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def _host(store: SQLiteStore, rid: str, settings: MonitorSettings) -> MonitorHost:
    """The worker's host of one run's monitors, as the executor builds it."""
    row = store.get_run(rid)
    assert row is not None
    clock = _Clock()
    journal = RunJournal(store, row, None, UlidSource(clock), clock)

    async def nothing(*_: Any) -> None:
        return None

    rt = StepRuntime(journal, agent="grow", clock=clock, flush=nothing, safe_point=nothing)
    state: dict[str, Any] = {"messages": []}
    return MonitorHost.build(rt, settings, (), lambda: state)


def hosted(store: SQLiteStore, rid: str, settings: MonitorSettings, evs: Sequence[Event],
           rounds: int = ROUNDS) -> float:
    """Median CPU µs per step of the host's listener over ``evs`` (3 events a step)."""
    steps = len(evs) / 3
    times = []
    for _ in range(rounds):
        host = _host(store, rid, settings)
        observe = host.observe
        gc.collect()
        t0 = time.process_time()
        for e in evs:
            observe(e)
        times.append((time.process_time() - t0) / steps * 1e6)
        if host.rt.journal.dirty:  # an alert was journaled: not the quiet steps timed here
            raise RuntimeError("a monitor flagged the bench's steps")
    return statistics.median(times)


def _only(name: str | None) -> MonitorSettings:
    return compile_monitors({n: {"enabled": n == name} for n in KINDS})


def micro(workdir: Path, names: Sequence[str], rounds: int = ROUNDS) -> Costs:
    """Per-monitor costs (alone, hosted) and the host with all on and all off."""
    evs = events()
    path = fresh_db(workdir, "tether-moncost")
    try:
        (rid,) = _start(path, grow_agent(1), 1)
        store = SQLiteStore(path)
        try:
            off = hosted(store, rid, _only(None), evs, rounds)
            on = hosted(store, rid, MonitorSettings(), evs, rounds)
            costs = Costs(0, per_step(Nothing, evs), off, on - off)
            for n in names:
                kind = KINDS[n]
                alone = per_step(lambda kind=kind: kind.make(kind.defaults), evs)
                costs.monitors.append(
                    MonitorCost(n, alone, hosted(store, rid, _only(n), evs, rounds) - off))
        finally:
            store.close()
    finally:
        remove_db(path)
    return costs


def _loop_cpu(workdir: Path, steps: int, on: bool) -> float:
    """Event-loop CPU µs per step of one run of the core benchmark's loop."""
    path = fresh_db(workdir, f"tether-mon-{'on' if on else 'off'}")
    try:
        agent = grow_agent(steps)
        _start(path, agent, 1)
        store = SQLiteStore(path, synchronous="FULL")
        try:
            apply_policy(store, parse_policy(_policy(on), source="bench.toml"), who="bench")
            worker = Worker(store, agents={AGENT_REF: agent})
            gc.collect()
            c0 = time.thread_time()
            stats = asyncio.run(worker.run(until_idle=True))
            cpu = time.thread_time() - c0
        finally:
            store.close()
        if set(stats.finished or {}) != {"done"}:
            raise RuntimeError(f"the monitor bench's run did not finish: {stats.finished}")
        return cpu / steps * 1e6
    finally:
        remove_db(path)


def end_to_end(workdir: Path, steps: int, pairs: int,
               log: Callable[[str], None] = lambda s: None) -> list[tuple[float, float]]:
    """``pairs`` (on, off) pairs, the side that goes first alternating."""
    out = []
    _loop_cpu(workdir, min(steps, 200), True)  # warm imports and caches
    for i in range(pairs):
        order = (True, False) if i % 2 == 0 else (False, True)
        got = {o: _loop_cpu(workdir, steps, o) for o in order}
        out.append((got[True], got[False]))
        log(f"  pair {i + 1}: on {got[True]:.1f} µs, off {got[False]:.1f} µs, "
            f"delta {got[True] - got[False]:+.1f} µs")
    return out


def measure(workdir: Path, *, steps: int = 1000, pairs: int = 7, rounds: int = ROUNDS,
            log: Callable[[str], None] = lambda s: None) -> Costs:
    names = [n for n, k in KINDS.items() if k.enabled]
    costs = micro(workdir, names, rounds)
    costs.steps = steps
    costs.pairs = end_to_end(workdir, steps, pairs, log) if pairs else []
    return costs


def render(c: Costs) -> str:
    lines = [f"floor (a monitor that does nothing, called directly): {c.floor:.2f} µs",
             f"host with every monitor off: {c.host_off:.2f} µs",
             "monitor: alone / hosted (µs CPU per 3-event step)"]
    lines += [f"  {m.name}: {m.alone:.2f} / {m.hosted:.2f}" for m in c.monitors]
    lines.append(f"all default monitors hosted: {c.host_on:.2f} µs "
                 f"(sum of the hosted figures {sum(m.hosted for m in c.monitors):.2f})")
    if c.pairs:
        lines.append(f"end to end, N={c.steps}, all on - all off, event-loop CPU per step: "
                     f"{c.delta:+.1f} µs median over {len(c.pairs)} pairs "
                     f"(min {min(c.deltas):+.1f}, max {max(c.deltas):+.1f}); "
                     f"on {statistics.median(p[0] for p in c.pairs):.1f} µs, "
                     f"off {statistics.median(p[1] for p in c.pairs):.1f} µs")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.monitor_cost", description=__doc__)
    ap.add_argument("--pairs", type=int, default=7, help="end-to-end on/off pairs (0: none)")
    ap.add_argument("--steps", type=int, default=1000, help="steps of each end-to-end run")
    ap.add_argument("--rounds", type=int, default=ROUNDS, help="rounds of each micro figure")
    ap.add_argument("--one", choices=("on", "off"), default=None,
                    help="only one end-to-end run, monitors on or off (e.g. under callgrind: "
                         "instructions do not depend on the machine's load)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tether-moncost-") as d:
        if args.one:
            cpu = _loop_cpu(Path(d), args.steps, args.one == "on")
            print(f"monitors {args.one}, N={args.steps}: {cpu:.1f} µs event-loop CPU per step")
            return
        print(render(measure(Path(d), steps=args.steps, pairs=args.pairs, rounds=args.rounds,
                             log=print)))


if __name__ == "__main__":
    main()
