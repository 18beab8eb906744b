"""Drives one run: restore, replay the in-flight step, then step until it sleeps,
pauses, stops, fails or is done. Every exit is journaled and made durable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.core import budget as budgets
from tether.core.checkpoint import CheckpointEncoder, chain_label, checkpoint_info, restore
from tether.core.fingerprint import ConversationHasher
from tether.core.pausepoints import PausePoints
from tether.core.pricing import PriceTable, refuse_unpriced
from tether.errors import (
    AwaitApproval,
    BudgetExceeded,
    Deferred,
    InvalidState,
    LeaseLost,
    PauseRequested,
    Signal,
    StopRequested,
    StoreError,
    TetherError,
    UsageError,
)
from tether.runtime import commands as cmds
from tether.runtime import outcome as outcomes
from tether.runtime.agent import AgentLike
from tether.runtime.committer import GroupCommitter
from tether.runtime.context import CALL_KINDS, RESULT_KINDS, StepContext, SyncStepContext
from tether.runtime.effects import EffectRunner
from tether.runtime.journal import Recorded, RunJournal
from tether.runtime.oversight import GATE_KINDS, Oversight
from tether.store.records import Command
from tether.tools.base import Tool

if TYPE_CHECKING:
    from tether.core.policy import Policy

PIPELINE = 4
"""Default end-of-step commits a run may have in flight; 0 makes every step durable before
the next one starts."""


class Drain(Signal):
    """The worker is shutting down: leave the run as it is at this safe point."""


class RunExecutor:
    """One run, owned by this process under a fenced lease."""

    def __init__(self, journal: RunJournal, agent: AgentLike, committer: GroupCommitter, *,
                 clock: Callable[[], float], prices: PriceTable, keyframe_every: int = 128,
                 policy: Policy | Callable[[], Policy | None] | None = None,
                 pipeline: int = PIPELINE,
                 swarm_pause_points: Mapping[str, Any] | None = None,
                 step_threads: concurrent.futures.Executor | None = None) -> None:
        self.journal = journal
        self.agent = agent
        self.committer = committer
        self.clock = clock
        self.prices = prices
        self.hasher = ConversationHasher()
        self.effects = EffectRunner(self)
        row = journal.row
        shared = swarm_pause_points
        if shared is None:  # not read for us by the worker: read it here
            shared = journal.store.swarm_pause_points(row.swarm) if row.swarm else {}
        self.pause_points = PausePoints.parse({**shared, **(row.spec.get("pause_points") or {})})
        self._alert: tuple[str, dict[str, Any]] | None = None
        self.oversight = Oversight(self, policy if callable(policy) else (lambda: policy))
        self.replay: dict[int, Recorded] = {}
        self.encoder = CheckpointEncoder(keyframe_every=keyframe_every, run=journal.run)
        self.state: dict[str, Any] = {}
        self._tools = {t.name: t for t in agent.tools}
        self._commands: list[Command] = []
        self._window_base: dict[float, dict[str, float]] = {}
        self._swarm_budget: dict[str, float] = {}
        self._swarm_base: tuple[dict[str, float], dict[float, dict[str, float]]] = ({}, {})
        self._accrued: dict[str, float] = {}
        self.step_started = False
        self.draining = False
        self.in_call = False
        self._inflight: deque[asyncio.Future[None]] = deque()
        self.pipeline = pipeline
        self._is_async = agent.is_async()
        self.halted = False
        self.step_threads = step_threads
        """Where sync step functions run (the worker's pool; None: the loop's default)."""
        self.board_dirty = False  # a blackboard write not yet flushed: reads flush first
        self.suspect_files: tuple[str, ...] = ()  # of the last tool call: ctx.suspect_files
        self.self_mail = False  # sent itself a message not yet committed: receive commits first
        # Calls a sync step function (in a thread) runs on the loop: cancelled on stop.
        self.sync_tasks: set[asyncio.Task[Any]] = set()
        ws = journal.row.spec.get("workspace")
        self.workspace = Path(ws) if ws else None

    # -- lookups -------------------------------------------------------------
    def tool(self, tool: Tool | str) -> Tool:
        name = tool if isinstance(tool, str) else tool.name
        t = self._tools.get(name)
        if t is None:
            if isinstance(tool, Tool):
                return tool  # a tool passed directly need not be declared on the agent
            raise UsageError(f"run {self.journal.run}: unknown tool {name!r}; the agent "
                             f"{self.agent.name} has {', '.join(sorted(self._tools)) or 'none'}")
        return t

    async def flush(self) -> None:
        """Make everything journaled so far durable (before an effect, at the end)."""
        await self._settle()
        await self.journal.flush(self.committer)

    async def _settle(self, keep: int = 0) -> None:
        """Wait until at most ``keep`` end-of-step commits are in flight; raise what a
        commit failed with."""
        while len(self._inflight) > keep:
            try:
                await self._inflight.popleft()
            except BaseException:
                # The later commits fail as well (their seqs follow the refused ones) and
                # nobody will await them: take their errors, which would otherwise be
                # printed as "Future exception was never retrieved".
                for f in self._inflight:
                    f.add_done_callback(_retrieved)
                self._inflight.clear()
                raise

    async def _commit_step(self) -> None:
        """Commit the step just finished, letting the next steps run while it syncs.

        Durability is unchanged where it matters: an effect's intent waits for every
        earlier write (commits are applied in order), and a run never leaves this
        process (sleep, pause, done, shutdown) before its last write is durable. With
        a few steps' writes in flight, one transaction and one fsync can carry several
        steps of the same run: a crash loses at most those steps, which are re-run.
        """
        if self.pipeline <= 0:
            await self.flush()  # strict: this step is durable before the next one starts
            return
        await self._settle(keep=self.pipeline - 1)
        if self.journal.dirty:
            self._inflight.append(self.committer.submit_nowait(self.journal.take()))

    def count(self, counts: dict[str, float]) -> None:
        self.journal.add_usage(counts)
        budgets.add(self._accrued, counts)

    # -- restore -------------------------------------------------------------
    def load(self, tail: list[Any], swarm_budget: dict[str, float] | None) -> None:
        """Restore the last checkpoint and index the in-flight step's journaled calls."""
        row = self.journal.row
        store = self.journal.store
        chain = store.checkpoint_chain(row.id, row.epoch, row.step)
        if chain is None:
            raise InvalidState(f"run {row.id}: no checkpoint for epoch {row.epoch} step "
                               f"{row.step}; the store is incomplete")
        self.state = restore(chain.key_body, store.chunk, chain.deltas, prefetch=store.chunks,
                             where=chain_label(row.id, row.epoch, row.step, chain.key_step))
        self.encoder.prime(self.state, last_key_step=chain.key_step)
        self._swarm_budget = dict(swarm_budget or {})
        step = row.step + 1
        for e in tail:
            if e.epoch != row.epoch or e.step != step:
                continue
            if e.kind == "step.started":
                self.step_started = True
            elif e.kind in CALL_KINDS:
                self.replay[int(e.payload["i"])] = Recorded(e)
            elif e.kind in GATE_KINDS:
                self.oversight.record(e)
            elif e.kind in RESULT_KINDS and e.causes:
                for rec in self.replay.values():
                    if rec.call.id == e.causes[0]:
                        rec.result = e

    # -- control -------------------------------------------------------------
    def queued_commands(self) -> list[Command]:
        """Commands delivered but not applied yet."""
        return list(self._commands)

    def deliver(self, commands: list[Command]) -> None:
        """Queue operator commands; they are applied at the next safe point."""
        self._commands.extend(commands)

    def alert(self, name: str, detail: Mapping[str, Any] | None = None) -> None:
        """A monitor's alert: the run pauses at its next safe point (if its pause points say
        so, the default)."""
        if self.pause_points.on_alert:
            self._alert = (name, dict(detail or {}))

    def _check_definition(self) -> None:
        """Resuming under a changed agent (instructions, model, tools, step source): decide
        by the run's rule whether to go on. Default: refuse for agents with irreversible
        tools (a human looks first), warn for the others; the decision is journaled."""
        j = self.journal
        spec = j.row.spec
        old, new = spec.get("definition"), self.agent.definition_hash()
        if not old or old == new:
            return
        rule = str(spec.get("on_definition_change") or getattr(self.agent, "on_change", None)
                   or ("refuse" if any(t.effect == "irreversible" for t in self.agent.tools)
                       else "warn"))
        if spec.get("accept_definition_change"):
            rule = "accepted"
        refused = rule == "refuse"
        j.append("definition.changed", {"old": old, "new": new, "rule": rule,
                                        "decision": "refused" if refused else "resumed"})
        if refused:
            raise PauseRequested(
                f"run {j.run}: agent {self.agent.name}'s definition changed since the run last "
                "ran (instructions, model, tools or step code); review the change, then "
                f"`tether resume {j.run} --accept-change`", detail={"definition_changed": True})
        j.update(spec={k: v for k, v in {**spec, "definition": new}.items()
                       if k != "accept_definition_change"})

    def _review_point(self) -> None:
        """Pause for a human at a configured review point (every N steps or T minutes)."""
        j = self.journal
        spec = j.row.spec
        now = self.clock()
        if "reviewed_at" not in spec and self.pause_points.every_minutes:
            j.update(spec={**spec, "reviewed_at": now})  # the clock starts with the first step
            return
        due = self.pause_points.due(step=j.row.step + 1, now=now, spec=spec)
        if due is not None:
            j.update(spec={**spec, "reviewed_step": j.row.step, "reviewed_at": now})
            raise due

    async def safe_point(self, step: int) -> None:
        """Apply queued commands; raise to pause or stop the run here."""
        if self.draining:
            raise Drain()
        if self._alert is not None:
            name, detail = self._alert
            self._alert = None
            raise PauseRequested(f"paused by monitor alert {name!r}; look, then `tether resume`",
                                 detail={"alert": name, **detail})
        if self._commands:
            pending, self._commands = self._commands, []
            for c in pending:
                cmds.apply(self.journal, c, step=step)
            if any(c.kind == "stop" for c in pending):
                raise StopRequested(f"run {self.journal.run}: stopped by an operator")
            if self.journal.row.status == "paused":
                raise PauseRequested("paused by an operator", detail={"by_command": True})

    def nondeterminism(self, step: int, i: int, *, expected: str, got: str) -> None:
        msg = (f"nondeterminism in run {self.journal.run} step {step} call #{i}: the journal "
               f"recorded {expected} but the step now makes {got}. The agent's code, tools or "
               "inputs changed since this step started; restore the old code and `tether resume` "
               "the run, or stop it and start a new one")
        self.journal.append("nondeterminism", {"i": i, "expected": expected, "got": got},
                            step=step)
        raise PauseRequested(msg, detail={"nondeterminism": True})

    # -- budgets -------------------------------------------------------------
    async def refresh_budget_windows(self) -> None:
        """Read rolling-window usage once per step; calls inside the step add to it."""
        row = self.journal.row
        if not (budgets.window_lengths(row.budget) or (self._swarm_budget and row.swarm)):
            self._accrued = {}
            return
        # The store must have this run's usage so far: wait for steps still committing.
        await self._settle()
        store, now = self.journal.store, self.clock()
        self._accrued = {}
        b = row.budget
        self._window_base = {w: store.usage_since(run=row.id, since=now - w)
                             for w in budgets.window_lengths(b)}
        if self._swarm_budget and row.swarm:
            sb = self._swarm_budget
            self._swarm_base = (store.swarm_usage(row.swarm),
                                {w: store.usage_since(swarm=row.swarm, since=now - w)
                                 for w in budgets.window_lengths(sb)})

    def window_usage(self, window: float) -> dict[str, float]:
        """The run's usage inside a rolling window, as of this call (read at step start)."""
        return _plus(self._window_base.get(window, {}), self._accrued)

    def check_budget(self) -> None:
        row = self.journal.row
        windows = {w: _plus(u, self._accrued) for w, u in self._window_base.items()}
        hit = budgets.exceeded(row.budget, row.usage, windows)
        scope = "run"
        if hit is None and self._swarm_budget:
            life, wins = self._swarm_base
            hit = budgets.exceeded(self._swarm_budget, _plus(life, self._accrued),
                                   {w: _plus(u, self._accrued) for w, u in wins.items()})
            scope = f"swarm {row.swarm}"
        if hit is None:
            return
        lim, used = hit
        cap = (row.budget if scope == "run" else self._swarm_budget)[lim.key]
        self.journal.append("budget.exceeded", {"scope": scope, "limit": lim.key, "cap": cap,
                                                "used": used})
        raise BudgetExceeded(
            f"run {row.id}: {scope} budget {lim.key}={cap:g} reached (used {used:g}); raise it "
            f"with `tether budget {row.id} --set {lim.key}=...` and `tether resume {row.id}`",
            detail={"limit": lim.key, "scope": scope})

    def check_priced(self, model: str) -> None:
        """Pause before calling a model without a price when a cost cap applies (the run's
        or its swarm's): the call would count as $0 and the cap would never be reached."""
        if not (self.journal.row.budget or self._swarm_budget):
            return  # the common case, on every model call: nothing to check
        try:
            refuse_unpriced(model, {**self._swarm_budget, **self.journal.row.budget},
                            self.prices, f"run {self.journal.run}")
        except UsageError as exc:
            raise PauseRequested(f"{exc}; then `tether resume {self.journal.run}`",
                                 detail={"unpriced_model": model}) from None

    # -- the loop ------------------------------------------------------------
    async def drive(self) -> str:
        """Step until the run leaves ``running``; return the final status."""
        j = self.journal
        try:
            self._check_definition()
            if j.row.status in ("sleeping", "waiting"):
                j.update(status="running", wake_at=None)
            while True:
                await self.safe_point(j.row.step + 1)
                if j.row.status != "running":
                    break
                self._review_point()
                await self.refresh_budget_windows()
                self.check_budget()
                await self._step()
                if j.row.status != "running":
                    break
        except Drain:
            pass  # shutdown: the step is abandoned and re-run (with replay) by the next owner
        except Deferred as d:
            # Held by a policy window: sleep until it ends; the step then re-runs and the
            # journaled decision is taken again at that time.
            await self._halt()
            j.append("run.sleeping", {"until": d.until, "deferred": True, "reason": d.reason})
            j.update(status="sleeping", wake_at=d.until, reason=f"deferred: {d.reason}")
        except PauseRequested as p:
            self._pause(p)
        except StopRequested as s:
            await self._halt()
            self.effects.mark_in_doubt("stopped while running")
            if j.row.status != "stopped":
                j.append("run.stopped", {"reason": str(s)})
                j.update(status="stopped", reason=str(s))
        except asyncio.CancelledError:
            # Shutdown or a stop that could not wait: an effect still running is in doubt.
            await self._halt()
            self.effects.mark_in_doubt("abandoned while running (stop or shutdown)")
            if any(c.kind == "stop" for c in self._commands):
                pending, self._commands = self._commands, []
                for c in pending:
                    cmds.apply(j, c, step=j.row.step + 1)
            await self._final_flush()
            raise
        except StoreError:
            raise  # lease lost or store failing: abandon, never mark the run failed for it
        except TetherError as exc:
            self._fail(exc)
        except Exception as exc:  # the agent's own code raised: the run fails, named
            self._fail(exc)
        await self._halt()
        await self._final_flush()
        return j.row.status

    async def _halt(self) -> None:
        """No call may start after this; calls a sync step still has in flight are cancelled."""
        self.halted = True
        tasks = list(self.sync_tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _final_flush(self) -> None:
        with contextlib.suppress(LeaseLost):
            await self.flush()

    def _pause(self, p: PauseRequested) -> None:
        j = self.journal
        if isinstance(p, AwaitApproval):
            j.update(status="awaiting_approval", reason=str(p))
            return
        if not p.detail.get("by_command"):
            j.append("run.paused", {"reason": str(p), **p.detail})
        j.update(status="paused", reason=str(p))

    def _fail(self, exc: BaseException) -> None:
        j = self.journal
        step = j.row.step + 1
        text = str(exc)
        where = f"run {j.run} step {step}: "
        # tether's own errors already name the run and step; don't say it twice.
        msg = text if text.startswith(where) else f"{where}{type(exc).__name__}: {text}"
        j.append("run.failed", {"error": msg, "traceback": traceback.format_exc(limit=12)})
        j.update(status="failed", reason=msg + "; fix the agent, then `tether resume` re-runs "
                 "the step from its checkpoint (effects already done are not repeated)")

    async def _step(self) -> None:
        j = self.journal
        step = j.row.step + 1
        if not self.step_started:
            j.append("step.started", {}, step=step, actor=f"agent:{self.agent.name}")
        ctx = StepContext(self, step)
        t0 = time.monotonic()
        if self._is_async:
            raw = await self.agent.step(ctx, self.state)
        else:
            loop = asyncio.get_running_loop()
            # A sync step blocks its thread on every ctx call, which runs its tools on the
            # default pool: on a pool of its own, many such steps cannot starve their tools.
            call = functools.partial(contextvars.copy_context().run, self.agent.step,
                                     SyncStepContext(ctx, loop), self.state)
            raw = await loop.run_in_executor(self.step_threads, call)
        out = outcomes.normalize(raw, run=j.run, step=step)
        left = sorted(i for i in self.replay if i >= ctx.calls)
        if left:
            # The re-run step stopped short of calls it made before the crash: its code or
            # inputs changed. An effect among them may be in doubt; surface, don't forget.
            rec = self.replay[left[0]]
            for i in left:
                r = self.replay[i]
                if r.call.kind == "effect.intent" and r.result is None:
                    self.effects.in_flight = r.call
                    self.effects.mark_in_doubt("the re-run step no longer makes this call")
            self.nondeterminism(step, left[0], expected=f"{rec.call.kind} "
                                f"{rec.call.payload.get('fp')}", got="no such call (the step "
                                "ended earlier)")
        ck = self.encoder.encode(step, self.state)
        j.checkpoint(ck)
        self.count({"steps": 1, "wall_seconds": time.monotonic() - t0})
        info = checkpoint_info(ck)
        if ck.kind == "key":
            j.append("checkpoint", info, step=step)
        j.append("step.finished", {**outcomes.to_json(out), "checkpoint": info}, step=step)
        j.update(step=step)
        if isinstance(out, outcomes.Done):
            j.append("run.done", {"result": out.result}, step=step)
            j.update(status="done", reason="")
        elif isinstance(out, outcomes.SleepUntil):
            j.append("run.sleeping", {"until": out.at}, step=step)
            j.update(status="sleeping", wake_at=out.at)
        elif isinstance(out, outcomes.AwaitMessages):
            j.append("run.sleeping", {"until": out.until, "inbox": True}, step=step)
            j.update(status="waiting", wake_at=out.until)
        self.replay = {}
        self.oversight.clear()
        self.step_started = False
        if j.row.status == "running":
            await self._commit_step()
        else:
            await self.flush()


def _plus(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    out = dict(a)
    budgets.add(out, b)
    return out


def _retrieved(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()
