"""The step context: how a step talks to the world, journaled and replayable.

Every call a step makes through ``ctx`` gets an index within the step. Live,
the call runs and its result is appended to the journal before the step sees
it. On replay (the step re-run after a crash or pause) a call whose index is
already journaled returns the recorded result instead of running again,
provided its fingerprint matches; otherwise the run pauses with a
nondeterminism error. Effects are write-ahead: ``effect.intent`` is durable
before the tool runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import random as _random
from collections.abc import Callable, Sequence
from typing import Any

from tether.core.canonical import digest, dumps, journalable, json_safe
from tether.core.fingerprint import fingerprint
from tether.core.monitors import Proposal
from tether.errors import StopRequested, ToolFailed, UsageError
from tether.models.base import ForeignCall, Message, Model, ModelResponse, ToolSpec
from tether.runtime.model_calls import ModelCalls
from tether.runtime.outcome import SleepUntil
from tether.runtime.services import StepServices
from tether.runtime.step_api import BoardEntry, InboxMessage
from tether.runtime.stepping import StepCalls
from tether.runtime.swarm import Board, SwarmCalls
from tether.runtime.workspace import file_causes
from tether.tools.base import Tool, ToolContext

CALL_KINDS = ("model.called", "tool.called", "effect.intent", "clock.read", "random.read",
              "message.sent", "message.received", "blackboard.read", "blackboard.write")
RESULT_KINDS = ("effect.done", "effect.failed", "effect.in_doubt", "effect.resolved",
                "effect.retried")


class StepContext:
    """Passed to ``step(ctx, state)`` of async agents. Methods are coroutines."""

    def __init__(self, services: StepServices, step: int) -> None:
        self._s = services
        self._rt = services.rt
        self.step = step
        self._c = StepCalls(services.rt, step)
        self._models = ModelCalls(services, self._c, step)
        self._swarm_calls: SwarmCalls | None = None  # made on first use: most steps never do
        self.declared: float | None = None
        """The step's ``progress``, journaled in its ``step.finished``."""

    @property
    def _swarm(self) -> SwarmCalls:
        if self._swarm_calls is None:
            self._swarm_calls = SwarmCalls(self._rt, self._c, self._s.args_fingerprint)
        return self._swarm_calls

    @property
    def board(self) -> Board:
        """The swarm's shared blackboard: ``await ctx.board.get(key)`` / ``.set(key, v)``."""
        return Board(self._swarm)

    @property
    def run_id(self) -> str:
        return self._rt.journal.run

    @property
    def goal(self) -> str:
        return self._rt.journal.row.goal

    @property
    def name(self) -> str:
        return self._rt.journal.row.name

    @property
    def suspect_files(self) -> tuple[str, ...]:
        """Workspace files the last ``call`` read or changed whose last version (another
        run's) is suspect: its writer is quarantined, or under a monitor's verdict nobody
        acked. What it saw may be bad. Journaled with the call (``suspect``)."""
        return self._rt.suspect_files

    @property
    def calls(self) -> int:
        """How many journaled calls the step has made so far."""
        return self._c.count

    def unmade(self) -> list[int]:
        """The executor's, when the step returns: the calls the journal holds for this step
        that the re-run made neither again nor passed over (it stopped short of them)."""
        return self._c.unmade()

    async def ended(self) -> None:
        """The executor's, when the step returns: refuse further calls, wait for one
        still in flight, raise a signal one of them raised (and the step caught)."""
        await self._c.end()
        if self._c.signal is not None:
            raise self._c.signal

    async def raised(self, exc: Exception) -> None:
        """The executor's, when the step raised ``exc``: as :meth:`ended` (a plain
        ``gather`` raises the first error and leaves the other calls running), then
        raise instead the signal (or store failure) a call raised first, which the
        step's code turned into ``exc``."""
        await self._c.end()
        kept = self._c.signal
        if kept is not None and kept is not exc:
            raise kept from exc

    def abandoned(self) -> None:
        """The executor's, when a signal or a cancellation left the step: calls still
        waiting their turn are refused (a stop means now: nothing is waited for)."""
        self._c.closed = True

    def progress(self, value: float) -> None:
        """Declare how far the run has got (any number; the last one in the step counts):
        the ``no_progress`` monitor flags a run whose progress stays flat while it spends."""
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise UsageError(f"run {self.run_id} step {self.step}: ctx.progress() takes a finite "
                             f"number, got {value!r}")
        self.declared = float(value)

    async def now(self) -> float:
        """The run's clock, journaled: a replayed step sees the same time."""
        return self._value("clock.read", "clock", "ctx.now()", self._rt.clock)

    async def random(self) -> float:
        """A random float in [0, 1), journaled."""
        return self._value("random.read", "random", "ctx.random()", _random.random)

    def _value(self, kind: str, fp: str, what: str, read: Callable[[], float]) -> float:
        i = self._c.next()
        rec = self._c.recorded(i, kind, fp, what)
        if rec is not None:
            return float(rec.call.payload["value"])
        v = read()
        self._rt.journal.append(kind, {"i": i, "fp": fp, "value": v, **self._c.within(i)}, step=self.step)
        return v

    async def sleep_for(self, seconds: float) -> SleepUntil:
        """An outcome that sleeps ``seconds`` from now on the run's clock."""
        return SleepUntil(await self.now() + seconds)

    async def send(self, to: str, body: Any, *, topic: str | None = None) -> str:
        """Send ``body`` (JSON) to another run: a run id, run name, or agent of the swarm.

        Journaled as ``message.sent``; the message is delivered once that commits.
        Returns the message id (the event's id).
        """
        return await self._swarm.send(to, body, topic=topic)

    async def receive(self, *, limit: int | None = None) -> list[InboxMessage]:
        """Take the messages waiting in this run's inbox (oldest first; maybe none).

        Journaled as ``message.received``, citing each message's ``message.sent``.
        To sleep until one arrives, return :class:`~tether.AwaitMessages` from the step.
        """
        return await self._swarm.receive(limit=limit)

    async def model(self, messages: Sequence[Message], tools: Sequence[Tool | ToolSpec] = (),
                    *, model: Model | None = None) -> ModelResponse:
        """Ask the model; the response is journaled before it is returned."""
        m = model or self._s.agent.model
        if m is None:
            raise UsageError(f"run {self.run_id} step {self.step}: ctx.model() needs a model; "
                             "give the agent model=... or pass model=")
        specs = [t.spec() if isinstance(t, Tool) else t for t in tools]
        return await self._models.chat(m, messages, specs)

    async def model_call(self, model: str, request: Any, call: ForeignCall) -> Any:
        """Make a framework's own model call through the journal (for integrations).

        ``model`` names the model (for prices, budgets and the policy's model rules);
        ``request`` is the request as JSON, which the call's fingerprint covers (a re-run
        step that asks something else is a nondeterminism error); ``call`` makes the call
        and returns a :class:`~tether.models.base.ForeignResponse`. It should raise
        :class:`~tether.errors.ModelError` when the provider fails, which pauses the run.
        Returns the framework's response as JSON (``ForeignResponse.raw``, secrets
        redacted), live or, on replay, from the journal without calling.
        """
        return await self._models.foreign(model, request, call)

    async def _read(self, t: Tool, args: dict[str, Any], args_json: Any, i: int,
                    fp: str) -> Any:
        rt = self._rt
        tc = ToolContext(self.run_id, self.step, None, None, rt.workspace)
        head = {"i": i, **self._c.within(i), "fp": fp, "tool": t.name, "arguments": args_json}
        try:
            # Redacted before the step sees it: a secret a tool returns never reaches the model.
            result = self._s.redactor.redact(
                journalable(t.name, await self._s.effects.run_tool(t, args, tc)))
        except Exception as exc:  # the tool's own failure: the model is told
            msg = self._s.redactor.redact(f"tool {t.name} failed: {type(exc).__name__}: {exc}")
            rt.journal.append("tool.called", {**head, "error": msg}, step=self.step,
                              actor=rt.actor)
            raise ToolFailed(msg) from exc
        causes, suspect = await file_causes(rt.journal.store, rt.journal.row, tc)
        payload = {**head, "result": result}
        if suspect:
            payload["suspect"] = suspect
        rt.journal.append("tool.called", payload, step=self.step, actor=rt.actor, causes=causes)
        rt.suspect_files = tuple(suspect)
        return result

    def reject(self, tool: str, raw_arguments: str, error: str) -> str:
        """Journal a tool call refused before it ran (malformed arguments, unknown tool)
        and return the error message for the model."""
        i = self._c.next()
        fp = fingerprint("tool", tool, digest(raw_arguments))
        msg = f"error: tool {tool}: {error}"
        if self._c.recorded(i, "tool.called", fp, f"rejected call of {tool}") is None:
            self._rt.journal.append("tool.called", {
                "i": i, **self._c.within(i), "fp": fp, "tool": tool,
                "raw_arguments": raw_arguments, "error": msg, "rejected": True},
                step=self.step, actor=self._rt.actor)
        return msg

    async def call(self, tool: Tool | str, /, **arguments: Any) -> Any:
        """Call a tool. Read tools are journaled after they run; effects are journaled
        before (intent, durable) and after (done / failed). Secrets are redacted from both.
        Raises:
            UsageError: arguments do not match the tool's schema (nothing ran).
            ToolFailed: the tool raised (journaled as ``effect.failed``), or the policy
                or a human did not let it run (:class:`~tether.errors.ToolDenied`).
        """
        t = self._s.tool(tool)
        try:
            args = t.validate(arguments)
        except UsageError as exc:
            # Journaled like a malformed call, so the record shows what the model asked for.
            msg = self.reject(t.name, dumps(json_safe(arguments)).decode(),
                              str(exc).removeprefix(f"tool {t.name}: "))
            raise UsageError(f"{msg.removeprefix('error: ')} (run {self.run_id} step "
                             f"{self.step})") from None
        i = self._c.next()  # numbered as made; the calls' turns come in that order
        async with self._c.turn(i):
            return await self._numbered(t, args, i)

    async def _numbered(self, t: Tool, args: dict[str, Any], i: int) -> Any:
        """Call ``i`` of the step, in its turn: replayed, or checked and run live."""
        s = self._s
        self._rt.suspect_files = ()
        # Journaled redacted; the tool still gets the real ``args``.
        read = t.effect == "read"
        fp, args_json = s.args_fingerprint("tool" if read else "effect", t.name, json_safe(args))
        kind = "tool.called" if read else "effect.intent"
        rec = self._c.recorded(i, kind, fp, f"tool {t.name}")
        if rec is not None:
            ran = s.effects.bodies
            try:
                out = await s.effects.replay(t, args, rec, self.step)
            except ToolFailed:
                if s.effects.bodies == ran:  # the step goes on: past the calls made in it
                    s.effects.passed_over(self._c.skip_inner(i))
                raise
            if s.effects.bodies == ran:  # its body is not run: nor the calls made in it
                s.effects.passed_over(self._c.skip_inner(i))
            return out
        await self._rt.safe_point(self.step)
        s.monitors.propose(Proposal(i, t.name, t.effect, args_json, fp), self.step)  # a loop?
        # The operator's rules, before anything runs (an approver's edit is journaled redacted).
        edited = await s.oversight.check(t, args, args_json, i, self.step)
        if edited is not args:
            args, args_json = edited, s.redactor.redact(json_safe(edited))
        s.budget.check()
        s.budget.count({"tool_calls": 1})
        # A tool on workspace files holds the workspace's lock from its intent until its
        # result is committed; the common case: no lock, no context manager to build.
        if not t.touches_files:
            return await self._act(t, args, args_json, i, fp)
        async with s.effects.held(t):
            return await self._act(t, args, args_json, i, fp)

    async def _act(self, t: Tool, args: dict[str, Any], args_json: Any, i: int, fp: str) -> Any:
        if t.effect == "read":
            return await self._read(t, args, args_json, i, fp)
        effects = self._s.effects
        intent = await effects.intend(t, args, args_json, i, fp, self.step,
                                      within=self._c.within(i))
        return await effects.execute(t, args, intent, self.step)


