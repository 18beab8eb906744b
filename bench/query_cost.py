"""Audit query cost: ``tether audit query`` for a 2-hour window of a large store.

Issue 11's target: an audit query for a 2-hour window over 1,000,000 events in
at most 50 ms. The store is built by bulk commits (``Store.commit`` of
journal-shaped events, 1,000 per write, ``synchronous=NORMAL``), not by the
runtime: what is measured is the query, and the runtime would take an hour to
journal a million events. 100 runs each journal events at a steady pace over
30 days of their clock (the events' ``time``: an always-on swarm of 100 runs,
one event per run every 4.3 minutes), in the kinds a real night has
(``step.finished``, ``model.called``, ``tool.called``, ``policy.decided``...),
so a 2-hour window holds 1/360 of the store (2,778 of 1,000,000 events): the
cost follows what the window holds, which the report gives beside the time.

Timed, on the finished store (median of ``repeats``): the whole window
(``Query(since, until)``, what ``tether audit query --since --until`` reads),
and the window narrowed to one kind (``--kind policy.decided``) and one agent
(``--agent``), through :func:`tether.reporting.query.run_query`.

Run alone: ``python -m bench.query_cost --events 1000000``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from tether.core.events import Chain, Event
from tether.core.ids import UlidSource, iso
from tether.reporting.query import Query, run_query
from tether.store.records import RunRow, Write
from tether.store.sqlite import SQLiteStore

T0 = 1_796_000_000.0
SPAN = 30 * 86400.0
WINDOW = 2 * 3600.0
RUNS = 100
KINDS = ("step.started", "model.called", "policy.decided", "tool.called", "step.finished")


@dataclass(frozen=True, slots=True)
class QuerySample:
    events: int
    """Events in the store."""
    build_s: float
    window_events: int
    window_ms: float
    kind_events: int
    kind_ms: float
    agent_events: int
    agent_ms: float
    db_bytes: int


def build(path: Path, events: int) -> SQLiteStore:
    """A store of ``events`` events over :data:`RUNS` runs and :data:`SPAN` seconds."""
    store = SQLiteStore(path, synchronous="NORMAL")
    per_run = events // RUNS
    step = SPAN / per_run
    chains, rows = [], []
    ids = UlidSource(lambda: T0)
    for r in range(RUNS):
        rid = ids.new()
        chains.append(Chain(rid))
        rows.append(RunRow(id=rid, name=f"r{r}", agent=f"bench:agent{r % 5}", swarm="s",
                           goal="g", status="running", epoch=0, step=0, seq=0, head="",
                           spec={}, budget={}, usage={}, wake_at=None, created=T0,
                           updated=T0))
    batch = 1000
    fences: dict[str, int | None] = {row.id: None for row in rows}  # None: the write creates it
    for start in range(0, per_run, batch):
        writes = []
        for r, chain in enumerate(chains):
            evs: list[Event] = []
            for i in range(start, min(start + batch, per_run)):
                kind = "run.started" if i == 0 else KINDS[i % len(KINDS)]
                t = T0 + i * step + r * (step / RUNS)
                evs.append(chain.make(id=ids.new(), kind=kind, time=iso(t), epoch=0,
                                      step=i // len(KINDS), actor="system", causes=(),
                                      payload={"i": i, "tool": "fs_read"}))
            row = rows[r]
            row.seq, row.head = chain.seq, chain.head
            writes.append(Write(run=row.id, fence=fences[row.id], events=tuple(evs),
                                run_row=row))
        bad = [e for e in store.commit(writes) if e is not None]
        if bad:
            raise RuntimeError(f"bench store build failed: {bad[0]}")
        if start == 0:  # the bench owns every run from now on: one lease each
            fences = {row.id: store.acquire(row.id, "bench", 1e9, T0) for row in rows}
    return store


def _timed(store: SQLiteStore, q: Query, repeats: int) -> tuple[int, float]:
    times, n = [], 0
    for _ in range(repeats):
        t = time.perf_counter()
        n = len(run_query(store, q))
        times.append(time.perf_counter() - t)
    return n, statistics.median(times) * 1000


def run_query_cost(events: int, workdir: Path, repeats: int = 5) -> QuerySample:
    path = workdir / f"query-{events}.db"
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)
    t = time.perf_counter()
    store = build(path, events)
    build_s = time.perf_counter() - t
    since = T0 + SPAN / 2
    window = Query(since=since, until=since + WINDOW)
    n, ms = _timed(store, window, repeats)
    kn, kms = _timed(store, Query(since=since, until=since + WINDOW,
                                  kinds=("policy.decided",)), repeats)
    an, ams = _timed(store, Query(since=since, until=since + WINDOW, agent="agent3"), repeats)
    size = path.stat().st_size
    store.close()
    return QuerySample(events, build_s, n, ms, kn, kms, an, ams, size)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.query_cost")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp"))
    args = ap.parse_args()
    s = run_query_cost(args.events, args.workdir)
    print(s)


if __name__ == "__main__":
    main()
