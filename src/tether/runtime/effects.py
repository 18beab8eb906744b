"""Write-ahead effects: intent before the tool runs, result after, doubt in between.

An effect runs at most once. If a crash (or a stop that abandons a sync tool
still running in a thread) leaves an intent with no result, the effect is *in
doubt*: an idempotent tool is retried with the same idempotency key; any other
is never run again automatically, unless it can settle itself: a tool with a
``settle`` hook whose intent journaled ``prepared`` facts (the built-in file tools
journal their before- and expected after-images) looks at the world and says
``done`` (``effect.done`` is journaled with ``settled``), ``not_done`` (it runs again,
after ``effect.retried`` with ``settled``) or ``unknown``. Anything else pauses the
run with ``effect.in_doubt`` until an operator settles it (``tether resolve EFFECT
--done|--not-done|--retry``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

from tether.core.canonical import json_safe
from tether.core.events import Event
from tether.errors import EffectInDoubt, PauseRequested, ToolFailed
from tether.runtime.journal import Recorded
from tether.runtime.stepping import StepRuntime
from tether.runtime.workspace import file_causes, file_versions, unwritten_since, workspace_lock
from tether.store.records import EffectRow
from tether.tools.base import (
    IntentInput,
    Prepared,
    Settled,
    SettleInput,
    Tool,
    ToolContext,
)
from tether.tools.running import run_tool, tool_threads


class EffectRunner:
    """Runs one run's tools and journals their effects."""

    def __init__(self, rt: StepRuntime,
                 redact: Callable[[Any], Any] = lambda value: value) -> None:
        self._rt = rt
        self._redact = redact
        """The policy's secret patterns over a result, before it is journaled or returned."""
        # Set while a sync tool runs in a thread: a stop must mark it in doubt.
        self.in_flight: Event | None = None
        # A sync tool whose call was cancelled (stop, shutdown) while its thread still runs.
        self._orphan: concurrent.futures.Future[Any] | None = None
        self.done = 0
        """Effects this runner ran to completion (the worker's log counts them)."""
        self.bodies = 0
        """Tool bodies run (a replay that runs none returns what the journal holds)."""

    async def run_tool(self, t: Tool, args: dict[str, Any], tc: ToolContext) -> Any:
        """Run the tool (the one path: :func:`tether.tools.running.run_tool`), as a call in
        flight: a stop cancels it."""
        self.bodies += 1
        with self._rt:
            return await run_tool(t, args, tc, orphaned=self._orphaned)

    def _orphaned(self, fut: concurrent.futures.Future[Any]) -> None:
        self._orphan = fut  # still acting: see held()

    @contextlib.asynccontextmanager
    async def held(self, t: Tool) -> AsyncIterator[None]:
        """Hold the run's workspace lock around a call of a tool that touches its files.

        Taken before the intent is journaled (waiting counts as being in a call, so a stop
        cancels the wait and nothing was journaled), and released once the result and
        the new file versions are committed, so versions follow the order of the writes.
        A sync tool cancelled while its thread still acts keeps the lock until that
        thread is done: nobody else writes the files meanwhile.
        """
        rt = self._rt
        lock = workspace_lock(rt.journal.row.spec.get("workspace")) if t.touches_files else None
        if lock is None:
            yield
            return
        with rt:
            await lock.acquire()
        try:
            yield
            if t.effect != "read":  # its new versions are committed before the next call
                await rt.flush()
        finally:
            orphan, self._orphan = self._orphan, None
            if orphan is not None and not orphan.done():
                loop = asyncio.get_running_loop()
                orphan.add_done_callback(lambda _f: loop.call_soon_threadsafe(lock.release))
            else:
                lock.release()

    async def intend(self, t: Tool, args: dict[str, Any], args_json: dict[str, Any], i: int,
                     fp: str, step: int, *, within: dict[str, int] | None = None) -> Event:
        """Journal the intent (with the tool's ``prepared`` facts, if it has a ``prepare``
        hook) and make it durable before anything runs."""
        j = self._rt.journal
        payload = {"i": i, **(within or {}), "fp": fp, "tool": t.name, "effect": t.effect,
                   "idempotent": t.idempotent, "arguments": args_json}
        prepared = await self._prepare(t, args, step)
        if prepared is not None:
            payload["prepared"] = json_safe(prepared.facts)
            for digest, body in prepared.chunks.items():
                j.chunk(digest, body)
        intent = j.append("effect.intent", payload, step=step, actor=self._rt.actor)
        j.effect(self._row(intent, "intent"))
        await self._rt.flush()
        return intent

    async def _prepare(self, t: Tool, args: dict[str, Any], step: int) -> Prepared | None:
        if t.prepare is None:
            return None
        rt = self._rt
        inp = IntentInput(rt.journal.run, step, t.name, dict(args), rt.workspace)
        try:
            with rt:  # a stop cancels the wait; nothing is journaled yet
                return await asyncio.wrap_future(tool_threads().submit(t.prepare, inp))
        except Exception:
            # The call would fail (a refused path, a missing folder): the tool's own run
            # reports why. An intent without a plan is simply never settled by itself.
            return None

    def _row(self, intent: Event, status: str, result: Any = None,
             undo: dict[str, Any] | None = None) -> EffectRow:
        p = intent.payload
        return EffectRow(id=intent.id, run=intent.run, epoch=intent.epoch, step=intent.step,
                         idx=int(p["i"]), tool=p["tool"], effect=p["effect"],
                         idempotent=bool(p["idempotent"]), key=intent.id, status=status,
                         arguments=p["arguments"], result=result, undo=undo,
                         updated=self._rt.clock())

    async def execute(self, t: Tool, args: dict[str, Any], intent: Event, step: int) -> Any:
        """Run the tool for a durable intent and journal its result (a tool that touches
        workspace files is called inside :meth:`held`)."""
        # An effect made inside another effect's code (its tool calling the step's context):
        # once this one is settled the outer one is the one in flight again, so a stop
        # that cuts it short marks it in doubt.
        outer = self.in_flight
        try:
            return await self._execute(t, args, intent, step)
        finally:
            if self.in_flight is None:
                self.in_flight = outer

    async def _execute(self, t: Tool, args: dict[str, Any], intent: Event, step: int) -> Any:
        rt = self._rt
        tc = ToolContext(intent.run, step, intent.id, intent.id, rt.workspace,
                         chunk=rt.journal.store.chunk)
        self.in_flight = intent
        try:
            raw = await self.run_tool(t, args, tc)
        except asyncio.CancelledError:
            self.mark_in_doubt("cancelled while running (stop or shutdown)")
            raise
        except EffectInDoubt as exc:  # the tool says it cannot tell: a person decides
            raise self._said_in_doubt(t, intent, step, exc) from exc
        except Exception as exc:
            self.in_flight = None
            msg = self._redact(f"tool {t.name} failed: {type(exc).__name__}: {exc}")
            rt.journal.append("effect.failed", {
                "i": intent.payload["i"], "error": msg,
                "traceback": self._redact(traceback.format_exc(limit=8))}, step=step,
                causes=(intent.id,))
            rt.journal.effect(self._row(intent, "failed", result={"error": msg}))
            raise ToolFailed(msg) from exc
        # Still in flight until effect.done is journaled: _done reads the store off the
        # loop first, and a cancel meanwhile must leave the effect marked in doubt.
        # Redacted before the step sees it, as replay will return it from the journal.
        return await self._done(t, intent, step, tc, self._redact(json_safe(raw)))

    async def _done(self, t: Tool, intent: Event, step: int, tc: ToolContext, result: Any,
                    settled: dict[str, Any] | None = None) -> Any:
        """Journal ``effect.done`` for what ``tc`` recorded, with the new file versions."""
        rt = self._rt
        undo = {"tool": tc.undo.tool, "arguments": json_safe(tc.undo.arguments)} if tc.undo else None
        j = rt.journal
        causes, suspect = await file_causes(j.store, j.row, tc)
        payload = {"i": intent.payload["i"], "result": result, "undo": undo,
                   "after": json_safe(tc.after)}
        if suspect:
            payload["suspect"] = suspect
        versions = file_versions(j.row, intent, tc, rt.clock())
        if settled is not None:
            payload["settled"] = settled
            kept = await asyncio.to_thread(unwritten_since, j.store, intent.id, versions)  # late:
            if len(kept) < len(versions):  # not over a write made since the crash
                # The paths that got a version: the audit holds the rows to them (sealed).
                payload["recorded"] = sorted(v.key for v in kept)
            versions = kept
        for digest, body in tc.chunks.items():  # what the undo names, committed with it
            j.chunk(digest, body)
        j.append("effect.done", payload, step=step, causes=(intent.id, *causes))
        self.in_flight = None
        if settled is None:  # a settled one ran before the crash, not in this drive
            self.done += 1
        rt.suspect_files = tuple(suspect)
        j.effect(self._row(intent, "done", result=result, undo=undo))
        for v in versions:
            j.version(v)
        if versions and not t.touches_files:
            # A tool that records file after-images without declaring touches_files runs
            # unlocked: commit its versions now, so the run's next file call sees them.
            await rt.flush()
        return result

    def _said_in_doubt(self, t: Tool, intent: Event, step: int,
                       exc: EffectInDoubt) -> PauseRequested:
        """The tool raised :class:`EffectInDoubt`: journal the doubt; the pause to raise.
        Neither failed (the model might ask again) nor retried (it may have happened)."""
        why = self._redact(str(exc))
        self.mark_in_doubt(why)
        return PauseRequested(
            f"effect {intent.id} ({t.name}, run {intent.run} step {step}) is in doubt: {why}. "
            f"Check, then `tether resolve {intent.id} --done|--not-done|--retry`",
            detail={"effect": intent.id, "in_doubt": True})

    def mark_in_doubt(self, why: str, intent: Event | None = None) -> None:
        """Journal that the in-flight effect (or ``intent``, one not running) may or may
        not have happened."""
        if intent is None:
            if self.in_flight is None:
                return
            intent, self.in_flight = self.in_flight, None
        j = self._rt.journal
        j.append("effect.in_doubt", {"i": intent.payload["i"], "tool": intent.payload["tool"],
                                     "reason": why}, step=intent.step, causes=(intent.id,))
        j.effect(self._row(intent, "in_doubt"))

    async def _attempt(self, intent: Event, step: int, why: str,
                       settled: dict[str, Any] | None = None) -> None:
        payload: dict[str, Any] = {"i": intent.payload["i"], "reason": why}
        if settled is not None:
            payload["settled"] = settled
        self._rt.journal.append("effect.retried", payload, step=step, causes=(intent.id,))
        await self._rt.flush()

    async def replay(self, t: Tool, args: dict[str, Any], rec: Recorded, step: int) -> Any:
        """Return what a journaled call returned, or settle an effect left in doubt."""
        call, res = rec.call, rec.result
        if call.kind == "tool.called":
            if "error" in call.payload:
                raise ToolFailed(call.payload["error"])
            self._rt.suspect_files = tuple(call.payload.get("suspect") or ())
            return call.payload["result"]
        if res is not None and res.kind == "effect.done":
            self._rt.suspect_files = tuple(res.payload.get("suspect") or ())
            return res.payload["result"]
        if res is not None and res.kind == "effect.failed":
            raise ToolFailed(res.payload["error"])
        if res is not None and res.kind == "effect.resolved":
            how = res.payload["resolution"]
            if how == "done":
                return res.payload.get("result")
            if how == "not_done":
                raise ToolFailed(f"tool {t.name} was not performed (an operator resolved "
                                 f"effect {call.id} as not done)")
            # Retry once, as the operator asked. The attempt is durable before the tool
            # runs, so a crash during it leaves the effect in doubt again, not retried again.
            async with self.held(t):
                await self._attempt(call, step, "an operator asked for a retry")
                return await self.execute(t, args, call, step)
        unsettled = res is None or res.kind in ("effect.in_doubt", "effect.retried")
        if unsettled and t.settle is not None and isinstance(call.payload.get("prepared"), dict):
            return await self._settle(t, args, rec, step)
        if t.idempotent and unsettled:
            # Safe to repeat: the tool gets the same idempotency key as the first attempt.
            async with self.held(t):
                await self._attempt(call, step, "idempotent: retried with the same key")
                return await self.execute(t, args, call, step)
        raise self._doubt(t, rec, step)

    def passed_over(self, inner: list[Recorded]) -> None:
        """The calls made inside a call a re-run replayed without running its code are not
        made again. An effect among them left without a result (the outer call's result
        came from an operator or a settle hook, not from its code finishing) may or may not
        have happened: surface it as in doubt rather than leave a bare intent behind."""
        for rec in inner:
            res = rec.result
            if rec.call.kind == "effect.intent" and (res is None or res.kind == "effect.retried"):
                self.mark_in_doubt("the call it was made inside was replayed from the journal "
                                   "without running its code, so this one is not made again; "
                                   "whether it happened is unknown", rec.call)

    def _doubt(self, t: Tool, rec: Recorded, step: int, why: str = "") -> PauseRequested:
        """Journal that the effect is in doubt (unless it already is); the pause to raise."""
        call, res = rec.call, rec.result
        if res is None or res.kind == "effect.retried":
            self.mark_in_doubt("the process stopped after the intent was journaled and before "
                               "the result was" + (f"; {why}" if why else ""), call)
        return PauseRequested(
            f"effect {call.id} ({t.name}, run {call.run} step {step}) is in doubt: it may or may "
            f"not have happened{f' ({why})' if why else ''}. Check, then "
            f"`tether resolve {call.id} --done|--not-done|--retry`",
            detail={"effect": call.id, "in_doubt": True})

    async def _settle(self, t: Tool, args: dict[str, Any], rec: Recorded, step: int) -> Any:
        """Let the tool settle an effect left without a result from the world as it is.

        Under the workspace lock (for a tool on files), so no other call changes them
        between the look and what follows from it.
        """
        call = rec.call
        async with self.held(t):
            s = await self._ask_settle(t, args, call, step)
            how = {"by": t.name, "outcome": s.outcome, "reason": s.reason}
            if s.outcome == "done":
                tc = ToolContext(call.run, step, call.id, call.id, self._rt.workspace,
                                 undo=s.undo, after=dict(s.after),
                                 touched=sorted(s.after.get("files") or {}))
                return await self._done(t, call, step, tc, s.result, settled=how)
            if s.outcome == "not_done":
                await self._attempt(call, step, f"settled by {t.name}: {s.reason}; running it "
                                    "again", settled=how)
                return await self.execute(t, args, call, step)
        raise self._doubt(t, rec, step, f"{t.name} could not settle it: {s.reason}")

    async def _ask_settle(self, t: Tool, args: dict[str, Any], call: Event,
                          step: int) -> Settled:
        assert t.settle is not None
        rt = self._rt
        inp = SettleInput(call.run, step, call.id, t.name, dict(args), call.payload["prepared"],
                          rt.workspace, rt.journal.store.chunk)
        try:
            with rt:
                got = await asyncio.wrap_future(tool_threads().submit(t.settle, inp))
        except Exception as exc:
            return Settled("unknown", f"its settle hook failed: {type(exc).__name__}: {exc}")
        if got.outcome not in ("done", "not_done", "unknown"):
            return Settled("unknown", f"its settle hook said {got.outcome!r}")
        return got
