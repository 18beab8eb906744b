"""Writes docs/benchmarks.md from one run's results. Every number comes from the run."""

from __future__ import annotations

import inspect
import statistics

from bench import figures as fg
from bench import integrations_report, pg_report, why
from bench import telemetry_cost as tc
from bench.impact_cost import CROSS_TALK, LANES, STAGES
from bench.policy_cost import DISTINCT
from bench.rollback_cost import FILE_BYTES
from bench.stats import Summary, percentile, ratio, size, spread, table, us
from bench.stop_latency import MODEL_SECONDS
from bench.suite import Results
from tether.audit.share import SPLIT
from tether.runtime.worker import Worker


def render(res: Results) -> str:
    parts = [_header(res), _summary(res), _loop_time(res), _loop_bytes(res), _reads(res),
             _concurrent(res), _swarm(res), _policy(res), _stop(res), _rollback(res), _impact(res),
             _audit(res), _query(res), _telemetry(res), _ui(res), _diagnostics(res), _monitors(res),
             _pg(res), integrations_report.section(res.integrations), why.section(res),
             _method(res)]
    return "\n".join(parts)


def _header(res: Results) -> str:
    cfg = res.config
    cmd = "python -m bench --quick" if cfg.quick else "python -m bench (make bench)"
    warn = ("\n> **Quick smoke run**: small N and few repeats; the verdicts are indicative "
            "only. Run `make bench` for the real figures.\n" if cfg.quick else "")
    facts = table(["", ""], [[k, v] for k, v in res.facts.items()])
    return (f"# Benchmarks\n\nWritten by `{cmd}` in {res.seconds / 60:.1f} minutes; do not edit by "
            f"hand, rerun it. tether and LangGraph + SqliteSaver run the same workload side by side "
            f"in the same process, both on real files in WAL mode at `synchronous=FULL`. Figures are "
            f"medians with (min–max, n=samples). The machine has {res.facts['cores (nproc)']} cores: "
            "a load average well above 0 at the start means other work was running and the "
            "figures are noisier (the benchmark itself keeps one to two cores busy, which the "
            f"figure at the end includes).\n{warn}\n"
            f"## Machine\n\n{facts}")


def _summary(res: Results) -> str:
    rows = [[t.what, t.target, t.tether, t.langgraph, t.ratio, _verdict(t.passed)]
            for t in fg.targets(res)]
    return ("## Targets\n\nLangGraph figures are the reference variant (plain list state, loop in "
            "the graph; see below). Ratios are tether ÷ LangGraph unless stated.\n\n"
            + table(["target", "goal", "tether", "LangGraph", "ratio", "verdict"], rows))


def _verdict(passed: bool | None) -> str:
    if passed is None:
        return "not measured"
    return "**pass**" if passed else "**MISS**"


def _lg_keys(res: Results) -> list[str]:
    return [k for k in res.variants if any(key == k for key, _ in res.langgraph)]


def _loop_time(res: Results) -> str:
    keys = _lg_keys(res)
    head = ["N", "tether", *(f"LangGraph: {res.variants[k]}" for k in keys)]
    rows = []
    for n in res.config.sizes:
        row = [str(n), spread(fg.tether_step(res, n))]
        row += [spread(s) if (s := fg.lg_step(res, k, n)) else "—" for k in keys]
        rows.append(row)
    n = res.config.target_n
    t = fg.tether_step(res, n).median
    rows.append([f"tether ÷ column at N={n}", "1", *(
        f"{ratio(t, s.median):.2f}" if (s := fg.lg_step(res, k, n)) else "—" for k in keys)])
    bare = ", ".join(f"N={n}: tether {us(res.bare['tether', n])}, LangGraph node "
                     f"{us(res.bare['langgraph', n])}" for n in res.config.sizes)
    within = [[str(n), *(us(t) for t in fg.tenths(res, n))] for n in res.config.sizes]
    return ("## 1. Growing conversation: wall time per step\n\nOne ~200-byte message appended per "
            "step; time = the whole run's wall time ÷ N (tether: `Worker.run` from start-up to "
            "the last commit; LangGraph: `invoke`). The bare step function, which the overhead "
            f"target subtracts, costs {bare}.\n\n" + table(head, rows)
            + "\nWithin one tether run: mean time per step over its first and its last tenth of "
              "steps (from one step's start to the next, so the checkpoint, the journal and the "
              "commit hand-off are in it), medians over the repeats. A cost that grew with the "
              "state would show as a last tenth dearer than the first.\n\n"
            + table(["N", "wall, first tenth", "wall, last tenth", "event-loop CPU, first tenth",
                     "event-loop CPU, last tenth"], within))


