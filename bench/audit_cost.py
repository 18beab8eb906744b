"""Audit cost: ``tether audit verify`` throughput and the cost of sealing.

The store is the impact benchmark's swarm (``bench/impact_cost.py``): 100 runs
built by the real runtime, about 1,010 events each, with messages, board and
file versions, effects, checkpoints and provenance links, so verify does all
of its checks on it. Timed, ``repeats`` times each on the finished store:

* ``verify_store`` (every chain, checkpoint body, link, row and projection,
  and the signed checkpoints with the public key), with the helper process
  ``tether audit verify`` starts (``tether.audit.share``): events per second,
  on CPU time (this process and the helper together) and on wall time;
* a first ``seal`` (the Merkle tree over every event, signed): seconds, and
  seconds per 10,000 events; then the hashing alone (the store's leaf hashes
  read in commit order, the tree built), to split reading from hashing.

``python -m bench.audit_cost [--work-steps N]`` prints the figures; ``make
bench`` puts them in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.impact_cost import SEED, WORK_STEPS, build_swarm
from bench.workload import fresh_db, remove_db
from tether.audit import verify_store
from tether.cli.verify_helper import COMMAND
from tether.core.merkle import Tree
from tether.core.note import Signer
from tether.sealing import seal
from tether.store.sqlite import SQLiteStore


@dataclass(frozen=True, slots=True)
class AuditSample:
    """One built store, verified and sealed ``repeats`` times."""

    events: int
    runs: int
    build: float
    verify_cpu: list[float]
    verify_wall: list[float]
    seal_wall: list[float]
    read_leaves: list[float]
    hash_tree: list[float]

    def per_second(self, seconds: list[float]) -> float:
        return self.events / statistics.median(seconds)

    def per_10k(self, seconds: list[float]) -> float:
        return statistics.median(seconds) / (self.events / 10_000)


def run_audit(workdir: Path, *, work_steps: int = WORK_STEPS, repeats: int = 5) -> AuditSample:
    """Build the swarm, then time verify and sealing on it."""
    path = fresh_db(workdir, "tether-audit")
    ws = workdir / f"audit-ws-{uuid.uuid4().hex[:8]}"
    store = SQLiteStore(path, synchronous="NORMAL")
    signer = Signer.generate("bench.example/tether", os.urandom(32))
    try:
        t0 = time.perf_counter()
        build_swarm(store, ws, work_steps, SEED)
        build = time.perf_counter() - t0
        seal_wall, reads, hashes = [], [], []
        for _ in range(repeats):
            store._conn().execute("DELETE FROM signed_checkpoints")  # a first seal each time
            w = time.perf_counter()
            seal(store, signer, now=time.time())
            seal_wall.append(time.perf_counter() - w)
            w = time.perf_counter()
            leaves = store.leaf_hashes()
            reads.append(time.perf_counter() - w)
            w = time.perf_counter()
            Tree.from_data(leaves).root()
            hashes.append(time.perf_counter() - w)
        cpu, wall = [], []
        for _ in range(repeats):
            c, w = _cpu(), time.perf_counter()
            rep = verify_store(store, key=signer.verifier, helper=COMMAND)
            cpu.append(_cpu() - c)
            wall.append(time.perf_counter() - w)
            if not rep.ok or rep.checkpoints != 1:
                raise RuntimeError(f"verify found problems on the bench store: {rep.problems}")
        return AuditSample(rep.events, rep.runs, build, cpu, wall, seal_wall, reads, hashes)
    finally:
        store.close()
        remove_db(path)
        shutil.rmtree(ws, ignore_errors=True)


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (verify's helper)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def describe(s: AuditSample) -> str:
    return (f"verify {s.per_second(s.verify_cpu):,.0f} events/s CPU "
            f"({s.per_second(s.verify_wall):,.0f} wall) over {s.events:,} events of {s.runs} "
            f"runs; seal {s.per_10k(s.seal_wall) * 1e3:.1f} ms per 10,000 events "
            f"({statistics.median(s.seal_wall):.2f} s for all: reading the leaves "
            f"{s.per_10k(s.read_leaves) * 1e3:.1f} ms, hashing the tree "
            f"{s.per_10k(s.hash_tree) * 1e3:.1f} ms per 10,000)")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.audit_cost")
    ap.add_argument("--work-steps", type=int, default=WORK_STEPS,
                    help="work steps per run of the 100-run swarm (91: ~100,000 events)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tether-bench-audit-"))
    try:
        print(describe(run_audit(workdir, work_steps=args.work_steps, repeats=args.repeats)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
