"""One worker process of the PostgreSQL section's throughput benchmark.

``python -m bench.pg_worker --store URL --steps S --concurrency C [--app NAME]``: opens
the store, builds a real :class:`~tether.runtime.worker.Worker` for the growing loop's
agent, prints ``ready`` and waits for a line on stdin, so that every worker of a round
starts together. It then serves as a deployed ``tether worker`` does (no
``until_idle``: a worker that finds nothing on one pass polls again) until a second
line on stdin tells it to stop, and prints one JSON line: its start (``time.time()``,
comparable across processes), when its first step began (None if it had none), the runs
it finished, its process CPU and, on PostgreSQL, the CPU its server backends used.

Why not ``until_idle``: workers started together list the same oldest runnable runs;
the one that loses every lease of its first pass would take that for an idle store and
exit while half the runs are still waiting, which measures the race, not the sharing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time

from bench.pg_server import backend_cpu
from bench.tether_loop import AGENT_REF, grow_agent
from tether.runtime.worker import Worker, WorkerStats
from tether.store import open_store


async def _serve(worker: Worker) -> WorkerStats:
    """Drive runs until stdin says stop (read in a thread: the event loop must not block)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def wait_for_stop() -> None:
        sys.stdin.readline()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_stop, daemon=True).start()
    return await worker.run(stop=stop)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pg_worker")
    ap.add_argument("--store", required=True, help="a SQLite path or a postgresql:// URL")
    ap.add_argument("--steps", type=int, required=True, help="steps after which a run is done")
    ap.add_argument("--concurrency", type=int, required=True, help="runs driven at once")
    ap.add_argument("--app", default=None, help="application_name of the store's backends")
    args = ap.parse_args(argv)
    store = open_store(args.store)
    stamps: list[tuple[float, float]] = []
    # A long lease: a worker starved of CPU by its siblings must not lose runs mid-round.
    worker = Worker(store, agents={AGENT_REF: grow_agent(args.steps, stamps)},
                    concurrency=args.concurrency, lease_ttl=600)
    print("ready", flush=True)
    sys.stdin.readline()
    c0, start, p0 = time.process_time(), time.time(), time.perf_counter()
    stats = asyncio.run(_serve(worker))
    cpu = time.process_time() - c0
    server = backend_cpu(args.app) if args.app else None
    store.close()
    first = start + stamps[0][0] - p0 if stamps else None
    print(json.dumps({"start": start, "first": first, "cpu": cpu, "server_cpu": server,
                      "finished": stats.finished or {}, "driven": stats.runs_driven}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
