"""Runs every benchmark in order and collects the samples the report is written from.

Timings of the two systems are interleaved (each repeat runs every N on
tether, then on LangGraph) so a machine that slows down during the run
slows both sides alike.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import langgraph_loop as lg
from bench import tether_loop as tl
from bench.audit_cost import AuditSample, run_audit
from bench.audit_cost import describe as describe_audit
from bench.config import Config
from bench.diagnostics import Diagnosis, diagnose
from bench.impact_cost import ImpactSample, describe, run_impact
from bench.integrations_cost import IntSample
from bench.integrations_cost import measure as measure_integrations
from bench.machine import facts, load_average
from bench.monitor_cost import Costs
from bench.monitor_cost import measure as measure_monitors
from bench.pg_cost import PgResults, run_pg
from bench.policy_cost import PolicySample, run_policy
from bench.query_cost import QuerySample, run_query_cost
from bench.rollback_cost import RollbackSample, run_rollback
from bench.seal_cost import SealSample, run_seal_cost
from bench.sqlite_baseline import CommitSample, run_commits
from bench.stats import percentile
from bench.stop_latency import StopSample, run_stop
from bench.swarm import SwarmSample, run_swarm
from bench.telemetry_cost import measure as measure_telemetry
from bench.ui_cost import UiSample, run_ui
from bench.ui_cost import describe as describe_ui


@dataclass(slots=True)
class Results:
    """Every sample of one run of the suite."""

    config: Config
    facts: dict[str, str]
    tether: dict[int, list[tl.LoopSample]] = field(default_factory=lambda: defaultdict(list))
    langgraph: dict[tuple[str, int], list[lg.LGSample]] = field(
        default_factory=lambda: defaultdict(list))
    variants: dict[str, str] = field(default_factory=dict)
    bare: dict[tuple[str, int], float] = field(default_factory=dict)
    commits: dict[int, list[CommitSample]] = field(default_factory=lambda: defaultdict(list))
    concurrent: list[tl.ConcurrentSample] = field(default_factory=list)
    swarm: list[SwarmSample] = field(default_factory=list)
    memory: dict[tuple[str, str], float] = field(default_factory=dict)
    """(mode, "heap" | "rss") -> bytes per idle run."""
    policy: list[PolicySample] = field(default_factory=list)
    stops: list[StopSample] = field(default_factory=list)
    """Every repeat's samples, one per way of stopping (one at a time, burst)."""
    rollbacks: list[RollbackSample] = field(default_factory=list)
    impacts: list[ImpactSample] = field(default_factory=list)
    """One swarm built and its impact timed (a list so a run without it renders)."""
    audits: list[AuditSample] = field(default_factory=list)
    """One swarm built, verified and sealed (a list so a run without it renders)."""
    seals: list[SealSample] = field(default_factory=list)
    """One large store sealed 10,000 events at a time (a list so a run without it renders)."""
    queries: list[QuerySample] = field(default_factory=list)
    """One large store built and queried (a list so a run without it renders)."""
    telemetry: dict[str, list[float]] = field(default_factory=dict)
    """CPU seconds per step by mode (off, metrics, spans, spans+metrics, sink alone)."""
    ui: list[UiSample] = field(default_factory=list)
    """The dashboard: overview of many runs, commit to open page (a list so a run without it
    renders)."""
    monitors: list[Costs] = field(default_factory=list)
    """What the built-in monitors cost a step (a list so a run without it renders)."""
    diagnoses: list[Diagnosis] = field(default_factory=list)
    integrations: list[IntSample] = field(default_factory=list)
    """Framework agents alone and under tether, every turn timed (empty: not run)."""
    pg: PgResults | None = None
    """The PostgreSQL store beside SQLite (None: not run; ``skipped`` says why it could not)."""
    seconds: float = 0.0


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_all(cfg: Config, workdir: Path, *, profile: bool = False) -> Results:
    """Every benchmark, in the order the report shows them."""
    t0 = time.perf_counter()
    res = Results(cfg, facts(workdir))
    res.variants = {v.key: v.label for v in lg.variants()}
    _baseline(res, workdir)
    _loops(res, workdir)
    _concurrent(res, workdir)
    _swarm(res, workdir)
    _memory(res, workdir)
    _policy(res)
    _monitors(res, workdir)
    _stop(res, workdir)
    _rollback(res, workdir)
    _impact(res, workdir, profile)
    _audit(res, workdir)
    _seal(res, workdir)
    _query(res, workdir)
    _telemetry(res)
    _ui(res, workdir)
    _pg(res, workdir)
    _integrations(res, workdir)
    _diagnose(res, workdir, profile)
    res.seconds = time.perf_counter() - t0
    res.facts["load average at end (1, 5, 15 min)"] = load_average()
    return res


