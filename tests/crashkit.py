"""Agents, a worker entry point and invariant checks for the crash tests.

The agents act on the world through a *side channel*: a file (``$CRASH_SIDE``)
to which every effect appends one line with flush and fsync, naming the run,
the step, the effect (the id of its ``effect.intent`` event, which gives the
epoch and index through the effects table), the idempotency key and the pid of
the process that executed it. The side channel is what really happened; the
store is what tether believes happened. The checks compare the two.

Run as a module, from the repository root::

    python -m tests.crashkit worker STORE [--owner O] [--lease-ttl S] [--until-idle]
    python -m tests.crashkit start STORE N [--steps K] [--pace S]

``worker`` drives the store with the real :class:`tether.Worker` (forever,
unless ``--until-idle``; SIGTERM drains). ``$CRASH_EXIT=TOOL:before|after``
makes that tool ``os._exit`` on the spot: a crash at an exact point.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether import (
    Agent,
    Continue,
    Done,
    ModelResponse,
    ScriptedModel,
    StepAgent,
    ToolCall,
    ToolFailed,
    Worker,
    current,
    start_run,
    tool,
    verify_store,
)
from tether.control import resolve_effect
from tether.core.checkpoint import restore
from tether.store import open_store
from tether.store.protocol import Store
from tether.testing import allow_tools

ROOT = Path(__file__).resolve().parent.parent
SIDE_ENV = "CRASH_SIDE"
EXIT_ENV = "CRASH_EXIT"
EXIT_CODE = 86
"""Exit status of a worker that crashed on purpose ($CRASH_EXIT)."""
AGENTS = ("counter", "keyed", "chatty")
CHAT_TURNS = 20
CHAT_PAUSE = 0.03


# -- the side channel ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SideLine:
    """One effect as it really happened."""

    tool: str
    run: str
    step: int
    effect: str
    key: str
    pid: int
    t: float


def _side(tool_name: str) -> None:
    tc = current()
    line = json.dumps([tool_name, tc.run, tc.step, tc.effect_id, tc.idempotency_key,
                       os.getpid(), time.time()])
    with open(os.environ[SIDE_ENV], "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _maybe_exit(tool_name: str, when: str) -> None:
    if os.environ.get(EXIT_ENV) == f"{tool_name}:{when}":
        os._exit(EXIT_CODE)


def read_side(path: str | os.PathLike[str]) -> list[SideLine]:
    """Every complete line of the side channel (a torn last line is ignored)."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for raw in p.read_text(encoding="utf-8").splitlines():
        try:
            v = json.loads(raw)
        except ValueError:
            continue  # killed mid-write: the line never completed
        out.append(SideLine(v[0], v[1], int(v[2]), v[3], v[4], int(v[5]), float(v[6])))
    return out


# -- tools ----------------------------------------------------------------------
@tool(effect="irreversible")
def mark(note: str) -> str:
    """Append a line to the side channel: an irreversible effect."""
    _maybe_exit("mark", "before")
    _side("mark")
    _maybe_exit("mark", "after")
    return f"marked {note}"


@tool(effect="irreversible", idempotent=True)
def deliver(note: str) -> str:
    """Append a line with the idempotency key: an effect safe to retry with the same key."""
    _maybe_exit("deliver", "before")
    _side("deliver")
    _maybe_exit("deliver", "after")
    key = current().idempotency_key
    assert key is not None
    return key


@tool(effect="read")
def peek(tag: str, pause: float = 0.0) -> dict[str, Any]:
    """Look at nothing for ``pause`` seconds (widens the windows a kill can hit)."""
    if pause:
        time.sleep(pause)
    return {"tag": tag}


# -- agents ---------------------------------------------------------------------
def _init(goal: str) -> dict[str, Any]:
    return {"goal": goal, "log": [], "steps": 30, "pace": 0.01}


