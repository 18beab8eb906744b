"""Telemetry cost per step: the core per-step loop with the telemetry sink on and off.

The loop is the core benchmark's (bench/tether_loop.py: one run of N steps through the
real Worker and SQLiteStore at ``synchronous=FULL``); "on" gives the worker a
:class:`~tether.telemetry.sink.TelemetrySink` with spans sent over OTLP/HTTP (protobuf,
the SDK's batch processor) to a receiver in another process on loopback, and metrics
folded into prometheus-client counters (plus the commit histogram). Issue 11's target: at
most 15 µs more CPU per step with spans and metrics on.

Three figures, because the first cannot resolve the target on a shared machine:

* end to end: the process's CPU time (``process_time``: every thread) per step of each
  mode; "vs off" is the median over rounds of each round's difference from that round's
  "off" (paired; the order of the modes is reversed every other round so a drift in the
  machine's speed falls on both sides). Most of a step's ~400 µs is the kernel's (fsync,
  the WAL), which moves by tens of µs a run when other work shares the cores: the
  difference's range is printed, and is wider than the target.
* the sink in the loop (the verdict): in every "spans+metrics" round, the CPU of the
  sink's own code (the commit hook on the committer's thread and the round of folding,
  encoding and sending at the run's end, see :data:`FOLD_EVERY`) by ``thread_time``: a
  direct figure, not the difference of two large ones, and the code as the worker runs
  it, its caches cold after every fsync.
* the sink alone: the writes one "off" run committed are kept and fed again, as
  committed, to fresh sinks, CPU from the first write until the last span is sent; the
  least of :data:`FEEDS` feeds a round (other processes only ever add CPU time). The same
  instructions as in the loop, run hot: it comes out lower, about two thirds.

Neither sink figure counts what the sink costs the worker's own threads (the collector's
extra work while the sink holds a run's writes, the committer's clock reads). Under
callgrind (instructions, which load does not change; ``python -m
bench.telemetry_instructions``) the whole process ran 106-130k more instructions a step
with spans and metrics on, and the sink alone 120k: the same, within the end-to-end
count's run-to-run spread.

Usage: ``python -m bench.telemetry_cost [--steps N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from bench.machine import load_average
from bench.stats import percentile, table, us
from bench.tether_loop import AGENT_REF, grow_agent
from bench.workload import fresh_db, remove_db
from tether.runtime.runs import start_run
from tether.runtime.worker import Worker
from tether.store.records import Write
from tether.store.sqlite import SQLiteStore
from tether.telemetry.metrics import CommitMetrics, EventMetrics
from tether.telemetry.otel import OtlpSpans
from tether.telemetry.sink import TelemetrySink

RECEIVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_port, flush=True)
s.serve_forever()
"""
MODES = ("off", "metrics", "spans", "spans+metrics")
IN_LOOP, ALONE = "sink in the loop", "sink alone"
FEEDS = 5
"""Fresh sinks fed the kept writes each round; the least CPU of them is the round's."""
FOLD_EVERY = 3600.0
"""The sinks' interval (s): one round of folding and sending a run, at its end. A worker
stepping one to two thousand steps a second folds about once a thousand steps, as here;
with the default second, a run's wall time (its fsyncs, which other work on the machine
stretches from 0.5 to 2 s and more) would decide how many rounds it is cut into, each
with a fixed cost (about 1.5 ms: a request, the counters' update)."""


class TimedSink(TelemetrySink):
    """The sink, adding up the CPU time of its own code as the worker runs it.

    ``thread_time`` is the calling thread's CPU only, so what other threads do meanwhile
    is not counted. The hook runs on the committer's thread alone, and rounds one at a
    time (the sink's thread, then :meth:`close`'s flush after joining it), so neither
    total is written by two threads at once.
    """

    hook_cpu = 0.0
    round_cpu = 0.0

    def __call__(self, writes: Sequence[Write], seconds: float) -> None:
        t0 = time.thread_time()
        super().__call__(writes, seconds)
        self.hook_cpu += time.thread_time() - t0

    def flush(self) -> None:
        t0 = time.thread_time()
        super().flush()
        self.round_cpu += time.thread_time() - t0