def _loop_bytes(res: Results) -> str:
    keys = _lg_keys(res)
    head = ["N", "tether: B/step (marginal)", *(f"LangGraph {res.variants[k]}" for k in keys)]
    tm = fg.tether_marginal(res)
    lgm = {k: fg.lg_marginal(res, k) for k in keys}
    rows = []
    for n in res.config.sizes:
        row = [str(n), f"{size(fg.growth(res.tether[n]) / n)} ({size(tm[n])})"]
        for k in keys:
            s = res.langgraph.get((k, n))
            row.append(f"{size(fg.growth(s) / n)} ({size(lgm[k][n])}); file "
                       f"{size(fg.growth(s))}" if s else "—")
        rows.append(row)
    return ("## 2. Bytes on disk per step\n\nGrowth of the database file (WAL folded in with "
            "`wal_checkpoint(TRUNCATE)`) over the run ÷ N; in brackets the marginal bytes per "
            "step between this N and the previous one.\n\n" + table(head, rows))


def _reads(res: Results) -> str:
    top = max(res.config.sizes)
    load, lst = fg.loads(res)
    lg_load, lg_list = fg.lg_loads(res)
    rows = [["latest state", f"`checkpoint_chain` + `restore`: {spread(load)}",
             f"`graph.get_state`: {spread(lg_load) if lg_load else '—'}"],
            ["all checkpoints", f"`checkpoint_steps`: {spread(lst)}",
             f"`saver.list`: {spread(lg_list) if lg_list else '—'}"]]
    return (f"## 3. Reading a run back at N={top}\n\ntether's listing returns (step, kind, bytes) "
            "per checkpoint; LangGraph's `list` has no lighter form and decodes every checkpoint, "
            "so the two listings are not like for like.\n\n"
            + table(["read", "tether", "LangGraph (plain list)"], rows))


def _concurrent(res: Results) -> str:
    cfg = res.config
    per = Summary.of([c.seconds_per_step for c in res.concurrent])
    cpu = Summary.of([c.cpu_per_step for c in res.concurrent])
    batch = Summary.of([c.writes_per_batch for c in res.concurrent])
    one = Summary.of([c.seconds_per_commit for c in res.commits[1]])
    hundred = Summary.of([c.seconds_per_row for c in res.commits[100]])
    rows = [[f"tether, {cfg.concurrent_runs} runs × {cfg.concurrent_steps} steps, one worker",
             spread(per), spread(cpu), f"{batch.median:.1f}"],
            ["bare SQLite, 1 row per commit (floor of one durable step)", spread(one), "—", "1"],
            ["bare SQLite, 100 rows per commit (floor with group commit)", spread(hundred), "—", "100"]]
    return ("## 4. Concurrent runs and group commit\n\nAmortised time per step = wall time ÷ "
            "(runs × steps); CPU = process CPU time (both threads) ÷ steps.\n\n"
            + table(["what", "per step (or row)", "CPU per step", "writes per commit"], rows))


