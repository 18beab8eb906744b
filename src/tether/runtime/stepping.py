"""What a step's collaborators share of the run being driven: one narrow object.

The step context, the effect runner, the policy gate and the swarm calls each
need a little of the run: its journal and clock, who acts, a way to make the
journal durable and to reach a safe point, and a few flags they hand to one
another (a call in flight, the run halted, writes of its own that its next read
must see). The executor makes one :class:`StepRuntime` per run and owns the
loop; the collaborators see this object, never the executor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

from tether.errors import PauseRequested, StopRequested
from tether.runtime.journal import Recorded, RunJournal


class StepRuntime:
    """One run's shared step state (see the module docstring)."""

    __slots__ = (
        "actor",
        "agent",
        "board_dirty",
        "clock",
        "flush",
        "halted",
        "in_call",
        "journal",
        "replay",
        "safe_point",
        "self_mail",
        "suspect_files",
        "sync_tasks",
        "workspace",
    )

    def __init__(self, journal: RunJournal, *, agent: str, clock: Callable[[], float],
                 flush: Callable[[], Awaitable[None]],
                 safe_point: Callable[[int], Awaitable[None]]) -> None:
        self.journal = journal
        self.agent = agent
        self.actor = f"agent:{agent}"
        """Who the step's events name as their actor."""
        self.clock = clock
        ws = journal.row.spec.get("workspace")
        self.workspace = Path(ws) if ws else None
        self.flush = flush
        """Make everything journaled so far durable (before an effect, before a read that
        must see the run's own writes)."""
        self.safe_point = safe_point
        """Apply queued operator commands; raise to pause or stop the run there."""
        self.replay: dict[int, Recorded] = {}
        """The in-flight step's journaled calls, by index (what a re-run step gets back)."""
        self.in_call = False
        """A model or tool call is in flight: a stop cancels it rather than waiting."""
        self.halted = False
        """The run is leaving: no further call may start."""
        self.board_dirty = False
        """A blackboard write not committed yet: the next board read commits first."""
        self.self_mail = False
        """A message to itself not committed yet: the next receive commits first."""
        self.suspect_files: tuple[str, ...] = ()
        """Of the last tool call: ``ctx.suspect_files``."""
        self.sync_tasks: set[asyncio.Task[Any]] = set()
        """Calls a sync step function (in a thread) runs on the loop: cancelled on stop."""

    def __enter__(self) -> StepRuntime:
        """``with rt:`` marks a call in flight (waiting on a model, a tool, a lock)."""
        self.in_call = True
        return self

    def __exit__(self, *_: object) -> None:
        self.in_call = False

    def nondeterminism(self, step: int, i: int, *, expected: str, got: str) -> NoReturn:
        """Journal that a re-run step's call differs from the journaled one; pause."""
        j = self.journal
        msg = (f"nondeterminism in run {j.run} step {step} call #{i}: the journal "
               f"recorded {expected} but the step now makes {got}. The agent's code, tools or "
               "inputs changed since this step started; restore the old code and `tether "
               "resume` the run, or stop it and start a new one")
        j.append("nondeterminism", {"i": i, "expected": expected, "got": got}, step=step)
        raise PauseRequested(msg, detail={"nondeterminism": True})


class StepCalls:
    """The journaled calls of one step: their numbering, and what replay returns for one."""

    __slots__ = ("count", "rt", "step")

    def __init__(self, rt: StepRuntime, step: int) -> None:
        self.rt = rt
        self.step = step
        self.count = 0
        """How many journaled calls the step has made so far."""

    def next(self) -> int:
        """The index of a new call (refused once the run is halted)."""
        if self.rt.halted:
            raise StopRequested(f"run {self.rt.journal.run} step {self.step}: the run was "
                                "stopped; no further calls are made")
        i = self.count
        self.count += 1
        return i

    def recorded(self, i: int, kind: str, fp: str, what: str) -> Recorded | None:
        """The journaled call ``i`` if the step made it before (None: run it live); a
        different call there is nondeterminism."""
        rec = self.rt.replay.get(i)
        if rec is None:
            return None
        got = rec.call.payload.get("fp")
        if rec.call.kind != kind or got != fp:
            self.rt.nondeterminism(self.step, i, expected=f"{rec.call.kind} {got}",
                                   got=f"{kind} {fp} ({what})")
        return rec