def _sink(mode: str, store: SQLiteStore, endpoint: str) -> TimedSink | None:
    if mode == "off":
        return None
    spans = OtlpSpans(endpoint) if "spans" in mode else None
    m = commits = None
    if "metrics" in mode:
        m = EventMetrics(lookup=store.event)
        commits = CommitMetrics(m.registry)
    return TimedSink(store, spans=spans, metrics=m, commits=commits, interval=FOLD_EVERY)


def one_round(mode: str, steps: int, workdir: Path, endpoint: str) -> tuple[float, float]:
    """CPU seconds per step of one run of ``steps`` steps under ``mode``: the process's,
    and the sink's own (0 with it off)."""
    path = fresh_db(workdir, f"telemetry-{mode}")
    try:
        agent = grow_agent(steps)
        store = SQLiteStore(path, synchronous="FULL")
        start_run(store, agent, agent_ref=AGENT_REF, goal="grow", state={"messages": []})
        sink = _sink(mode, store, endpoint)
        worker = Worker(store, agents={AGENT_REF: agent}, on_commit=sink)
        gc.collect()
        c0 = time.process_time()
        asyncio.run(worker.run(until_idle=True))
        if sink is not None:
            sink.close()  # the last batch of spans is encoded and sent: it counts
        cpu = time.process_time() - c0
        store.close()
        own = 0.0 if sink is None else sink.hook_cpu + sink.round_cpu
        return cpu / steps, own / steps
    finally:
        remove_db(path)


def committed_writes(steps: int, workdir: Path) -> tuple[list[tuple[list[Write], float]], Path]:
    """The writes (with each commit's seconds) of one real run, as its committer handed
    them over, and the store they are in (for the sink's reads)."""
    path = fresh_db(workdir, "telemetry-alone")
    agent = grow_agent(steps)
    store = SQLiteStore(path, synchronous="FULL")
    try:
        start_run(store, agent, agent_ref=AGENT_REF, goal="grow", state={"messages": []})
        kept: list[tuple[list[Write], float]] = []
        worker = Worker(store, agents={AGENT_REF: agent},
                        on_commit=lambda ws, secs: kept.append((list(ws), secs)))
        asyncio.run(worker.run(until_idle=True))
    finally:
        store.close()
    return kept, path


def sink_alone(steps: int, workdir: Path, endpoint: str, feeds: int = FEEDS) -> float:
    """CPU seconds per step of the sink by itself over the writes of one real run: the
    least of ``feeds`` fresh sinks fed them."""
    kept, path = committed_writes(steps, workdir)
    store = SQLiteStore(path, synchronous="FULL")
    try:
        best = float("inf")
        for _ in range(feeds):
            sink = _sink("spans+metrics", store, endpoint)
            assert sink is not None
            gc.collect()
            c0 = time.process_time()
            for ws, secs in kept:
                sink(ws, secs)
            sink.close()
            best = min(best, time.process_time() - c0)
        return best / steps
    finally:
        store.close()
        remove_db(path)


@contextlib.contextmanager
def receiver() -> Iterator[str]:
    """An OTLP/HTTP receiver in another process on loopback; yields its traces URL."""
    rx = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout is not None
        yield f"http://127.0.0.1:{rx.stdout.readline().strip()}/v1/traces"
    finally:
        rx.terminate()
        rx.communicate(timeout=30)