async def _counter(ctx: Any, state: dict[str, Any]) -> Any:
    k = ctx.step
    seen = await ctx.call(peek, tag=f"counter {k}", pause=state["pace"])
    try:
        done: str | None = await ctx.call(mark, note=f"counter {k}")
    except ToolFailed:  # an operator resolved the effect as not done
        done = None
    t = await ctx.now()
    await ctx.call(peek, tag=f"counter {k} after", pause=state["pace"])  # effect done, not durable
    state["log"].append({"step": k, "t": t, "seen": seen["tag"], "done": done})
    return Done(k) if k >= state["steps"] else Continue()


def _keyed(ctx: Any, state: dict[str, Any]) -> Any:
    # A sync step (it runs in a worker thread through SyncStepContext).
    k = ctx.step
    receipt = ctx.call(deliver, note=f"keyed {k}")
    ctx.call(peek, tag=f"keyed {k}", pause=state["pace"])
    r = ctx.random()
    state["log"].append({"step": k, "r": r, "receipt": receipt})
    return Done(k) if k >= state["steps"] else Continue()


def _chat_script(messages: Sequence[dict[str, Any]], tools: Sequence[Any]) -> ModelResponse:
    turn = sum(1 for m in messages if m.get("role") == "assistant")
    if turn >= CHAT_TURNS:
        return ModelResponse(content=f"finished after {turn} turns")
    calls = [ToolCall(f"m{turn}", "mark", json.dumps({"note": f"chat {turn}"})),
             ToolCall(f"p{turn}", "peek", json.dumps({"tag": f"chat {turn}", "pause": CHAT_PAUSE}))]
    if turn == 3:
        calls.insert(1, ToolCall("bad3", "mark", '{"note": "unterminated'))
    return ModelResponse(content=None, tool_calls=tuple(calls))


counter = StepAgent(_counter, name="counter", tools=[peek, mark], init=_init)
keyed = StepAgent(_keyed, name="keyed", tools=[peek, deliver], init=_init)
chatty = Agent("chatty", model=ScriptedModel(_chat_script), tools=[mark, peek],
               instructions="Mark every turn, then stop.")


# Used by tests/test_replay.py: a model that counts its calls in this process.
RECALL_CALLS: list[str] = []


def _recall_script(messages: Sequence[dict[str, Any]], tools: Sequence[Any]) -> ModelResponse:
    asked = str(messages[-1]["content"])
    RECALL_CALLS.append(asked)
    return ModelResponse(content=f"answer to {asked} from pid {os.getpid()}")


async def _recall(ctx: Any, state: dict[str, Any]) -> Any:
    k = ctx.step
    resp = await ctx.model([{"role": "user", "content": f"step {k}"}])
    t = await ctx.now()
    r = await ctx.random()
    receipt = await ctx.call(deliver, note=f"recall {k}")
    state["log"].append({"step": k, "content": resp.content, "t": t, "r": r,
                         "receipt": receipt})
    return Done(k) if k >= 3 else Continue()


async def _doubt(ctx: Any, state: dict[str, Any]) -> Any:
    k = ctx.step
    await ctx.now()
    try:
        result = await ctx.call(mark, note=f"doubt {k}")
    except ToolFailed as exc:  # resolved as not done
        result = f"skipped: {exc}"
    state["log"].append({"step": k, "result": result})
    return Done(k) if k >= 2 else Continue()


recall = StepAgent(_recall, name="recall", tools=[deliver],
                   model=ScriptedModel(_recall_script), init=lambda g: {"log": []})
doubt = StepAgent(_doubt, name="doubt", tools=[mark], init=lambda g: {"log": []})


