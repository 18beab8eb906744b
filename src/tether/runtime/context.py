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
import random as _random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tether.core.canonical import digest, dumps, json_safe, loads
from tether.core.fingerprint import fingerprint
from tether.errors import ModelError, PauseRequested, StopRequested, ToolFailed, UsageError
from tether.models.base import Message, Model, ModelResponse, ToolSpec
from tether.runtime.journal import Recorded
from tether.runtime.outcome import SleepUntil
from tether.runtime.swarm import Board, BoardEntry, InboxMessage, SwarmCalls
from tether.runtime.workspace import file_causes
from tether.tools.base import Tool, ToolContext

if TYPE_CHECKING:
    from tether.runtime.executor import RunExecutor

CALL_KINDS = ("model.called", "tool.called", "effect.intent", "clock.read", "random.read",
              "message.sent", "message.received", "blackboard.read", "blackboard.write")
RESULT_KINDS = ("effect.done", "effect.failed", "effect.in_doubt", "effect.resolved",
                "effect.retried")


def _journalable(tool: str, value: Any) -> Any:
    """A read tool's result as journaled; one that is not JSON is the tool's error.

    A read changed nothing, so nothing is lost by refusing it; turning it into another
    type (its repr) would hand the step something the tool never returned.
    """
    if value is None or isinstance(value, bool | int):
        return value
    try:
        return loads(dumps(value))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"tool {tool} returned a value the journal cannot keep as JSON "
                         f"({exc}); return text, numbers, booleans, null, lists and objects "
                         "with text keys") from None


