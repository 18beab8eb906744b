"""Where tether's time and bytes go: one instrumented pass per scenario, not timed for targets.

The store's ``commit`` (run by the group committer's writer thread) is
wrapped to time it, the event loop's thread CPU is read around the worker,
and WAL auto-checkpointing is switched off on the store's connections so the
WAL file ends up holding every page every commit wrote. Reading the WAL's
frame headers and mapping page numbers to tables with SQLite's ``dbstat``
table says how many 4 KiB pages each step made SQLite write and fsync, and
which tables they belong to. With ``--profile``, cProfile output of both
threads is printed too.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import sqlite3
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.tether_loop import AGENT_REF, _start, grow_agent
from bench.workload import fresh_db, remove_db
from tether.runtime.worker import Worker
from tether.store.sqlite import SQLiteStore


@dataclass(slots=True)
class Diagnosis:
    """One instrumented run of ``runs`` x ``steps`` growing-loop steps."""

    label: str
    runs: int
    steps: int
    wall: float = 0.0
    loop_cpu: float = 0.0
    commit_wall: float = 0.0
    commit_cpu: float = 0.0
    commits: int = 0
    wal_pages: Counter[str] = field(default_factory=Counter)
    table_bytes: dict[str, int] = field(default_factory=dict)
    rows: dict[str, tuple[int, float]] = field(default_factory=dict)
    """What the journal holds: (rows, mean bytes of the body or payload) by kind."""
    profile: str = ""

    @property
    def total_steps(self) -> int:
        return self.runs * self.steps

    def per_step(self, value: float) -> float:
        return value / self.total_steps


class _CommitMeter:
    """Wraps ``store.commit`` in the writer thread: time, CPU, optional cProfile, and
    optionally auto-checkpointing off so the WAL keeps every page written."""

    def __init__(self, store: SQLiteStore, diag: Diagnosis, prof: cProfile.Profile | None,
                 keep_wal: bool) -> None:
        self.inner = store.commit
        self.store, self.diag, self.prof, self.keep_wal = store, diag, prof, keep_wal
        self.prepared: set[int] = set()

    def __call__(self, writes: Any) -> Any:
        tid = threading.get_ident()
        if self.keep_wal and tid not in self.prepared:
            # Diagnostic only: reaches into the store's per-thread connection.
            self.store._conn().execute("PRAGMA wal_autocheckpoint=0")
            self.prepared.add(tid)
        t0, c0 = time.perf_counter(), time.thread_time()
        if self.prof:
            self.prof.enable()
        try:
            return self.inner(writes)
        finally:
            if self.prof:
                self.prof.disable()
            if not self.keep_wal:
                self.diag.commit_wall += time.perf_counter() - t0
                self.diag.commit_cpu += time.thread_time() - c0
                self.diag.commits += 1


def diagnose(label: str, runs: int, steps: int, workdir: Path, *, profile: bool = False) -> Diagnosis:
    """Two instrumented passes of ``runs`` runs x ``steps`` steps.

    The first times the threads (the WAL is recycled as usual); the second keeps
    the whole WAL to count pages, since a WAL that keeps growing makes each
    fsync dearer and would distort the timings.
    """
    diag = Diagnosis(label, runs, steps)
    for keep_wal in (False, True):
        path = fresh_db(workdir, "tether-diag")
        try:
            _pass(diag, path, keep_wal=keep_wal, profile=profile and not keep_wal)
        finally:
            remove_db(path)
    return diag


def _pass(diag: Diagnosis, path: Path, *, keep_wal: bool, profile: bool) -> None:
    agent = grow_agent(diag.steps)
    _start(path, agent, diag.runs)
    store = SQLiteStore(path, synchronous="FULL")
    if keep_wal:
        main = store._conn()  # diagnostic access, as in _CommitMeter
        main.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        main.execute("PRAGMA wal_autocheckpoint=0")
    wprof, mprof = (cProfile.Profile(), cProfile.Profile()) if profile else (None, None)
    store.commit = _CommitMeter(store, diag, wprof, keep_wal)  # type: ignore[method-assign]
    worker = Worker(store, agents={AGENT_REF: agent}, lease_ttl=600)
    t0, c0 = time.perf_counter(), time.thread_time()
    if mprof:
        mprof.enable()
    asyncio.run(worker.run(until_idle=True))
    if mprof:
        mprof.disable()
    if keep_wal:
        diag.wal_pages, diag.table_bytes = _wal_pages(path)  # before close folds the WAL away
        diag.rows = _rows(path)
    else:
        diag.wall, diag.loop_cpu = time.perf_counter() - t0, time.thread_time() - c0
    store.close()
    if mprof and wprof:
        diag.profile = _profile_text(diag.label, mprof, wprof)


def _wal_pages(path: Path) -> tuple[Counter[str], dict[str, int]]:
    """Pages written to the WAL per table, and bytes each table holds."""
    wal = Path(f"{path}-wal").read_bytes()
    page_size = struct.unpack(">I", wal[8:12])[0] if len(wal) >= 32 else 4096
    pages: list[int] = []
    for off in range(32, len(wal) - 24 + 1, 24 + page_size):
        pages.append(struct.unpack(">I", wal[off:off + 4])[0])
    conn = sqlite3.connect(path)
    try:
        owner = {r[1]: r[0] for r in conn.execute("SELECT name, pageno FROM dbstat")}
        sizes = {r[0]: int(r[1]) for r in
                 conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")}
    except sqlite3.OperationalError:  # SQLite built without dbstat
        return Counter({"(all tables)": len(pages)}), {}
    finally:
        conn.close()
    return Counter(owner.get(p, "(freelist)") for p in pages), sizes


def _rows(path: Path) -> dict[str, tuple[int, float]]:
    conn = sqlite3.connect(path)
    try:
        out = {f"event {k}": (int(n), float(b)) for k, n, b in conn.execute(
            "SELECT kind, count(*), avg(length(payload)) FROM events GROUP BY kind")}
        out.update({f"checkpoint {k}": (int(n), float(b)) for k, n, b in conn.execute(
            "SELECT kind, count(*), avg(length(body)) FROM checkpoints GROUP BY kind")})
        n, b = conn.execute("SELECT count(*), coalesce(avg(length(body)), 0) FROM chunks").fetchone()
        out["chunk"] = (int(n), float(b))
        return out
    finally:
        conn.close()


def _profile_text(label: str, main: cProfile.Profile, writer: cProfile.Profile) -> str:
    out = io.StringIO()
    for name, prof in (("event-loop thread", main), ("writer thread (store.commit)", writer)):
        out.write(f"\n=== {label}: {name}, by own time ===\n")
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
    return out.getvalue()
