"""A step agent on the built-in file tools, with exact SIGKILL points, for the settle tests.

Each step makes one call of a file tool, taken from ``state["ops"]``, and logs what it
got back. ``$CRASH_KILL=TOOL:before|after`` makes the first call of that tool in this
process SIGKILL itself: ``before`` once its intent is durable and before the tool acts,
``after`` once the tool acted and before ``effect.done`` is journaled. The tools are the
real ones (same code, prepare and settle hooks), wrapped only to host the kill point.

``$CRASH_OLD_INTENTS=1`` (read at import) drops the ``prepare`` hooks: the intents then
look like those of tether 0.1.0, which carry no before/after images.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from typing import Any

from tether import Continue, Done, StepAgent, Tool
from tether.tools.files import fs_append, fs_delete, fs_mkdir, fs_move, fs_read, fs_write

KILL_ENV = "CRASH_KILL"
OLD_ENV = "CRASH_OLD_INTENTS"


def _kill_point(name: str, when: str) -> None:
    if os.environ.get(KILL_ENV) == f"{name}:{when}":
        os.kill(os.getpid(), signal.SIGKILL)


def _killable(t: Tool) -> Tool:
    def fn(**arguments: Any) -> Any:
        _kill_point(t.name, "before")
        out = t.fn(**arguments)
        _kill_point(t.name, "after")
        return out
    prepare = None if os.environ.get(OLD_ENV) == "1" else t.prepare
    return dataclasses.replace(t, fn=fn, prepare=prepare)


TOOLS = {t.name: _killable(t) for t in (fs_write, fs_append, fs_delete, fs_move, fs_mkdir,
                                       fs_read)}


async def _scribe(ctx: Any, state: dict[str, Any]) -> Any:
    k = ctx.step
    name, arguments = state["ops"][k - 1]
    state["log"].append(await ctx.call(TOOLS[name], **arguments))
    return Done(k) if k >= len(state["ops"]) else Continue()


scribe = StepAgent(_scribe, name="scribe", tools=list(TOOLS.values()),
                   init=lambda goal: {"ops": [], "log": []})