class StepContext:
    """Passed to ``step(ctx, state)`` of async agents. Methods are coroutines."""

    def __init__(self, ex: RunExecutor, step: int) -> None:
        self._ex = ex
        self.step = step
        self._i = 0
        self._swarm_calls: SwarmCalls | None = None  # made on first use: most steps never do

    @property
    def _swarm(self) -> SwarmCalls:
        if self._swarm_calls is None:
            self._swarm_calls = SwarmCalls(self)
        return self._swarm_calls

    @property
    def board(self) -> Board:
        """The swarm's shared blackboard: ``await ctx.board.get(key)`` / ``.set(key, v)``."""
        return Board(self._swarm)

    @property
    def run_id(self) -> str:
        return self._ex.journal.run

    @property
    def goal(self) -> str:
        return self._ex.journal.row.goal

    @property
    def name(self) -> str:
        return self._ex.journal.row.name

    @property
    def suspect_files(self) -> tuple[str, ...]:
        """Workspace files the last ``call`` read or changed whose last writer (another run)
        is quarantined: what it saw may be bad. Journaled with the call (``suspect``)."""
        return self._ex.suspect_files

    @property
    def calls(self) -> int:
        """How many journaled calls the step has made so far."""
        return self._i

    def _next(self) -> int:
        if self._ex.halted:
            raise StopRequested(f"run {self.run_id} step {self.step}: the run was stopped; "
                                "no further calls are made")
        i = self._i
        self._i += 1
        return i

    def _recorded(self, i: int, kind: str, fp: str, what: str) -> Recorded | None:
        rec = self._ex.replay.get(i)
        if rec is None:
            return None
        got = rec.call.payload.get("fp")
        if rec.call.kind != kind or got != fp:
            self._ex.nondeterminism(self.step, i, expected=f"{rec.call.kind} {got}",
                                    got=f"{kind} {fp} ({what})")
        return rec

    async def now(self) -> float:
        """The run's clock, journaled: a replayed step sees the same time."""
        i = self._next()
        rec = self._recorded(i, "clock.read", "clock", "ctx.now()")
        if rec is not None:
            return float(rec.call.payload["value"])
        t = self._ex.clock()
        self._ex.journal.append("clock.read", {"i": i, "fp": "clock", "value": t}, step=self.step)
        return t

    async def random(self) -> float:
        """A random float in [0, 1), journaled."""
        i = self._next()
        rec = self._recorded(i, "random.read", "random", "ctx.random()")
        if rec is not None:
            return float(rec.call.payload["value"])
        v = _random.random()
        self._ex.journal.append("random.read", {"i": i, "fp": "random", "value": v},
                                step=self.step)
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
        ex = self._ex
        m = model or ex.agent.model
        if m is None:
            raise UsageError(f"run {self.run_id} step {self.step}: ctx.model() needs a model; "
                             "give the agent model=... or pass model=")
        specs = [t.spec() if isinstance(t, Tool) else t for t in tools]
        i = self._next()
        fp = fingerprint("model", m.name, digest([ex.hasher.digest(messages), specs]))
        rec = self._recorded(i, "model.called", fp, f"model {m.name}")
        if rec is not None:
            return ModelResponse.from_json(rec.call.payload["response"])
        await ex.safe_point(self.step)
        ex.check_budget()
        ex.check_priced(m.name)
        await ex.oversight.check_model(m.name, i, self.step)
        t0 = asyncio.get_running_loop().time()
        ex.in_call = True
        try:
            resp = await m.complete(messages, specs)
        except ModelError as exc:
            raise PauseRequested(
                f"model {m.name} failed at step {self.step}: {exc}; the run is paused, "
                "resume it with `tether resume` once the provider is back",
                detail={"provider_message": exc.provider_message, "retryable": exc.retryable},
            ) from exc
        finally:
            ex.in_call = False
        latency = asyncio.get_running_loop().time() - t0
        # Price by the name we asked for: it is what the operator configured prices for.
        cost = ex.prices.cost(m.name if m.name in ex.prices.prices else (resp.model or m.name),
                              resp.usage.input_tokens, resp.usage.output_tokens)
        ex.journal.append("model.called", {
            "i": i, "fp": fp, "model": m.name, "response": resp.to_json(), "cost_usd": cost,
            "latency_s": round(latency, 6)}, step=self.step, actor=f"agent:{ex.agent.name}")
        ex.count({"input_tokens": resp.usage.input_tokens,
                  "output_tokens": resp.usage.output_tokens, "cost_usd": cost})
        return resp

    async def _read(self, t: Tool, args: dict[str, Any], args_json: Any, i: int,
                    fp: str) -> Any:
        ex = self._ex
        tc = ToolContext(self.run_id, self.step, None, None, ex.workspace)
        try:
            result = _journalable(t.name, await ex.effects.run_tool(t, args, tc))
        except Exception as exc:  # the tool's own failure: the model is told
            msg = f"tool {t.name} failed: {type(exc).__name__}: {exc}"
            ex.journal.append("tool.called", {"i": i, "fp": fp, "tool": t.name,
                                              "arguments": args_json, "error": msg},
                              step=self.step, actor=f"agent:{ex.agent.name}")
            raise ToolFailed(msg) from exc
        causes, suspect = await file_causes(ex.journal.store, ex.journal.row, tc)
        payload = {"i": i, "fp": fp, "tool": t.name, "arguments": args_json, "result": result}
        if suspect:
            payload["suspect"] = suspect
        ex.journal.append("tool.called", payload, step=self.step,
                          actor=f"agent:{ex.agent.name}", causes=causes)
        ex.suspect_files = tuple(suspect)
        return result

    def reject(self, tool: str, raw_arguments: str, error: str) -> str:
        """Journal a tool call refused before it ran (malformed arguments, unknown tool)
        and return the error message for the model."""
        i = self._next()
        fp = fingerprint("tool", tool, digest(raw_arguments))
        msg = f"error: tool {tool}: {error}"
        if self._recorded(i, "tool.called", fp, f"rejected call of {tool}") is None:
            self._ex.journal.append("tool.called", {
                "i": i, "fp": fp, "tool": tool, "raw_arguments": raw_arguments, "error": msg,
                "rejected": True}, step=self.step, actor=f"agent:{self._ex.agent.name}")
        return msg

    async def call(self, tool: Tool | str, /, **arguments: Any) -> Any:
        """Call a tool. Read tools are journaled after they run; effects are
        journaled before (intent, durable) and after (done / failed).

        Raises:
            UsageError: arguments do not match the tool's schema (nothing ran).
            ToolFailed: the tool raised (journaled as ``effect.failed``).
        """
        ex = self._ex
        t = ex.tool(tool)
        ex.suspect_files = ()
        try:
            args = t.validate(arguments)
        except UsageError as exc:
            # Journaled like a malformed call, so the record shows what the model asked for.
            msg = self.reject(t.name, dumps(json_safe(arguments)).decode(),
                              str(exc).removeprefix(f"tool {t.name}: "))
            raise UsageError(f"{msg.removeprefix('error: ')} (run {self.run_id} step "
                             f"{self.step})") from None
        i = self._next()
        args_json = json_safe(args)
        fp = fingerprint("tool" if t.effect == "read" else "effect", t.name, digest(args_json))
        kind = "tool.called" if t.effect == "read" else "effect.intent"
        rec = self._recorded(i, kind, fp, f"tool {t.name}")
        if rec is not None:
            return await ex.effects.replay(t, args, rec, self.step)
        await ex.safe_point(self.step)
        # The operator's rules, before anything runs (the arguments may come back edited).
        args = await ex.oversight.check(t, args, args_json, i, self.step)
        args_json = json_safe(args)
        ex.check_budget()
        ex.count({"tool_calls": 1})
        # A tool on workspace files holds the workspace's lock from before its intent until
        # its result is committed (a read: no write to them is half committed meanwhile).
        if not t.touches_files:  # the common case: no lock, no context manager to build
            return await self._act(t, args, args_json, i, fp)
        async with ex.effects.held(t):
            return await self._act(t, args, args_json, i, fp)

    async def _act(self, t: Tool, args: dict[str, Any], args_json: Any, i: int, fp: str) -> Any:
        if t.effect == "read":
            return await self._read(t, args, args_json, i, fp)
        ex = self._ex
        intent = await ex.effects.intend(t, args, args_json, i, fp, self.step)
        return await ex.effects.execute(t, args, intent, self.step)


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
        ex = self._inner._ex
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def start() -> None:
            if ex.halted:
                coro.close()
                result.set_exception(StopRequested(f"run {ex.journal.run}: the run was stopped"))
                return
            task = self._loop.create_task(coro)
            ex.sync_tasks.add(task)

            def done(t: asyncio.Task[Any]) -> None:
                ex.sync_tasks.discard(t)
                if t.cancelled():
                    result.set_exception(StopRequested(f"run {ex.journal.run}: the run was "
                                                       "stopped"))
                elif t.exception() is not None:
                    result.set_exception(t.exception())
                else:
                    result.set_result(t.result())
            task.add_done_callback(done)

        self._loop.call_soon_threadsafe(start)
        return result.result()

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
