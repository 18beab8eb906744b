"""Drives one run: restore, replay the in-flight step, then step until it sleeps,
pauses, stops, fails or is done. Every exit is journaled and made durable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tether.core.checkpoint import CheckpointEncoder, chain_label, checkpoint_info, restore
from tether.core.clock import WallClock
from tether.core.erasure import REPLAYED
from tether.core.monitors import MonitorSettings
from tether.core.pricing import PriceTable
from tether.core.text import escape_nul
from tether.errors import (
    AwaitApproval,
    Deferred,
    InvalidState,
    LeaseLost,
    PauseRequested,
    Signal,
    StopRequested,
    StoreError,
)
from tether.runtime import commands as cmds
from tether.runtime import outcome as outcomes
from tether.runtime.agent import AgentLike
from tether.runtime.asking import AskHost, finish_asks
from tether.runtime.committer import GroupCommitter
from tether.runtime.context import (
    CALL_KINDS,
    RESULT_KINDS,
    StepContext,
    SyncStepContext,
)
from tether.runtime.effects import EffectRunner
from tether.runtime.journal import Recorded, RunJournal
from tether.runtime.monitoring import MonitorHost
from tether.runtime.oversight import GATE_KINDS, Oversight
from tether.runtime.pipeline import CommitPipeline
from tether.runtime.reviews import check_definition, pause_points, review_point
from tether.runtime.run_budget import RunBudget
from tether.runtime.services import StepServices
from tether.runtime.step_api import stepping
from tether.runtime.stepping import StepRuntime
from tether.store.records import Command
from tether.system_clock import SYSTEM_CLOCK

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
                 step_threads: concurrent.futures.Executor | None = None,
                 wall: WallClock = SYSTEM_CLOCK) -> None:
        self.journal = journal
        self.agent = agent
        self.committer = committer
        self.clock = clock
        self.commits = CommitPipeline(journal, committer, pipeline)
        self.wall = wall  # approvals' expiry, and how long a step took
        self.step_threads = step_threads
        """Where sync step functions run (the worker's pool; None: the loop's default)."""
        # What the step's collaborators share: they see this, never the executor.
        self.rt = StepRuntime(journal, agent=agent.name, clock=clock, flush=self.commits.flush,
                              safe_point=self.safe_point)
        self.budget = RunBudget(journal, clock, prices)
        self.pause_points = pause_points(journal, swarm_pause_points)
        self.oversight = Oversight(self.rt, self.budget, self.pause_points,
                                   policy if callable(policy) else (lambda: policy), wall=wall)
        self.effects = EffectRunner(self.rt, lambda v: self.oversight.policy.redaction.redact(v))
        self.monitors = MonitorHost.build(self.rt, _monitor_settings(self.oversight),
                                          getattr(agent, "monitors", ()), lambda: self.state)
        self.monitors.pause_on_alert = self.pause_points.on_alert
        self.monitors.send = cmds.send_order
        journal.listener = self.monitors.observe
        # The monitors' I/O (None: no monitor of this run asks for any).
        self.asking = AskHost.build(self.rt, self.monitors.watch, getattr(agent, "model", None))
        self.services = StepServices(self.rt, agent, effects=self.effects,
                                     oversight=self.oversight, budget=self.budget, prices=prices,
                                     monitors=self.monitors)
        self.encoder = CheckpointEncoder(keyframe_every=keyframe_every, run=journal.run)
        self.state: dict[str, Any] = {}
        self._commands: list[Command] = []
        self._alert: tuple[str, dict[str, Any]] | None = None
        self._is_async = agent.is_async()
        self.step_started = False
        self.draining = False

    @property
    def in_call(self) -> bool:
        """A model or tool call is in flight (a stop cancels it rather than waiting)."""
        return self.rt.in_call

    async def flush(self) -> None:
        """Make everything journaled so far durable (before an effect, at the end)."""
        await self.commits.flush()

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
        self.budget.swarm_budget = dict(swarm_budget or {})
        self.monitors.warm()
        step = row.step + 1
        for e in tail:
            if e.epoch != row.epoch or e.step != step:
                continue
            if e.payload is None and e.kind in REPLAYED:
                raise InvalidState(_erased_in_flight(row.id, row.step, e.id, e.kind))
            if e.kind == "step.started":
                self.step_started = True
            elif e.kind in CALL_KINDS:
                self.rt.replay[int(e.payload["i"])] = Recorded(e)
            elif e.kind in GATE_KINDS:
                self.oversight.record(e)
            elif e.kind == "alert":
                self.monitors.record(e)
            elif e.kind in RESULT_KINDS and e.causes:
                for rec in self.rt.replay.values():
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
        """A monitor outside the worker asks to pause the run: journaled as an ``alert`` (a
        ``pause`` verdict of monitor ``name``) at the next safe point, which pauses it."""
        self._alert = (name, dict(detail or {}))

    async def safe_point(self, step: int) -> None:
        """Apply queued commands; raise to pause or stop the run here."""
        if self.draining:
            raise Drain()
        if self._alert is not None:
            name, detail = self._alert
            self._alert = None
            self.monitors.external(name, detail, step)
        if self.asking is not None:
            await self.asking.tick(step)  # answers land here, so their verdicts act here
        await self.monitors.dispatch()
        self.monitors.act()
        if self._commands:
            pending, self._commands = self._commands, []
            for c in pending:
                q = cmds.quarantine_for(self.journal, c, step)  # applied as the run leaves
                if q is None:
                    cmds.apply(self.journal, c, step=step)
                self.monitors.quarantine = q or self.monitors.quarantine
            if any(c.kind == "stop" for c in pending):
                raise StopRequested(f"run {self.journal.run}: stopped by an operator")
            if self.monitors.quarantine is not None:
                raise PauseRequested("quarantined", detail={"quarantine": True})
            if self.journal.row.status == "paused":
                raise PauseRequested("paused by an operator", detail={"by_command": True})

    # -- the loop ------------------------------------------------------------
    async def drive(self) -> str:
        """Step until the run leaves ``running``; return the final status. Each way out
        is one ``except``, journaled and made durable."""
        # long: one except per way out of the run, each journaled; split, they would scatter
        j = self.journal
        try:
            await self._steps()
        except Drain:
            pass  # shutdown: the step is abandoned and re-run (with replay) by the next owner
        except Deferred as d:
            # Held by a policy or budget window: sleep until it ends; the step re-runs and the
            # journaled decision is taken again at that time.
            await self._halt()
            until = await self.budget.wake(d.until)  # a budget window: when it frees
            j.append("run.sleeping", {"until": until, "deferred": True, "reason": d.reason})
        except PauseRequested as p:
            if not p.detail.get("quarantine"):  # else parked with its containment (settle)
                self._pause(p)
        except StopRequested as s:
            await self._halt()
            self.effects.mark_in_doubt("stopped while running")
            if j.row.status != "stopped":
                j.append("run.stopped", {"reason": escape_nul(str(s))})
        except asyncio.CancelledError:
            # Shutdown or a stop that could not wait: an effect still running is in doubt.
            await self._halt()
            self.effects.mark_in_doubt("abandoned while running (stop or shutdown)")
            await finish_asks(self.asking, self._final_flush, wait=False)
            if any(c.kind == "stop" for c in self._commands):
                pending, self._commands = self._commands, []
                for c in pending:
                    cmds.apply(j, c, step=j.row.step + 1)
            await self._final_flush()
            raise
        except StoreError:
            raise  # lease lost or store failing: abandon, never mark the run failed for it
        except Exception as exc:  # tether's own errors, or the agent's code raised: it fails
            self._fail(exc)
        await self._halt()
        await self._final_flush()
        await self.monitors.settle(self._final_flush)
        await finish_asks(self.asking, self._final_flush, wait=not self.draining)
        return j.row.status

    async def _steps(self) -> None:
        j = self.journal
        check_definition(self.journal, self.agent)
        if j.row.status in ("sleeping", "waiting"):
            waiting = j.row.status == "waiting"
            j.append("run.woke", {"from": j.row.status})
            if waiting:
                # Durable before the step takes its messages: if this process dies
                # holding them, the run is still runnable and the re-run takes them back.
                await self.flush()
        while True:
            await self.safe_point(j.row.step + 1)
            if j.row.status != "running":
                return
            review_point(self.journal, self.pause_points, self.clock())
            if self.budget.windowed:
                await self.commits.settle()  # the store must have this run's usage so far
            await self.budget.refresh()
            self.budget.check()
            await self._step()
            if j.row.status != "running":
                return

    async def _halt(self) -> None:
        """No call may start after this; calls a sync step still has in flight are cancelled."""
        self.rt.halted = True
        tasks = list(self.rt.sync_tasks)
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
            # A new request already says the run waits (its event folds so); a request
            # made before, met again by a re-run step, needs saying.
            if j.row.status != "awaiting_approval":
                j.append("run.awaiting_approval", {"approval": p.detail.get("approval"),
                                                   "reason": escape_nul(str(p))})
            return
        if not p.detail.get("by_command"):  # else the command's run.paused said it
            j.append("run.paused", {"reason": escape_nul(str(p)), **p.detail})

    def _fail(self, exc: BaseException) -> None:
        j = self.journal
        step = j.row.step + 1
        # An exception's text is the agent's: a NUL in it is escaped here, where the reason
        # is formed, so the event, its fold and the run's row say the same on every backend
        # (PostgreSQL's text cannot hold NUL).
        text = escape_nul(str(exc))
        where = f"run {j.run} step {step}: "
        # tether's own errors already name the run and step; don't say it twice.
        msg = text if text.startswith(where) else f"{where}{type(exc).__name__}: {text}"
        j.append("run.failed", {"error": msg, "traceback": traceback.format_exc(limit=12)})

    async def _step(self) -> None:
        j = self.journal
        step = j.row.step + 1
        if not self.step_started:
            j.append("step.started", {}, step=step, actor=self.rt.actor)
        ctx = StepContext(self.services, step)
        t0 = self.wall.monotonic()
        out = outcomes.normalize(await self._call_agent(ctx), run=j.run, step=step)
        await ctx.ended()
        self._stopped_short(step, ctx.unmade())
        ck = self.encoder.encode(step, self.state)
        j.checkpoint(ck)
        self.budget.count({"steps": 1, "wall_seconds": self.wall.monotonic() - t0})
        info = checkpoint_info(ck)
        if ck.kind == "key":
            j.append("checkpoint", info, step=step)
        done = {**outcomes.to_json(out), "checkpoint": info}
        if ctx.declared is not None:
            done["progress"] = self.monitors.progress = ctx.declared
        j.append("step.finished", done, step=step)
        self._outcome(out, step)
        if j.row.status in ("sleeping", "waiting"):
            self.monitors.act()  # a verdict of this step parks the run now, not at its wake-up
        self.rt.replay = {}
        self.oversight.clear()
        self.monitors.clear()
        self.step_started = False
        if j.row.status == "running":
            await self.commits.end_step()
        else:
            await self.flush()

    async def _call_agent(self, ctx: StepContext) -> Any:
        try:
            return await self._run_step(ctx)
        except Exception as exc:
            await ctx.raised(exc)  # or what a call raised first, that the step turned into this
            raise
        except BaseException:
            ctx.abandoned()
            raise

    async def _run_step(self, ctx: StepContext) -> Any:
        if self._is_async:
            with stepping(ctx):
                return await self.agent.step(ctx, self.state)
        loop = asyncio.get_running_loop()
        # A sync step blocks its thread on every ctx call, which runs its tools on the
        # default pool: on a pool of its own, many such steps cannot starve their tools.
        call = functools.partial(contextvars.copy_context().run, self.agent.step,
                                 SyncStepContext(ctx, loop), self.state)
        return await loop.run_in_executor(self.step_threads, call)

    def _stopped_short(self, step: int, left: list[int]) -> None:
        """The re-run step stopped short of calls it made before the crash: its code or
        inputs changed. An effect among them may be in doubt; surface, don't forget."""
        if not left:
            return
        for i in left:
            r = self.rt.replay[i]
            if r.call.kind == "effect.intent" and r.result is None:
                self.effects.in_flight = r.call
                self.effects.mark_in_doubt("the re-run step no longer makes this call")
        rec = self.rt.replay[left[0]]
        self.rt.nondeterminism(step, left[0], expected=f"{rec.call.kind} "
                               f"{rec.call.payload.get('fp')}", got="no such call (the step "
                               "ended earlier)")

    def _outcome(self, out: outcomes.Outcome, step: int) -> None:
        j = self.journal
        if isinstance(out, outcomes.Done):
            j.append("run.done", {"result": out.result}, step=step)
        elif isinstance(out, outcomes.SleepUntil):
            j.append("run.sleeping", {"until": out.at}, step=step)
        elif isinstance(out, outcomes.AwaitMessages):
            j.append("run.sleeping", {"until": out.until, "inbox": True}, step=step)


def _monitor_settings(oversight: Oversight) -> MonitorSettings:
    """The ``[monitors]`` tables of the policy in force when the run was taken."""
    return oversight.policy.monitors


def _erased_in_flight(run: str, done: int, event: str, kind: str) -> str:
    """Why a run whose step in flight lost a payload to an erasure cannot go on."""
    return (f"run {run} step {done + 1}: the payload of event {event} ({kind}) was erased "
            "(tether audit erase) and re-running the step would need it back (its recorded "
            "call or result is gone, and calling again could repeat an effect); the run "
            f"cannot resume from this step. Fork it from its last complete step, `tether "
            f"fork {run} --at {done}`, to go on without it")
