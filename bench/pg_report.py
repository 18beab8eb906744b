"""The report's PostgreSQL section, written from :class:`bench.pg_cost.PgResults` alone."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence

from bench import pg_server as srv
from bench.config import Config
from bench.pg_cost import WATCH, LoopSample, PgResults, ThroughputSample
from bench.stats import Summary, percentile, ratio, spread, table, us

TITLE = "## 12. The PostgreSQL store"
SYSTEMS = (("tether", "sqlite", "tether, `SQLiteStore` (`synchronous=FULL`)"),
           ("tether", "postgres", "tether, `PostgresStore`"),
           ("langgraph", "sqlite", "LangGraph, `SqliteSaver` (WAL, `synchronous=FULL`)"),
           ("langgraph", "postgres", "LangGraph, `PostgresSaver`"))


def section(pg: PgResults, cfg: Config) -> str:
    """The whole section; one line saying why when it did not run."""
    if pg.skipped:
        return f"{TITLE}\n\nSkipped: {pg.skipped}.\n"
    s = pg.settings
    return (f"{TITLE}\n\n`bench/pg_cost.py` on the server at `{srv.SERVER}`: PostgreSQL "
            f"{s.get('server_version', '?')}, `fsync={s.get('fsync')}`, "
            f"`synchronous_commit={s.get('synchronous_commit')}`, "
            f"`wal_sync_method={s.get('wal_sync_method')}`, "
            f"`shared_buffers={s.get('shared_buffers')}`: every commit is on disk before it "
            "returns, as SQLite's at `synchronous=FULL`. The server runs on this machine, over "
            "loopback TCP, so it shares the cores with the benchmark. Every store and saver "
            "gets a schema of its own, dropped afterwards. Load averages are the 1-minute "
            "figure when each sample started (min–max over the samples).\n\n"
            + _floor(pg) + _loop(pg, cfg) + _throughput(pg, cfg))


def _loads(values: Sequence[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}" if values else "—"


def _floor(pg: PgResults) -> str:
    rows = [[name, spread(Summary.of(pg.floors[key]))]
            for key, name in (("sqlite", "SQLite, WAL, `synchronous=FULL`"),
                              ("postgres", "PostgreSQL, psycopg, one connection"))
            if pg.floors.get(key)]
    return ("### The floor: one durable commit of one 200-byte row\n\nNo framework: "
            "`INSERT` then `COMMIT`, one row per transaction, in a loop "
            f"(load {_loads(pg.floor_loads)}).\n\n"
            + table(["store", "per commit"], rows) + "\n")


def _of(pg: PgResults, system: str, backend: str) -> list[LoopSample]:
    return [s for s in pg.loops if s.system == system and s.backend == backend]


def _loop_row(pg: PgResults, label: str, ss: list[LoopSample]) -> list[str]:
    n = ss[0].n
    bare = pg.bare.get(ss[0].system, 0.0)
    lat = [c for s in ss for c in s.commits]
    server = [s.server_cpu / n for s in ss if s.server_cpu is not None]
    return [label, spread(Summary.of([s.wall / n for s in ss])),
            us(statistics.median(s.wall / n for s in ss) - bare),
            spread(Summary.of([s.cpu / n for s in ss])),
            us(statistics.median(s.thread_cpu / n for s in ss)),
            us(statistics.median(server)) if server else "—",
            f"{statistics.median(s.writes / n for s in ss):.2f}",
            f"{statistics.median(len(s.commits) / n for s in ss):.2f}",
            f"{us(percentile(lat, 0.5))}, {us(percentile(lat, 0.99))}" if lat else "—",
            _loads([s.load for s in ss])]


def _loop(pg: PgResults, cfg: Config) -> str:
    rows = [_loop_row(pg, label, ss) for system, backend, label in SYSTEMS
            if (ss := _of(pg, system, backend))]
    missing = "".join(f"\n{m}.\n" for m in pg.missing)

    def med(system: str, backend: str, attr: str) -> float:
        ss = _of(pg, system, backend)
        return statistics.median(getattr(s, attr) / s.n for s in ss) if ss else float("nan")

    def vs(a: tuple[str, str], b: tuple[str, str], attr: str) -> str:
        return f"{ratio(med(*a, attr), med(*b, attr)):.2f}"

    tpg, tsq, lpg = ("tether", "postgres"), ("tether", "sqlite"), ("langgraph", "postgres")
    ratios = (f"tether on PostgreSQL ÷ tether on SQLite: {vs(tpg, tsq, 'wall')} in wall time, "
              f"{vs(tpg, tsq, 'cpu')} in process CPU per step")
    if _of(pg, *lpg):
        ratios += (f"; tether on PostgreSQL ÷ LangGraph on PostgreSQL: {vs(tpg, lpg, 'wall')} "
                   f"in wall time, {vs(tpg, lpg, 'cpu')} in process CPU")
    return (f"### The loop on each store, N={cfg.pg_n}\n\nSection 1's loop (one run, one "
            "~200-byte message appended per step) on each store, the four in turn in each of "
            f"{cfg.pg_repeats} repeats. tether: `Worker.run(until_idle=True)` from start-up to "
            "the last commit, with its default pipeline (a run's next step starts while the "
            "last one's commit syncs), so a commit may hold more than one step; commit latency "
            "is each `store.commit` call's wall time in the committer's thread. LangGraph: the "
            "reference variant (plain list, loop in the graph, `durability=\"sync\"`, so each "
            "step waits for its checkpoint); commit latency is each `saver.put`, and durable "
            "writes count `put` and `put_writes`. Overhead = wall per step − the bare step "
            f"({us(pg.bare.get('tether', 0.0))} tether, {us(pg.bare.get('langgraph', 0.0))} "
            "LangGraph's node). Process CPU is this process's every thread; loop-thread CPU the "
            "thread running the event loop (tether) or `invoke` (LangGraph); server CPU the "
            "PostgreSQL backends serving that store (`/proc/<pid>/stat`, 10 ms ticks; their "
            "start-up included; the server's WAL writer and checkpointer are not). Latencies "
            "pool every repeat's calls (percentiles by nearest rank).\n\n"
            + table(["store", "wall per step", "overhead per step", "process CPU per step",
                     "loop-thread CPU per step", "server CPU per step",
                     "durable writes per step", "commits per step",
                     "commit latency: median, p99", "load"], rows)
            + f"\n{ratios}.\n" + missing + "\n")


def _tp(pg: PgResults, backend: str, k: int) -> list[ThroughputSample]:
    return [t for t in pg.throughput if t.backend == backend and t.workers == k]


def _throughput(pg: PgResults, cfg: Config) -> str:
    rows = []
    bounds = []
    for k in cfg.pg_workers:
        row = [str(k)]
        for backend in ("sqlite", "postgres"):
            ts = _tp(pg, backend, k)
            if not ts:
                row += ["—", "—", "—"]
                continue
            rate = Summary.of([t.steps_per_second for t in ts])
            cpu = statistics.median((t.cpu + (t.server_cpu or 0.0)) / (t.runs * t.steps)
                                    for t in ts)
            if backend == "postgres":
                bounds.append((cpu, rate.median))
            row += [spread(rate, lambda x: f"{x:,.0f}"), us(cpu),
                    " ".join(str(sorted(t.finished, reverse=True)) for t in ts)]
        row.append(_loads([t.load for t in pg.throughput if t.workers == k]))
        rows.append(row)
    return (f"### Throughput: {cfg.pg_runs} runs of {cfg.pg_steps} steps shared by worker "
            "processes\n\nOne store (a PostgreSQL schema, or one SQLite file), "
            f"{cfg.pg_runs} runs of the loop's agent started on it, then 1, 2 or 4 processes "
            "each running a real `Worker` as `tether worker` does (`bench/pg_worker.py`; "
            "`concurrency` = runs ÷ workers, rounded up, so every run can be in flight from "
            "the start), released together once all are ready and stopped once the store "
            f"says every run is done (read every {WATCH * 1e3:g} ms by the benchmark); steps/s "
            "= all steps ÷ (all done − first worker's start). Not `until_idle`: workers "
            "released together list the same oldest runs, and one that loses every lease of "
            "its first pass would exit as if the store were idle, leaving the others all the "
            f"runs. {cfg.pg_rounds} round(s), every worker count on both stores per round. "
            "CPU per step = the workers' process CPU plus, on PostgreSQL, their backends' "
            "(not the server's WAL writer), ÷ all steps. Runs per worker: how the runs were "
            "shared, per round.\n\n"
            + table(["workers", "SQLite steps/s", "SQLite CPU per step", "SQLite runs per worker",
                     "PostgreSQL steps/s", "PostgreSQL CPU per step",
                     "PostgreSQL runs per worker", "load"], rows)
            + "\n" + _cores_note(bounds) + "\n")


def _cores_note(pg: list[tuple[float, float]]) -> str:
    """What a figure from this machine's cores can say; ``pg``: (CPU per step, steps/s) of
    each PostgreSQL row."""
    cores = os.cpu_count() or 1
    bound = ""
    if pg:
        cpus = [c for c, _ in pg]
        used = [rate * c / cores for c, rate in pg]
        bound = (f" At the CPU per step measured here ({us(min(cpus))} to {us(max(cpus))} "
                 f"with the server's backends), {cores} cores cap PostgreSQL at about "
                 f"{cores / max(cpus):,.0f}–{cores / min(cpus):,.0f} steps/s whatever the "
                 f"number of workers; the rows reach {min(used):.0%}–{max(used):.0%} of that "
                 "cap, the rest being waits (round trips, fsyncs, the write lock) and the "
                 "other work on the machine.")
    return (f"What this figure can and cannot show: the machine has {cores} cores, shared by "
            "the worker processes, the PostgreSQL server's backends and WAL writer, and, when "
            f"the load is above 0, other work.{bound} So more workers cannot add throughput "
            "here; what the rows do show is what sharing one store costs: the lease races "
            "(runs per worker), the commits of every worker taking the store's one write lock "
            "in turn (PostgreSQL: a per-schema advisory lock; SQLite: the file's write lock), "
            "and the CPU each added process and backend brings. Whether workers on several "
            "machines sharing one PostgreSQL store go past one machine's SQLite needs the "
            f"server on a host of its own and the workers on others, which a {cores}-core "
            "machine running both cannot show; even there, one store's commits stay one line "
            "(the advisory lock).\n")
