"""One worker process of the PostgreSQL section's throughput benchmark.

``python -m bench.pg_worker --store URL --steps S --concurrency C [--app NAME]``: opens
the store, builds a real :class:`~tether.runtime.worker.Worker` for the growing loop's
agent, prints ``ready`` and waits for a line on stdin, so that every worker of a round
starts together, then drives runs until none is left for it and prints one JSON line:
its start and end (``time.time()``, comparable across processes), the runs it finished,
its process CPU and, on PostgreSQL, the CPU its server backends used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from bench.pg_server import backend_cpu
from bench.tether_loop import AGENT_REF, grow_agent
from tether.runtime.worker import Worker
from tether.store import open_store


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pg_worker")
    ap.add_argument("--store", required=True, help="a SQLite path or a postgresql:// URL")
    ap.add_argument("--steps", type=int, required=True, help="steps after which a run is done")
    ap.add_argument("--concurrency", type=int, required=True, help="runs driven at once")
    ap.add_argument("--app", default=None, help="application_name of the store's backends")
    args = ap.parse_args(argv)
    store = open_store(args.store)
    # A long lease: a worker starved of CPU by its siblings must not lose runs mid-round.
    worker = Worker(store, agents={AGENT_REF: grow_agent(args.steps)},
                    concurrency=args.concurrency, lease_ttl=600)
    print("ready", flush=True)
    sys.stdin.readline()
    c0, start = time.process_time(), time.time()
    stats = asyncio.run(worker.run(until_idle=True))
    end, cpu = time.time(), time.process_time() - c0
    server = backend_cpu(args.app) if args.app else None
    store.close()
    print(json.dumps({"start": start, "end": end, "cpu": cpu, "server_cpu": server,
                      "finished": stats.finished or {}, "driven": stats.runs_driven}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
