"""Runs the demo's night: a worker pass per moment of the simulated clock.

The clock starts at 21:00 and jumps to the next wake-up whenever every run is
asleep; its position is saved in the store, so ``tether demo`` run again with
the same folder continues the same night where it stopped, and the journal
makes sure no effect is repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from tether.control import record_swarm_setting
from tether.core.clock import FixedClock
from tether.core.policy import load_policy
from tether.core.pricing import PriceTable
from tether.demo import agents as night
from tether.models.base import Model
from tether.policies import apply_policy
from tether.runtime.runs import start_run
from tether.runtime.storage_health import GIVE_UP_AFTER
from tether.runtime.worker import Worker
from tether.store.sqlite import SQLiteStore

SWARM = "night-shift"
SWARM_BUDGET = {"cost_usd_per_day": 1.0, "tool_calls_per_hour": 200}
CLOCK_KEY = "demo.clock"


@dataclass
class NightResult:
    store: SQLiteStore
    workspace: Path
    started_now: bool
    clock: float
    passes: int = 0
    log: list[str] = field(default_factory=list)
    output_closed: bool = False
    """Stdout was closed mid-way (``tether demo | head``): the night went on unseen."""
    interrupted: bool = False
    """``stop`` was set (Ctrl-C): the runs stopped at their next safe point, the night did not
    end; the next demo goes on from there."""


def _start_runs(store: SQLiteStore, workspace: Path, clock: FixedClock) -> None:
    """Start each of the night's runs that the store does not have yet.

    Idempotent, so a demo killed anywhere in its set-up is completed by the next one:
    each run is one transaction, and the set-up goes on from the first one missing
    (the swarm budget is set again; the clock is saved by the caller, afterwards)."""
    record_swarm_setting(store, SWARM, "budget", dict(SWARM_BUDGET), who="system:demo",
                         now=clock.now())
    have = {r.name for r in store.list_runs(swarm=SWARM)}
    goals = {
        "librarian": "Set up the notes folder for tonight's shift.",
        "ingest": "Deliver the night's support tickets to inbox/ as they arrive.",
        "triage": "Classify every ticket in inbox/, note it and file it under done/.",
        "reporter": "At 06:00, send the on-call lead a digest of the night.",
        "router": "Route every ticket ingest sends to a team; tell the dispatcher.",
        "dispatcher": "Keep each team's queue in queues/ as the router sends tickets.",
    }
    agents = night.build(night.scripted())
    for name, goal in goals.items():
        if name in have:
            continue
        ref = f"tether.demo.agents:{name}"
        start_run(store, agents[ref], agent_ref=ref, goal=goal, name=name, swarm=SWARM,
                  workspace=workspace, clock=clock, budget={"steps": 200},
                  actor="system:demo")


def _write_atomically(path: Path, text: str) -> None:
    """A killed demo leaves the whole file or none of it, never a torn policy."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def _tail(store: SQLiteStore, console: Console, clock: FixedClock,
                seen: dict[str, int]) -> None:
    """Print what the agents do as it becomes durable, until stdout is closed (then return;
    the night goes on without a reader)."""
    while True:
        fresh = []
        for row in store.list_runs():
            for e in store.events(row.id, after_seq=seen.get(row.id, 0)):
                seen[row.id] = e.seq
                fresh.append((e.time, e.id, row.name, e.kind, e.payload))
        for t, _, name, kind, payload in sorted(fresh):
            line = _describe(name, kind, payload)
            if not line:
                continue
            try:
                console.print(f"[dim]{t[11:16]}[/dim] {line}", highlight=False)
            except SystemExit:
                # rich met a closed pipe: it pointed stdout at /dev/null and raised
                # SystemExit, which in a task would only be reported when the task is
                # collected ("Task exception was never retrieved").
                return
        await asyncio.sleep(0.05)


