"""Monitors run over a finished run's events: ``tether analyze``.

The same :class:`~tether.core.monitors.watch.Watch` the worker's host uses is fed
the events in chain order, and every tool call is first proposed to it, as the
worker proposes a call before it runs it: a verdict on a proposal says the
monitor would have refused (or paused the run at) that call. Nothing is
journaled and nothing acts; the verdicts come back as :class:`Flag` records.

What a live run has and a recorded one may not: the run's state and the progress
it declared (``View.progress`` is None here). A stored run has its checkpoints, so
the caller may pass ``state`` (:func:`analyze`): then ``View.state`` is the state
at the last step boundary, as the worker's is (after the step at its
``step.finished``, before it at the step's other events), restored only when a
monitor reads it. Without it (an imported transcript) ``View.state`` is None, and a
monitor that needs the state stays silent. Usage is counted from the events
(tokens and cost from ``model.called``, steps from ``step.finished``).
``alert`` events already in the run are skipped: the analysis judges afresh.

A monitor's asks (:mod:`.asks`: an embedding, a model as judge) are never sent from
here: the ``monitor.answer`` events the live run journaled are fed to it in their
place, as the worker fed them, so the verdicts they led to come out the same. Asks
with no answer in the run (an imported transcript has none) are left unasked;
:func:`unanswered` lists them, and ``tether analyze`` says how many.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tether.core.events import Event
from tether.core.ids import parse_iso
from tether.core.monitors.asks import Ask
from tether.core.monitors.base import Monitor, Proposal, View, lazy_view
from tether.core.monitors.settings import MonitorSettings
from tether.core.monitors.verdicts import Level, Verdict
from tether.core.monitors.watch import ALERT_KIND, Watch


@dataclass(frozen=True, slots=True)
class Flag:
    """One verdict above ``ok`` on a recorded run."""

    monitor: str
    rule: str
    step: int
    verdict: str
    stage: int
    message: str
    evidence: tuple[str, ...]
    """Ids of the events that show it."""
    figures: dict[str, Any] = field(default_factory=dict)
    threshold: Any = None
    call: int | None = None
    """The index of the proposed call it was raised on, if any."""

    def to_json(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "rule": self.rule, "step": self.step,
                "verdict": self.verdict, "stage": self.stage, "message": self.message,
                "evidence": list(self.evidence), "figures": self.figures,
                "threshold": self.threshold, "call": self.call}


@dataclass(frozen=True, slots=True)
class Subject:
    """The run being analyzed, as its ``run.started`` names it."""

    run: str
    agent: str
    swarm: str | None
    goal: str


def watch_for(settings: MonitorSettings, agent: str, swarm: str | None) -> Watch:
    """The registered monitors as ``settings`` configure them for a run of ``agent``."""
    pairs: list[tuple[Monitor, Sequence[Level]]] = [
        (c.kind.make(c.params), c.stages) for c in settings.for_run(agent, swarm) if c.enabled]
    return Watch(pairs)


StateAt = Callable[[int, int], Mapping[str, Any] | None]
"""``(epoch, step) -> the run's state after that step`` (None: no checkpoint of it)."""


def analyze(events: Iterable[Event], subject: Subject, watch: Watch,
            state: StateAt | None = None) -> list[Flag]:
    """Every flag the monitors raise over ``events`` (a run's chain, in order); with
    ``state``, monitors see the run's state at each step boundary (module doc)."""
    flags: list[Flag] = []
    usage: dict[str, float] = {}
    for e in events:
        if e.kind == ALERT_KIND:
            continue
        _count(usage, e)
        call = proposal(e)
        if call is None and not watch.wants(e.kind):
            continue  # no monitor looks at it: no view to build
        boundary = e.step if e.kind == "step.finished" else e.step - 1
        view = lazy_view(_view, subject, e.epoch, e.step, parse_iso(e.time), dict(usage),
                         state, boundary)
        if call is not None:
            flags.extend(_flags(watch.propose(call, view), e.step, call.i))
        flags.extend(_flags(watch.observe(e, view), e.step, None))
    return flags


def _view(subject: Subject, epoch: int, step: int, now: float, usage: dict[str, float],
          state: StateAt | None, boundary: int) -> View:
    return View(run=subject.run, agent=subject.agent, swarm=subject.swarm, goal=subject.goal,
                epoch=epoch, step=step, now=now, usage=usage,
                state=state(epoch, boundary) if state is not None and boundary >= 0 else None)


def unanswered(watch: Watch) -> list[Ask]:
    """The asks the monitors made that the analyzed events hold no answer to (call it
    after :func:`analyze`)."""
    return watch.asks()


def proposal(e: Event) -> Proposal | None:
    """The call a ``tool.called`` or ``effect.intent`` event ran, as it was proposed."""
    p = e.payload
    if e.kind not in ("tool.called", "effect.intent") or not isinstance(p, dict):
        return None
    args = p.get("arguments", p.get("raw_arguments"))
    effect = str(p.get("effect", "read"))
    return Proposal(i=int(p.get("i", 0)), tool=str(p.get("tool")), effect=effect,
                    arguments=args, fp=str(p.get("fp", "")))


def _count(usage: dict[str, float], e: Event) -> None:
    p = e.payload if isinstance(e.payload, dict) else {}
    if e.kind == "model.called":
        u = (p.get("response") or {}).get("usage") or {}
        for k in ("input_tokens", "output_tokens"):
            usage[k] = usage.get(k, 0.0) + float(u.get(k) or 0)
        usage["cost_usd"] = usage.get("cost_usd", 0.0) + float(p.get("cost_usd") or 0)
    elif e.kind in ("tool.called", "effect.intent"):
        usage["tool_calls"] = usage.get("tool_calls", 0.0) + 1
    elif e.kind == "step.finished":
        usage["steps"] = usage.get("steps", 0.0) + 1


def _flags(verdicts: Iterable[Verdict], step: int, call: int | None) -> list[Flag]:
    return [Flag(v.signal.monitor, v.signal.rule, step, v.level.label, v.stage,
                 v.signal.message, tuple(dict.fromkeys(v.signal.evidence)),
                 dict(v.signal.figures), v.signal.threshold, call)
            for v in verdicts if v.level > Level.OK]
