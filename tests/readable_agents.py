"""Agents that end every way a run can, for the tests of `tether show` and the worker's log
(started by reference: ``tests.readable_agents:NAME``)."""

from __future__ import annotations

from typing import Any

from tests.sample_agents import charge
from tether import AwaitMessages, Done, SleepUntil, StepAgent


async def _finish(ctx: Any, state: dict[str, Any]) -> Any:
    return Done({"tickets": 3, "note": "all filed"})


async def _crash(ctx: Any, state: dict[str, Any]) -> Any:
    raise RuntimeError("the inbox folder vanished")


async def _nap(ctx: Any, state: dict[str, Any]) -> Any:
    return SleepUntil(await ctx.now() + 3600)


async def _listen(ctx: Any, state: dict[str, Any]) -> Any:
    return AwaitMessages()


async def _ask(ctx: Any, state: dict[str, Any]) -> Any:
    return Done(await ctx.call(charge, amount=5))  # irreversible: a human is asked first


finisher = StepAgent(_finish, name="finisher")
crasher = StepAgent(_crash, name="crasher")
napper = StepAgent(_nap, name="napper")
listener = StepAgent(_listen, name="listener")
asker = StepAgent(_ask, name="asker", tools=[charge])


async def _post(ctx: Any, state: dict[str, Any]) -> Any:
    """Writes a long value to its swarm's board and sends one long message to itself."""
    note = {"summary": "the nightly import finished; " * 6, "rows": 1234}
    await ctx.board.set("nightly-import-status", note)
    await ctx.send(ctx.run_id, note, topic="nightly")
    return Done()


poster = StepAgent(_post, name="poster")