def start_runs(store: Store, names: Sequence[str], *, steps: int = 30,
               pace: float = 0.01) -> list[str]:
    """Start one run per agent name (``counter``, ``keyed``, ``chatty``, ...)."""
    agents = {"counter": counter, "keyed": keyed, "chatty": chatty, "recall": recall,
              "doubt": doubt}
    allow_tools(store)  # the trials are about crashes, not approvals
    out = []
    for i, n in enumerate(names):
        a = agents[n]
        state = None
        if n in ("counter", "keyed"):
            state = {"goal": f"{n} {i}", "log": [], "steps": steps, "pace": pace}
        out.append(start_run(store, a, agent_ref=f"tests.crashkit:{n}", goal=f"{n} {i}",
                             state=state))
    return out


# -- driving workers ------------------------------------------------------------
def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.01) -> Any:
    """Poll ``pred`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class WorkerProc:
    """A worker subprocess and the files it writes."""

    proc: subprocess.Popen[bytes]
    ready: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ok() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.pid} exited with {self.proc.returncode} "
                                     f"before it was ready: {self.log.read_text()[-2000:]}")
            return self.ready.exists()
        wait_for(ok, timeout, f"worker {self.pid} to start")

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.terminate()  # SIGTERM: the worker drains
        return self.proc.wait(timeout=timeout)


def spawn_worker(store: str | os.PathLike[str], side: str | os.PathLike[str], *, tag: str,
                 owner: str | None = None, lease_ttl: float = 30.0, concurrency: int = 1000,
                 until_idle: bool = False, extra_env: dict[str, str] | None = None) -> WorkerProc:
    """Start ``python -m tests.crashkit worker`` from the repository root."""
    folder = Path(side).parent
    ready, log = folder / f"{tag}.ready", folder / f"{tag}.log"
    ready.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "tests.crashkit", "worker", str(store), "--ready", str(ready),
           "--lease-ttl", str(lease_ttl), "--concurrency", str(concurrency)]
    if owner:
        cmd += ["--owner", owner]
    if until_idle:
        cmd.append("--until-idle")
    env = {k: v for k, v in os.environ.items() if k != EXIT_ENV}
    env.update({SIDE_ENV: str(side), "PYTHONPATH": str(ROOT), **(extra_env or {})})
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return WorkerProc(proc, ready, log)


def status_of(store: Store, run: str) -> str:
    """The run's status ('' if it does not exist)."""
    row = store.get_run(run)
    return row.status if row is not None else ""


def at_rest(store: Store, runs: Sequence[str]) -> bool:
    """Every run is done or paused."""
    return all(status_of(store, r) in ("done", "paused") for r in runs)


def unleased(store: Store) -> bool:
    """True once no active run is held by a live lease (a killed worker's have expired)."""
    now = time.time()
    for run in store.all_run_ids():
        row, lease = store.get_run(run), store.lease_of(run)
        if row is not None and row.status in ("running", "sleeping") and lease and lease[2] > now:
            return False
    return True


def finish(store: Store, *, agents: dict[str, Any] | None = None, timeout: float = 30.0) -> None:
    """Wait for dead workers' leases to expire, then drive every runnable run to rest in
    this process (the real Worker, until idle)."""
    wait_for(lambda: unleased(store), timeout, "the killed worker's leases to expire")
    asyncio.run(Worker(store, agents=agents, poll_interval=0.01).run(until_idle=True))


# -- invariants -----------------------------------------------------------------
Snapshot = dict[str, list[tuple[int, str, str, str]]]


def snapshot(store: Store) -> Snapshot:
    """(seq, id, hash, payload hash) of every committed event, by run."""
    return {r: [(e.seq, e.id, e.hash, e.payload_hash) for e in store.events(r)]
            for r in store.all_run_ids()}


def check_nothing_lost(before: Snapshot, after: Snapshot) -> None:
    for run, events in before.items():
        now = after.get(run, [])
        if now[:len(events)] != events:
            lost = [e for e in events if e not in now]
            raise AssertionError(f"run {run}: committed events changed or lost after restart: "
                                 f"{lost[:3]} (had {len(events)}, now {len(now)})")