def _swarm(res: Results) -> str:
    cfg = res.config
    e2e = Summary.of([w.end_to_end_ratio for w in res.swarm])
    steady = Summary.of([w.steady_ratio for w in res.swarm])
    cpu = Summary.of([w.cpu_per_step for w in res.swarm])
    med = Summary.of([w.gap(0.5) for w in res.swarm])
    p99 = Summary.of([w.gap(0.99) for w in res.swarm])
    pct = lambda s: f"{s.median:.1%} ({s.low:.1%}–{s.high:.1%}, n={s.n})"  # noqa: E731
    rows = [["achieved ÷ ideal step rate, end to end", pct(e2e)],
            ["achieved ÷ ideal step rate, steady state", pct(steady)],
            ["tether time between a model answer and the next call: median", spread(med)],
            ["the same, 99th percentile", spread(p99)],
            ["CPU per step (both threads)", spread(cpu)]]
    mem = [[mode, size(res.memory.get((mode, "heap"), float("nan"))),
            size(res.memory.get((mode, "rss"), float("nan")))]
           for mode in ("await", "sleep")]
    return (f"## 5. {cfg.swarm_runs} concurrent runs with an async model awaiting "
            f"{cfg.model_delay:g} s\n\n{cfg.steps_text()}\n\n" + table(["measure", "value"], rows)
            + "\nMemory per idle run, from two fresh processes with "
            f"{max(cfg.swarm_runs // 10, 10)} and {cfg.swarm_runs} runs (the slope): "
            "`await` = every run inside its step awaiting the model (task, executor, state "
            "alive); `sleep` = every run returned `SleepUntil` an hour ahead (no task). Heap = "
            "tracemalloc bytes still held; RSS = resident set growth, which keeps the "
            "allocator's high-water mark.\n\n" + table(["idle run", "Python heap", "RSS"], mem))


def _policy(res: Results) -> str:
    rows = [[p.case, p.decided_by, str(p.candidates) if p.candidates else "—",
             spread(Summary.of(p.per_call)), us(p.q(0.99))] for p in res.policy]
    n = len(res.policy[0].per_call) if res.policy else 0
    return ("## 6. Policy decision cost with 100 rules\n\n`Policy.decide` on a 100-rule policy compiled "
            "with `rules_from_python` (`bench/policy_cost.py`): hard denies on tools, paths, URLs and "
            "countries; quiet hours in Europe/Berlin, America/New_York, Asia/Tokyo and Europe/London; "
            "budget thresholds; argument rules per tool (equality, membership, globs, regular expressions, "
            "numeric comparisons); globs over tool families; per-team read rules. Every timed action is "
            f"distinct (its own instant in Berlin office hours, amount and budget state; {DISTINCT:,} "
            "of them, cycled), so no decision reuses an earlier one's local-time conversion. Time per "
            f"call = a batch of 100 calls ÷ 100 (`perf_counter_ns`); median (min–max, n={n} batches) "
            "and the 99th percentile of the batches. Candidate rules = rules whose tool and effect "
            "conditions admit the action, the ones the index leaves to be tried in order.\n\n"
            + table(["case", "decided by", "candidate rules", "per call", "p99 per call"], rows))


def _stop(res: Results) -> str:
    cfg = res.config
    head = ["way of stopping", "n", "median", "p90", "p99", "max",
            "command commit → journaled: median, p99", "journaled → durable: median, p99"]
    rows = []
    for mode, values in fg.stop_modes(res).items():
        q = fg.stop_quantiles(values)
        picked = [v for s in res.stops if s.mode == mode for v in s.picked]
        durable = [v for s in res.stops if s.mode == mode for v in s.durable]
        rows.append([mode, str(len(values)), us(q["median"]), us(q["p90"]), us(q["p99"]), us(q["max"]),
                     f"{us(percentile(picked, 0.5))}, {us(percentile(picked, 0.99))}",
                     f"{us(percentile(durable, 0.5))}, {us(percentile(durable, 0.99))}"])
    readies = [s.ready for s in res.stops if s.mode == "one at a time"]  # one per worker
    ready = Summary.of(readies) if readies else None
    poll = inspect.signature(Worker).parameters["poll_interval"].default
    return (f"## 7. Stop latency with {cfg.stop_runs:,} active runs\n\n{cfg.stop_runs:,} runs on one "
            "SQLite file (`synchronous=FULL`), driven by a real `Worker` with default settings in a "
            "subprocess (`bench/stop_latency.py`); each run's step awaits an in-process async model "
            f"that takes {MODEL_SECONDS:g} s, so every run is inside its model call (the worker was "
            f"ready {spread(ready) if ready else '—'} after launch). The benchmark process, as an "
            "operator's CLI would, writes stop commands with `store.add_command` for "
            f"{cfg.stop_sample} runs one at a time (each after the previous run's stop committed, "
            "then 0–100 ms of random pause so commands land at every phase of the worker's "
            f"{poll * 1e3:g} ms command poll), then for {cfg.stop_sample} other runs in a burst "
            "(back to back, one transaction each), in "
            f"{cfg.stop_repeats} fresh worker{'s' if cfg.stop_repeats > 1 else ''} (samples pooled). "
            "Latency = commit of `run.stopped` − commit of the command: the command's commit time is "
            "`time.time()` in the benchmark right after `add_command` returns; the `run.stopped` commit "
            "time is `time.time()` in the worker right after the `store.commit` carrying the event "
            "returns (a wrapper on the worker's store, reported on its stdout). Both processes read the "
            "same wall clock (microsecond resolution). The split uses the journal times of the "
            "`command` and `run.stopped` events (the run's clock, stamped before the commit). "
            "Percentiles by nearest rank.\n\n" + table(head, rows))


