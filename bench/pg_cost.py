"""The PostgreSQL store beside SQLite, and LangGraph's PostgreSQL checkpointer beside both.

Three measurements, each store in a schema of its own, dropped afterwards
(:mod:`bench.pg_server`):

* the floor: one 200-byte row per transaction, committed durably, on bare SQLite
  (WAL, ``synchronous=FULL``) and on bare PostgreSQL (psycopg, the server's own
  ``synchronous_commit``);
* the loop of section 1 (one run, N steps, a real ``Worker``) on ``SQLiteStore`` and on
  ``PostgresStore``, and LangGraph's reference variant on ``SqliteSaver`` and on
  ``PostgresSaver`` (``durability="sync"``), interleaved per repeat: wall, process CPU,
  the calling thread's CPU, the server backends' CPU and every durable write's latency
  (tether: ``store.commit``; LangGraph: ``saver.put``);
* throughput: M runs of S steps shared by 1, 2 and 4 worker processes
  (:mod:`bench.pg_worker`, started together), on one PostgreSQL schema and on one SQLite
  file.

``python -m bench.pg_cost [--quick]`` runs this section alone and prints it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import pg_server as srv
from bench.config import Config
from bench.sqlite_baseline import run_commits
from bench.tether_loop import AGENT_REF, bare_step_seconds, grow_agent
from bench.workload import MESSAGE_BYTES, fresh_db, remove_db
from tether.runtime.runs import start_run
from tether.runtime.worker import Worker
from tether.store import open_store

ROOT = Path(__file__).resolve().parent.parent
Log = Callable[[str], None]


def _load() -> float:
    return os.getloadavg()[0]


@dataclass(slots=True)
class LoopSample:
    """One run of the loop by one system on one backend."""

    system: str
    """``tether`` or ``langgraph``."""
    backend: str
    """``sqlite`` or ``postgres``."""
    n: int
    wall: float
    cpu: float
    """Process CPU (every thread of this process)."""
    thread_cpu: float
    """CPU of the thread that ran the loop (tether's event loop, LangGraph's ``invoke``)."""
    server_cpu: float | None
    """CPU of the PostgreSQL backends serving this store; None on SQLite or if unreadable."""
    commits: list[float] = field(default_factory=list)
    """Seconds of each durable write: ``store.commit`` or ``saver.put``."""
    writes: int = 0
    """Durable write calls in all (LangGraph: ``put`` and ``put_writes``)."""
    load: float = 0.0
    """The 1-minute load average when the sample started."""


@dataclass(slots=True)
class ThroughputSample:
    """M runs of S steps driven to the end by ``workers`` processes sharing one store."""

    backend: str
    workers: int
    runs: int
    steps: int
    wall: float
    """First worker's start to last worker's end."""
    cpu: float
    """The workers' process CPU, summed."""
    server_cpu: float | None
    finished: list[int]
    """Runs each worker finished."""
    load: float = 0.0

    @property
    def steps_per_second(self) -> float:
        return self.runs * self.steps / self.wall


@dataclass(slots=True)
class PgResults:
    """Everything the PostgreSQL section reports; ``skipped`` says why when it did not run."""

    skipped: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    """What was not measured and why (LangGraph or its PostgreSQL saver not installed)."""
    floors: dict[str, list[float]] = field(default_factory=dict)
    """Seconds per bare one-row commit, by backend."""
    floor_loads: list[float] = field(default_factory=list)
    bare: dict[str, float] = field(default_factory=dict)
    """Seconds per call of each system's bare step body at the loop's N (what overhead
    leaves out)."""
    loops: list[LoopSample] = field(default_factory=list)
    throughput: list[ThroughputSample] = field(default_factory=list)


def _langgraph() -> tuple[Any, Any, list[str]]:
    """``bench.langgraph_loop`` and LangGraph's ``PostgresSaver`` where installed (the
    ``bench`` extra), and what is missing; tether's side runs either way."""
    try:
        import langgraph.checkpoint.sqlite  # noqa: F401  # bench.langgraph_loop exits without it
    except ImportError as exc:
        return None, None, [f"LangGraph was not measured: it is not installed ({exc}); "
                            "pip install -e '.[bench]'"]
    from bench import langgraph_loop

    try:
        from langgraph.checkpoint.postgres import PostgresSaver
    except ImportError as exc:
        return langgraph_loop, None, [
            "LangGraph's PostgreSQL checkpointer was not measured: langgraph-checkpoint-postgres "
            f"is not installed ({exc}); pip install -e '.[bench]'"]
    return langgraph_loop, PostgresSaver, []


