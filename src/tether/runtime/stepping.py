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
import contextvars
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

from tether.errors import PauseRequested, Signal, StopRequested, StoreError, UsageError
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
        "in_flight",
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
        self.in_flight = 0
        """How many ``with rt:`` are open: a count, not a flag, because a call made inside
        a call (a tool's body calling the step's context) ends before the outer one."""
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

    @property
    def in_call(self) -> bool:
        """A model or tool call is in flight: a stop cancels it rather than waiting."""
        return self.in_flight > 0

    def __enter__(self) -> StepRuntime:
        """``with rt:`` marks a call in flight (waiting on a model, a tool, a lock)."""
        self.in_flight += 1
        return self

    def __exit__(self, *_: object) -> None:
        self.in_flight -= 1

    def nondeterminism(self, step: int, i: int, *, expected: str, got: str) -> NoReturn:
        """Journal that a re-run step's call differs from the journaled one; pause."""
        j = self.journal
        msg = (f"nondeterminism in run {j.run} step {step} call #{i}: the journal "
               f"recorded {expected} but the step now makes {got}. The agent's code, tools or "
               "inputs changed since this step started; restore the old code and `tether "
               "resume` the run, or stop it and start a new one")
        j.append("nondeterminism", {"i": i, "expected": expected, "got": got}, step=step)
        raise PauseRequested(msg, detail={"nondeterminism": True})


_CURRENT: contextvars.ContextVar[Turn | None] = contextvars.ContextVar(
    "tether_step_call", default=None)
"""The call whose code runs here (the innermost): a call made inside it is its child, and
goes straight in while the call it runs inside still holds the step's turn. A task the
call started inherits this and may outlive the call, so what counts is whether that turn
still holds the lock, not the variable alone."""


class StepCalls:
    """The journaled calls of one step: their numbering, their turns, what replay returns
    for one, and the first signal one of them raised.

    A step's calls are numbered in the order they are made, and a re-run step must make
    them in the same order. Calls made concurrently (``asyncio.gather`` in a step, a
    framework running tool calls at once) take turns: each holds the step's lock from
    before it is numbered until its result is journaled, first come first served, so the
    order is the order they were started, live and on replay, and only one effect of a
    step is ever in flight. A :class:`~tether.errors.Signal` (a pause, an approval to
    wait for, a stop) or a store failure raised by one call is kept: every later call of
    the step raises it again instead of acting, and the executor raises it when the step
    returns, so code that catches it (a framework's ``except Exception`` around a group,
    a user's broad ``except``) cannot let the step act on or finish.
    """

    __slots__ = ("closed", "count", "holder", "lock", "parent", "rt", "signal",
                 "skip", "step")

    def __init__(self, rt: StepRuntime, step: int) -> None:
        self.rt = rt
        self.step = step
        self.count = 0
        """How many journaled calls the step has made so far."""
        self.lock = asyncio.Lock()
        self.holder: Turn | None = None
        """The call holding the lock (a call made inside it goes straight in)."""
        self.signal: BaseException | None = None
        """The first signal (or store failure) a call of the step raised."""
        self.closed = False
        """The step has returned: a call made now (from a task it left running) is refused."""
        self.parent: dict[int, int] = {}
        """Call -> the call whose code made it (a tool's body calling the step's context)."""
        self.skip: set[int] = set()
        """Journaled calls made inside a call that a re-run replays without running its
        body: they are not made again, so the numbering passes over them."""

    def turn(self, i: int) -> Turn:
        """``async with calls.turn(i):`` around call ``i`` (see the class)."""
        return Turn(self, i)

    def next(self) -> int:
        """The index of a new call (refused once the run is halted, or after a signal)."""
        if self.signal is not None:
            raise self.signal
        if self.rt.halted:
            raise StopRequested(f"run {self.rt.journal.run} step {self.step}: the run was "
                                "stopped; no further calls are made")
        i = self.count
        while i in self.skip:
            i += 1
        self.count = i + 1
        # Made by code of call ``outer``: inside it, or from a task its code started, even
        # one that outlives it. A re-run that returns ``outer``'s journaled result does not
        # run that code, so it makes none of these calls: all of them are passed over.
        outer = _CURRENT.get()
        if outer is not None and outer.calls is self:
            self.parent[i] = outer.i
        return i

    def within(self, i: int) -> dict[str, int]:
        """What call ``i``'s event says of the call it was made inside (``in``), if any."""
        outer = self.parent.get(i)
        return {} if outer is None else {"in": outer}

    def skip_inner(self, i: int) -> list[Recorded]:
        """Call ``i`` was replayed without running its body: the journaled calls made inside
        it (and inside those) are not made again; number past them. Returns them."""
        inner = {i}
        for j in sorted(self.rt.replay):
            if j > i and self.rt.replay[j].call.payload.get("in") in inner:
                inner.add(j)
                self.skip.add(j)
        return [self.rt.replay[j] for j in sorted(inner - {i})]

    def unmade(self) -> list[int]:
        """Journaled calls the step has not made (nor passed over) so far."""
        return sorted(j for j in self.rt.replay if j >= self.count and j not in self.skip)

    async def end(self) -> None:
        """The step returned or raised: refuse further calls and wait for one still in
        flight (a task the step started and did not await, or a call of a group the step
        raised out of), so none acts or is journaled after the step's outcome."""
        self.closed = True
        if self.lock.locked():
            async with self.lock:
                pass

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


class Turn:
    """One call's hold on its step's turn (:meth:`StepCalls.turn`)."""

    __slots__ = ("calls", "i", "token", "top")

    def __init__(self, calls: StepCalls, i: int) -> None:
        self.calls = calls
        self.i = i
        self.top: Turn = self
        """The call that holds the lock: this one, or the one it was made inside."""
        self.token: contextvars.Token[Turn | None] | None = None

    async def __aenter__(self) -> None:
        c = self.calls
        outer = _CURRENT.get()
        if outer is not None and outer.top is c.holder:
            self.top = outer.top  # made inside one of this step's calls: it holds the turn
        else:
            await c.lock.acquire()
            if c.signal is not None or c.closed:
                c.lock.release()
                if c.signal is not None:
                    raise c.signal
                raise UsageError(f"run {c.rt.journal.run} step {c.step}: a call was made "
                                 "after the step returned (or raised), from a task it started "
                                 "and did not await; await every ctx call before the step "
                                 "returns")
            c.holder = self
        self.token = _CURRENT.set(self)

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        c = self.calls
        if c.signal is None and isinstance(exc, Signal | StoreError):
            c.signal = exc
        if self.token is not None:
            _CURRENT.reset(self.token)
            self.token = None
        if self.top is self:
            c.holder = None  # a task the call left running now waits its turn like any other
            c.lock.release()