@dataclass
class Summary:
    """What one check saw, for the soak script's one line per trial."""

    lines: int = 0
    effects: int = 0
    retried_keys: int = 0
    in_doubt: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        st = " ".join(f"{k}={v}" for k, v in sorted(self.statuses.items()))
        return (f"lines={self.lines} effects={self.effects} idempotent_retries="
                f"{self.retried_keys} in_doubt={len(self.in_doubt)} runs[{st}]")


def check_store(store: Store, side: str | os.PathLike[str], *, final: bool) -> Summary:
    """The invariants after a kill (``final=False``) or once every run is at rest.

    Always: chains verify; every side line has a durable intent (write-ahead);
    an irreversible effect ran at most once per (run, epoch, step, idx); an
    idempotent one only ever with its own key; no step finished twice. At rest:
    every run is done or paused on an in-doubt effect that is surfaced
    (``effect.in_doubt`` naming it, ``run.paused`` naming it); no effect is left
    as a bare intent; every done irreversible effect ran exactly once.
    """
    rep = verify_store(store)
    _require(rep.ok, f"chains do not verify: {rep.problems[:3]}")
    lines = read_side(side)
    effects = {e.id: e for r in store.all_run_ids() for e in store.effects(run=r)}
    s = Summary(lines=len(lines), effects=len(effects))
    by_effect: dict[str, list[SideLine]] = defaultdict(list)
    for ln in lines:
        eff = effects.get(ln.effect)
        _require(eff is not None, f"side line {ln} has no durable effect intent (write-ahead broken)")
        assert eff is not None
        _require((eff.run, eff.step, eff.tool) == (ln.run, ln.step, ln.tool),
                 f"side line {ln} does not match its effect row {eff}")
        by_effect[ln.effect].append(ln)
    slots = Counter((e.run, e.epoch, e.step, e.idx) for e in effects.values())
    dup = [k for k, n in slots.items() if n > 1]
    _require(not dup, f"two effects journaled for one call slot (run, epoch, step, idx): {dup[:3]}")
    for eid, lns in by_effect.items():
        eff = effects[eid]
        if eff.tool == "mark":
            _require(len(lns) == 1, f"irreversible effect {eid} (run {eff.run} epoch {eff.epoch} "
                     f"step {eff.step} idx {eff.idx}) ran {len(lns)} times: pids "
                     f"{[x.pid for x in lns]}")
        else:
            _require(all(x.key == eid == eff.key for x in lns),
                     f"idempotent effect {eid} retried with another key: {[x.key for x in lns]}")
            s.retried_keys += len(lns) - 1
    _check_steps(store)
    if final:
        _check_at_rest(store, effects, by_effect, s)
    return s


def _check_steps(store: Store) -> None:
    for run in store.all_run_ids():
        finished = Counter((e.epoch, e.step) for e in store.events(run) if e.kind == "step.finished")
        twice = [k for k, n in finished.items() if n > 1]
        _require(not twice, f"run {run}: steps finished twice: {twice[:3]}")


def _check_at_rest(store: Store, effects: dict[str, Any], by_effect: dict[str, list[SideLine]],
                   s: Summary) -> None:
    for eff in effects.values():
        _require(eff.status != "intent", f"effect {eff.id} ({eff.tool}, run {eff.run} step "
                 f"{eff.step}) is a bare intent: in doubt but not surfaced")
        if eff.tool == "mark" and eff.status in ("done", "resolved_done"):
            _require(len(by_effect.get(eff.id, [])) == 1,
                     f"done irreversible effect {eff.id} has {len(by_effect.get(eff.id, []))} "
                     "side lines, expected exactly 1")
        if eff.status == "in_doubt":
            s.in_doubt.append(eff.id)
    for run in store.all_run_ids():
        row = store.get_run(run)
        assert row is not None
        s.statuses[row.status] += 1
        _require(row.status in ("done", "paused"), f"run {run} is {row.status}: {row.reason}")
        doubts = [e for e in effects.values() if e.run == run and e.status == "in_doubt"]
        if row.status == "paused":
            _require(len(doubts) == 1, f"run {run} paused ({row.reason}) with in-doubt effects "
                     f"{[d.id for d in doubts]}")
        for d in doubts:
            _require(row.status == "paused" and d.id in row.reason,
                     f"in-doubt effect {d.id} of run {run} is not named by the pause: {row.reason}")
            evs = store.events(run)
            named = [e for e in evs if e.kind == "effect.in_doubt" and e.causes[:1] == (d.id,)]
            paused = [e for e in evs if e.kind == "run.paused" and e.payload.get("effect") == d.id]
            _require(bool(named) and bool(paused),
                     f"in-doubt effect {d.id} of run {run}: effect.in_doubt {len(named)}, "
                     f"run.paused naming it {len(paused)}")
        if row.status == "done":
            _check_done_state(store, row)