def _baseline(res: Results, workdir: Path) -> None:
    log("SQLite floor: bare WAL commits at synchronous=FULL")
    for _ in range(res.config.repeats):
        res.commits[1].append(run_commits(1, 1000, workdir))
        res.commits[100].append(run_commits(100, 100, workdir))


def _loops(res: Results, workdir: Path) -> None:
    cfg = res.config
    top = max(cfg.sizes)
    for n in cfg.sizes:
        res.bare["tether", n] = tl.bare_step_seconds(n)
        res.bare["langgraph", n] = lg.bare_step_seconds(n)
    for rep in range(max(cfg.repeats, cfg.lg_repeats)):
        for n in cfg.sizes:
            reads = cfg.read_repeats if n == top else 0
            if rep < cfg.repeats:
                s = tl.run_loop(n, workdir, read_repeats=reads)
                res.tether[n].append(s)
                log(f"loop rep {rep + 1} N={n}: tether {s.seconds_per_step * 1e6:.0f} µs/step, "
                    f"{s.bytes_per_step:.0f} B/step")
            if rep < cfg.lg_repeats:
                _lg_round(res, n, workdir, reads)
            gc.collect()


def _lg_round(res: Results, n: int, workdir: Path, reads: int) -> None:
    for v in lg.variants():
        if v.invoke_per_step and n not in res.config.invoke_sizes:
            continue
        probe = v.key == "plain"
        s = lg.run_loop(v, n, workdir, load_repeats=reads if probe else 0,
                        list_repeats=1 if probe and reads else 0)
        res.langgraph[v.key, n].append(s)
        log(f"  N={n}: LangGraph {v.label}: {s.seconds_per_step * 1e6:.0f} µs/step, "
            f"{s.bytes_per_step:.0f} B/step")
        gc.collect()


def _concurrent(res: Results, workdir: Path) -> None:
    cfg = res.config
    for rep in range(cfg.repeats):
        s = tl.run_concurrent(cfg.concurrent_runs, cfg.concurrent_steps, workdir)
        res.concurrent.append(s)
        log(f"concurrent rep {rep + 1}: {cfg.concurrent_runs} runs × {cfg.concurrent_steps} steps: "
            f"{s.seconds_per_step * 1e6:.1f} µs/step")


def _swarm(res: Results, workdir: Path) -> None:
    cfg = res.config
    for rep in range(cfg.swarm_repeats):
        s = run_swarm(cfg.swarm_runs, cfg.swarm_steps, cfg.model_delay, workdir)
        res.swarm.append(s)
        log(f"swarm rep {rep + 1}: {cfg.swarm_runs} runs × {cfg.swarm_steps} steps: "
            f"{s.end_to_end_ratio:.1%} of ideal end to end, {s.steady_ratio:.1%} steady")


