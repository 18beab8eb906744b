"""Agents and a worker entry point for the swarm soak test (tests/test_swarm_soak.py).

Producers ``ctx.send`` numbered messages to consumers (the plan in their state says
to whom, step by step), append a line of their own to a shared file (``fs_append``),
now and then read it back (``fs_read``) and write the blackboard. Consumers take
their inbox (``ctx.receive``), keep what they took in their state and, every few
messages, record the message ids through the *side channel*: an irreversible tool
(``record``) that appends one line to ``$SOAK_SIDE`` with flush and fsync, naming the
effect (its ``effect.intent`` id), the ids and the pid. Then they append to the
shared file, read it, and read and write the blackboard. With nothing in the inbox
a consumer returns ``AwaitMessages()``.

Every line a run appends is unique to (run, step, role), so the file says which
effect wrote each line.

Run as a module from the repository root::

    python -m tests.swarm_soak_agents worker STORE --ready FILE [--only ID,ID] [--until-idle]

a real :class:`tether.Worker` (limited to the runs ``--only`` names), which SIGTERM
drains.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tether import AwaitMessages, Continue, Done, SQLiteStore, StepAgent, Worker, current, tool
from tether.tools.files import fs_append, fs_read

SIDE_ENV = "SOAK_SIDE"
LOG = "shared.log"
"""The file every run of a workspace appends to and reads."""
TALLY = "tally"
"""The blackboard key producers write."""
SEEN = "seen"
"""The blackboard key consumers write."""
RECORD_EVERY = 3
"""A consumer records its stash of message ids once it holds this many (or when idle or done)."""
CLAIM_NAP = 0.01
"""A consumer naps this long after taking messages (seconds)."""


def line(me: str, step: int, role: str) -> str:
    """What run ``me`` appends at ``step``: a line no other effect writes."""
    return f"{me} {role} {step}\n"


# -- tools ------------------------------------------------------------------------------
@tool(effect="read")
def nap(seconds: float) -> float:
    """Sleep a little (widens the windows a kill can hit)."""
    time.sleep(seconds)
    return seconds


@tool(effect="irreversible")
def record(ids: list[str]) -> str:
    """Append the received message ids to the side channel: an irreversible effect."""
    tc = current()
    time.sleep(0.003)  # an intent durable, nothing done yet: a kill here leaves no line
    text = json.dumps({"run": tc.run, "step": tc.step, "effect": tc.effect_id, "ids": ids,
                       "pid": os.getpid(), "t": time.time()})
    with open(os.environ[SIDE_ENV], "a", encoding="utf-8") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())
    time.sleep(0.003)  # done, not journaled yet: a kill here leaves a line and an open intent
    return f"recorded {len(ids)}"


def record_result(ids: Sequence[str]) -> str:
    """What ``record`` returns for ``ids`` (for an operator settling it as done)."""
    return f"recorded {len(ids)}"


# -- agents -----------------------------------------------------------------------------
async def _producer(ctx: Any, state: dict[str, Any]) -> Any:
    me, k, plan = state["me"], ctx.step, state["plan"]
    await ctx.call(nap, seconds=state["pace"])
    for j, to in enumerate(plan[k - 1]):
        state["sent"].append(await ctx.send(to, {"from": me, "k": k, "j": j}, topic="work"))
    await ctx.call(fs_append, path=LOG, content=line(me, k, "p"))
    if k % 3 == 0:
        text = await ctx.call(fs_read, path=LOG)
        state["read_lines"] = text.count("\n")
    seen = await ctx.board.get(TALLY)
    await ctx.board.set(TALLY, {"by": me, "k": k, "after": seen.version if seen else 0})
    return Done(len(state["sent"])) if k >= len(plan) else Continue()


async def _consumer(ctx: Any, state: dict[str, Any]) -> Any:
    me, k = state["me"], ctx.step
    got = await ctx.receive()
    ids = [m.id for m in got]
    if got:  # taken (the claim is committed), message.received not yet durable: a window
        await ctx.call(nap, seconds=CLAIM_NAP)
    state["taken"].extend(ids)
    state["stash"].extend(ids)
    done = len(state["taken"]) >= state["want"]
    if state["stash"] and (len(state["stash"]) >= RECORD_EVERY or not got or done):
        await ctx.call(record, ids=state["stash"])
        state["recorded"].extend(state["stash"])
        state["stash"] = []
        await ctx.call(fs_append, path=LOG, content=line(me, k, "c"))
        text = await ctx.call(fs_read, path=LOG)
        state["read_lines"] = text.count("\n")
        tally = await ctx.board.get(TALLY)
        await ctx.board.set(SEEN, {"by": me, "k": k, "n": len(state["recorded"]),
                                   "tally": tally.version if tally else 0})
    if done:
        return Done(len(state["taken"]))
    return Continue() if got else AwaitMessages()


producer = StepAgent(_producer, name="producer", tools=[nap, fs_append, fs_read])
consumer = StepAgent(_consumer, name="consumer", tools=[nap, record, fs_append, fs_read])
PRODUCER_REF = "tests.swarm_soak_agents:producer"
CONSUMER_REF = "tests.swarm_soak_agents:consumer"


def producer_state(me: str, plan: list[list[str]], pace: float) -> dict[str, Any]:
    return {"me": me, "plan": plan, "pace": pace, "sent": [], "read_lines": 0}


def consumer_state(me: str, want: int) -> dict[str, Any]:
    return {"me": me, "want": want, "taken": [], "stash": [], "recorded": [], "read_lines": 0}


# -- the worker process -----------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.swarm_soak_agents")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="drive STORE with the real Worker")
    w.add_argument("store")
    w.add_argument("--ready", required=True, help="file to create once the worker starts")
    w.add_argument("--only", default="", help="comma-separated run ids (default: every run)")
    w.add_argument("--lease-ttl", type=float, default=2.0)
    w.add_argument("--until-idle", action="store_true")
    a = p.parse_args(argv)
    store = SQLiteStore(a.store)
    only = {r for r in a.only.split(",") if r} or None
    worker = Worker(store, lease_ttl=a.lease_ttl, poll_interval=0.02, only=only)
    Path(a.ready).write_text(str(os.getpid()), encoding="utf-8")
    asyncio.run(worker.run(until_idle=a.until_idle, handle_signals=True))
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
