"""The report's account of each missed target, worded around this run's own figures."""

from __future__ import annotations

import cProfile
import inspect
import pstats
import random
import statistics
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from bench import figures as fg
from bench.diagnostics import Diagnosis
from bench.policy_cost import build_policy, pay_action
from bench.stats import Summary, percentile, size, us
from bench.suite import Results
from bench.workload import message
from tether.core.canonical import dumps
from tether.core.checkpoint import CheckpointEncoder
from tether.runtime.worker import Worker

PAGE = 4096


def section(res: Results) -> str:
    ts = fg.targets(res)
    single = res.diagnoses[0] if res.diagnoses else None
    multi = res.diagnoses[1] if len(res.diagnoses) > 1 else None
    paras = []
    if not ts[0].passed and single:
        paras.append(_step(res, single))
    if not ts[1].passed and multi:
        paras.append(_concurrent(res, multi))
    if (not ts[2].passed or not ts[3].passed) and single:
        paras.append(_bytes(res, single))
    paras += [f"**{t.what}** misses: {t.tether} against {t.target}." for t in ts[4:6] if not t.passed]
    if not ts[6].passed:
        paras.append(_swarm(res))
    if len(ts) > 7 and not ts[7].passed and res.policy:
        paras.append(_policy(res))
    if len(ts) > 8 and not ts[8].passed and res.stops:
        paras.append(_stop(res))
    if len(ts) > 9 and ts[9].passed is False and res.rollbacks:
        paras.append(_rollback(res))
    if len(ts) > 10 and ts[10].passed is False and res.impacts:
        paras.append(_impact(res))
    if ts[-1].passed is False and res.audits:
        paras.append(_verify(res))
    if res.memory:
        paras.append(_memory(res))
    body = "\n\n".join(paras) if paras else "Every target passes in this run."
    return f"## Why targets are missed\n\n{body}\n"


def _verify(res: Results) -> str:
    s = res.audits[0]
    per = 1e6 / s.per_second(s.verify_cpu)
    return (f"**Audit verify.** {per:.0f} µs of CPU per event against the 10 µs the target "
            "allows. The chains are read in one pass as plain tuples and each payload is "
            "hashed as its stored bytes (decoded only for the kinds a later check reads), but "
            "each event is still Python work: its id and time formatted from their stored "
            "form, its hash recomputed over the canonical encoding of its fields, and most "
            "events made into an `Event` for the fold, the rows and the links it implies; "
            "then the batch chain is re-hashed, the links, message, version and effect rows "
            "are read back and compared, SQLite's integrity check reads the whole file, and "
            "the signed checkpoints add two SHA-256 per event. The rest needs the per-event "
            "work out of Python (the hashes and encodings in one native pass).")


def _rollback(res: Results) -> str:
    rs = res.rollbacks
    per = Summary.of([r.per_effect for r in rs]).median
    plan = Summary.of([r.plan for r in rs]).median
    floor = _floor(res, 1) if res.commits.get(1) else float("nan")
    return (f"**Rollback.** {us(per)} per undone effect, of which the plan is "
            f"{us(plan / rs[0].steps)}; each undo makes two commits durable (`effect.undoing` "
            f"before the undo, `effect.undone` after), where a bare one-row commit costs "
            f"{us(floor)} on this disk, and `fs_restore` fsyncs the folder it changed.")


def _impact(res: Results) -> str:
    """The missed impact target, split by the store methods one instrumented call spent in."""
    s = res.impacts[0]
    b, m = s.breakdown, s.main
    links = sum(s.links.values())

    def share(t: float) -> str:
        return f"{t / b.total:.0%}" if b.total else "—"

    return (f"**Impact.** {us(m.q(0.5))} median from `{m.origin}` ({m.reached_runs} runs, "
            f"{m.reached_steps:,} steps reached) against {us(fg.impact_goal(s.events))}. Of one "
            f"instrumented call's {us(b.total)}, {us(b.walk)} ({share(b.walk)}) is the walk over "
            f"the {links:,} links (`Store.downstream`) and {us(b.describe)} ({share(b.describe)}) "
            f"is listing what the {m.reached_runs} affected runs produced (`Store.produced`, "
            f"{b.describe_rows:,} effects, messages and versions); the rest is `impact`'s own "
            "Python and the other store calls.")


def _floor(res: Results, rows: int) -> float:
    samples = res.commits[rows]
    return statistics.median(c.seconds_per_row for c in samples)


