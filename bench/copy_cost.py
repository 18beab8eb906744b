"""Moving a store: ``tether store copy`` of the bench-sized store, SQLite to PostgreSQL
and back.

The store is the impact and audit benchmarks' swarm (``bench/impact_cost.py``): 100 runs
built by the real runtime, about 1,010 events each (~100,000 in all), with messages,
board and file versions, effects, checkpoints and provenance links, sealed once (a signed
checkpoint over every event). Timed, ``repeats`` times each, into a new schema or file
each time (:func:`tether.copying.copy_store`):

* SQLite file -> PostgreSQL schema: reading every row in one snapshot and writing it
  (binary COPY) in one transaction, then verifying the copy (every chain, projection
  and the signed checkpoint with its key), reported apart;
* that schema -> a new SQLite file, the same way.

Also the process's peak memory (``ru_maxrss``) once the store is built and after every
copy, against the store's size on disk: the copy streams, so it adds little.

``python -m bench.copy_cost [--work-steps N] [--repeats N]`` prints the figures.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import pg_server as srv
from bench.impact_cost import SEED, WORK_STEPS, build_swarm
from bench.workload import fresh_db, remove_db
from tether.copying import CopyReport, copy_store
from tether.core.note import Signer
from tether.sealing import seal
from tether.store.sqlite import SQLiteStore


@dataclass(frozen=True, slots=True)
class CopySample:
    """One built store, copied ``repeats`` times each way."""

    events: int
    rows: int
    store_bytes: int
    to_pg: list[CopyReport]
    to_sqlite: list[CopyReport]
    rss_before: int
    """Peak memory of the process once the store was built, before any copy."""
    rss_copied: int
    """Peak memory when the first copy had written every row, before its verify."""
    rss_after: int
    """Peak memory after every copy and verify."""

    def median(self, reps: list[CopyReport], verify: bool = False) -> float:
        return statistics.median(r.verify_seconds if verify else r.copy_seconds for r in reps)


def run_copy(workdir: Path, *, work_steps: int = WORK_STEPS, repeats: int = 3) -> CopySample:
    """Build and seal the swarm, then copy it to PostgreSQL and back, ``repeats`` times."""
    path = fresh_db(workdir, "tether-copy")
    ws = workdir / f"copy-ws-{uuid.uuid4().hex[:8]}"
    store = SQLiteStore(path, synchronous="NORMAL")
    signer = Signer.generate("bench.example/tether", os.urandom(32))
    try:
        build_swarm(store, ws, work_steps, SEED)
        seal(store, signer, now=time.time())
        events = store.event_count()
    finally:
        store.close()
    to_pg, to_sqlite = [], []
    before = _peak()
    copied: list[int] = []
    try:
        for _ in range(repeats):
            with srv.schema("copy_bench") as target:
                url = target.store_url()
                to_pg.append(_checked(copy_store(str(path), url, key=signer.verifier,
                                                 progress=_at_verify(copied))))
                back = fresh_db(workdir, "tether-copy-back")
                try:
                    to_sqlite.append(_checked(copy_store(url, str(back),
                                                         key=signer.verifier)))
                finally:
                    remove_db(back)
        return CopySample(events, to_pg[0].total, path.stat().st_size, to_pg, to_sqlite,
                          before, copied[0], _peak())
    finally:
        remove_db(path)
        shutil.rmtree(ws, ignore_errors=True)


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _at_verify(into: list[int]) -> Callable[[str, int, int], None]:
    """A progress callback noting the peak memory as the verify starts (once)."""
    def tick(what: str, done: int, total: int) -> None:
        if what == "verify" and not into:
            into.append(_peak())
    return tick


def _checked(rep: CopyReport) -> CopyReport:
    if not rep.ok or rep.verify.checkpoints != 1 or not rep.verify.signatures_checked:
        raise RuntimeError(f"the copy did not verify: {rep.verify.problems[:3]} "
                           f"{rep.mismatched}")
    return rep


def describe(s: CopySample) -> str:
    def way(label: str, reps: list[CopyReport]) -> str:
        copy, verify = s.median(reps), s.median(reps, verify=True)
        return (f"{label}: copy {copy:.1f} s ({s.rows / copy:,.0f} rows/s, "
                f"{s.events / copy:,.0f} events/s), then verify {verify:.1f} s "
                f"[copies: {', '.join(f'{r.copy_seconds:.1f}' for r in reps)} s]")
    return (f"store: {s.events:,} events, {s.rows:,} rows, {s.store_bytes / 2**20:.0f} MB "
            f"on disk (SQLite)\n{way('SQLite -> PostgreSQL', s.to_pg)}\n"
            f"{way('PostgreSQL -> SQLite', s.to_sqlite)}\n"
            f"peak memory of the process: {s.rss_before / 2**20:.0f} MB once built, "
            f"{s.rss_copied / 2**20:.0f} MB when the first copy was written, "
            f"{s.rss_after / 2**20:.0f} MB after every copy and verify")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.copy_cost", description=__doc__)
    ap.add_argument("--work-steps", type=int, default=WORK_STEPS,
                    help="work steps per run of the 100-run swarm (91: ~100,000 events)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    why = srv.unreachable()
    if why:
        raise SystemExit(f"bench.copy_cost needs PostgreSQL: {why}")
    workdir = Path(tempfile.mkdtemp(prefix="tether-bench-copy-"))
    try:
        print(describe(run_copy(workdir, work_steps=args.work_steps, repeats=args.repeats)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