def _check_done_state(store: Store, row: Any) -> None:
    chain = store.checkpoint_chain(row.id, row.epoch, row.step)
    assert chain is not None
    state = restore(chain.key_body, store.chunk, chain.deltas)
    evs = store.events(row.id)
    receipts = {e.step: e.id for e in store.effects(run=row.id) if e.tool == "deliver"}
    if "log" in state and "steps" in state:
        steps = [x["step"] for x in state["log"]]
        _require(steps == list(range(1, state["steps"] + 1)),
                 f"run {row.id}: state log has steps {steps}, expected 1..{state['steps']}")
        clock = {e.step: e.payload["value"] for e in evs if e.kind == "clock.read"}
        rand = {e.step: e.payload["value"] for e in evs if e.kind == "random.read"}
        for x in state["log"]:
            if "t" in x:
                _require(clock.get(x["step"]) == x["t"],
                         f"run {row.id} step {x['step']}: state saw time {x['t']}, the journal "
                         f"recorded {clock.get(x['step'])}")
            if "r" in x:
                _require(rand.get(x["step"]) == x["r"],
                         f"run {row.id} step {x['step']}: random differs from the journal")
            if "receipt" in x:
                _require(receipts.get(x["step"]) == x["receipt"],
                         f"run {row.id} step {x['step']}: receipt {x['receipt']} is not the "
                         f"idempotency key {receipts.get(x['step'])}")
    if "messages" in state:
        turns = sum(1 for m in state["messages"] if m["role"] == "assistant")
        _require(turns == CHAT_TURNS + 1, f"run {row.id}: {turns} assistant turns")


@dataclass
class Trial:
    """What one kill/restart trial did."""

    seed: int
    kills: int = 0
    killed_mid_run: int = 0
    """Kills that struck while some run was still running."""
    resolved: dict[str, str] = field(default_factory=dict)
    summary: Summary = field(default_factory=Summary)
    seconds: float = 0.0

    def line(self) -> str:
        how = Counter(self.resolved.values())
        return (f"seed={self.seed} kills={self.kills} mid_run={self.killed_mid_run} "
                f"{self.summary.line()} settled[done={how['done']} retry={how['retry']}] "
                f"{self.seconds:.2f}s")


