"""Figures derived from the samples: medians, marginal bytes, the targets and their verdicts.

Everything the report prints is computed here from :class:`bench.suite.Results`,
so the tables and the summary can never disagree.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.stats import Summary, percentile, ratio, size, spread, us
from bench.suite import Results
from bench.telemetry_cost import ALONE, IN_LOOP, paired

REFERENCE = "plain"
"""The LangGraph variant the targets are measured against (the issue's naive state)."""


def tether_step(res: Results, n: int) -> Summary:
    return Summary.of([s.seconds_per_step for s in res.tether[n]])


def lg_step(res: Results, key: str, n: int) -> Summary | None:
    samples = res.langgraph.get((key, n))
    return Summary.of([s.seconds_per_step for s in samples]) if samples else None


def growth(samples: Sequence[Any]) -> float:
    """Median bytes a database grew by over a run."""
    return statistics.median(s.bytes_after - s.bytes_before for s in samples)


def marginal_bytes(by_n: Mapping[int, Sequence[Any]]) -> dict[int, float]:
    """Bytes per step added between one N and the next smaller one (from 0 for the first)."""
    out: dict[int, float] = {}
    prev_n, prev_g = 0, 0.0
    for n in sorted(by_n):
        g = growth(by_n[n])
        out[n] = (g - prev_g) / (n - prev_n)
        prev_n, prev_g = n, g
    return out


def tether_marginal(res: Results) -> dict[int, float]:
    return marginal_bytes(dict(res.tether))


def lg_marginal(res: Results, key: str) -> dict[int, float]:
    return marginal_bytes({n: v for (k, n), v in res.langgraph.items() if k == key})


def loads(res: Results) -> tuple[Summary, Summary]:
    """tether's latest-state load and listing at the largest N."""
    top = max(res.config.sizes)
    samples = res.tether[top]
    return (Summary.of([t for s in samples for t in s.load_seconds]),
            Summary.of([t for s in samples for t in s.list_seconds]))


def lg_loads(res: Results) -> tuple[Summary | None, Summary | None]:
    samples = res.langgraph.get((REFERENCE, max(res.config.sizes)), [])
    load = [t for s in samples for t in s.load_seconds]
    lst = [t for s in samples for t in s.list_seconds]
    return (Summary.of(load) if load else None, Summary.of(lst) if lst else None)


@dataclass(frozen=True, slots=True)
class Target:
    """One row of the summary."""

    what: str
    target: str
    tether: str
    langgraph: str
    ratio: str
    passed: bool | None
    """None: not measured in this run."""


def targets(res: Results) -> list[Target]:
    """The issue's targets, in its order, each with its verdict."""
    return [_t_step(res), _t_tenths(res), _t_concurrent(res), _t_bytes(res), _t_bytes_vs(res), *_t_reads(res),
            _t_swarm(res), _t_policy(res), _t_stop(res), _t_rollback(res), _t_impact(res),
            _t_verify(res), _t_query(res), _t_telemetry(res), _t_monitors(res)]


def _t_step(res: Results) -> Target:
    n = res.config.target_n
    t = tether_step(res, n)
    ref = lg_step(res, REFERENCE, n)
    t_over = t.median - res.bare["tether", n]
    l_over = ref.median - res.bare["langgraph", n] if ref else float("nan")
    r = ratio(t_over, l_over)
    return Target(f"per-step overhead at N={n}", "≤ 1/5 of LangGraph's (ratio ≤ 0.20)",
                  us(t_over), us(l_over), f"{r:.2f}", r <= 0.2)


TENTHS_TOLERANCE = 0.15
"""How much dearer the last tenth's per-step time may be than the first tenth's, as a fraction.

An upper bound only: the target is about growth (a step must not cost more as the run's
history grows). A cheaper last tenth is the warm-up of the first (caches, the allocator,
the first keyframes), not a cost that grows, so it passes."""


def tenths(res: Results, n: int) -> tuple[float, float, float, float]:
    """Medians over the repeats at ``n`` of (wall first, wall last, CPU first, CPU last)
    tenth, seconds per step (see ``bench.tether_loop.tenths``)."""
    samples = res.tether[n]
    wf, wl, cf, cl = (statistics.median(s.tenths[i] for s in samples) for i in range(4))
    return wf, wl, cf, cl


def _t_tenths(res: Results) -> Target:
    n = max(res.config.sizes)
    wf, wl, cf, cl = tenths(res, n)
    r = ratio(cl, cf)
    return Target(f"per-step time within one run at N={n}: last tenth vs first tenth",
                  f"last ≤ {1 + TENTHS_TOLERANCE:.2f} × first: no growth with history "
                  "(event-loop CPU: the disk's waits are left out)",
                  f"event-loop CPU {us(cf)} → {us(cl)}; wall {us(wf)} → {us(wl)}", "—",
                  f"{r:.2f} (last ÷ first)", r <= 1 + TENTHS_TOLERANCE)


def _t_concurrent(res: Results) -> Target:
    s = Summary.of([c.seconds_per_step for c in res.concurrent])
    cfg = res.config
    return Target(f"{cfg.concurrent_runs} concurrent runs, amortised per step", "≤ 30 µs",
                  spread(s), "—", "—", s.median <= 30e-6)


def _t_bytes(res: Results) -> Target:
    m = tether_marginal(res)
    ns = sorted(m)
    flat = m[ns[-1]] <= 1.25 * m[ns[0]]
    shown = ", ".join(f"{size(m[n])} at N={n}" for n in ns)
    return Target("marginal bytes per step", "≤ 1 kB and flat in N (largest N ≤ 1.25 × smallest)",
                  shown, "—", f"{m[ns[-1]] / m[ns[0]]:.2f} (largest ÷ smallest N)",
                  m[ns[-1]] <= 1000 and flat)


def _t_bytes_vs(res: Results) -> Target:
    top = max(res.config.sizes)
    t = tether_marginal(res)[top]
    lgm = lg_marginal(res, REFERENCE).get(top, float("nan"))
    r = ratio(lgm, t)
    return Target(f"bytes per step vs LangGraph at N={top}", "≥ 100× less",
                  size(t), size(lgm), f"{r:,.0f}× less", r >= 100)


def _t_reads(res: Results) -> list[Target]:
    top = max(res.config.sizes)
    load, lst = loads(res)
    lg_load, lg_list = lg_loads(res)
    return [
        Target(f"latest state load at N={top}", "≤ 2 ms", spread(load),
               spread(lg_load) if lg_load else "—",
               f"{ratio(load.median, lg_load.median):.2f}" if lg_load else "—",
               load.median <= 2e-3),
        Target(f"list all checkpoints of a run at N={top}", "≤ 100 ms", spread(lst),
               spread(lg_list) if lg_list else "—",
               f"{ratio(lst.median, lg_list.median):.4f}" if lg_list else "—",
               lst.median <= 0.1),
    ]


def _t_swarm(res: Results) -> Target:
    cfg = res.config
    s = Summary.of([w.end_to_end_ratio for w in res.swarm])
    steady = Summary.of([w.steady_ratio for w in res.swarm])
    mem = res.memory.get(("await", "heap"), float("nan"))
    shown = (f"{s.median:.1%} end to end ({s.low:.1%}–{s.high:.1%}); {steady.median:.1%} steady; "
             f"{size(mem)} heap per idle run")
    return Target(f"{cfg.swarm_runs} concurrent runs, model awaiting {cfg.model_delay:g} s",
                  "≥ 90% of the ideal step rate; memory per idle run reported", shown, "—",
                  f"{s.median:.3f}", s.median >= 0.9)


POLICY_TARGET = 20e-6
"""Seconds per ``Policy.decide`` call, median, with 100 rules."""
STOP_TARGET = 0.25
"""Seconds from a stop command's commit to ``run.stopped``'s commit, 99th percentile."""


def policy_per_call(res: Results, case: int) -> Summary:
    """Per-call time of a policy case: median and range over its batches."""
    return Summary.of(res.policy[case].per_call)


def _t_policy(res: Results) -> Target:
    timed = [p for p in res.policy if p.target]
    shown = "; ".join(f"{p.short}: {us(p.q(0.5))} median, {us(p.q(0.99))} p99"
                      for p in timed)
    worst = max(p.q(0.5) for p in timed)
    return Target("policy decision with 100 rules, per call", "≤ 20 µs median", shown, "—", "—",
                  worst <= POLICY_TARGET)


def stop_modes(res: Results) -> dict[str, list[float]]:
    """Stop latencies by way of stopping, pooled over the repeats (seconds)."""
    out: dict[str, list[float]] = {}
    for s in res.stops:
        out.setdefault(s.mode, []).extend(s.latencies)
    return out


def stop_quantiles(values: Sequence[float]) -> dict[str, float]:
    return {"median": percentile(values, 0.5), "p90": percentile(values, 0.9),
            "p99": percentile(values, 0.99), "max": max(values)}


def _t_stop(res: Results) -> Target:
    modes = stop_modes(res)
    p99 = {m: percentile(v, 0.99) for m, v in modes.items()}
    shown = "; ".join(f"{m}: {us(q)} p99 (n={len(modes[m])})" for m, q in p99.items())
    return Target(f"stop latency with {res.config.stop_runs} active runs (command commit → "
                  "`run.stopped` commit), SQLite", "p99 ≤ 250 ms", shown, "—", "—",
                  max(p99.values()) <= STOP_TARGET)


ROLLBACK_TARGET = 2.0
"""Seconds to roll back 1,000 steps with 1,000 file effects."""
ROLLBACK_EFFECTS = 1000


def rollback_goal(steps: int) -> float:
    """The rollback target in seconds, pro rata when a quick run rolls back fewer steps."""
    return ROLLBACK_TARGET * steps / ROLLBACK_EFFECTS


def _t_rollback(res: Results) -> Target:
    if not res.rollbacks:
        return Target("rollback of a run with file effects", "≤ 2 s at 1,000 steps", "not run",
                      "—", "—", None)
    steps = res.rollbacks[0].steps
    s = Summary.of([r.rollback for r in res.rollbacks])
    p = Summary.of([r.plan for r in res.rollbacks])
    goal = rollback_goal(steps)
    shown = f"{spread(s)}; plan alone {us(p.median)}"
    what = f"rollback of {steps:,} steps with {steps:,} file effects to step 0 (`fs_write`), SQLite"
    target = ("≤ 2 s" if steps == ROLLBACK_EFFECTS
              else f"≤ {goal:g} s (2 s at 1,000, pro rata)")
    return Target(what, target, shown, "—", "—", s.median <= goal)


IMPACT_TARGET = 0.2
"""Seconds for ``impact`` over a swarm of 100 runs and 100,000 events."""
IMPACT_EVENTS = 100_000


def impact_goal(events: int) -> float:
    """The impact target in seconds, pro rata when a quick run builds fewer than 100,000 events."""
    return IMPACT_TARGET * min(events, IMPACT_EVENTS) / IMPACT_EVENTS


def _t_impact(res: Results) -> Target:
    if not res.impacts:
        return Target("`impact` over a swarm of 100 runs and 100,000 events", "≤ 200 ms", "not run",
                      "—", "—", None)
    s = res.impacts[0]
    m = s.main
    goal = impact_goal(s.events)
    what = (f"`impact` over a swarm of {s.runs} runs and {s.events:,} events (from step 1 of a "
            f"stage-0 run: {m.reached_runs} runs, {m.reached_steps:,} steps reached), SQLite")
    target = ("≤ 200 ms" if s.events >= IMPACT_EVENTS
              else f"≤ {us(goal)} (200 ms at 100,000 events, pro rata)")
    shown = (f"{us(m.q(0.5))} median, {us(m.q(0.95))} p95, {us(max(m.impact_s))} max "
             f"(n={len(m.impact_s)})")
    return Target(what, target, shown, "no equivalent", "—",
                  m.q(0.5) <= goal)


VERIFY_TARGET = 100_000
"""Issue 11: ``tether audit verify`` throughput on this 2-core machine, events per second."""


def _t_verify(res: Results) -> Target:
    if not res.audits:
        return Target("`tether audit verify` throughput", "≥ 100,000 events/s", "not run", "—",
                      "—", None)
    s = res.audits[0]
    rate = s.per_second(s.verify_cpu)
    return Target(f"`tether audit verify` throughput over {s.events:,} events of {s.runs} runs "
                  "(every check, signed checkpoints with the key)", "≥ 100,000 events/s",
                  f"{rate:,.0f} events/s on CPU time ({s.per_second(s.verify_wall):,.0f} wall); "
                  f"sealing {s.per_10k(s.seal_wall) * 1e3:.0f} ms per 10,000 events",
                  "no equivalent", "—", rate >= VERIFY_TARGET)


QUERY_TARGET_MS = 50.0
"""Issue 11: an audit query for a 2-hour window over 1,000,000 events."""


def _t_query(res: Results) -> Target:
    what = "`tether audit query`, a 2-hour window of a 1,000,000-event store"
    if not res.queries:
        return Target(what, f"≤ {QUERY_TARGET_MS:g} ms", "not run", "—", "—", None)
    q = res.queries[0]
    what = what.replace("1,000,000", f"{q.events:,}")
    return Target(what, f"≤ {QUERY_TARGET_MS:g} ms",
                  f"{q.window_ms:.1f} ms for {q.window_events:,} events (median of 5)",
                  "no equivalent", "—", q.window_ms <= QUERY_TARGET_MS)


TELEMETRY_TARGET = 15.0
"""Issue 11: µs of CPU per step spans and metrics may add to the core loop."""


def _t_telemetry(res: Results) -> Target:
    what = "spans + metrics on vs off, process CPU per step of the core loop"
    t = res.telemetry
    if not t or not t.get(IN_LOOP):
        return Target(what, f"≤ {TELEMETRY_TARGET:g} µs more", "not run", "—", "—", None)
    d = paired(t, "spans+metrics")
    loop = percentile(t[IN_LOOP], 0.5) * 1e6
    return Target(what, f"≤ {TELEMETRY_TARGET:g} µs more",
                  f"the sink's own code in the loop {loop:.1f} µs (alone, run hot: "
                  f"{percentile(t[ALONE], 0.5) * 1e6:.1f} µs); end to end "
                  f"{percentile(d, 0.5) * 1e6:+.1f} µs (median of {len(d)} paired rounds, "
                  f"{min(d) * 1e6:+.1f} to {max(d) * 1e6:+.1f}: the loop's noise)",
                  "—", "—", loop <= TELEMETRY_TARGET)


MONITORS_TARGET = 25.0
"""µs of CPU per step the cheap built-in monitors may add to the core loop (issue 10)."""


def _t_monitors(res: Results) -> Target:
    what = "built-in monitors: all on vs all off, event-loop CPU per step of the N-step loop"
    if not res.monitors or not res.monitors[0].pairs:
        return Target(what, f"≤ {MONITORS_TARGET:g} µs more", "not run", "—", "—", None)
    c = res.monitors[0]
    shown = (f"{c.delta:+.1f} µs median of {len(c.pairs)} pairs ({min(c.deltas):+.1f} to "
             f"{max(c.deltas):+.1f}) at N={c.steps}; hosted, 3-event steps: {c.host_on:.1f} µs")
    return Target(what.replace("N-step", f"{c.steps}-step"), f"≤ {MONITORS_TARGET:g} µs more",
                  shown, "—", "—", c.delta <= MONITORS_TARGET)