def _rollback(res: Results) -> str:
    cfg = res.config
    if not res.rollbacks:
        return "## 8. Rollback cost\n\nNot run.\n"
    rs = res.rollbacks
    steps = rs[0].steps
    rows = [
        ["`rollback(store, run, 0)`", spread(Summary.of([r.rollback for r in rs])),
         spread(Summary.of([r.per_effect for r in rs]))],
        ["`plan(store, run, 0)` alone", spread(Summary.of([r.plan for r in rs])),
         spread(Summary.of([r.plan / r.steps for r in rs]))],
        [f"building the run ({steps:,} steps with the worker; not part of the target)",
         spread(Summary.of([r.build for r in rs])),
         spread(Summary.of([r.build / r.steps for r in rs]))],
    ]
    events = Summary.of([float(r.events) for r in rs])
    return (f"## 8. Rollback cost\n\nA run of {steps:,} steps on one SQLite file "
            "(`synchronous=FULL`), driven by a real `Worker(...).run(until_idle=True)`; its async "
            f"step writes one {FILE_BYTES}-byte file per step with the built-in reversible tool "
            "`fs_write` (`notes/step-NNNNNN.txt` in the run's workspace, whose `notes` folder is "
            f"empty at step 0), so the run ends with {steps:,} reversible effects "
            "(`bench/rollback_cost.py`). Timed: `plan(store, run, 0)` alone (read-only: the "
            "effects, the journal, one hash per file), then `rollback(store, run, 0)`: the plan "
            "again under the lease, then per effect, newest first, `effect.undoing` made durable, "
            "the `fs_restore` undo run (the file removed, the folder fsynced), `effect.undone` "
            "made durable; then the step-0 state restored in a new epoch "
            f"({events.median:,.0f} events journaled). After each rollback the benchmark checks "
            "that the workspace holds only the empty `notes` folder, every effect is `undone` and "
            "the run is paused at step 0 in epoch 1, so every timing is of a correct rollback. "
            f"Each of the {cfg.rollback_repeats} repeats builds a fresh run on a fresh database "
            "and workspace.\n\n" + table(["what", "time", "per effect"], rows))