def _probe(runs: int, mode: str, traced: bool, workdir: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.memory_probe", "--runs", str(runs), "--mode", mode,
           "--workdir", str(workdir)] + (["--tracemalloc"] if traced else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parent.parent)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _memory(res: Results, workdir: Path) -> None:
    big = res.config.swarm_runs
    small = max(big // 10, 10)
    for mode in ("await", "sleep"):
        for traced, metric in ((True, "heap"), (False, "rss")):
            a, b = _probe(small, mode, traced, workdir), _probe(big, mode, traced, workdir)
            grow = (b["idle"] - b["before"]) - (a["idle"] - a["before"])
            res.memory[mode, metric] = grow / (big - small)
            log(f"memory per idle run ({mode}, {metric}): {res.memory[mode, metric]:.0f} B")


def _policy(res: Results) -> None:
    res.policy = run_policy(res.config.policy_batches)
    for p in res.policy:
        log(f"policy decision, {p.case}: {p.q(0.5) * 1e6:.2f} µs median, "
            f"{p.q(0.99) * 1e6:.2f} µs p99 per call")


def _monitors(res: Results, workdir: Path) -> None:
    cfg = res.config
    log(f"monitors: each alone and hosted, then {max(cfg.repeats, 5)} pairs of N={cfg.target_n} "
        "runs with all on / all off")
    c = measure_monitors(workdir, steps=cfg.target_n, pairs=max(cfg.repeats, 5),
                         log=lambda s: log(s.strip()))
    res.monitors.append(c)
    log(f"monitors: all on - all off {c.delta:+.1f} µs event-loop CPU per step")
    gc.collect()


def _stop(res: Results, workdir: Path) -> None:
    cfg = res.config
    for rep in range(cfg.stop_repeats):
        for s in run_stop(cfg.stop_runs, cfg.stop_sample, workdir, seed=11 + rep):
            res.stops.append(s)
            log(f"stop rep {rep + 1}, {s.mode} among {s.runs} active runs: "
                f"{percentile(s.latencies, 0.5) * 1e3:.1f} ms median, "
                f"{percentile(s.latencies, 0.99) * 1e3:.1f} ms p99, {s.latencies[-1] * 1e3:.1f} ms max")
        gc.collect()


def _rollback(res: Results, workdir: Path) -> None:
    cfg = res.config
    for rep in range(cfg.rollback_repeats):
        s = run_rollback(cfg.rollback_steps, workdir)
        res.rollbacks.append(s)
        log(f"rollback rep {rep + 1}: {s.effects} file effects undone in {s.rollback:.3f} s "
            f"({s.per_effect * 1e3:.2f} ms each), plan {s.plan * 1e3:.1f} ms; "
            f"run built in {s.build:.1f} s")
        gc.collect()


def _impact(res: Results, workdir: Path, profile: bool) -> None:
    cfg = res.config
    log(f"impact: building a swarm of 100 runs × {cfg.impact_work_steps} work steps")
    s = run_impact(workdir, work_steps=cfg.impact_work_steps, repeats=cfg.impact_repeats,
                   profile=profile)
    res.impacts.append(s)
    log(f"impact: {describe(s)}")
    gc.collect()


def _audit(res: Results, workdir: Path) -> None:
    cfg = res.config
    log(f"audit: building a swarm of 100 runs × {cfg.impact_work_steps} work steps")
    s = run_audit(workdir, work_steps=cfg.impact_work_steps, repeats=cfg.audit_repeats)
    res.audits.append(s)
    log(f"audit: {describe_audit(s)}")
    gc.collect()


def _seal(res: Results, workdir: Path) -> None:
    n = res.config.seal_events
    log(f"seal: building a store of {n:,} events by bulk commits")
    s = run_seal_cost(workdir, events=n, repeats=3)
    res.seals.append(s)
    log(f"seal: {s.describe()}")
    gc.collect()


def _query(res: Results, workdir: Path) -> None:
    n = res.config.query_events
    log(f"audit query: building a store of {n:,} events by bulk commits")
    s = run_query_cost(n, workdir)
    res.queries.append(s)
    log(f"audit query: 2-hour window {s.window_events:,} events in {s.window_ms:.1f} ms; "
        f"one kind {s.kind_ms:.1f} ms; one agent {s.agent_ms:.1f} ms (built in {s.build_s:.0f} s)")
    (workdir / f"query-{n}.db").unlink(missing_ok=True)
    gc.collect()


def _telemetry(res: Results) -> None:
    cfg = res.config
    log(f"telemetry: {cfg.telemetry_rounds} rounds of N={cfg.target_n}, modes alternated")
    res.telemetry = measure_telemetry(cfg.target_n, cfg.telemetry_rounds,
                                      log=lambda s: log(f"telemetry {s}"))
    gc.collect()


def _ui(res: Results, workdir: Path) -> None:
    runs = res.config.ui_runs
    log(f"dashboard: overview of {runs} runs, commit to an open page, 100 open pages' cost "
        "to a worker")
    s = run_ui(workdir, runs, pairs=res.config.ui_pairs, steps=res.config.ui_steps,
               log=lambda m: log(f"dashboard: {m}"))
    res.ui.append(s)
    log(f"dashboard: {describe_ui(s)}")
    gc.collect()


def _pg(res: Results, workdir: Path) -> None:
    cfg = res.config
    log(f"postgres: the loop at N={cfg.pg_n} on SQLite and PostgreSQL (tether, LangGraph), then "
        f"{cfg.pg_runs} runs × {cfg.pg_steps} steps shared by {cfg.pg_workers} worker processes")
    res.pg = run_pg(cfg, workdir, log)
    gc.collect()


def _integrations(res: Results, workdir: Path) -> None:
    cfg = res.config
    log(f"integrations: PydanticAI, the OpenAI Agents SDK and LangGraph, {cfg.int_turns} turns "
        f"alone and under tether, {cfg.int_repeats} rounds")
    res.integrations = measure_integrations(cfg.int_turns, cfg.int_repeats, workdir, log)
    gc.collect()


def _diagnose(res: Results, workdir: Path, profile: bool) -> None:
    cfg = res.config
    log("diagnostics: instrumented passes")
    res.diagnoses.append(diagnose(f"1 run × {cfg.target_n} steps", 1, cfg.target_n, workdir,
                                  profile=profile))
    res.diagnoses.append(diagnose(f"{cfg.concurrent_runs} runs × {cfg.concurrent_steps} steps",
                                  cfg.concurrent_runs, cfg.concurrent_steps, workdir,
                                  profile=profile))