def measure(steps: int, rounds: int, log: Callable[[str], None] = print
            ) -> dict[str, list[float]]:
    """Per-step CPU seconds of every round, by mode, with the sink's own in the loop and
    alone (round r of every list is the same round: differences pair them)."""
    out: dict[str, list[float]] = {m: [] for m in (*MODES, IN_LOOP, ALONE)}
    with receiver() as endpoint, tempfile.TemporaryDirectory() as d:
        one_round("spans+metrics", 50, Path(d), endpoint)  # imports, first connection
        for r in range(rounds):
            for mode in MODES if r % 2 == 0 else reversed(MODES):
                cpu, own = one_round(mode, steps, Path(d), endpoint)
                out[mode].append(cpu)
                if mode == "spans+metrics":
                    out[IN_LOOP].append(own)
            out[ALONE].append(sink_alone(steps, Path(d), endpoint))
            log(f"round {r + 1}: " + ", ".join(f"{k} {v[-1] * 1e6:.1f} µs"
                                               for k, v in out.items()))
    return out


def paired(res: dict[str, list[float]], mode: str) -> list[float]:
    """Each round's CPU per step of ``mode`` less that round's "off"."""
    return [a - b for a, b in zip(res[mode], res["off"], strict=True)]


def section(t: dict[str, list[float]], steps: int) -> str:
    """The report's section 9d from :func:`measure`'s results."""
    if not t or not t.get(IN_LOOP):
        return "## 9d. Telemetry cost\n\nNot run.\n"
    rows = []
    for m in MODES:
        d = paired(t, m)
        rows.append([m, us(percentile(t[m], 0.5)),
                     f"{percentile(d, 0.5) * 1e6:+.1f} µs ({min(d) * 1e6:+.1f} to "
                     f"{max(d) * 1e6:+.1f})"])
    rows.append(["the sink's own code in the spans+metrics rounds (thread CPU; the verdict)",
                 us(percentile(t[IN_LOOP], 0.5)), ""])
    rows.append([f"the sink alone (fed one run's committed writes again; least of {FEEDS} "
                 "feeds a round)", us(percentile(t[ALONE], 0.5)), ""])
    return ("## 9d. Telemetry cost\n\n`bench/telemetry_cost.py`: the core loop (one run, "
            f"N={steps}) with the worker's telemetry sink off, metrics only, "
            "spans only (OTLP/HTTP protobuf to a receiver in another process on loopback), "
            f"and both, {len(t['off'])} rounds; process CPU per step (every thread), median "
            "over rounds. \"vs off\" is the median of each round's difference from that "
            "round's \"off\" (the modes' order reversed every other round), with its range: "
            "most of a step's CPU is the kernel's (fsync, the WAL), which moves by tens of µs "
            "a run when other work shares the cores, so the end-to-end difference cannot "
            "resolve the 15 µs target. The verdict is the sink's own CPU in those runs, timed "
            "directly (`thread_time` around its commit hook, on the committer's thread, and "
            "around its round of folding, encoding and sending, once at the run's end); the "
            "sink alone runs the same instructions hot, and comes out lower. What the sink "
            "costs the worker's own threads is in neither; counted in instructions, which "
            "load does not change (`python -m bench.telemetry_instructions`, callgrind), the "
            "whole process's extra with both on matched the sink alone's within the count's "
            "spread.\n\n"
            + table(["mode", "CPU per step", "vs off (range)"], rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    load = load_average()
    res = measure(args.steps, args.rounds)
    print(f"CPU per step, median of {args.rounds} rounds of {args.steps} steps "
          f"(load average before: {load}):")
    for mode in MODES:
        d = [x * 1e6 for x in paired(res, mode)]
        print(f"  {mode:14s} {statistics.median(res[mode]) * 1e6:7.1f} µs  "
              f"({statistics.median(d):+.1f} µs vs off, {min(d):+.1f} to {max(d):+.1f})")
    loop = statistics.median(res[IN_LOOP]) * 1e6
    alone = statistics.median(res[ALONE]) * 1e6
    print(f"  the sink's own CPU in the loop (spans+metrics): {loop:.1f} µs")
    print(f"  the sink alone (least of {FEEDS} feeds a round): {alone:.1f} µs")
    print(f"target: at most +15 µs per step: the sink in the loop {loop:.1f} µs: "
          f"{'pass' if loop <= 15 else 'MISS'}")


if __name__ == "__main__":
    main()