def kill_restart_trial(folder: Path, seed: int, *, kills: int, steps: int = 40,
                       pace: float = 0.015, ttl: float = 0.3,
                       delay: tuple[float, float] = (0.05, 1.0), term: bool = False,
                       url: str | None = None) -> Trial:
    """Start runs, SIGKILL a worker subprocess ``kills`` times at random moments, then
    drive to rest here, settle in-doubt effects through ``tether.control`` and finish.

    With ``term`` the worker gets SIGTERM instead: it must drain and exit 0, and a
    drain leaves nothing in doubt and nothing to retry.

    Checks the invariants after every kill and at rest; raises AssertionError.
    ``$CRASH_SIDE`` must name ``folder/side.log`` for the in-process worker. ``url``: the
    store (e.g. a PostgreSQL one) instead of ``folder/crash.db``.
    """
    t0 = time.monotonic()
    rng = random.Random(seed)
    db: str | Path = url or folder / "crash.db"
    side = folder / "side.log"
    _require(os.environ.get(SIDE_ENV) == str(side), f"set ${SIDE_ENV}={side}")
    store = open_store(str(db))
    out = Trial(seed, kills=kills)
    try:
        runs = start_runs(store, [*AGENTS, rng.choice(AGENTS)], steps=steps, pace=pace)
        before: Snapshot = {}
        for cycle in range(kills):
            w = spawn_worker(db, side, tag=f"w{cycle}", lease_ttl=ttl)
            w.wait_ready()
            time.sleep(rng.uniform(*delay))
            if term:
                code = w.terminate()
                _require(code == 0, f"SIGTERM: the worker exited {code}: {w.log.read_text()}")
            else:
                w.kill()
            after = snapshot(store)  # read between the kill and the restart
            check_nothing_lost(before, after)
            check_store(store, side, final=False)
            before = after
            out.killed_mid_run += any(status_of(store, r) == "running" for r in runs)
        finish(store)
        first = check_store(store, side, final=True)
        _require(not term or (not first.in_doubt and not first.retried_keys),
                 f"a drain left effects in doubt {first.in_doubt} or retried "
                 f"{first.retried_keys} idempotent effects")
        if first.in_doubt:
            out.resolved = resolve_in_doubt(store, side)
            _require(set(out.resolved) == set(first.in_doubt), "resolved other effects")
            finish(store)
        check_nothing_lost(before, snapshot(store))
        out.summary = check_store(store, side, final=True)
        out.summary.in_doubt = first.in_doubt  # what the kills left in doubt (now settled)
        _require(out.summary.statuses == Counter(done=len(runs)),
                 f"after settling, runs are {dict(out.summary.statuses)}")
    finally:
        store.close()
    out.seconds = time.monotonic() - t0
    return out


def resolve_in_doubt(store: Store, side: str | os.PathLike[str]) -> dict[str, str]:
    """Settle every in-doubt effect as an operator would, by looking at the world:
    the side line exists -> ``done``; it does not -> ``retry``. Needs ``tether.control``."""
    seen = {ln.effect for ln in read_side(side)}
    out = {}
    for run in store.all_run_ids():
        for eff in store.effects(run=run, status="in_doubt"):
            how = "done" if eff.id in seen else "retry"
            result = f"marked {eff.arguments.get('note')}" if how == "done" else None
            resolve_effect(store, eff.id, how, result=result, who="human:crash-test")
            out[eff.id] = how
    return out


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise AssertionError(msg)


# -- command line -----------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.crashkit")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="drive STORE with the real Worker")
    w.add_argument("store")
    w.add_argument("--owner")
    w.add_argument("--lease-ttl", type=float, default=30.0)
    w.add_argument("--concurrency", type=int, default=1000)
    w.add_argument("--until-idle", action="store_true")
    w.add_argument("--ready", help="file to create once the worker is about to start")
    s = sub.add_parser("start", help="start N runs of each crash agent")
    s.add_argument("store")
    s.add_argument("n", type=int)
    s.add_argument("--steps", type=int, default=30)
    s.add_argument("--pace", type=float, default=0.01)
    a = p.parse_args(argv)
    store = open_store(a.store)  # a SQLite path or a postgresql:// URL
    if a.cmd == "start":
        for rid in start_runs(store, [AGENTS[i % len(AGENTS)] for i in range(a.n)],
                              steps=a.steps, pace=a.pace):
            print(rid)
        return 0
    worker = Worker(store, owner=a.owner, lease_ttl=a.lease_ttl, concurrency=a.concurrency,
                    poll_interval=0.02)
    if a.ready:
        Path(a.ready).write_text(str(os.getpid()), encoding="utf-8")
    asyncio.run(worker.run(until_idle=a.until_idle, handle_signals=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