def _impact(res: Results) -> str:
    cfg = res.config
    if not res.impacts:
        return "## 9. Impact over a swarm\n\nNot run.\n"
    s = res.impacts[0]
    b = s.breakdown
    quick = " This quick run builds fewer events; its goal is pro rata." if cfg.quick else ""
    waits = s.steps - s.runs * s.work_steps
    kinds = ", ".join(f"{n:,} {k}" for k, n in sorted(s.links.items(), key=lambda kv: -kv[1]))
    rows = [[f"{t.label} (`{t.origin}`)", f"{t.reached_runs} runs, {t.reached_steps:,} steps",
             spread(Summary.of(t.impact_s)), us(percentile(t.impact_s, 0.95)),
             us(statistics.median(t.json_s)), size(t.json_bytes)]
            for t in (s.main, s.late)]
    return (f"## 9. Impact over a swarm of {s.runs} runs\n\nThe history is written by the runtime, "
            f"not inserted by hand (`bench/impact_cost.py`): {s.runs} runs of one async `StepAgent` in "
            "one swarm, one SQLite file and one shared workspace, driven to the end by a real "
            "`Worker(store, agents=...).run(until_idle=True)` with its default pipeline (up to 4 step "
            "commits in flight) on `SQLiteStore(path, synchronous=\"NORMAL\")`: building is not what "
            "is timed, and `impact` only reads. The runs form a pipeline of "
            f"{STAGES} stages × {LANES} lanes. A work step takes the run's inbox (`ctx.receive`), reads "
            "the blackboard key of a random run of the previous stage and writes its own "
            "(`ctx.board.get`, `ctx.board.set`), reads its upstream partner's output file "
            "(`fs_read`), rewrites its own (`fs_write`), appends to a log shared with other runs and "
            "rotated every 5 work steps (`fs_append`), messages its downstream partner (`ctx.send`) "
            f"and, with probability {CROSS_TALK:.0%}, a random run of the swarm (seeded). Past stage "
            "0 a run works only on credit, one per message from its upstream partner, and returns "
            f"`AwaitMessages()` when it has none. {s.work_steps} work steps per run: {s.steps:,} "
            f"steps in all ({waits:,} of them waiting), **{s.events:,} events** (the sum of the "
            f"runs' last sequence numbers) and {sum(s.links.values()):,} cross-run provenance links "
            f"the runtime derived ({kinds}); built in {s.build:.1f} s.\n\n"
            "Timed: `impact(store, \"RUN@STEP\")` from two origins, each "
            f"{len(s.main.impact_s)} times (garbage collected before each call), after one untimed "
            "call checked against the stored links: the runs it names are exactly those reachable "
            "from the origin through them. Then `Impact.to_json()` + `orjson.dumps`, which is what "
            "`tether impact --json` prints. Percentiles by nearest rank (with fewer than 20 calls "
            "the p95 is the slowest call).\n\n"
            + table(["origin", "reached", "`impact`", "p95", "`--json` (to_json + dumps)",
                     "JSON"], rows)
            + f"\nOne more call from the first origin, on a wrapper of the store that times each "
              f"method `impact` calls: {us(b.total)} in all; {us(b.walk)} in the walk over the "
              f"links (`Store.downstream`, {b.reached} (run, epoch)s reached); {us(b.describe)} "
              f"in {b.describe_calls} `Store.produced` calls ({b.describe_rows:,} effects, "
              f"messages and versions) to describe the {s.main.reached_runs} affected runs; "
              f"{us(b.other)} in other store calls; {us(b.python)} in `impact`'s own Python.\n\n"
              "LangGraph + SqliteSaver, the other side of this report, has nothing to compare with: "
              "its checkpoints belong to one thread and record no messages, shared-store reads or "
              "file writes that crossed from another thread, so it cannot say what a step "
              f"affected elsewhere.{quick}\n")