def _step(res: Results, d: Diagnosis) -> str:
    n = res.config.target_n
    ref = fg.lg_step(res, fg.REFERENCE, n)
    budget = (ref.median - res.bare["langgraph", n]) / 5 if ref else float("nan")
    loop, commit = d.per_step(d.loop_cpu), d.per_step(d.commit_wall)
    pages = sum(d.wal_pages.values()) / d.total_steps
    floor = _floor(res, 1)
    return (f"**Per-step overhead.** A step of one run is two sequential halves: {us(loop)} of "
            f"event-loop CPU (journal events with their hash chain and ids, the checkpoint "
            f"encoding, the projections, handing the write to the committer) and then {us(commit)} "
            f"waiting for `store.commit`, which writes {pages:.1f} WAL pages ({pages * PAGE / 1024:.0f} "
            f"KiB) per step and fsyncs them, where a bare one-row commit costs {us(floor)} on this "
            f"disk. 1/5 of LangGraph's overhead is {us(budget)}: that leaves "
            f"{us(max(budget - floor, 0))} beyond the bare commit for everything else, so both "
            "halves must shrink (see the profile in section 10), or the next step must be allowed "
            "to run while the previous step's commit is in flight.")


def _concurrent(res: Results, d: Diagnosis) -> str:
    cpu = Summary.of([c.cpu_per_step for c in res.concurrent]).median
    e, c = (d.wal_pages.get(t, 0) / d.total_steps for t in ("events", "checkpoints"))
    pages = sum(d.wal_pages.values()) / d.total_steps
    return (f"**Group commit with {d.runs} runs.** The worker is CPU-bound: {us(cpu)} of CPU per "
            "step (both threads) against a 30 µs budget; the instrumented pass of section 10 (a "
            f"separate run) measured {us(d.per_step(d.loop_cpu))} per step on the event loop and "
            f"{us(d.per_step(d.commit_cpu))} in the writer. Batching "
            f"works ({d.total_steps / max(d.commits, 1):.0f} steps per commit), but each write "
            f"costs only {pages:.2f} WAL pages per step (`events` {e:.2f}, `checkpoints` "
            f"{c:.2f}), so the disk is not the limit: the time is Python CPU spent per step on "
            "building, hashing and encoding its events and checkpoint and on the asyncio and "
            "thread hand-offs. Bare appends of 100 rows per commit cost "
            f"{us(_floor(res, 100))} per row here.")


def _bytes(res: Results, d: Diagnosis) -> str:
    per = {t: b / d.total_steps for t, b in d.table_bytes.items() if b / d.total_steps >= 20}
    top = sorted(per.items(), key=lambda kv: -kv[1])[:6]
    shown = ", ".join(f"`{t}` {size(b)}" for t, b in top)
    kf = inspect.signature(Worker).parameters["keyframe_every"].default
    chunk_items = CheckpointEncoder().chunk_items
    rows = "; ".join(f"{k}: {n / d.total_steps:.2f} per step, {size(b)} each"
                     for k, (n, b) in sorted(d.rows.items()))
    return (f"**Bytes per step.** From `dbstat` after {d.label}: {shown} per step (pages "
            f"included). The journal holds {rows}. The 200-byte message is stored once in its "
            f"step's delta and again in a keyframe chunk of {chunk_items} messages; keyframes "
            f"every {kf} steps also repeat the list's unchunked tail (up to {chunk_items - 1} "
            "messages) inline; and the two events per step each carry the run id, an event id, a "
            "timestamp and two 32-byte hashes, plus an entry in the unique index on event ids.")


def _swarm(res: Results) -> str:
    cfg = res.config
    cpu = Summary.of([w.cpu_per_step for w in res.swarm]).median
    gap = Summary.of([w.gap(0.5) for w in res.swarm]).median
    p99 = Summary.of([w.gap(0.99) for w in res.swarm]).median
    start = Summary.of([w.startup for w in res.swarm]).median
    tail = Summary.of([w.tail for w in res.swarm]).median
    return (f"**{cfg.swarm_runs} model-bound runs.** Each step costs {us(cpu)} of CPU, so one "
            f"round of {cfg.swarm_runs} answers needs {us(cpu * cfg.swarm_runs)} of CPU on one "
            "event loop. The answers arrive together, so a run waits behind the others: the "
            f"median time from an answer to the same run's next model call is {us(gap)} (99th "
            f"percentile {us(p99)}) against a {cfg.model_delay:g} s model. End to end also pays "
            f"{us(start)} before the first model call (the worker takes {cfg.swarm_runs} leases "
            "and restores as many runs, each lease its own fsync'd transaction on the event-loop "
            f"thread) and {us(tail)} after the last answer (final commits and lease releases).")