class SyncStepContext:
    """Passed to sync step functions, which run in a worker thread: each method
    runs the async one on the event loop and waits for it."""

    def __init__(self, inner: StepContext, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._loop = loop
        self.step = inner.step

    @property
    def board(self) -> SyncBoard:
        """The swarm's shared blackboard: ``ctx.board.get(key)`` / ``.set(key, v)``."""
        return SyncBoard(self)

    @property
    def run_id(self) -> str:
        return self._inner.run_id

    @property
    def goal(self) -> str:
        return self._inner.goal

    @property
    def name(self) -> str:
        return self._inner.name

    def _wait(self, coro: Any) -> Any:
        rt = self._inner._rt
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def start() -> None:
            if rt.halted:
                coro.close()
                result.set_exception(StopRequested(f"run {rt.journal.run}: the run was stopped"))
                return
            task = self._loop.create_task(coro)
            rt.sync_tasks.add(task)

            def done(t: asyncio.Task[Any]) -> None:
                rt.sync_tasks.discard(t)
                if t.cancelled():
                    result.set_exception(StopRequested(f"run {rt.journal.run}: the run was "
                                                       "stopped"))
                elif t.exception() is not None:
                    result.set_exception(t.exception())
                else:
                    result.set_result(t.result())
            task.add_done_callback(done)

        self._loop.call_soon_threadsafe(start)
        return result.result()

    def progress(self, value: float) -> None:
        self._inner.progress(value)

    def now(self) -> float:
        return float(self._wait(self._inner.now()))

    def random(self) -> float:
        return float(self._wait(self._inner.random()))

    def sleep_for(self, seconds: float) -> SleepUntil:
        r: SleepUntil = self._wait(self._inner.sleep_for(seconds))
        return r

    def model(self, messages: Sequence[Message], tools: Sequence[Tool | ToolSpec] = (),
              *, model: Model | None = None) -> ModelResponse:
        r: ModelResponse = self._wait(self._inner.model(messages, tools, model=model))
        return r

    def model_call(self, model: str, request: Any, call: ForeignCall) -> Any:
        return self._wait(self._inner.model_call(model, request, call))

    def call(self, tool: Tool | str, /, **arguments: Any) -> Any:
        return self._wait(self._inner.call(tool, **arguments))

    def send(self, to: str, body: Any, *, topic: str | None = None) -> str:
        return str(self._wait(self._inner.send(to, body, topic=topic)))

    @property
    def suspect_files(self) -> tuple[str, ...]:
        return self._inner.suspect_files

    def receive(self, *, limit: int | None = None) -> list[InboxMessage]:
        r: list[InboxMessage] = self._wait(self._inner.receive(limit=limit))
        return r

    def reject(self, tool: str, raw_arguments: str, error: str) -> str:
        r: str = self._wait(_as_coro(self._inner.reject, tool, raw_arguments, error))
        return r


async def _as_coro(fn: Any, *args: Any) -> Any:
    return fn(*args)


class SyncBoard:
    """``ctx.board`` for sync step functions."""

    def __init__(self, ctx: SyncStepContext) -> None:
        self._ctx = ctx

    def get(self, key: str) -> BoardEntry | None:
        r: BoardEntry | None = self._ctx._wait(self._ctx._inner.board.get(key))
        return r

    def set(self, key: str, value: Any) -> str:
        return str(self._ctx._wait(self._ctx._inner.board.set(key, value)))
