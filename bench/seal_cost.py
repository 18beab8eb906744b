"""Seal cost: a seal of 10,000 new events on a large store, incremental and from scratch.

The store is synthetic (its events are appended by the real journal and committed by the
real store, 100 runs committing together, but no agent runs): sealing reads only event
hashes and the batch chain, so what the events say does not change its cost. After a first
seal, each round commits ``new`` more events and seals them twice over the same state:

* **incremental** (what ``tether audit seal`` and a worker do): the cached frontier of
  the last checkpoint, checked against its signed root, extended by the new events;
* **from scratch** (``tether audit seal --full``, and every seal before the cache): every
  event's hash read in commit order and the whole tree hashed.

``python -m bench.seal_cost [--events N] [--new K] [--repeats R]`` prints the medians.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.workload import fresh_db, remove_db
from tether.core.clock import FixedClock
from tether.core.ids import UlidSource
from tether.core.note import Signer
from tether.runtime.agent import StepAgent
from tether.runtime.journal import RunJournal
from tether.runtime.runs import start_run
from tether.sealing import seal
from tether.store.sqlite import SQLiteStore

RUNS = 100


@dataclass(frozen=True, slots=True)
class SealSample:
    """Seconds per seal of ``new`` events on a store of about ``events``."""

    events: int
    new: int
    build: float
    incremental: list[float]
    scratch: list[float]

    def describe(self) -> str:
        inc, full = statistics.median(self.incremental), statistics.median(self.scratch)
        return (f"seal of {self.new:,} new events on a store of {self.events:,}: incremental "
                f"{inc * 1e3:.1f} ms, from scratch {full * 1e3:.0f} ms ({full / inc:.0f}x); "
                f"built in {self.build:.0f} s")


class _Writer:
    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.clock = FixedClock(1_700_000_000.0)
        rng = random.Random(7)
        ids = UlidSource(self.clock.now, lambda: rng.getrandbits(80))
        agent = StepAgent(lambda ctx, state: None, name="bench")
        self.journals = []
        for i in range(RUNS):
            rid = start_run(store, agent, agent_ref="bench:seal", goal=f"g{i}",
                            clock=self.clock, ids=ids, state={})
            row = store.get_run(rid)
            assert row is not None
            self.journals.append(RunJournal(store, row, store.acquire(
                rid, "bench", 10**9, time.time()), ids, self.clock.now))

    def add(self, count: int, per_commit: int = 10) -> None:
        """``count`` events: each commit appends ``per_commit`` to every run."""
        done = 0
        while done < count:
            k = min(per_commit, -(-(count - done) // RUNS))
            for j in self.journals:
                for i in range(k):
                    j.append("model.called", {"text": "x" * 40, "tokens": i}, step=0,
                             actor="agent:bench")
                self.clock.advance(0.001)
            self.store.commit([j.take() for j in self.journals])
            done += k * RUNS


def run_seal_cost(workdir: Path, *, events: int = 1_000_000, new: int = 10_000,
                  repeats: int = 3) -> SealSample:
    path = fresh_db(workdir, "tether-seal")
    store = SQLiteStore(path, synchronous="NORMAL")
    signer = Signer.generate("bench.example/tether", os.urandom(32))
    try:
        t0 = time.perf_counter()
        w = _Writer(store)
        w.add(events - store.event_count(), per_commit=50)
        build = time.perf_counter() - t0
        seal(store, signer, now=time.time(), full=True)
        inc, full = [], []
        for _ in range(repeats):
            w.add(new)
            t = time.perf_counter()
            cp, made = seal(store, signer, now=time.time())
            inc.append(time.perf_counter() - t)
            store._conn().execute("DELETE FROM signed_checkpoints WHERE n = ?", (cp.n,))
            t = time.perf_counter()
            seal(store, signer, now=time.time(), full=True)
            full.append(time.perf_counter() - t)
            if not made:
                raise RuntimeError("the bench's seal found nothing new")
        return SealSample(store.event_count(), new, build, inc, full)
    finally:
        store.close()
        remove_db(path)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.seal_cost")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--new", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tether-bench-seal-"))
    try:
        print(run_seal_cost(workdir, events=args.events, new=args.new,
                            repeats=args.repeats).describe())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