def _describe(name: str, kind: str, p: object) -> str:
    if not isinstance(p, dict):
        return ""
    if kind == "effect.intent":
        args = ", ".join(f"{k}={str(v)[:40]!r}" for k, v in p.get("arguments", {}).items()
                         if k != "content" and k != "body")
        return f"[bold]{name}[/bold] {p.get('effect')} [cyan]{p.get('tool')}[/cyan]({args})"
    if kind == "model.called":
        content = ((p.get("response") or {}).get("content") or "").splitlines()
        first = content[0][:60] if content else "(tool calls)"
        return f"[bold]{name}[/bold] model said: {first}"
    if kind == "message.sent":
        body = p.get("body")
        items = body.get("tickets") or body.get("routed") or [] if isinstance(body, dict) else []
        what = f"{len(items)} ticket(s)" + ("".join(
            f", {i['team']}" for i in items if isinstance(i, dict) and "team" in i))
        return f"[bold]{name}[/bold] sent [cyan]{p.get('to_name')}[/cyan] {what}"
    if kind == "approval.requested":
        return (f"[bold]{name}[/bold] [magenta]waits for approval[/magenta] to run "
                f"{p.get('tool')} ({p.get('reason')})")
    if kind == "run.sleeping" and p.get("deferred"):
        return f"[bold]{name}[/bold] [cyan]deferred[/cyan]: {p.get('reason')}"
    if kind == "approval.decided":
        return f"[bold]{name}[/bold] approval {p.get('decision')} by {p.get('by')}"
    if kind == "alert":
        return f"[bold]{name}[/bold] [red]alert[/red] {escape(str(p.get('message', '')))[:140]}"
    if kind in ("run.done", "run.paused", "run.failed", "run.stopped", "run.quarantined",
                "effect.in_doubt"):
        why = str(p.get("result") or p.get("reason") or "")[:100]
        return f"[bold]{name}[/bold] [yellow]{kind}[/yellow] {why}"
    return ""


async def run_night(directory: Path, *, model: Model, console: Console,
                    quiet: bool = False, until: float | None = None,
                    give_up_after: float = GIVE_UP_AFTER,
                    prices: PriceTable | None = None,
                    stop: asyncio.Event | None = None) -> NightResult:
    """Run the night (or go on with it) until no run has anything left to do, or until
    the clock would reach ``until`` (that moment is not run). A store that fails for
    ``give_up_after`` seconds ends it with that StoreError (the night goes on when the
    demo is run again). Setting ``stop`` drains the worker (every run stops at its next safe
    point) and ends the night early, ``interrupted``."""
    stop = stop or asyncio.Event()
    store, clock, started = _set_up(directory)
    result = NightResult(store, directory / "workspace", started, clock.now())
    agents = night.build(model)
    seen: dict[str, int] = {} if started else {r.id: r.seq for r in store.list_runs()}
    tail = None if quiet else asyncio.create_task(_tail(store, console, clock, seen))
    try:
        while True:
            await Worker(store, agents=agents, clock=clock, lease_ttl=10.0,
                         poll_interval=0.02, give_up_after=give_up_after,
                         prices=prices).run(until_idle=True, stop=stop)
            result.passes += 1
            if stop.is_set():
                result.interrupted = True
                break
            if store.list_runs(status="running"):
                # Held by another process (a demo or worker still alive, or one whose lease
                # has not expired): the night must not move on without those runs.
                if not quiet:
                    console.print("[yellow]waiting for runs another process holds...[/yellow]")
                await asyncio.sleep(1.0)
                continue
            if not _advance(store, clock, until):
                break
    finally:
        if tail is not None:
            result.output_closed = await _end_tail(tail)
    result.clock = clock.now()
    return result


def _set_up(directory: Path) -> tuple[SQLiteStore, FixedClock, bool]:
    """Open (or make) the night's folder: its policy, store, runs and clock. Also True if
    the night starts now, False if it goes on from the clock the store saved."""
    directory.mkdir(parents=True, exist_ok=True)
    workspace = directory / "workspace"
    policy_file = directory / "tether.toml"
    if not policy_file.exists():
        _write_atomically(policy_file, night.POLICY)
    # Read and checked before the store is touched: a broken tether.toml leaves no run behind.
    policy = load_policy(policy_file)
    store = SQLiteStore(directory / "tether.db")
    saved = store.get_meta(CLOCK_KEY)
    clock = FixedClock(float(saved) if saved else night.NIGHT_START)
    # The clock is saved last: until it is, the set-up may have been cut short.
    started = saved is None
    if started:
        _start_runs(store, workspace.resolve(), clock)
        store.set_meta(CLOCK_KEY, repr(clock.now()))
    # The night's policy, beside its store, is put in force the one way there is: journaled.
    apply_policy(store, policy, who="system:demo")
    return store, clock, started


def _advance(store: SQLiteStore, clock: FixedClock, until: float | None) -> bool:
    """Move the clock to the next wake-up and save it; False if there is none before
    ``until`` (the night is over, or over for now)."""
    wakes = [r.wake_at for st in ("sleeping", "waiting") for r in store.list_runs(status=st)
             if r.wake_at]
    if not wakes or (until is not None and max(clock.now(), min(wakes)) >= until):
        return False
    clock.set(max(clock.now(), min(wakes)))
    store.set_meta(CLOCK_KEY, repr(clock.now()))
    return True


async def _end_tail(tail: asyncio.Task[None]) -> bool:
    """Let the tail print what the last pass made durable, then end it; True if it had
    already ended because stdout was closed."""
    await asyncio.sleep(0.1)
    closed = tail.done() and not tail.cancelled()
    tail.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await tail
    return closed
