"""Runaway: a run spending tokens, money or steps far faster than it usually does.

Velocity is measured in fixed windows of the run's clock (``window_seconds``,
a minute by default, aligned to the clock so that feeding the same events gives
the same windows): the tokens (input and output) and cost of its ``model.called``
events and the count of its ``step.finished`` events. Each is held against

* the run's own baseline: the median of its last ``baseline_windows`` *active*
  windows (a sleeping run's idle minutes are no baseline: its next wake-up would
  look like a spike), once there are ``min_windows`` of them; a window over
  ``factor`` times the median, and over the metric's floor (``min_tokens``...,
  so that a run doing one small step a minute may do five), is a spike;
* an absolute ceiling per minute (``max_tokens_per_minute``...; 0, the default, is none).

It acts as a circuit breaker: *closed* while velocity is normal; a spike or a
ceiling *opens* it (one signal, rule ``spike`` or ``ceiling``); after
``cooldown_seconds`` of the run's clock it is *half-open*: a window that closes
normally closes it again, another breach opens it again with a second signal,
which the default stages turn into a pause. Everything it keeps is derived from
the events' own times and payloads, so a worker that takes the run over rebuilds
it by feeding the run's recent events again.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from statistics import median
from typing import Any, Final

from tether.core.events import Event
from tether.core.ids import parse_iso
from tether.core.monitors.base import MonitorKind, Quiet, View, register
from tether.core.monitors.verdicts import Level, Signal

METRICS: Final = ("tokens", "cost_usd", "steps")
DEFAULTS: Final[Mapping[str, Any]] = {
    "window_seconds": 60.0,
    "baseline_windows": 10,
    "min_windows": 5,
    "factor": 10.0,
    "min_tokens": 20000.0,
    "min_cost_usd": 0.5,
    "min_steps": 30.0,
    "max_tokens_per_minute": 0.0,
    "max_cost_usd_per_minute": 0.0,
    "max_steps_per_minute": 0.0,
    "cooldown_seconds": 300.0,
}
SECONDS: Final = {f"{n:02d}": float(n) for n in range(61)}
"""A stamp's seconds field, looked up: parsing numbers is the costly part of a stamp."""
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
EVIDENCE: Final = 8
"""How many of the window's latest events a signal cites."""


def _number(params: Mapping[str, Any], key: str) -> float:
    v = params.get(key, DEFAULTS[key])
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
        raise ValueError(f"monitors.runaway.{key}: expected a number >= 0, got {v!r}")
    return float(v)


