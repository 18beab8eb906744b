"""Swarm soak: real worker subprocesses SIGKILLed at random moments while runs message
each other, append to shared files and write the blackboard.

Each trial (seeded) starts two producers and two consumers in one swarm
(:mod:`tests.swarm_soak_agents`). Producers send numbered messages to the consumers
by a seeded plan; consumers take their inbox, record the message ids through an
irreversible tool that appends to a side channel (``$SOAK_SIDE``, the ground truth of
what ran), and return ``AwaitMessages()`` when idle. Everybody appends to a shared
file of their workspace with ``fs_append``, reads it with ``fs_read`` and writes the
blackboard.

The swarm is driven by one worker (the ``tether worker --until-idle`` CLI; all four
runs share one workspace), or by two (``python -m tests.swarm_soak_agents worker
--only ...``), each with its own cell of a producer and a consumer and the cell's own
workspace (the workspace lock belongs to one worker: docs/design.md), while messages
cross between the cells. The workers are killed with SIGKILL and restarted, a few times:
after a random delay, or (seeded too) right after the side channel or a shared file
grows or more messages are claimed, to aim at the windows between an effect and its
journaled result and between a claim and its ``message.received``. In-doubt effects are
settled between restarts as an operator would (by looking at the world: the side
channel, the file); then the CLI worker drives everything to the end.

With no worker alive, after every kill and at the end, :func:`check_world` checks:

* ``verify_store`` finds no problem (chains, batches, checkpoints, re-derived links);
  nothing committed before a kill is lost after it; no step finished twice;
* messages: a ``messages`` row exists exactly for each ``message.sent`` of the chains;
  each is cited by at most one ``message.received`` (exactly one at the end), of its
  recipient, whose call (epoch:step:index) is the row's claim; a message claimed with no
  ``message.received`` is only ever one of the recipient's in-flight step; none is
  pending at the end; the consumers' states hold exactly what they received;
* the side channel: every line has a durable intent (write-ahead) that matches it; no
  irreversible effect ran twice; every id it records was received by that run (its
  ``message.received`` is durable); at the end it records every message exactly once;
* files: every line of a shared file was written by a durable ``fs_append`` intent of
  a run of that workspace, and exactly once; every done effect's line is there; the
  file's versions are numbered 1..n, one per done ``fs_append``, in the order of their
  commits (batches) and of their lines in the file; each append or read of a file whose
  last version is another run's cites that version's effect, with a ``file`` link; a
  read saw a prefix of the file;
* the blackboard: versions of each key are numbered 1..n, exactly one per
  ``blackboard.write`` of the chains, with its value; each read cites the version it
  saw (with a ``board`` link across runs), and a run never reads a version older than
  one it wrote or read before.

An ``fs_append`` settled after a crash, by the tool itself (from the file's hash) or
with ``tether resolve --done``, gets its file version when it is settled if nobody wrote
the file after it (then later reads and appends cite it like any other); if somebody
did, it gets none (the runs in between could not cite it). A read made between the
crash and the settling cites the versions that existed when it read.
A kill inside ``fs_append``'s atomic write leaves its temporary file
(``.tether-PID-TOKEN.tmp``) until the next write in the folder removes it; listings
hide it. Only counted (``tmp_left`` in the output).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests import crashkit as ck
from tests import swarm_soak_agents as sa
from tether import start_run, verify_store
from tether.control import resolve_effect
from tether.core.events import Event
from tether.core.settings import STORE_CHAIN
from tether.runtime.operator import run_state
from tether.runtime.swarm import board_ns
from tether.runtime.workspace import file_ns
from tether.store.records import EffectRow, MessageRow, RunRow
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools

pytestmark = [pytest.mark.crash, pytest.mark.timeout(90)]

SWARM = "soak"
STEPS = 40
"""Steps of each producer."""
PACE = 0.02
"""Each producer step naps this long first (seconds)."""
DELAY = (0.1, 0.6)
"""A timed kill comes this long after the workers are up (uniform, seconds)."""
TRIGGERS = ("time", "claim", "side", "file")
"""What a kill waits for (in turn): a random delay, or the moment the side channel (a ``record``
effect just ran) or a shared file (an ``fs_append`` just wrote) grows by a few lines,
or a few more messages are claimed: those aim at the windows between an effect and its
journaled result, and between taking messages and journaling ``message.received``."""
TRIGGER_WAIT = 1.5
"""A kill waiting for a file to grow comes after this many seconds regardless."""
TRIALS = [  # (seed, workers, kills)
    (1, 1, 3), (2, 2, 2), (3, 1, 4), (4, 2, 3), (5, 1, 2), (6, 2, 4),
]
FINAL_ROUNDS = 8
"""At most this many ``--until-idle`` workers (with settling between) drive the end."""
TETHER = Path(sys.executable).with_name("tether")


# -- workers ------------------------------------------------------------------------------
@dataclass
class Proc:
    """A worker subprocess."""

    proc: subprocess.Popen[bytes]
    log: Path
    ready: Path | None
    """The file the module entry creates; None for the CLI (it prints a line first)."""

    def up(self) -> bool:
        if self.ready is not None:
            return self.ready.exists()
        return self.log.exists() and "worker " in self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        ck.wait_for(lambda: self.up() or self.proc.poll() is not None, timeout,
                    f"worker {self.proc.pid} to start")
        self.check_exit()

    def check_exit(self) -> None:
        code = self.proc.poll()
        if code is not None and code != 0:
            raise AssertionError(f"worker {self.proc.pid} exited {code}: "
                                 f"{self.log.read_text(errors='replace')[-3000:]}")

    def kill(self) -> bool:
        """SIGKILL; False if it had already exited (cleanly: checked)."""
        if self.proc.poll() is not None:
            self.check_exit()
            return False
        self.proc.kill()
        self.proc.wait(timeout=30)
        return True


def spawn(folder: Path, db: Path, side: Path, tag: str, *, only: list[str] | None) -> Proc:
    """``only`` None: the ``tether worker --until-idle`` CLI for every run; else the test's
    module entry limited to ``only`` (it runs until killed)."""
    log = folder / f"{tag}.log"
    env = {**os.environ, "PYTHONPATH": str(ck.ROOT), sa.SIDE_ENV: str(side)}
    env.pop("TETHER_STORE", None)
    ready = None
    if only is None:
        cli = [str(TETHER)] if TETHER.exists() else [
            sys.executable, "-c", "from tether.cli.app import main; main()"]
        cmd = [*cli, "--store", str(db), "worker", "--until-idle", "--lease-ttl", "2"]
    else:
        ready = folder / f"{tag}.ready"
        cmd = [sys.executable, "-m", "tests.swarm_soak_agents", "worker", str(db), "--ready",
               str(ready), "--only", ",".join(only), "--lease-ttl", "2"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=ck.ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Proc(proc, log, ready)


def lines_in(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def claimed(db: Path) -> int:
    """How many messages are claimed (a read-only look; WAL readers do not block writers)."""
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(c.execute("SELECT COUNT(*) FROM messages WHERE status = 'delivered'")
                   .fetchone()[0])
    finally:
        c.close()


def wait_for_trigger(how: str, rng: random.Random, procs: list[Proc], db: Path, side: Path,
                     files: list[Path]) -> None:
    """Return at the moment to kill: after a random delay, or once the side channel or a
    shared file has grown by 1-3 lines, or 1-3 more messages are claimed (or after
    TRIGGER_WAIT, or once the workers are gone)."""
    if how == "time":
        time.sleep(rng.uniform(*DELAY))
        return
    if how == "claim":
        def count() -> int:
            return claimed(db)
    else:
        path = side if how == "side" else rng.choice(files)

        def count() -> int:
            return lines_in(path)
    target = count() + rng.randint(1, 3)
    deadline = time.monotonic() + TRIGGER_WAIT
    while (count() < target and time.monotonic() < deadline
           and any(p.proc.poll() is None for p in procs)):
        time.sleep(0.0005)


# -- the swarm ----------------------------------------------------------------------------
@dataclass
class Swarm:
    """What a trial started: run ids by name, the cells (runs driven together, with their
    workspace) and what the plan says each consumer must get."""

    ids: dict[str, str]
    cells: list[tuple[list[str], Path]]
    want: dict[str, int]
    plans: dict[str, list[list[str]]]


def start_swarm(store: SQLiteStore, folder: Path, rng: random.Random, workers: int) -> Swarm:
    consumers, producers = ["c1", "c2"], ["p1", "p2"]
    if workers == 1:
        layout = [(["p1", "p2", "c1", "c2"], folder / "ws")]
    else:  # a producer and a consumer per worker; messages cross between the cells
        layout = [(["p1", "c1"], folder / "ws-a"), (["p2", "c2"], folder / "ws-b")]
    ws_of = {n: ws for names, ws in layout for n in names}
    plans = {p: [[rng.choice(consumers) for _ in range(rng.choice((0, 1, 1, 2)))]
                 for _ in range(STEPS)] for p in producers}
    want = {c: sum(step.count(c) for plan in plans.values() for step in plan) for c in consumers}
    allow_tools(store)  # the soak is about kills, not approvals
    ids = {}
    for c in consumers:  # first: producers name them
        ids[c] = start_run(store, sa.consumer, agent_ref=sa.CONSUMER_REF, goal=f"consume {c}",
                           name=c, swarm=SWARM, workspace=ws_of[c],
                           state=sa.consumer_state(c, want[c]))
    for p in producers:
        ids[p] = start_run(store, sa.producer, agent_ref=sa.PRODUCER_REF, goal=f"produce {p}",
                           name=p, swarm=SWARM, workspace=ws_of[p],
                           state=sa.producer_state(p, plans[p], PACE))
    cells = [([ids[n] for n in names], ws.resolve()) for names, ws in layout]
    return Swarm(ids, cells, want, plans)


# -- settling in-doubt effects ------------------------------------------------------------
def read_side(side: Path) -> list[dict[str, Any]]:
    """Every complete line of the side channel (a torn last line is ignored)."""
    if not side.exists():
        return []
    out = []
    for raw in side.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue
    return out


def settle(store: SQLiteStore, side: Path, sw: Swarm) -> Counter[str]:
    """Resolve every in-doubt effect by looking at the world, as an operator would: the
    side line (``record``) or the line in the file (``fs_append``) is there -> done;
    it is not -> retry."""
    ran = {ln["effect"] for ln in read_side(side)}
    how: Counter[str] = Counter()
    for run in store.all_run_ids():
        for eff in store.effects(run=run, status="in_doubt"):
            if eff.tool == "record":
                done = eff.id in ran
                result = sa.record_result(eff.arguments["ids"])
            elif eff.tool == "fs_append":
                ws = workspace_of(sw, run)
                f = ws / eff.arguments["path"]
                done = f.exists() and eff.arguments["content"] in f.read_text(
                    encoding="utf-8").splitlines(keepends=True)
                result = "appended (settled by the soak test)"
            else:
                raise AssertionError(f"unexpected in-doubt effect {eff}")
            res = "done" if done else "retry"
            resolve_effect(store, eff.id, res, result=result if done else None,
                               who="human:soak")
            how[f"{eff.tool}:{res}"] += 1
    return how


def workspace_of(sw: Swarm, run: str) -> Path:
    return next(ws for runs, ws in sw.cells if run in runs)


# -- the invariants -----------------------------------------------------------------------
@dataclass
class Seen:
    """What the checks saw (for the trial's line of output)."""

    messages: int = 0
    unjournaled_claims: int = 0
    side_lines: int = 0
    file_lines: int = 0
    file_links: int = 0
    resolved_versions: int = 0
    """Reads and appends right after another run's write that an operator settled as done:
    that write has no version, so they cite nothing of it (see the module docstring)."""
    board_versions: int = 0
    tmp_left: int = 0
    """Temporary files of ``fs_append``'s atomic write left in a workspace by a kill
    between writing one and renaming it (never cleaned up; ``fs_list`` shows them)."""
    open_effects: int = 0
    statuses: Counter[str] = field(default_factory=Counter)


def need(cond: bool, msg: str) -> None:
    if not cond:
        raise AssertionError(msg)


def check_world(store: SQLiteStore, side: Path, sw: Swarm, *, final: bool) -> Seen:
    """Every invariant of the module docstring; with ``final``, those of the end too.
    Call it with no worker alive (it reads the store in several queries)."""
    rep = verify_store(store)
    need(rep.problems == [], f"verify_store: {rep.problems[:5]}")
    seen = Seen()
    runs: dict[str, RunRow] = {}
    for r in store.all_run_ids():
        row = store.get_run(r)
        assert row is not None
        runs[r] = row
        seen.statuses[row.status] += 1
    evs = {r: store.events(r) for r in runs}
    effects = {e.id: e for r in runs for e in store.effects(run=r)}
    links = {(x.kind, x.src_event, x.dst_event) for x in store.links()}
    batch_of: dict[str, int] = {}
    for b in store.batches():
        for run, first, last in b.entries:
            if run == STORE_CHAIN:
                continue  # an operator setting (the test's policy), not a run's events
            for seq in range(first, last + 1):
                batch_of[evs[run][seq - 1].id] = b.n
    for r, chain in evs.items():
        finished = Counter((e.epoch, e.step) for e in chain if e.kind == "step.finished")
        need(all(n == 1 for n in finished.values()), f"run {r}: a step finished twice: {finished}")
    received = _check_messages(store, runs, evs, links, final, seen)
    _check_side(side, effects, evs, received, final, seen)
    for cell_runs, ws in sw.cells:
        _check_file(store, ws, cell_runs, runs, evs, effects, links, batch_of, final, seen)
    _check_board(store, evs, links, batch_of, seen)
    seen.open_effects = sum(e.status in ("intent", "in_doubt", "resolved_retry")
                            for e in effects.values())
    if final:
        need(seen.statuses == Counter(done=len(runs)), f"runs at the end: {dict(seen.statuses)}")
        need(seen.open_effects == 0, "effects left open at the end: "
             f"{[(e.tool, e.status) for e in effects.values() if e.status != 'done']}")
        _check_states(store, sw, evs, received)
    return seen


def _check_messages(store: SQLiteStore, runs: dict[str, RunRow], evs: dict[str, list[Event]],
                    links: set[tuple[str, str, str]], final: bool,
                    seen: Seen) -> dict[str, list[Event]]:
    sent = {e.id: e for chain in evs.values() for e in chain if e.kind == "message.sent"}
    rows: dict[str, MessageRow] = {m.id: m for m in store.messages()}
    need(set(rows) == set(sent), "messages rows and message.sent events differ: rows without "
         f"an event {sorted(set(rows) - set(sent))[:3]}, events without a row "
         f"{sorted(set(sent) - set(rows))[:3]}")
    seen.messages = len(sent)
    for mid, e in sent.items():
        m = rows[mid]
        need("error" not in e.payload, f"a send failed: {e.payload}")
        need((m.sender, m.recipient, m.step, m.body) == (e.run, e.payload["to"], e.step,
                                                         e.payload["body"]),
             f"message row {m} does not match its message.sent {e.payload}")
    received: dict[str, list[Event]] = defaultdict(list)
    for run, chain in evs.items():
        for e in chain:
            if e.kind != "message.received":
                continue
            ids = tuple(x["id"] for x in e.payload["messages"])
            need(ids == e.causes, f"run {run}: message.received {e.id} cites {e.causes}, "
                 f"holds {ids}")
            claim = f"{e.epoch}:{e.step}:{e.payload['i']}"
            for mid in ids:
                received[mid].append(e)
                m = rows.get(mid)
                need(m is not None, f"run {run} received {mid}, which was never sent (durably)")
                assert m is not None
                need((m.recipient, m.status, m.claim) == (run, "delivered", claim),
                     f"message {mid} received by {run} at {claim} is {m.status} for "
                     f"{m.recipient}, claim {m.claim}")
                if m.sender != run:
                    need(("message", mid, e.id) in links, f"no message link {mid} -> {e.id}")
    twice = {mid: [(x.run, x.step) for x in es] for mid, es in received.items() if len(es) > 1}
    need(not twice, f"messages received more than once: {twice}")
    for mid, m in rows.items():
        if mid in received:
            continue
        need(not final, f"message {mid} to {m.recipient} is {m.status} (claim {m.claim}) "
             "and no message.received cites it at the end: lost")
        if m.status == "delivered":
            # Claimed by a call whose message.received died with the worker: only ever the
            # recipient's in-flight step, which will take it again.
            assert m.claim is not None
            step = int(m.claim.split(":")[1])
            row = runs[m.recipient]
            need(step > row.step, f"message {mid} was claimed at {m.claim} by {m.recipient}, "
                 f"whose step {step} is committed (it is at step {row.step}) without "
                 "receiving it: lost")
            seen.unjournaled_claims += 1
        else:
            need(m.status == "pending", f"message {mid} is {m.status}")
    return received


def _check_side(side: Path, effects: dict[str, EffectRow], evs: dict[str, list[Event]],
                received: dict[str, list[Event]], final: bool, seen: Seen) -> None:
    lines = read_side(side)
    seen.side_lines = len(lines)
    per_effect = Counter(ln["effect"] for ln in lines)
    for ln in lines:
        eff = effects.get(ln["effect"])
        need(eff is not None, f"side line {ln} has no durable intent (write-ahead broken)")
        assert eff is not None
        need((eff.tool, eff.run, eff.step, eff.arguments["ids"]) == ("record", ln["run"],
                                                                    ln["step"], ln["ids"]),
             f"side line {ln} does not match its effect {eff}")
        need(per_effect[eff.id] == 1, f"irreversible effect {eff.id} ran {per_effect[eff.id]} "
             "times")
        for mid in ln["ids"]:
            need(any(e.run == eff.run for e in received.get(mid, [])),
                 f"run {eff.run} recorded {mid}, which no durable message.received of it holds")
    ids = Counter(mid for ln in lines for mid in ln["ids"])
    need(all(n == 1 for n in ids.values()),
         f"message ids recorded twice: {[m for m, n in ids.items() if n > 1]}")
    for eff in effects.values():
        if eff.tool != "record":
            continue
        if eff.status in ("done", "resolved_done"):
            need(per_effect[eff.id] == 1, f"done irreversible effect {eff.id} has "
                 f"{per_effect[eff.id]} side lines")
        elif final:
            raise AssertionError(f"record effect {eff.id} is {eff.status} at the end")
    if final:
        every = {e.id for chain in evs.values() for e in chain if e.kind == "message.sent"}
        need(set(ids) == every, f"messages never recorded: {sorted(every - set(ids))[:5]}")


def _check_file(store: SQLiteStore, ws: Path, cell: list[str], runs: dict[str, RunRow],
                evs: dict[str, list[Event]], effects: dict[str, EffectRow],
                links: set[tuple[str, str, str]], batch_of: dict[str, int], final: bool,
                seen: Seen) -> None:
    path = ws / sa.LOG
    seen.tmp_left += len(list(ws.glob(".tether-*.tmp")))
    need({p.name for p in ws.iterdir() if not p.name.startswith(".tether-")} <= {sa.LOG},
         f"unexpected files in {ws}: {sorted(p.name for p in ws.iterdir())}")
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = text.splitlines(keepends=True)
    seen.file_lines += len(lines)
    need(all(runs[r].spec["workspace"] == str(ws) for r in cell), f"workspaces of {cell}")
    appends = [e for e in effects.values() if e.tool == "fs_append" and e.run in cell]
    by_text = {e.arguments["content"]: e for e in appends}
    need(len(by_text) == len(appends), "two fs_append effects write the same line")
    need(all(e.run in cell for e in effects.values()
             if e.tool == "fs_append" and e.arguments["content"] in by_text), "cells mixed")
    count = Counter(lines)
    for ln, n in count.items():
        need(ln in by_text, f"{path}: line {ln!r} has no durable fs_append intent")
        need(n == 1, f"{path}: line {ln!r} is there {n} times (an effect applied twice)")
    for content, eff in by_text.items():
        if eff.status in ("done", "resolved_done"):
            need(count[content] == 1, f"{path}: done effect {eff.id} ({eff.status}) left "
                 f"{count[content]} lines {content!r}")
        else:
            need(eff.status in ("intent", "in_doubt", "resolved_retry") and not final,
                 f"fs_append {eff.id} is {eff.status}" + (" at the end" if final else ""))
    # Versions: one per done fs_append, 1..n, in the order of commits and of the lines.
    ns = file_ns(str(ws))
    versions = store.versions(ns=ns)
    need(all(v.key == sa.LOG and v.status == "live" for v in versions),
         f"unexpected versions in {ns}: {[(v.key, v.status) for v in versions]}")
    need([v.version for v in versions] == list(range(1, len(versions) + 1)),
         f"{path}: versions numbered {[v.version for v in versions]}")
    # Settled by the tool after a crash, or resolved by an operator: recorded late, so
    # versioned only if nobody wrote the file in between.
    settled = {e.causes[0] for r in cell for e in evs[r]
               if e.kind == "effect.done" and "settled" in (e.payload or {})}
    done = {e.id for e in appends if e.status == "done"} - settled
    resolved = {e.id for e in appends if e.status == "resolved_done" or e.id in settled}
    need(len({v.event for v in versions}) == len(versions)
         and done <= {v.event for v in versions} <= done | resolved,
         f"{path}: versions {[v.event for v in versions]} are not one per done fs_append "
         f"{sorted(done)} (and per resolved one nobody wrote after: {sorted(resolved)})")
    done |= resolved
    # The event that recorded each version: its effect.done, or an operator's effect.resolved.
    done_ev = {e.causes[0]: e for r in cell for e in evs[r]
               if e.kind in ("effect.done", "effect.resolved") and e.causes
               and e.causes[0] in done}
    pos = {ln: i for i, ln in enumerate(lines)}
    order = [pos[effects[v.event].arguments["content"]] for v in versions]
    need(order == sorted(order), f"{path}: version order {[v.version for v in versions]} "
         f"is not the order of the lines in the file {order}")
    commits = [batch_of[done_ev[v.event].id] for v in versions]
    need(all(a < b for a, b in itertools.pairwise(commits)),
         f"{path}: versions are not numbered in the order of their commits (batches {commits})")
    version_of_line = {effects[v.event].arguments["content"]: v for v in versions}
    for i, v in enumerate(versions):
        e = done_ev[v.event]
        need((v.run, v.step) == (e.run, e.step), f"version {v} vs its effect.done {e.id}")
        prev = versions[i - 1] if i else None
        want = (prev.event,) if prev is not None and prev.run != v.run else ()
        if e.kind == "effect.resolved":  # its effect.done (and causes) was never journaled
            seen.resolved_versions += 1
            continue
        need(e.causes == (v.event, *want), f"{path} v{v.version}: the append by {v.run} cites "
             f"{e.causes[1:]}, but the last writer before it was {prev and prev.run} "
             f"({want})")
        if want:
            need(("file", want[0], e.id) in links, f"no file link {want[0]} -> {e.id}")
            seen.file_links += 1
    # Reads: a prefix of the file; the last version in what they saw is their cause.
    for r in cell:
        for e in evs[r]:
            if e.kind != "tool.called" or e.payload.get("tool") != "fs_read":
                continue
            need("error" not in e.payload, f"fs_read failed: {e.payload}")
            got = e.payload["result"]
            need(text.startswith(got), f"run {r} read {got!r}, not a prefix of {text!r}")
            # The versions that existed when it read: a late one (settled or resolved after
            # a crash) made after the read could not be cited. Made after, not committed
            # after: a read does not wait for its own commit, so a settling that took the
            # workspace's lock once the read let it go can commit first (the read of a
            # line whose effect was in flight at a kill, then that effect settled by the
            # tool). Under the lock, the worker's clock orders the two; the operator's
            # settlings run with no worker alive.
            read_at = datetime.fromisoformat(e.time).timestamp()
            last = next((version_of_line[ln] for ln in reversed(got.splitlines(keepends=True))
                         if ln in version_of_line and version_of_line[ln].created < read_at),
                        None)
            want = (last.event,) if last is not None and last.run != r else ()
            need(e.causes == want, f"run {r} step {e.step}: fs_read cites {e.causes}; the last "
                 f"version it saw is {last and (last.version, last.run)} ({want})")
            if want:
                need(("file", want[0], e.id) in links, f"no file link {want[0]} -> {e.id}")
                seen.file_links += 1


def _check_board(store: SQLiteStore, evs: dict[str, list[Event]],
                 links: set[tuple[str, str, str]], batch_of: dict[str, int], seen: Seen) -> None:
    versions = store.versions(ns=board_ns(SWARM))
    seen.board_versions = len(versions)
    writes = {e.id: e for chain in evs.values() for e in chain if e.kind == "blackboard.write"}
    need({v.event for v in versions} == set(writes) and len(versions) == len(writes),
         "blackboard versions and blackboard.write events differ")
    by_event = {v.event: v for v in versions}
    by_key: dict[str, list[int]] = defaultdict(list)
    last_batch: dict[str, int] = {}
    for v in versions:
        e = writes[v.event]
        need((v.key, v.value, v.run, v.step) == (e.payload["key"], e.payload["value"], e.run,
                                                 e.step), f"version {v} vs its event {e}")
        by_key[v.key].append(v.version)
        b = batch_of[v.event]
        need(b >= last_batch.get(v.key, 0), f"board {v.key} v{v.version} committed before "
             "an earlier version")
        last_batch[v.key] = b
    for key, nums in by_key.items():
        need(nums == list(range(1, len(nums) + 1)), f"board {key}: versions {nums}")
    for run, chain in evs.items():
        floor: dict[str, int] = {}  # the newest version of each key this run wrote or saw
        for e in chain:
            if e.kind == "blackboard.write":
                key = e.payload["key"]
                floor[key] = max(floor.get(key, 0), by_event[e.id].version)
            elif e.kind == "blackboard.read":
                key, p = e.payload["key"], e.payload
                if not p["found"]:
                    need(key not in floor and e.causes == (), f"run {run}: read of {key} found "
                         "nothing after it had seen a version")
                    continue
                v = by_event.get(p["write"])
                need(v is not None and (v.key, v.version, v.value, v.run) == (
                    key, p["version"], p["value"], p["writer"]) and e.causes == (p["write"],),
                    f"run {run}: blackboard.read {p} does not match version {v}")
                assert v is not None
                need(v.version >= floor.get(key, 0), f"run {run} step {e.step} read {key} "
                     f"v{v.version} after it had written or seen v{floor.get(key)}")
                floor[key] = v.version
                if v.run != run:
                    need(("board", v.event, e.id) in links, f"no board link {v.event} -> {e.id}")


def _check_states(store: SQLiteStore, sw: Swarm, evs: dict[str, list[Event]],
                  received: dict[str, list[Event]]) -> None:
    for name, rid in sw.ids.items():
        state = run_state(store, rid)[2]
        if name in sw.plans:
            mine = [e.id for e in evs[rid] if e.kind == "message.sent"]
            need(state["sent"] == mine, f"{name}: state sent {len(state['sent'])}, chain "
                 f"{len(mine)}")
            need(len(mine) == sum(map(len, sw.plans[name])), f"{name} sent {len(mine)}")
            continue
        got = sorted(mid for mid, es in received.items() if es[0].run == rid)
        need(sorted(state["taken"]) == got == sorted(state["recorded"]) and not state["stash"],
             f"{name}: took {len(state['taken'])}, recorded {len(state['recorded'])}, "
             f"received {len(got)}")
        need(len(got) == sw.want[name], f"{name} got {len(got)} of {sw.want[name]}")


# -- the trial -----------------------------------------------------------------------------
def all_done(store: SQLiteStore) -> bool:
    return all(ck.status_of(store, r) == "done" for r in store.all_run_ids())


@pytest.mark.parametrize(("seed", "workers", "kills"), TRIALS)
def test_swarm_survives_sigkill(seed: int, workers: int, kills: int, tmp_path: Path) -> None:
    t0 = time.monotonic()
    rng = random.Random(seed)
    db, side = tmp_path / "soak.db", tmp_path / "side.log"
    store = SQLiteStore(db)
    procs: list[Proc] = []
    try:
        sw = start_swarm(store, tmp_path, rng, workers)
        before: ck.Snapshot = {}
        mid_run = claims = 0
        settled: Counter[str] = Counter()
        triggers: Counter[str] = Counter()
        for cycle in range(kills):
            if workers == 1:
                procs = [spawn(tmp_path, db, side, f"k{cycle}", only=None)]
            else:
                procs = [spawn(tmp_path, db, side, f"k{cycle}-{i}", only=runs)
                         for i, (runs, _) in enumerate(sw.cells)]
            for p in procs:
                p.wait_ready()
            how = TRIGGERS[(seed + cycle) % len(TRIGGERS)]
            triggers[how] += 1
            wait_for_trigger(how, rng, procs, db, side, [ws / sa.LOG for _, ws in sw.cells])
            rng.shuffle(procs)
            for i, p in enumerate(procs):
                if i:
                    time.sleep(rng.uniform(0.0, 0.2))  # the other one goes on meanwhile
                mid_run += p.kill() and any(ck.status_of(store, r) == "running"
                                            for r in store.all_run_ids())
            after = ck.snapshot(store)
            ck.check_nothing_lost(before, after)
            before = after
            claims += check_world(store, side, sw, final=False).unjournaled_claims
            settled += settle(store, side, sw)
        for rnd in range(FINAL_ROUNDS):
            if all_done(store):
                break
            p = spawn(tmp_path, db, side, f"final{rnd}", only=None)
            procs = [p]
            p.proc.wait(timeout=60)
            p.check_exit()
            ck.check_nothing_lost(before, ck.snapshot(store))
            settled += settle(store, side, sw)
        seen = check_world(store, side, sw, final=True)
    finally:
        for p in procs:
            if p.proc.poll() is None:
                p.kill()
        store.close()
    print(f"seed={seed} workers={workers} kills={kills} {dict(triggers)} mid_run={mid_run} "
          f"messages={seen.messages} unjournaled_claims={claims} side={seen.side_lines} "
          f"file_lines={seen.file_lines} file_links={seen.file_links} "
          f"resolved_versions={seen.resolved_versions} tmp_left={seen.tmp_left} "
          f"board_versions={seen.board_versions} settled={dict(settled)} "
          f"{time.monotonic() - t0:.1f}s")
