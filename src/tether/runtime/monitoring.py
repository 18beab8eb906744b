"""The worker's monitor host: feeds a run's events to its monitors as they are
journaled, journals their verdicts and acts on them.

Every event the run's journal takes goes to the run's :class:`~tether.core.monitors.watch.Watch`
(through the journal's listener) right after it is appended, so a verdict is
journaled in the same commit as the evidence it cites: an ``alert`` event whose
``causes`` are that evidence. A verdict is journaled before it is acted on, so
after a kill -9 it is either in the store with its evidence or neither is.

Acting:

* ``alert``: the event only (operators hear of it through the outbox);
* ``block``: raised on a proposed call, the call does not run and the model is told
  why (:class:`~tether.errors.ToolDenied`); the ``alert`` carries the call's index,
  so a step re-run after a crash is refused the same call without asking again;
* ``pause``, ``quarantine``, ``stop``: the strongest one is applied at the run's
  next safe point (before its next call or step).

The cost on the hot path is one call per event per monitor; monitors that need
I/O do not run here.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from tether.core.events import Event
from tether.core.monitors import Level, Monitor, MonitorSettings, Proposal, Signal, Verdict, View
from tether.core.monitors.base import lazy_view
from tether.core.monitors.verdicts import DEFAULT_STAGES, LEVELS
from tether.core.monitors.watch import ALERT_KIND, Watch
from tether.core.statuses import ACTIVE_STATUSES
from tether.errors import PauseRequested, StopRequested, ToolDenied
from tether.runtime.containment import Containment, Marks, alert_marks, contain
from tether.runtime.journal import RunJournal
from tether.runtime.stepping import StepRuntime
from tether.store.protocol import Store

_PARKING = ("run.paused", "run.resumed", "run.stopped")
"""Events after which a verdict journaled before them was answered (acted on, or a human
looked and resumed the run)."""


class MonitorHost:
    """One run's monitors in the worker (see the module docstring)."""

    def __init__(self, rt: StepRuntime, watch: Watch,
                 state: Callable[[], Mapping[str, Any] | None], *, window: int = 0) -> None:
        self.rt = rt
        self.watch = watch
        self.window = window
        """How many of the run's latest events rebuild its monitors (0: none needed)."""
        self.quarantine: Containment | None = None
        """A quarantine to apply as the run leaves its loop (a verdict's, or a quarantine
        command's set by the executor), in one commit with what parks the run."""
        self._state = state
        self.progress: float | None = None
        """The last ``ctx.progress(value)`` of the run."""
        self.pending: Verdict | None = None
        """The strongest verdict above ``block`` not acted on yet, with its alert."""
        self.pending_alert: str | None = None
        self._blocked: dict[tuple[int, int], Event] = {}
        """Journaled blocks of the in-flight step, by (step, call index)."""
        self.pause_on_alert = False
        """The run's ``on_alert`` pause point: any verdict pauses it at its next safe point."""
        self.orders: list[tuple[str, str, dict[str, Any]]] = []
        """Verdicts for upstream runs (a signal's ``origin``), to send once journaled:
        (origin run, command kind, its args)."""
        self.send: Callable[[Store, str, str, dict[str, Any], float], None] | None = None
        """How an order reaches its origin (set by the executor: ``commands.send_order``,
        which lives above this module). Blocking: called in a thread."""

    @classmethod
    def build(cls, rt: StepRuntime, settings: MonitorSettings,
              extra: Iterable[Callable[[], Monitor]],
              state: Callable[[], Mapping[str, Any] | None]) -> MonitorHost:
        """The run's monitors: the registered ones as the policy configures them for its
        agent and swarm, then ``extra`` (the agent's own) on the default stages."""
        row = rt.journal.row
        every = settings.for_run(rt.agent, row.swarm)
        configured = [c for c in every if c.enabled]
        pairs: list[tuple[Monitor, Sequence[Level]]] = [
            (c.kind.make(c.params), c.stages) for c in configured]
        own = [make() for make in extra]
        # An agent's own monitor named like a registered one (its @invariant functions are
        # checked by an "invariants" monitor) takes the stages the policy gives that name.
        staged = {c.kind.name: c.stages for c in every}
        pairs += [(m, getattr(m, "stages", None) or staged.get(m.name, DEFAULT_STAGES))
                  for m in own]
        window = max([c.kind.window for c in configured]
                     + [int(getattr(m, "window", 64)) for m in own], default=0)
        return cls(rt, Watch(pairs), state, window=window)

    def view(self, step: int) -> View:
        """The run as monitors see it at an event of ``step``: built only if one reads it
        (:func:`~tether.core.monitors.base.lazy_view`); the clock and progress are taken
        now, the rest does not move while the run steps."""
        return lazy_view(self._view, step, self.rt.clock(), self.progress)

    def _view(self, step: int, now: float, progress: float | None) -> View:
        row = self.rt.journal.row
        return View(run=row.id, agent=self.rt.agent, swarm=row.swarm, goal=row.goal,
                    epoch=row.epoch, step=step, now=now, usage=row.usage,
                    budget=row.budget, state=self._state(), progress=progress)

    # -- feeding -------------------------------------------------------------
    def warm(self) -> None:
        """Rebuild the monitors' state from the run's latest events, journaled before this
        worker took the run (no verdicts: they were given then), and pick up what the last
        owner left undone (:meth:`recover`)."""
        row = self.rt.journal.row
        if not row.seq:
            return
        self.recover()
        if not self.window or not self.watch:
            return
        for e in self.rt.journal.store.events(row.id, after_seq=max(0, row.seq - self.window)):
            if e.kind == "step.finished" and isinstance(e.payload, dict):
                self.progress = e.payload.get("progress", self.progress)
            self.watch.warm(e, self.view(e.step))

    def recover(self) -> None:
        """From all the run's alerts and parking events (one indexed read): the stages
        reached (every alert counts, not only those in the monitors' window, so a run
        taken over does not start its ladders again); the strongest verdict of ``pause``
        or above of the current epoch journaled after the run was last paused, resumed or
        stopped (the last owner died between journaling it and acting on it: it is acted
        on at the first safe point); and the orders for upstream runs, queued again (they are keyed by
        their alert: one sent before is not sent twice)."""
        j = self.rt.journal
        events = j.store.events_of_kinds((ALERT_KIND, *_PARKING), run=j.run)
        parked = max((e.seq for e in events if e.kind in _PARKING), default=0)
        for e in events:
            if e.kind != ALERT_KIND or not isinstance(e.payload, dict):
                continue
            self.watch.count(e)
            p = e.payload
            level = LEVELS.get(str(p.get("verdict")), Level.OK)
            if p.get("origin") not in (None, j.run):
                self._order(e)
            elif level >= Level.PAUSE and e.seq > parked and e.epoch == j.row.epoch and (
                    self.pending is None or level > self.pending.level):
                s = Signal(str(p.get("monitor")), str(p.get("rule")), str(p.get("message", "")),
                           evidence=e.causes, figures=p.get("figures") or {},
                           threshold=p.get("threshold"), level=level)
                self.pending, self.pending_alert = Verdict(s, level, int(p.get("stage") or 1)), e.id

    def record(self, e: Event) -> None:
        """Index a journaled block of the in-flight step (what a re-run step meets)."""
        if e.kind == ALERT_KIND and isinstance(e.payload, dict) and "i" in e.payload:
            self._blocked[(e.step, int(e.payload["i"]))] = e

    def clear(self) -> None:
        """The step ended: its blocks are no longer the in-flight step's."""
        self._blocked.clear()

    def observe(self, e: Event) -> None:
        """The journal's listener: judge ``e`` and journal what that gives."""
        watch = self.watch
        if not watch.wants(e.kind):  # no monitor looks at this kind (or none is on)
            return
        # self.view(e.step), inlined: this runs for every event the run journals
        verdicts = watch.observe(e, lazy_view(self._view, e.step, self.rt.clock(), self.progress))
        if verdicts:
            self._emit(verdicts, e.step)

    def propose(self, call: Proposal, step: int) -> None:
        """Before a tool call runs: raise ToolDenied if a monitor blocks it, or pause (or
        stop) the run right here for a stronger verdict.

        A re-run step meets the verdict journaled for this call the first time: a block
        refuses it again; a pause (quarantine, stop) was answered by whoever resumed the
        run, so the call goes ahead without asking again.
        """
        done = self._blocked.get((step, call.i))
        if done is not None:
            if done.payload.get("verdict") == Level.BLOCK.label:
                raise ToolDenied(_refusal(call.tool, done.payload))
            return
        if not self.watch:
            return
        verdicts = self.watch.propose(call, self.view(step))
        if not verdicts:
            return
        alerts = self._emit(verdicts, step, call=call)
        strongest = verdicts[-1].level
        if strongest > Level.BLOCK:
            self.act()  # this is a safe point: nothing of the call ran
        if strongest == Level.BLOCK:
            raise ToolDenied(_refusal(call.tool, alerts[-1].payload))

    # -- journaling ----------------------------------------------------------
    def _emit(self, verdicts: Sequence[Verdict], step: int, *,
              call: Proposal | None = None) -> list[Event]:
        j = self.rt.journal
        out = []
        for v in verdicts:
            extra: dict[str, Any] = {}
            if call is not None:
                extra = {"i": call.i, "tool": call.tool, "fp": call.fp}
                if v.level >= Level.BLOCK:
                    extra["blocked"] = True
            foreign = v.signal.origin not in (None, j.run)
            marks = Marks()
            if v.level >= Level.PAUSE and not foreign:
                # Its writes and undelivered messages are suspect from this commit on, the
                # alert's own: readers are told as for a quarantine. A store read on the
                # loop, but verdicts this strong are rare (one or two in a run's life).
                marks = alert_marks(j.store, j)
                extra.update(marks.payload("suspect"))
            ev = j.append(ALERT_KIND, v.to_payload(**extra), step=step,
                          causes=tuple(dict.fromkeys(v.signal.evidence)))
            marks.journal(j, True)
            out.append(ev)
            if call is not None and v.level >= Level.BLOCK:
                self._blocked[(step, call.i)] = ev
            if foreign:
                self._order(ev)  # it applies to the origin; this run is only told
                continue
            if self.pause_on_alert and v.level < Level.PAUSE:
                v = dataclasses.replace(v, level=Level.PAUSE)  # the on_alert pause point
            if v.level > Level.BLOCK and (self.pending is None or v.level > self.pending.level):
                self.pending, self.pending_alert = v, ev.id
        return out

    def external(self, name: str, detail: Mapping[str, Any], step: int) -> None:
        """An alert from outside the run's monitors (``Worker.alert``): journaled as a
        ``pause`` verdict of monitor ``name`` (rule ``external``), acted on at once."""
        s = Signal(name, "external", f"{name} asked to pause the run", figures=dict(detail),
                   level=Level.PAUSE)
        self._emit([Verdict(s, Level.PAUSE, 1)], step)

    def _order(self, alert: Event) -> None:
        """Queue what a journaled verdict naming an upstream run does to it (``pause``,
        ``quarantine`` or ``stop``; below ``pause``, nothing: the alert names it). The
        order is the alert itself (its ``origin`` and ``verdict``), so a worker that takes
        this run over after a crash queues it again from the journal (:meth:`warm`)."""
        p = alert.payload
        level = LEVELS.get(str(p.get("verdict")), Level.OK)
        if level >= Level.PAUSE and p.get("origin") not in (None, alert.run):
            self.orders.append((str(p["origin"]), level.label, {
                "alert": alert.id, "run": alert.run, "verdict": level.label,
                "monitor": p.get("monitor"), "rule": p.get("rule")}))

    async def dispatch(self) -> None:
        """Send the queued orders to their origin runs, once the alerts behind them are
        durable, through :attr:`send`."""
        if not self.orders:
            return
        orders, self.orders = self.orders, []
        await self.rt.flush()
        store, now = self.rt.journal.store, self.rt.journal.now()
        for origin, kind, args in orders:
            if self.send is not None:
                await asyncio.to_thread(self.send, store, origin, kind, args, now)

    # -- acting --------------------------------------------------------------
    def act(self) -> None:
        """At a safe point: raise to pause or stop the run for a verdict journaled since
        the last one (a quarantine is parked and contained by :meth:`settle`)."""
        v, alert = self.pending, self.pending_alert
        if v is None or alert is None:
            return
        self.pending = self.pending_alert = None
        s = v.signal
        why = f"monitor {s.monitor!r} ({s.rule}): {s.message}"
        if v.level >= Level.STOP:
            raise StopRequested(f"run {self.rt.journal.run}: stopped by {why}")
        detail: dict[str, object] = {"alert": alert, "monitor": s.monitor, "rule": s.rule}
        text = f"paused by {why}; look (`tether alerts`), then `tether resume`"
        if v.level >= Level.QUARANTINE:
            paused = {"reason": text, **detail}

            def park(j: RunJournal) -> None:
                if j.row.status in ACTIVE_STATUSES:
                    j.append("run.paused", paused, causes=(alert,))

            self.quarantine = Containment(why, "system:monitor", (alert,), park)
            detail = {**detail, "quarantine": True}  # parked by settle, with its containment
        raise PauseRequested(text, detail=detail)

    async def settle(self, flush: Callable[[], Awaitable[None]]) -> None:
        """Once the run has left its loop (everything journaled is durable): park it and
        contain it for a quarantine verdict (``run.paused``, then ``run.quarantined``:
        hold its undelivered messages, mark its writes suspect), in one commit."""
        j = self.rt.journal
        await self.dispatch()  # the run ended right after a verdict naming an origin
        if self.quarantine is None:
            return
        q, self.quarantine = self.quarantine, None
        if j.row.status not in (*ACTIVE_STATUSES, "paused"):
            return  # stopped or failed meanwhile: nothing left to hold
        for _ in range(5):  # a recipient took a message meanwhile: look again
            if await asyncio.to_thread(contain, j.store, j, release=False, reason=q.reason,
                                       by=q.by, causes=q.causes, prelude=q.prelude) is not None:
                return
        q.prelude(j)
        j.append(ALERT_KIND, {"monitor": "host", "rule": "quarantine_failed", "verdict": "alert",
                              "stage": 1, "message": "its messages kept being delivered while "
                              "they were being held; quarantine it with `tether quarantine`",
                              "figures": {}, "threshold": None}, causes=q.causes)
        await flush()


def _refusal(tool: str, payload: Any) -> str:
    """What the model is told when a monitor refuses its call."""
    p = payload if isinstance(payload, dict) else {}
    return (f"tool {tool}: refused by monitor {p.get('monitor')!r} ({p.get('rule')}): "
            f"{p.get('message', '')} Try something different.")