class Runaway(Quiet):
    """See the module docstring."""

    name = "runaway"
    kinds = frozenset({"model.called", "step.finished"})

    def __init__(self, params: Mapping[str, Any]) -> None:
        num = {k: _number(params, k) for k in DEFAULTS}
        self.window = num["window_seconds"] or 60.0
        self.min_windows = max(1, int(num["min_windows"]))
        self.factor = num["factor"]
        self.cooldown = num["cooldown_seconds"]
        self.floors = (num["min_tokens"], num["min_cost_usd"], num["min_steps"])
        per = 60.0 / self.window  # a window's total, as per minute
        self.ceilings = tuple(c / per if (c := num[f"max_{m}_per_minute"]) else None
                              for m in METRICS)  # 0: no ceiling
        self.past: deque[tuple[float, float, float]] = deque(
            maxlen=max(1, int(num["baseline_windows"])))
        self.limits: tuple[float | None, ...] = (None, None, None)
        """The spike thresholds from the baseline (None: not enough windows yet)."""
        self.state = CLOSED
        self.opened_at = 0.0
        self.start: float | None = None
        """Start of the current window (the run clock, seconds)."""
        self.cur = [0.0, 0.0, 0.0]
        self.tripped = False
        """The current window breached: it is no baseline."""
        self.ids: deque[str] = deque(maxlen=EVIDENCE)
        self.head, self.minute = "", 0.0
        self.trip = _lowest(self.ceilings, self.limits)
        """Per metric, the lowest limit in force (inf: none yet)."""
        self.end = -math.inf
        """End of the current window."""

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        kind, p = event.kind, event.payload
        if kind == "step.finished":
            tokens = cost = 0.0
            steps = 1.0
        elif kind == "model.called" and isinstance(p, dict):
            tokens, cost = _spent(p)
            steps = 0.0
        else:
            return ()
        s = event.time  # the hot path: a stamp in the minute seen last (no parsing)
        t = self.minute + SECONDS[s[17:19]] if s[:16] == self.head else self._time(s)
        if t >= self.end:
            self._roll(t)
        cur = self.cur
        cur[0] += tokens
        cur[1] += cost
        cur[2] += steps
        self.ids.append(event.id)
        if self.state == OPEN:
            if t - self.opened_at < self.cooldown:
                return ()
            self.state = HALF_OPEN
        trip = self.trip
        if cur[0] <= trip[0] and cur[1] <= trip[1] and cur[2] <= trip[2]:
            return ()
        breach = self._breach()
        again = self.state == HALF_OPEN
        self.tripped = True
        self.state, self.opened_at = OPEN, t
        return (self._signal(*breach, again=again),)

    def _time(self, s: str) -> float:
        """An event's time, to the whole second (windows and cool-downs are seconds
        long or more): tether's stamps are parsed once per minute, others whole."""
        if len(s) == 27 and s[19] == "." and s[26] == "Z" and s[17:19] in SECONDS:
            self.head, self.minute = s[:16], parse_iso(s[:16] + ":00Z")
            return self.minute + SECONDS[s[17:19]]
        return math.floor(parse_iso(s))

    def _roll(self, t: float) -> None:
        """Start the window ``t`` is in, closing the current one into the baseline if it
        was normal and the breaker closed (or half-open: a whole normal window closes it)."""
        start = t - t % self.window
        if self.start is not None and not self.tripped:
            if self.state == HALF_OPEN:
                self.state = CLOSED
            if self.state == CLOSED:
                self.past.append((self.cur[0], self.cur[1], self.cur[2]))
                self._baseline()
        self.start, self.end = start, start + self.window
        self.cur, self.tripped = [0.0, 0.0, 0.0], False
        self.ids.clear()

    def _baseline(self) -> None:
        if len(self.past) < self.min_windows:
            return
        self.limits = tuple(max(median(w[i] for w in self.past) * self.factor, self.floors[i])
                            for i in range(3))
        self.trip = _lowest(self.ceilings, self.limits)

    def _breach(self) -> tuple[str, int, float, float | None]:
        """(rule, metric index, threshold, baseline) of the first limit the window is over."""
        for i, value in enumerate(self.cur):
            ceiling = self.ceilings[i]
            if ceiling is not None and value > ceiling:
                return "ceiling", i, ceiling, None
            limit = self.limits[i]
            if limit is not None and value > limit:
                return "spike", i, limit, median(w[i] for w in self.past)
        raise AssertionError("no limit breached")  # observe checked one is

    def _signal(self, rule: str, i: int, limit: float, base: float | None, *,
                again: bool) -> Signal:
        per = 60.0 / self.window
        metric, value = METRICS[i], self.cur[i]
        against = (f"its ceiling of {limit * per:g}" if base is None else
                   f"{self.factor:g} times its usual {base * per:g} (median of its last "
                   f"{len(self.past)} active minutes)")
        figures: dict[str, Any] = {"metric": metric, "per_minute": round(value * per, 6),
                                   "window_s": self.window, "breaker": OPEN}
        if base is not None:
            figures["baseline_per_minute"] = round(base * per, 6)
        when = " again after its cool-down" if again else ""
        return Signal(self.name, rule, f"{metric} at {value * per:g} per minute{when}, over "
                      f"{against}; the breaker is open", evidence=tuple(self.ids),
                      figures=figures, threshold=round(limit * per, 6))


def _lowest(*limits: tuple[float | None, ...]) -> tuple[float, float, float]:
    low = [min((x for x in col if x is not None), default=math.inf) for col in zip(*limits, strict=True)]
    return low[0], low[1], low[2]


def _spent(p: Mapping[str, Any]) -> tuple[float, float]:
    """Tokens and cost of a ``model.called`` payload (anything malformed counts 0)."""
    resp = p.get("response")
    usage = resp.get("usage") if type(resp) is dict else None
    cost = p.get("cost_usd", 0.0)
    if type(cost) is not float and type(cost) is not int:
        cost = 0.0
    if type(usage) is not dict:
        return 0.0, cost
    i, o = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
    if type(i) is int and type(o) is int:
        return i + o, cost
    return 0.0, cost


register(MonitorKind(
    "runaway", Runaway, DEFAULTS, stages=(Level.ALERT, Level.PAUSE), window=512,
    doc="token, cost and step velocity against the run's own baseline and ceilings (a breaker)"))