def run_pg(cfg: Config, workdir: Path, log: Log) -> PgResults:
    """The whole section; skipped with its reason when the server is not reachable."""
    res = PgResults(skipped=srv.unreachable())
    if res.skipped:
        log(f"postgres: skipped: {res.skipped}")
        return res
    res.settings = srv.settings()
    lg, saver, res.missing = _langgraph()
    res.bare = {"tether": bare_step_seconds(cfg.pg_n)}
    if lg is not None:
        res.bare["langgraph"] = lg.bare_step_seconds(cfg.pg_n)
    _floors(res, cfg, workdir, log)
    for rep in range(cfg.pg_repeats):
        for system, backend in (("tether", "sqlite"), ("tether", "postgres"),
                                ("langgraph", "sqlite"), ("langgraph", "postgres")):
            if system == "langgraph" and (lg is None or (backend == "postgres" and saver is None)):
                continue
            s = _loop(system, backend, cfg.pg_n, workdir, lg, saver)
            res.loops.append(s)
            log(f"postgres: loop rep {rep + 1} {system} on {backend}: "
                f"{s.wall / s.n * 1e6:.0f} µs/step wall, {s.cpu / s.n * 1e6:.0f} µs/step CPU "
                f"(load {s.load:.2f})")
            gc.collect()
    for rnd in range(cfg.pg_rounds):
        for k in cfg.pg_workers:
            for backend in ("sqlite", "postgres"):
                t = run_throughput(backend, k, cfg.pg_runs, cfg.pg_steps, workdir)
                res.throughput.append(t)
                log(f"postgres: throughput round {rnd + 1}, {k} worker(s) on {backend}: "
                    f"{t.steps_per_second:,.0f} steps/s, runs per worker {t.finished} "
                    f"(load {t.load:.2f})")
    return res


# -- the floor ----------------------------------------------------------------------------
def _floors(res: PgResults, cfg: Config, workdir: Path, log: Log) -> None:
    commits = cfg.pg_n
    for _ in range(cfg.pg_repeats):
        res.floor_loads.append(_load())
        res.floors.setdefault("sqlite", []).append(
            run_commits(1, commits, workdir).seconds_per_commit)
        res.floors.setdefault("postgres", []).append(pg_commits(commits))
    log(f"postgres: bare commit, SQLite {min(res.floors['sqlite']) * 1e6:.0f} µs, "
        f"PostgreSQL {min(res.floors['postgres']) * 1e6:.0f} µs (best of {cfg.pg_repeats})")


def pg_commits(commits: int) -> float:
    """Seconds per transaction of one 200-byte row on bare PostgreSQL (psycopg, no tether)."""
    import psycopg

    with srv.schema("tbench_floor") as s, psycopg.connect(s.conninfo()) as c:
        c.execute("CREATE TABLE t(id BIGSERIAL PRIMARY KEY, body BYTEA NOT NULL)")
        c.commit()
        body = bytes(MESSAGE_BYTES)
        t0 = time.perf_counter()
        for _ in range(commits):
            c.execute("INSERT INTO t(body) VALUES(%s)", (body,))
            c.commit()
        return (time.perf_counter() - t0) / commits


# -- the loop -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Target:
    """A fresh tether store: a SQLite file, or a PostgreSQL schema."""

    path: str | None = None
    pg: srv.Schema | None = None

    def url(self, suffix: str = "") -> str:
        """The store's URL; on PostgreSQL its backends are named ``app(suffix)``."""
        if self.pg is None:
            assert self.path is not None
            return self.path
        return self.pg.store_url(self.pg.app + suffix)

    def app(self, suffix: str = "") -> str | None:
        return None if self.pg is None else self.pg.app + suffix


