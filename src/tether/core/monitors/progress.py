"""No progress: a run that keeps spending while nothing it does moves it forward.

Progress is what the run says it is: the value a step declares with
``ctx.progress(value)`` (journaled as ``progress`` in its ``step.finished``), or,
for a run that declares none, whether its state changed in the step (the
``step.finished`` checkpoint: a delta with no change in it is an unchanged
state; a keyframe says nothing either way and is skipped).

A step *spends* when it calls a model or starts an effect (and, with
``reads_spend``, when it calls a read tool). A step that spends nothing (a run
that sleeps, or polls its inbox) is neither progress nor waste: it is not
counted. The time rule holds only for a declared metric: a state is a weaker sign
(a test of a scripted agent, a run parked for a day between two steps), so it
is judged by steps alone. For a run that declares no progress, a step that changed the world
outside its state (an effect done, a message sent, a blackboard write) made
progress: a router that keeps nothing in its state but forwards every ticket is
not stuck. The monitor signals when ``steps`` spending steps in a row made no
progress (rule ``flat_progress`` for a declared metric, ``unchanged_state``
otherwise), or when progress has been flat for ``minutes`` of the run's clock
across at least ``min_steps`` spending steps; it signals again each further
``steps`` steps (or ``minutes``) the stretch lasts, so its stages escalate a
run that carries on. Any progress ends the stretch.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, Final

from tether.core.events import Event
from tether.core.ids import parse_iso
from tether.core.monitors.base import MonitorKind, Quiet, View, register
from tether.core.monitors.verdicts import Signal

DEFAULTS: Final[Mapping[str, Any]] = {
    "steps": 8,
    "minutes": 60.0,
    "min_steps": 3,
    "tolerance": 0.0,
    "reads_spend": False,
}
UNCHANGED: Final = hashlib.sha256(b"{}").hexdigest()
"""The hash of a delta checkpoint with nothing in it: the state did not change."""
SPENDING: Final = frozenset({"model.called", "effect.intent"})
ACTING: Final = frozenset({"effect.done", "message.sent", "blackboard.write"})
"""What changes the world outside the run's state: progress for a run that declares none."""
EVIDENCE: Final = 8


class NoProgress(Quiet):
    """See the module docstring."""

    name = "no_progress"

    def __init__(self, params: Mapping[str, Any]) -> None:
        p = {**DEFAULTS, **params}
        for key in ("steps", "minutes", "min_steps", "tolerance"):
            v = p[key]
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ValueError(f"monitors.no_progress.{key}: expected a number >= 0, got {v!r}")
        self.steps = max(1, int(p["steps"]))
        self.period = float(p["minutes"]) * 60.0  # 0: no time rule
        self.min_steps = max(1, int(p["min_steps"]))
        self.tolerance = float(p["tolerance"])
        self.spending = SPENDING | {"tool.called"} if p["reads_spend"] else SPENDING
        self.kinds = self.spending | ACTING | {"step.finished"}
        self.spent = 0
        """Spending calls in the step under way."""
        self.acted = False
        """The step under way made an effect, sent a message or wrote the blackboard."""
        self.declared = False
        """The run declares progress (then its state is not looked at)."""
        self.ref: float | None = None
        """The declared progress when it last moved."""
        self._reset("")

    def _reset(self, since: str) -> None:
        self.flat = 0
        """Spending steps in a row without progress."""
        self.calls = 0
        self.since = since
        """When progress last moved (an event time; "" before the first step)."""
        self.next_steps = self.steps
        self.next_time = self.period
        self.ids: deque[str] = deque(maxlen=EVIDENCE)

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        kind = event.kind
        if kind in self.spending:
            self.spent += 1
            return ()
        if kind in ACTING:
            self.acted = True
            return ()
        if kind != "step.finished":
            return ()
        spent, acted, self.spent, self.acted = self.spent, self.acted, 0, False
        p = event.payload if isinstance(event.payload, dict) else {}
        moved = self._moved(p, acted)
        if moved is None:
            return ()
        if moved or not self.since:
            if self.flat:
                self._reset(event.time)
            else:  # the common case: nothing to clear
                self.since = event.time
            return ()
        if not spent:
            return ()
        self.flat += 1
        self.calls += spent
        self.ids.append(event.id)
        return self._judge(event)

    def _moved(self, p: Mapping[str, Any], acted: bool) -> bool | None:
        """Whether the step made progress (None: it cannot tell)."""
        v = p.get("progress")
        if isinstance(v, int | float) and not isinstance(v, bool):
            self.declared = True
            moved = self.ref is None or abs(v - self.ref) > self.tolerance
            if moved:
                self.ref = float(v)
            return moved
        if self.declared:
            return False  # a step that declared nothing did not move it
        if acted:
            return True
        ck = p.get("checkpoint")
        if not isinstance(ck, dict) or ck.get("kind") != "delta":
            return None
        return ck.get("hash") != UNCHANGED

    def _judge(self, event: Event) -> Iterable[Signal]:
        if self.flat >= self.next_steps:
            self.next_steps += self.steps
            return (self._signal(f"{self.flat} steps", self.steps, "steps"),)
        if self.period and self.declared and self.flat >= self.min_steps:
            minutes = (parse_iso(event.time) - parse_iso(self.since)) / 60.0
            if minutes * 60.0 >= self.next_time:
                self.next_time += self.period
                return (self._signal(f"{minutes:.0f} minutes", self.period / 60.0, "minutes"),)
        return ()

    def _signal(self, span: str, threshold: float, unit: str) -> Signal:
        rule = "flat_progress" if self.declared else "unchanged_state"
        what = (f"its progress stayed at {self.ref:g}" if self.declared
                else "its state did not change")
        figures: dict[str, Any] = {"steps": self.flat, "spending_calls": self.calls,
                                   "since": self.since, "unit": unit}
        if self.declared:
            figures["progress"] = self.ref
        return Signal("no_progress", rule, f"{what} for {span} while it made {self.calls} model "
                      "or effect calls; it may be stuck", evidence=tuple(self.ids),
                      figures=figures, threshold=threshold)


register(MonitorKind(
    "no_progress", NoProgress, DEFAULTS, window=256,
    doc="declared progress (ctx.progress) or the run's state flat while the run keeps spending"))
