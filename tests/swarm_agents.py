"""A scripted swarm agent and a hookable CLI entry point, for the provenance tests.

``swarmer`` carries its whole schedule in its state: ``state["plan"][k - 1]`` is
the list of actions step ``k`` performs, each ``[kind, arg]``:

* ``write`` / ``append`` PATH: the built-in ``fs_write`` / ``fs_append`` with a text
  unique to (run, step, action) (see :func:`text`);
* ``delete`` PATH: ``fs_delete``;
* ``read`` PATH: ``fs_read``;
* ``send`` RUN_NAME: ``ctx.send`` to that run (of the same swarm);
* ``recv``: ``ctx.receive()`` (takes every pending message);
* ``set`` KEY / ``get`` KEY: the blackboard.

Runs are started with the pause point ``every_steps=1``, so a run pauses before
each next step and the test decides the global order of steps by resuming one
run at a time.

Run as a module from the repository root, it is the ``tether`` CLI with test
hooks set by the environment (for kill -9 tests that need an exact moment)::

    python -m tests.swarm_agents --store DB rollback RUN --to K --cascade

* ``TETHER_TEST_HANG=WHAT:N:WHEN`` (WHEN ``before`` or ``after``): at the N-th call
  of WHAT, write ``$TETHER_TEST_MARKER`` and sleep (the test then sends SIGKILL).
  WHAT is ``fs_restore`` (one restored path of the built-in undo), or a step of a
  rollback in :mod:`tether.provenance.rollback`: ``begin``, ``requeue``,
  ``retract_and_revert``, ``undo`` or ``restore``.
* ``TETHER_TEST_UNDO_DELAY=S``: sleep S seconds before each restored path, so a
  test polling the store can kill the process between (or inside) undos.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tether import FixedClock, StepAgent, Worker, start_run
from tether.runtime.operator import run_state, send_command
from tether.store.protocol import Store
from tether.tools.files import fs_append, fs_delete, fs_read, fs_write

HANG_ENV = "TETHER_TEST_HANG"
MARKER_ENV = "TETHER_TEST_MARKER"
DELAY_ENV = "TETHER_TEST_UNDO_DELAY"
ROLLBACK_STEPS = ("begin", "requeue", "retract_and_revert", "undo", "restore")


def text(run: str, step: int, i: int) -> str:
    """What action ``i`` of ``step`` of run ``run`` writes or appends (a line of its own)."""
    return f"{run}@{step}.{i}\n"


async def _swarmer(ctx: Any, state: dict[str, Any]) -> Any:
    me, k = state["me"], ctx.step
    plan = state["plan"]
    if k > len(plan):
        raise AssertionError(f"run {me} was driven past its schedule (step {k})")
    seen = state.setdefault("seen", [])
    for i, (kind, arg) in enumerate(plan[k - 1]):
        if kind == "write":
            await ctx.call(fs_write, path=arg, content=text(me, k, i))
        elif kind == "append":
            await ctx.call(fs_append, path=arg, content=text(me, k, i))
        elif kind == "delete":
            await ctx.call(fs_delete, path=arg)
        elif kind == "read":
            seen.append(await ctx.call(fs_read, path=arg))
        elif kind == "send":
            await ctx.send(arg, {"from": me, "step": k, "i": i}, topic="t")
        elif kind == "recv":
            seen.append([m.body for m in await ctx.receive()])
        elif kind == "set":
            await ctx.board.set(arg, text(me, k, i))
        elif kind == "get":
            e = await ctx.board.get(arg)
            seen.append(None if e is None else e.value)
        else:
            raise AssertionError(f"unknown action {kind!r}")
    return None


swarmer = StepAgent(_swarmer, name="swarmer", tools=[fs_write, fs_append, fs_delete, fs_read])
REF = "tests.swarm_agents:swarmer"

Action = tuple[str, str]
Schedule = list[tuple[str, list[Action]]]
"""The global order of steps: (run name, the actions of that run's next step)."""


def drive(store: Store, names: list[str], schedule: Schedule, workspace: Path, *,
          swarm: str = "swarm", skews: Sequence[float] | None = None
          ) -> tuple[dict[str, str], dict[tuple[str, int], dict[str, Any]]]:
    """Start one ``swarmer`` run per name and carry out ``schedule`` in its global order.

    Every run pauses before each next step (pause point ``every_steps=1``); the run
    whose turn it is is resumed and driven by a real :class:`tether.Worker` limited to
    it, until it pauses again. Returns the run ids by name and each run's state after
    each of its steps, by (name, step) (step 0: the start state).

    With ``skews``, the worker of the i-th step of the schedule reads a clock stopped at
    T + ``skews[i]`` seconds, T the time the schedule starts (workers whose clocks
    disagree, or that make ids in the same millisecond: ids then disagree with the
    order of events).
    """
    plans: dict[str, list[list[list[str]]]] = {n: [] for n in names}
    for name, acts in schedule:
        plans[name].append([list(a) for a in acts])
    ids: dict[str, str] = {}
    states: dict[tuple[str, int], dict[str, Any]] = {}
    for name in names:
        ids[name] = start_run(store, swarmer, agent_ref=REF, goal="swarm", name=name,
                              swarm=swarm, workspace=workspace,
                              state={"me": name, "plan": plans[name]},
                              pause_points={"every_steps": 1})
        states[(name, 0)] = run_state(store, ids[name])[2]
    done: dict[str, int] = dict.fromkeys(names, 0)
    t0 = time.time()
    for at, (name, _) in enumerate(schedule):
        if done[name]:
            res = send_command(store, ids[name], "resume", who="human:test")
            assert res.outcome == "applied", res
        clock = None if skews is None else FixedClock(t0 + skews[at])
        asyncio.run(Worker(store, agents={REF: swarmer}, only={ids[name]}, clock=clock,
                           poll_interval=0.005).run(until_idle=True))
        done[name] += 1
        row = store.get_run(ids[name])
        assert row is not None and (row.status, row.step) == ("paused", done[name]), row
        states[(name, done[name])] = run_state(store, ids[name])[2]
    return ids, states


# -- the hookable CLI ---------------------------------------------------------------


def _hang(what: str) -> Callable[[str], None]:
    """A counter for ``what`` that hangs (after writing the marker) at the chosen call."""
    spec = os.environ.get(HANG_ENV, "")
    parts = spec.split(":")
    if len(parts) != 3 or parts[0] != what:
        return lambda when: None
    n, at = int(parts[1]), parts[2]
    calls = [0]

    def check(when: str) -> None:
        if when == "before":
            calls[0] += 1
        if calls[0] == n and when == at:
            Path(os.environ[MARKER_ENV]).write_text(f"{what}:{n}:{at} pid={os.getpid()}")
            time.sleep(600)  # until SIGKILL

    return check


def install_hooks() -> None:
    """Wrap the built-in restore and the rollback steps as ``$TETHER_TEST_HANG`` asks."""
    import tether.tools.files as files
    from tether.provenance import rollback as rb

    delay = float(os.environ.get(DELAY_ENV) or 0)
    restore_one = files._restore_one
    hang = _hang("fs_restore")

    @functools.wraps(restore_one)
    def slow_restore_one(*args: Any, **kwargs: Any) -> str:
        if delay:
            time.sleep(delay)
        hang("before")
        out = restore_one(*args, **kwargs)
        hang("after")
        return out

    files._restore_one = slow_restore_one
    for name in ROLLBACK_STEPS:
        fn, check = getattr(rb, name), _hang(name)

        def hooked(*args: Any, _fn: Any = fn, _check: Any = check, **kwargs: Any) -> Any:
            _check("before")
            out = _fn(*args, **kwargs)
            _check("after")
            return out

        setattr(rb, name, hooked)


def main() -> None:
    from tether.cli.app import main as cli
    install_hooks()
    sys.argv = ["tether", *sys.argv[1:]]
    cli()


if __name__ == "__main__":
    main()
