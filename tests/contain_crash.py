"""Runs and a worker entry point for the monitor containment crash tests
(tests/test_monitor_contain.py).

Two swarms of runs, each with a monitor whose verdict is ``quarantine``:

* ``self``: run ``bad`` sends a message to ``sink`` (a paused run: the message stays
  pending), writes blackboard key ``plan``, and its own monitor gives a quarantine
  verdict when its first step ends; ``bad`` then has to be parked *and* contained.
* ``origin``: run ``router`` sends ``dispatcher`` a bad message and writes key
  ``route``, then keeps stepping; the dispatcher's monitor traces the message to the
  router and gives a quarantine verdict naming it as its origin.

Run as a module, from the repository root::

    python -m tests.contain_crash STORE [--kill WHAT]

drives the store with a real :class:`tether.Worker` until it is idle. ``--kill``
SIGKILLs the process at an exact point: ``alert`` right after the commit that holds the
quarantine verdict's ``alert``, ``paused`` right after the commit that holds its
``run.paused``, ``order`` just before the order for the origin is queued.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Iterable, Sequence
from typing import Any

from tests.test_alert_consequences import Tainted
from tether import AwaitMessages, Continue, Done, SQLiteStore, StepAgent, Worker, start_run
from tether.core.events import Event
from tether.core.monitors import Level, Quiet, Signal, View
from tether.runtime.operator import send_command
from tether.store.records import Write


class Spoiled(Quiet):
    """Quarantines its own run when the run's first step ends."""

    name = "spoiled"

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        if event.kind == "step.finished" and event.step == 1:
            yield Signal(self.name, "bad_step", "its first step was bad", evidence=(event.id,),
                         level=Level.QUARANTINE)


class Traced(Tainted):
    """Traces a bad message to the run that sent it: a quarantine verdict naming it."""

    name = "traced"
    level = Level.QUARANTINE


async def _bad(ctx: Any, state: dict[str, Any]) -> Any:
    n = state["n"] = state.get("n", 0) + 1
    if n == 1:
        await ctx.send("sink", "hello")
        await ctx.board.set("plan", "v1")
    return Done(n) if n >= 5 else Continue()


async def _idle(ctx: Any, state: dict[str, Any]) -> Any:
    return AwaitMessages()


async def _router(ctx: Any, state: dict[str, Any]) -> Any:
    n = state["n"] = state.get("n", 0) + 1
    if n == 1:
        await ctx.send("dispatcher", "bad")
        await ctx.board.set("route", "infra")
    await asyncio.sleep(0.01)
    return Done("never contained") if n >= 400 else Continue()


async def _dispatcher(ctx: Any, state: dict[str, Any]) -> Any:
    got = await ctx.receive()
    state["got"] = state.get("got", 0) + len(got)
    if not state["got"]:
        return AwaitMessages()
    state["n"] = state.get("n", 0) + 1
    await asyncio.sleep(0.01)
    return Done(state["got"]) if state["n"] >= 3 else Continue()


AGENTS = {"bad": StepAgent(_bad, name="bad", monitors=[Spoiled]),
          "sink": StepAgent(_idle, name="sink"),
          "router": StepAgent(_router, name="router"),
          "dispatcher": StepAgent(_dispatcher, name="dispatcher", monitors=[Traced])}


def start(store: SQLiteStore, scenario: str) -> dict[str, str]:
    """Start a scenario's runs (``self`` or ``origin``); their ids by name."""
    if scenario == "self":
        sink = start_run(store, AGENTS["sink"], agent_ref="sink", goal="wait", swarm="s",
                         name="sink")
        send_command(store, sink, "pause", who="human:test")
        bad = start_run(store, AGENTS["bad"], agent_ref="bad", goal="go bad", swarm="s",
                        name="bad")
        return {"sink": sink, "bad": bad}
    router = start_run(store, AGENTS["router"], agent_ref="router", goal="route", swarm="o",
                       name="router")
    disp = start_run(store, AGENTS["dispatcher"], agent_ref="dispatcher", goal="dispatch",
                     swarm="o", name="dispatcher")
    return {"router": router, "dispatcher": disp}


def _quarantine_alert(e: Event) -> bool:
    return e.kind == "alert" and isinstance(e.payload, dict) and \
        e.payload.get("verdict") == "quarantine"


def _kill_after(pred: Any) -> None:
    commit = SQLiteStore.commit

    def killing(self: SQLiteStore, writes: Sequence[Write]) -> list[BaseException | None]:
        out = commit(self, writes)
        if any(err is None and any(pred(e) for e in w.events) for w, err in zip(writes, out,
                                                                                strict=True)):
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    SQLiteStore.commit = killing  # type: ignore[method-assign]


def _kill_at_order() -> None:
    def killing(self: SQLiteStore, *args: Any, **kw: Any) -> int:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")

    SQLiteStore.add_command = killing  # type: ignore[method-assign,assignment]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--kill", choices=("alert", "paused", "order"))
    a = ap.parse_args(argv)
    if a.kill == "alert":
        _kill_after(_quarantine_alert)
    elif a.kill == "paused":
        _kill_after(lambda e: e.kind == "run.paused" and "alert" in (e.payload or {}))
    elif a.kill == "order":
        _kill_at_order()
    store = SQLiteStore(a.store)
    asyncio.run(Worker(store, agents=AGENTS, poll_interval=0.01, lease_ttl=2.0)
                .run(until_idle=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