@contextlib.contextmanager
def _tether_store(backend: str, workdir: Path) -> Iterator[_Target]:
    """A fresh store on ``backend``, removed (file) or dropped (schema) at exit."""
    if backend == "postgres":
        with srv.schema("tbench_tether") as s:
            yield _Target(pg=s)
        return
    path = fresh_db(workdir, "tether-pgcmp")
    try:
        yield _Target(path=str(path))
    finally:
        remove_db(path)


def _loop(system: str, backend: str, n: int, workdir: Path, lg: Any, saver: Any) -> LoopSample:
    if system == "tether":
        with _tether_store(backend, workdir) as t:
            return tether_loop(backend, t.url(), t.app(), n)
    if backend == "postgres":
        with srv.schema("tbench_lg") as s, saver.from_conn_string(s.conninfo()) as pg_saver:
            pg_saver.setup()
            return langgraph_loop(lg, "postgres", pg_saver, s.app, n)
    path = fresh_db(workdir, "langgraph-pgcmp")
    conn = lg._connect(path)
    try:
        sq_saver = lg.SqliteSaver(conn)
        sq_saver.setup()
        return langgraph_loop(lg, "sqlite", sq_saver, None, n)
    finally:
        conn.close()
        remove_db(path)


def tether_loop(backend: str, url: str, app: str | None, n: int) -> LoopSample:
    """One run of ``n`` steps on the store at ``url``, every ``store.commit`` timed."""
    agent = grow_agent(n)
    store = open_store(url)
    try:
        start_run(store, agent, agent_ref=AGENT_REF, goal="grow the conversation",
                  state={"messages": []})
    finally:
        store.close()
    store = open_store(url)
    sample = LoopSample("tether", backend, n, 0.0, 0.0, 0.0, None, load=_load())
    inner = store.commit

    def timed(writes: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(writes)
        finally:
            sample.commits.append(time.perf_counter() - t0)
            sample.writes += len(writes)

    store.commit = timed  # type: ignore[method-assign]  # before the Worker takes the store
    try:
        worker = Worker(store, agents={AGENT_REF: agent})
        gc.collect()
        t0, c0, l0 = time.perf_counter(), time.process_time(), time.thread_time()
        stats = asyncio.run(worker.run(until_idle=True))
        sample.wall = time.perf_counter() - t0
        sample.cpu, sample.thread_cpu = time.process_time() - c0, time.thread_time() - l0
        sample.server_cpu = srv.backend_cpu(app) if app else None
    finally:
        store.close()
    if set(stats.finished or {}) != {"done"}:
        raise RuntimeError(f"the tether run on {backend} did not finish: {stats.finished}")
    return sample


def langgraph_loop(lg: Any, backend: str, saver: Any, app: str | None, n: int) -> LoopSample:
    """LangGraph's reference variant (plain list, loop in the graph, ``durability="sync"``)
    for ``n`` steps; every ``saver.put`` timed, ``put_writes`` counted."""
    (v,) = [v for v in lg.variants() if v.key == "plain"]
    graph = lg._compile(v, saver)
    sample = LoopSample("langgraph", backend, n, 0.0, 0.0, 0.0, None, load=_load())
    put, put_writes = saver.put, saver.put_writes

    def timed_put(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return put(*a, **kw)
        finally:
            sample.commits.append(time.perf_counter() - t0)
            sample.writes += 1

    def counted_put_writes(*a: Any, **kw: Any) -> Any:
        sample.writes += 1
        return put_writes(*a, **kw)

    saver.put, saver.put_writes = timed_put, counted_put_writes
    config: Any = {"configurable": {"thread_id": "bench"}, "recursion_limit": n + 10}
    gc.collect()
    t0, c0, l0 = time.perf_counter(), time.process_time(), time.thread_time()
    out = graph.invoke({"messages": [], "n": n}, config, durability=v.durability)
    sample.wall = time.perf_counter() - t0
    sample.cpu, sample.thread_cpu = time.process_time() - c0, time.thread_time() - l0
    sample.server_cpu = srv.backend_cpu(app) if app else None
    if len(out["messages"]) != n:
        raise RuntimeError(f"LangGraph on {backend} ended with {len(out['messages'])} "
                           f"messages, expected {n}")
    return sample


# -- throughput ---------------------------------------------------------------------------
def run_throughput(backend: str, workers: int, runs: int, steps: int,
                   workdir: Path) -> ThroughputSample:
    """``runs`` runs of ``steps`` steps on one fresh store, driven by ``workers`` processes.

    Each worker may drive ceil(runs / workers) runs at once, so all of them can be in
    flight from the start, shared by whoever leases them first. The round ends when the
    store says every run is done (read every :data:`WATCH` seconds)."""
    with _tether_store(backend, workdir) as t:
        agent = grow_agent(steps)
        store = open_store(t.url())
        try:
            for _ in range(runs):
                start_run(store, agent, agent_ref=AGENT_REF, goal="grow the conversation",
                          state={"messages": []})
        finally:
            store.close()
        per = math.ceil(runs / workers)
        cmds = []
        for i in range(workers):
            app = t.app(f"_w{i}")  # each worker's backends apart, for their CPU
            cmds.append([sys.executable, "-m", "bench.pg_worker", "--store", t.url(f"_w{i}"),
                         "--steps", str(steps), "--concurrency", str(per)]
                        + (["--app", app] if app else []))
        watch = open_store(t.url("_watch"))
        try:
            reports, end, load = _race(cmds, lambda: len(watch.list_runs(status="done")) == runs)
        finally:
            watch.close()
    done = sum(r["finished"].get("done", 0) for r in reports)
    if done != runs or any(set(r["finished"]) - {"done"} for r in reports):
        raise RuntimeError(f"{workers} workers on {backend} finished "
                           f"{[r['finished'] for r in reports]}, expected {runs} runs done")
    server = [r["server_cpu"] for r in reports]
    return ThroughputSample(
        backend, workers, runs, steps, wall=end - min(r["start"] for r in reports),
        cpu=sum(r["cpu"] for r in reports),
        server_cpu=None if any(x is None for x in server) else sum(server),
        finished=[r["finished"].get("done", 0) for r in reports], load=load)


WATCH = 0.05
"""Seconds between the benchmark's reads of how many runs are done (the end's resolution)."""


def _race(cmds: list[list[str]], all_done: Callable[[], bool],
          timeout: float = 900.0) -> tuple[list[dict[str, Any]], float, float]:
    """Start every worker, wait until each is ready, release them together, stop them once
    ``all_done``; their reports, when all was done (``time.time()``) and the 1-minute load
    at the release. A worker that fails takes the others down with it (none is left running)."""
    procs = [subprocess.Popen(c, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT) for c in cmds]

    def tell(line: str) -> None:
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(line)
            p.stdin.flush()

    try:
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                _, err = p.communicate(timeout=60)
                raise RuntimeError(f"a bench worker did not start: {err.strip()[-2000:]}")
        load = _load()
        tell("go\n")
        deadline = time.monotonic() + timeout
        while not all_done():
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise RuntimeError("a bench worker ended, or the runs took over "
                                   f"{timeout:g} s: {_stderr(procs)}")
            time.sleep(WATCH)
        end = time.time()
        tell("stop\n")
        reports = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            if p.returncode != 0:
                raise RuntimeError(f"a bench worker failed ({p.returncode}): {err.strip()[-2000:]}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports, end, load
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _stderr(procs: list[subprocess.Popen[str]]) -> str:
    """What the workers that already ended wrote to stderr (the others are killed after)."""
    return " | ".join(p.communicate()[1].strip()[-1000:] for p in procs if p.poll() is not None)


def main(argv: list[str] | None = None) -> int:
    """Run this section alone and print it (``--quick``: the smoke sizes)."""
    import argparse
    import shutil
    import tempfile

    from bench.config import FULL, QUICK
    from bench.pg_report import section
    from bench.suite import log

    ap = argparse.ArgumentParser(prog="python -m bench.pg_cost", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="the smoke run's sizes")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    workdir = Path(tempfile.mkdtemp(prefix="tether-bench-pg-"))
    try:
        t0 = time.perf_counter()
        res = run_pg(cfg, workdir, log)
        log(f"postgres section in {time.perf_counter() - t0:.0f} s")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(section(res, cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