def _audit(res: Results) -> str:
    if not res.audits:
        return "## 9b. Audit: verify and seal\n\nNot run.\n"
    s = res.audits[0]
    rows = [["`verify_store` (with the public key)", f"{s.per_second(s.verify_cpu):,.0f} events/s",
             f"{s.per_second(s.verify_wall):,.0f} events/s", spread(Summary.of(s.verify_wall))],
            ["first `seal` (read leaves, hash the tree, sign)",
             f"{s.per_10k(s.seal_wall) * 1e3:.1f} ms per 10,000 events", "",
             spread(Summary.of(s.seal_wall))],
            ["of which: leaf hashes read in commit order",
             f"{s.per_10k(s.read_leaves) * 1e3:.1f} ms per 10,000 events", "",
             spread(Summary.of(s.read_leaves))],
            ["of which: the Merkle tree hashed", f"{s.per_10k(s.hash_tree) * 1e3:.1f} ms per "
             "10,000 events", "", spread(Summary.of(s.hash_tree))]]
    for x in res.seals[:1]:
        rows += [[f"`seal` of {x.new:,} new events on a store of {x.events:,} (incremental)",
                  "", "", spread(Summary.of(x.incremental))],
                 ["the same from scratch (`seal --full`, every seal before the cache)", "", "",
                  spread(Summary.of(x.scratch))]]
    return (f"## 9b. Audit: verify and seal\n\nA swarm built like section 9's (`bench/audit_cost.py`:"
            f" {s.runs} runs, **{s.events:,} events**, built in {s.build:.1f} s), then sealed and "
            f"verified {len(s.verify_wall)} times each. Verify does every check `tether audit verify` "
            "does (chains, batches, checkpoint bodies, links, rows, projections, SQLite's integrity "
            "check) and the signed checkpoint with the public key, with the helper process the "
            f"command starts on a store this large (it walks the runs past {SPLIT:.0%} of the "
            "events, then runs the integrity check: `tether/audit/share.py`); events/s is events "
            "÷ median "
            "time, on CPU time (verify's and its helper's together) and on wall time. A first "
            "seal reads every event's hash in commit order and hashes the "
            "whole tree, so its cost grows with the store: per 10,000 events is the whole seal's "
            "time ÷ (events ÷ 10,000). A later seal hashes only the events since the last "
            "checkpoint, from the frontier cached beside it (`bench/seal_cost.py`: a synthetic "
            "store, 100 runs committing together; each round commits 10,000 events and seals "
            "them incrementally, then from scratch over the same state).\n\n"
            + table(["what", "CPU", "wall", "seconds, wall"], rows))


def _query(res: Results) -> str:
    if not res.queries:
        return "## 9c. Audit query over a large store\n\nNot run.\n"
    q = res.queries[0]
    rows = [["the window", f"{q.window_events:,}", f"{q.window_ms:.1f} ms"],
            ["the window, one kind (`--kind policy.decided`)", f"{q.kind_events:,}",
             f"{q.kind_ms:.1f} ms"],
            ["the window, one agent's runs (`--agent`)", f"{q.agent_events:,}",
             f"{q.agent_ms:.1f} ms"]]
    return ("## 9c. Audit query over a large store\n\n`bench/query_cost.py`: a store of "
            f"**{q.events:,} events** ({q.db_bytes / 1e6:.0f} MB; 100 runs journaling at a steady "
            "pace over 30 days of their clocks, built by bulk commits in "
            f"{q.build_s:.0f} s), then `run_query` (what `tether audit query` runs) over a "
            "2-hour window, median of 5. The store's index on event time (schema 8) bounds "
            "the read to the window, so the time follows what the window holds, not the "
            "store's size; most of it is decoding each event (ids, times, payloads).\n\n"
            + table(["query", "events returned", "time"], rows))


def _telemetry(res: Results) -> str:
    return tc.section(res.telemetry, res.config.target_n)


def _diagnostics(res: Results) -> str:
    rows = []
    tables: set[str] = set()
    for d in res.diagnoses:
        tables.update(d.wal_pages)
    order = sorted(tables, key=lambda t: -max(d.wal_pages.get(t, 0) / d.total_steps
                                              for d in res.diagnoses))
    for d in res.diagnoses:
        pages = sum(d.wal_pages.values()) / d.total_steps
        rows.append([d.label, us(d.per_step(d.wall)), us(d.per_step(d.loop_cpu)),
                     us(d.per_step(d.commit_wall)), us(d.per_step(d.commit_cpu)),
                     f"{d.total_steps / max(d.commits, 1):.1f}", f"{pages:.2f}"])
    page_rows = [[t, *(f"{d.wal_pages.get(t, 0) / d.total_steps:.2f}" for d in res.diagnoses),
                  *(size(d.table_bytes.get(t, 0) / d.total_steps) for d in res.diagnoses)]
                 for t in order]
    labels = [d.label for d in res.diagnoses]
    return ("## 10. Where tether's time and bytes go\n\nOne instrumented pass per scenario (not "
            "used for the targets). Event-loop CPU = CPU time of the thread running the worker; "
            "commit = `store.commit` in the group committer's writer thread (wall includes the "
            "fsync); WAL pages = 4 KiB pages SQLite wrote and synced, read from the WAL's frame "
            "headers with auto-checkpointing off.\n\n"
            + table(["scenario", "wall / step", "event-loop CPU / step", "commit wall / step",
                     "commit CPU / step", "steps per commit", "WAL pages / step"], rows)
            + "\n" + table(["table or index", *(f"WAL pages/step: {lb}" for lb in labels),
                            *(f"bytes/step: {lb}" for lb in labels)], page_rows))


