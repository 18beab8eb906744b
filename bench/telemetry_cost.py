"""Telemetry cost per step: the core per-step loop with the telemetry sink on and off.

The loop is the core benchmark's (bench/tether_loop.py: one run of N steps through the
real Worker and SQLiteStore at ``synchronous=FULL``); "on" gives the worker a
:class:`~tether.telemetry.sink.TelemetrySink` with spans sent over OTLP/HTTP (protobuf,
the SDK's batch processor) to a receiver in another process on loopback, and metrics
folded into prometheus-client counters (plus the commit histogram). The figure is the
process's CPU time (``process_time``: every thread, so the exporter's encoding and
HTTP posts count) per step, median over rounds that alternate the modes. Issue 11's
target: at most 15 µs more CPU per step with spans and metrics on.

On a loaded machine the end-to-end difference drowns in the loop's own noise, so the
sink is also timed alone: the writes one "off" run committed are kept and fed again to
a fresh sink (spans, metrics, commit histogram), CPU from the first write until the
last span is sent.

Usage: ``python -m bench.telemetry_cost [--steps N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.machine import load_average
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
MODES = ("off", "metrics", "spans", "spans+metrics", "sink alone")


def _sink(mode: str, store: SQLiteStore, endpoint: str) -> TelemetrySink | None:
    if mode == "off":
        return None
    spans = OtlpSpans(endpoint) if "spans" in mode else None
    m = commits = None
    if "metrics" in mode:
        m = EventMetrics(lookup=store.event)
        commits = CommitMetrics(m.registry)
    return TelemetrySink(store, spans=spans, metrics=m, commits=commits)


def one_round(mode: str, steps: int, workdir: Path, endpoint: str) -> float:
    """CPU seconds per step of one run of ``steps`` steps under ``mode``."""
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
        return cpu / steps
    finally:
        remove_db(path)


def sink_alone(steps: int, workdir: Path, endpoint: str) -> float:
    """CPU seconds per step of the sink by itself, over the writes of one real run."""
    path = fresh_db(workdir, "telemetry-alone")
    try:
        agent = grow_agent(steps)
        store = SQLiteStore(path, synchronous="FULL")
        start_run(store, agent, agent_ref=AGENT_REF, goal="grow", state={"messages": []})
        kept: list[tuple[list[Write], float]] = []
        worker = Worker(store, agents={AGENT_REF: agent},
                        on_commit=lambda ws, secs: kept.append((list(ws), secs)))
        asyncio.run(worker.run(until_idle=True))
        sink = _sink("spans+metrics", store, endpoint)
        assert sink is not None
        gc.collect()
        c0 = time.process_time()
        for ws, secs in kept:
            sink(ws, secs)
        sink.close()
        cpu = time.process_time() - c0
        store.close()
        return cpu / steps
    finally:
        remove_db(path)


def measure(steps: int, rounds: int, log: Callable[[str], None] = print
            ) -> dict[str, list[float]]:
    """Per-step CPU seconds of every round, by mode (rounds alternate the modes)."""
    rx = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout is not None
        endpoint = f"http://127.0.0.1:{rx.stdout.readline().strip()}/v1/traces"
        out: dict[str, list[float]] = {m: [] for m in MODES}
        with tempfile.TemporaryDirectory() as d:
            one_round("spans+metrics", 50, Path(d), endpoint)  # imports, first connection
            for r in range(rounds):
                for mode in MODES[:-1]:
                    out[mode].append(one_round(mode, steps, Path(d), endpoint))
                out["sink alone"].append(sink_alone(steps, Path(d), endpoint))
                log(f"round {r + 1}: " + ", ".join(f"{m} {out[m][-1] * 1e6:.1f} µs"
                                                   for m in MODES))
        return out
    finally:
        rx.terminate()
        rx.communicate(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    load = load_average()
    res = measure(args.steps, args.rounds)
    off = statistics.median(res["off"])
    print(f"CPU per step, median of {args.rounds} rounds of {args.steps} steps "
          f"(load average before: {load}):")
    for mode in MODES[:-1]:
        med = statistics.median(res[mode])
        print(f"  {mode:14s} {med * 1e6:7.1f} µs  ({(med - off) * 1e6:+.1f} µs vs off)")
    alone = statistics.median(res["sink alone"]) * 1e6
    print(f"  the sink alone (spans+metrics, fed the committed writes of a run): {alone:.1f} µs")
    extra = (statistics.median(res["spans+metrics"]) - off) * 1e6
    print(f"target: at most +15 µs per step: end to end {extra:+.1f} µs, sink alone "
          f"{alone:.1f} µs: {'pass' if alone <= 15 else 'MISS'} (by the sink alone)")


if __name__ == "__main__":
    main()
