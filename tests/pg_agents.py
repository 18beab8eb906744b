"""An agent for the many-workers tests on one store (tests/test_pg_workers.py).

``dwelling`` delivers one idempotent effect and one irreversible one per step (the side
channel of tests/crashkit.py, ``$CRASH_SIDE``, records each as it really happens) and
then dwells in a read-only tool. While it dwells, the tool's line in ``$PG_DWELL`` says
which process is inside it until when, so a test can stop that worker (SIGSTOP) at a moment
when it is inside no effect: what the stopped worker does once it wakes is then only what
fencing lets through, and the side channel cannot be touched by an effect half done.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tests.crashkit import deliver, mark
from tether import Continue, Done, StepAgent, current, tool

DWELL_ENV = "PG_DWELL"


@tool(effect="read")
def dwell(tag: str, seconds: float) -> str:
    """Sleep ``seconds``, having said where (run, step), who (pid) and until when."""
    path = os.environ.get(DWELL_ENV)
    if path:
        tc = current()
        start = time.time()
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps([os.getpid(), tc.run, tc.step, start, start + seconds]) + "\n")
            f.flush()
    time.sleep(seconds)
    return tag


def _init(goal: str) -> dict[str, Any]:
    # "steps=K dwell=S": the goal carries the run's shape, so `tether run --goal` can too.
    opts = dict(part.split("=", 1) for part in goal.split() if "=" in part)
    return {"log": [], "steps": int(opts.get("steps", 5)), "dwell": float(opts.get("dwell", 0.0))}


async def _dwelling(ctx: Any, state: dict[str, Any]) -> Continue | Done:
    k = ctx.step
    receipt = await ctx.call(deliver, note=f"dwelling {k}")
    done = await ctx.call(mark, note=f"dwelling {k}")
    await ctx.call(dwell, tag=f"dwelling {k}", seconds=state["dwell"])
    state["log"].append({"step": k, "receipt": receipt, "done": done})
    return Done(k) if k >= state["steps"] else Continue()


dwelling = StepAgent(_dwelling, name="dwelling", tools=[deliver, mark, dwell], init=_init)


def read_dwell(path: str | os.PathLike[str]) -> list[tuple[int, str, int, float, float]]:
    """Every complete line of ``$PG_DWELL``: (pid, run, step, entered, leaves)."""
    p = Path(path)
    if not p.exists():
        return []
    text = p.read_text(encoding="utf-8")
    out = []
    for raw in text.splitlines():
        try:
            v = json.loads(raw)
        except ValueError:
            continue
        out.append((int(v[0]), str(v[1]), int(v[2]), float(v[3]), float(v[4])))
    return out