def _policy(res: Results) -> str:
    """The missed policy target, with a cProfile of the slowest timed case measured now."""
    worst = max((p for p in res.policy if p.target), key=lambda p: p.q(0.5))
    policy = build_policy()
    rng = random.Random(3)
    actions = [pay_action(rng) for _ in range(4096)]
    for a in actions[:100]:
        policy.decide(a)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(5):
        for a in actions:
            policy.decide(a)
    prof.disable()
    st = pstats.Stats(prof)
    stats: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values()) or 1.0
    top = sorted(stats.items(), key=lambda kv: -kv[1][2])[:4]
    shown = ", ".join(f"`{fn}` ({Path(file).name}:{line}) {t / total:.0%} of the time, "
                      f"{calls / (5 * len(actions)):.1f} calls per decision"
                      for (file, line, fn), (_, calls, t, _, _) in top)
    per = worst.q(0.5) / max(worst.candidates, 1)
    return (f"**Policy decision.** {worst.case} costs {us(worst.q(0.5))} per call, decided by "
            f"{worst.decided_by}: "
            f"the index leaves {worst.candidates} candidate rules for its tool and effect, "
            f"{us(per)} per candidate tried in order. cProfile of the `pay` case, measured now: {shown}. "
            "The cost is linear in the candidates the index leaves, so the fix in "
            "`tether.core.policy` is to leave fewer: index the candidates of a (tool, effect) further by "
            "agent and swarm (memoised per name, like the tool), and by an exact argument value "
            "(`args.currency = \"GBP\"` rules skipped for a EUR payment by one dict lookup).")


def _stop(res: Results) -> str:
    """The missed stop target, split into pick-up (poll, cancel, journal) and commit."""
    poll = inspect.signature(Worker).parameters["poll_interval"].default
    parts = []
    for mode, values in fg.stop_modes(res).items():
        picked = [v for s in res.stops if s.mode == mode for v in s.picked]
        durable = [v for s in res.stops if s.mode == mode for v in s.durable]
        parts.append(f"{mode.capitalize()}: p99 {us(percentile(values, 0.99))}, of which the "
                     "command's pick-up (from its commit to the `command` event journaled) p99 "
                     f"{us(percentile(picked, 0.99))} and the commit of `run.stopped` p99 "
                     f"{us(percentile(durable, 0.99))}")
    runs = res.stops[0].runs
    return (f"**Stop latency with {runs} active runs.** " + ". ".join(parts) + ". The worker "
            f"notices a command by polling `pending_commands` for all {runs} active runs every "
            f"{poll * 1e3:g} ms on its event loop, then cancels the run's model call and journals the "
            "stop; the `run.stopped` write then waits in the group committer behind the writes queued "
            "before it. A slow pick-up calls for a cheaper, more frequent change check in "
            "`Upkeep.poll_commands` (e.g. the commands table's max id or `PRAGMA data_version` every "
            "few ms, reading the rows only when it moved, off the event loop); a slow commit for "
            "committing a stopped run's last write ahead of ordinary step writes.")


def _orjson_allocation() -> tuple[int, float]:
    """Heap bytes held by a tiny ``dumps`` result, and held ÷ length for a 600 kB one."""
    small = _held(lambda: dumps({}))
    value = [message(i) for i in range(3000)]
    big = _held(lambda: dumps(value))
    return small, big / len(dumps(value))


def _held(make: Callable[[], bytes]) -> int:
    tracemalloc.start()
    try:
        keep = make()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del keep
    return held


def _memory(res: Results) -> str:
    small, factor = _orjson_allocation()
    return (f"**Memory per idle run** (reported; no target). A run awaiting its model holds "
            f"{size(res.memory['await', 'heap'])} of Python heap: its task, executor, journal, "
            "state, and the checkpoint encoder's canonical bytes of each state key, which it keeps "
            "for the run's life. orjson does not trim the buffer behind the bytes it returns: "
            f"measured now, a tiny `dumps` result holds {size(small)} and a 600 kB one "
            f"{factor:.2f}× its length. A sleeping run holds no task; its "
            f"{size(res.memory['sleep', 'heap'])} slope comes from the group committer's last batch of "
            "writes, which the writer thread keeps referenced until the next commit arrives.")