def _ui(res: Results) -> str:
    if not res.ui:
        return "## 9e. Dashboard\n\nNot run.\n"
    s = res.ui[0]
    rows = [[f"overview of {s.runs:,} runs, the whole page (`GET /`)", "≤ 200 ms",
             f"{s.page_ms:.1f} ms ({s.page_bytes / 1e3:.0f} kB)",
             "**pass**" if s.page_ms <= 200 else "**MISS**"],
            ["the overview's data alone", "", f"{s.data_ms:.1f} ms", ""],
            ["a commit to an open page's live region fetched again", "≤ 1 s",
             f"{s.live_ms:.0f} ms median, {s.live_max_ms:.0f} ms worst of {s.rounds}",
             "**pass**" if s.live_max_ms <= 1000 else "**MISS**"]]
    if s.steps is not None:
        c = s.steps
        ratios = sorted(c.ratios)
        rows.append([f"{c.pages} open live pages following {c.runs} runs being stepped: the "
                     "worker's CPU per step, with pages ÷ without", "≤ +5%",
                     f"{c.slowdown * 100:+.1f}% (median of {len(ratios)} pairs, "
                     f"{(ratios[0] - 1) * 100:+.1f}% to {(ratios[-1] - 1) * 100:+.1f}%); "
                     f"{c.median(lambda r: r.cpu_per_step, False) * 1e6:.1f} µs without, "
                     f"{c.median(lambda r: r.cpu_per_step, True) * 1e6:.1f} µs with",
                     "**pass**" if c.slowdown <= 0.05 else "**MISS**"])
        rows.append(["the same, wall time per step (the server and pages share the 2 cores)",
                     "", f"{c.median(lambda r: r.wall_per_step, False) * 1e6:.0f} µs -> "
                     f"{c.median(lambda r: r.wall_per_step, True) * 1e6:.0f} µs", ""])
        rows.append(["the server's CPU per step, live regions fetched per round", "",
                     f"{c.median(lambda r: r.server_cpu_per_step, True) * 1e6:.0f} µs, "
                     f"{c.median(lambda r: r.fetches, True):.0f} fetches", ""])
    return ("## 9e. Dashboard\n\n`bench/ui_cost.py`: the overview page rendered in process "
            "(every read and the template), median of 20; then a real uvicorn server on "
            "loopback with one page's event stream open: each round commits a new run, waits "
            "for the `change` event and fetches the live region as the page's script does. "
            "The live poller reads the store every 0.25 s, which bounds the median from "
            "below. Then `bench/ui_step_cost.py`: a worker in this process steps 4 runs of "
            "the core loop's agent (`synchronous=FULL`) while a `tether ui serve` process "
            "serves 100 open pages held by a third process (real HTTP clients, each following "
            "`/api/live` and fetching its live region again on every change, as `ui.js` does; "
            "90 on the runs' pages, 10 on the overview), against the same with the server "
            "and no page; pairs alternate the order, CPU is the worker process's "
            "`process_time`.\n\n"
            + table(["what", "target", "time", "verdict"], rows))


def _monitors(res: Results) -> str:
    if not res.monitors:
        return "## 11. What the monitors cost\n\nNot run.\n"
    c = res.monitors[0]
    rows = [[f"`{m.name}`", f"{m.alone:.2f} µs", f"{m.hosted:.2f} µs"] for m in c.monitors]
    rows.append(["all of them", "—", f"{c.host_on:.2f} µs"])
    e2e = ("" if not c.pairs else
           f"\nEnd to end (`bench/monitor_cost.py`): the loop of section 1 at N={c.steps} with a "
           "policy that switches every registered monitor off, and one that leaves them on, run "
           f"alternately in {len(c.pairs)} pairs; event-loop CPU per step on − off: "
           f"**{c.delta:+.1f} µs** median ({min(c.deltas):+.1f} to {max(c.deltas):+.1f}); on "
           f"{statistics.median(p[0] for p in c.pairs):.1f} µs, off "
           f"{statistics.median(p[1] for p in c.pairs):.1f} µs. Each step of that loop journals "
           "two events (`step.started`, `step.finished`).\n")
    return ("## 11. What the monitors cost\n\nCPU per step (`process_time`, median of 7 rounds "
            "of 3,000 steps) of a step that journals `model.called`, `tool.called` and "
            "`step.finished`: *alone* is the monitor's own `observe` called directly; *hosted* "
            "is the worker's path (the journal's listener, `MonitorHost`, the `Watch` and the "
            "view) with only that monitor on, less the same path with every monitor off "
            f"({c.host_off:.2f} µs); a monitor that does nothing costs {c.floor:.2f} µs called "
            "directly. A monitor is fed only the event kinds it declares (`kinds`), and the "
            "view is built only if one reads it.\n\n"
            + table(["monitor", "alone", "hosted"], rows) + e2e)


def _pg(res: Results) -> str:
    if res.pg is None:
        return f"{pg_report.TITLE}\n\nNot run.\n"
    return pg_report.section(res.pg, res.config)


def _method(res: Results) -> str:
    cfg = res.config
    return f"""## Method

- Workload: the state is `{{"messages": [...]}}`; each step appends one message whose canonical
  JSON is 200 bytes and names its step. N = {", ".join(map(str, cfg.sizes))}.
- tether: a `StepAgent` with an async step, started with `start_run` and driven by
  `Worker(store).run(until_idle=True)` on `SQLiteStore(path, synchronous="FULL")`: leases,
  journal, checkpoints and the group committer all run as in production.
- LangGraph: `StateGraph` with one node, compiled with `SqliteSaver` on a file connection set
  to `journal_mode=WAL`, `synchronous=FULL`, run with `durability="sync"` (each checkpoint is on
  disk before the next step). tether lets the next step start while the previous step's commit
  syncs (at most four in flight, always settled before an effect runs and before the run
  sleeps, pauses or ends), which is closest to LangGraph's `durability="async"`, shown as its
  own column. The reference variant keeps the
  conversation in a plain `list` field without a reducer and loops inside the graph (one
  superstep = one step): one `invoke` per step instead writes three checkpoints per step, and
  is shown at N = {", ".join(map(str, cfg.invoke_sizes))} only.
- Overhead = time per step − time of the bare step function at the same N (measured alone).
- Repeats: tether {cfg.repeats}, LangGraph {cfg.lg_repeats}, {cfg.read_repeats} reads per tether
  repeat at the largest N, concurrent runs {cfg.repeats}, swarm {cfg.swarm_repeats}; the two
  systems alternate within each repeat.
- Policy: {cfg.policy_batches} batches of 100 calls per case, after a warm-up of a tenth as
  many; garbage collection on, as in the worker.
- Stop: {cfg.stop_repeats} × ({cfg.stop_sample} one at a time + {cfg.stop_sample} in a burst) among
  {cfg.stop_runs} active runs; the worker is killed at the end.
- Rollback: {cfg.rollback_repeats} fresh runs of {cfg.rollback_steps} steps, each rolled back once
  to step 0 and checked.
- Impact: one swarm of 100 runs × {cfg.impact_work_steps} work steps built by the worker,
  {cfg.impact_repeats} timed `impact` calls per origin.
- Bytes: file + WAL after `PRAGMA wal_checkpoint(TRUNCATE)`, after the run minus before it
  (tether: after `start_run`; LangGraph: after `setup()`).
"""
