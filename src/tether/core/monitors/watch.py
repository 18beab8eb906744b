"""A run's monitors, fed together: the pure half of hosting them.

:class:`Watch` holds the monitors that watch one run, feeds each event to each of
them, escalates what they signal by each monitor's stages and returns the
verdicts. It journals nothing and acts on nothing: the worker's host
(``runtime/monitoring.py``) journals each verdict as an ``alert`` event and acts
on it; ``tether analyze`` prints them. Both therefore judge the same events the
same way.

A monitor that raises is not allowed to take the run down with it: its exception
becomes an alert of its own (rule ``monitor_error``) and the monitor is switched
off for the rest of the watch, so one bad monitor costs one alert, not one per
event.

A monitor that declares the event kinds it looks at (``kinds``, see
:class:`~tether.core.monitors.base.Monitor`) is fed only those: the watch keeps,
per kind, the monitors to feed, so an event none of them looks at costs one dict
lookup (:meth:`Watch.wants`), and the host need not even describe the run for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tether.core.events import Event
from tether.core.monitors.asks import Ask
from tether.core.monitors.base import Monitor, Proposal, Quiet, View
from tether.core.monitors.verdicts import Level, Signal, Verdict, escalate

ALERT_KIND = "alert"


@dataclass(slots=True)
class Watched:
    """One monitor in a watch, with its stages."""

    monitor: Monitor
    stages: tuple[Level, ...]
    on: bool = True
    kinds: frozenset[str] | None = None
    """The event kinds it is fed (None: every kind)."""


def kinds_of(monitor: Monitor) -> frozenset[str] | None:
    """The event kinds ``monitor`` declares it looks at (None: every kind, the default)."""
    kinds = getattr(monitor, "kinds", None)
    if kinds is None:
        return None
    if isinstance(kinds, str) or not all(isinstance(k, str) for k in kinds):
        raise TypeError(f"monitor {getattr(monitor, 'name', monitor)!r}: kinds must be a set "
                        f"of event kinds (or None for every kind), got {kinds!r}")
    return frozenset(kinds)


class Watch:
    """The monitors of one run; see the module docstring."""

    def __init__(self, monitors: Iterable[tuple[Monitor, Sequence[Level]]]) -> None:
        self.watched = [Watched(m, tuple(st), kinds=kinds_of(m)) for m, st in monitors]
        self.seen: dict[tuple[str, str], int] = {}
        """Signals so far per (monitor, rule): the next one's stage is this plus one."""
        self._routes: dict[str, tuple[Watched, ...]] = {}
        """Per event kind, the monitors on that look at it, in order (built when a kind is
        first met; dropped when a monitor is switched off)."""
        self._proposers: tuple[Watched, ...] | None = None
        """The monitors on that judge proposed calls (built when first asked)."""

    def __bool__(self) -> bool:
        return any(w.on for w in self.watched)

    def route(self, kind: str) -> tuple[Watched, ...]:
        """The monitors an event of ``kind`` is fed to, in the watch's order."""
        r = self._routes.get(kind)
        if r is None:
            r = self._routes[kind] = tuple(
                w for w in self.watched if w.on and (w.kinds is None or kind in w.kinds))
        return r

    def wants(self, kind: str) -> bool:
        """Whether an event of ``kind`` means anything to the watch (a monitor looks at it,
        or it is an ``alert`` to count): if not, :meth:`observe` would do nothing with it."""
        r = self._routes.get(kind)
        return bool(r if r is not None else self.route(kind)) or kind == ALERT_KIND

    def observe(self, event: Event, view: View) -> list[Verdict]:
        """Feed ``event`` to the monitors that look at its kind; the verdicts it gives,
        strongest last.

        ``alert`` events are not fed (a monitor never judges verdicts); they only
        count towards the stage of the next signal of the same monitor and rule.
        """
        kind = event.kind
        if kind == ALERT_KIND:
            self.count(event)
            return []
        # The hot path: every event of every run, so no closure and no list per monitor
        # (most monitors say nothing about most events).
        out: list[Verdict] | None = None
        for w in self._routes.get(kind) or self.route(kind):
            try:
                signals = tuple(w.monitor.observe(event, view))
            except Exception as exc:  # a monitor's bug is an alert, never a crashed worker
                signals = (self._broken(w, exc, event.id),)
            if signals:
                out = out if out is not None else []
                out.extend(self._escalate(w, signals))
        return sorted(out, key=lambda v: v.level) if out else []

    def propose(self, call: Proposal, view: View) -> list[Verdict]:
        """Ask every monitor about ``call`` before it runs; its verdicts, strongest last."""
        out: list[Verdict] | None = None
        proposers = self._proposers
        if proposers is None:  # a Quiet monitor never judges a call: not asked
            proposers = self._proposers = tuple(
                w for w in self.watched if w.on and _judges_calls(w.monitor))
        for w in proposers:
            try:
                signals = tuple(w.monitor.propose(call, view))
            except Exception as exc:
                signals = (self._broken(w, exc, None),)
            if signals:
                out = out if out is not None else []
                out.extend(self._escalate(w, signals))
        return sorted(out, key=lambda v: v.level) if out else []

    def warm(self, event: Event, view: View) -> None:
        """Feed an event seen before (a worker taking the run over): state only, no
        verdicts; an ``alert`` counts towards the stages as it did then."""
        if event.kind == ALERT_KIND:
            self.count(event)
            return
        for w in self.route(event.kind):
            try:
                for _ in w.monitor.observe(event, view):
                    pass
            except Exception:  # it raised the first time too, and said so then
                self._off(w)

    def count(self, alert: Event) -> None:
        """Count a journaled ``alert`` towards its monitor and rule's stages."""
        p = alert.payload if isinstance(alert.payload, dict) else {}
        key = (str(p.get("monitor")), str(p.get("rule")))
        self.seen[key] = max(self.seen.get(key, 0), int(p.get("stage") or 0))

    def _off(self, w: Watched) -> None:
        """Switch a monitor off: no route holds it from now on (the loop that met its
        error goes on over the route it started with, past it)."""
        w.on = False
        self._routes.clear()
        self._proposers = None

    def _broken(self, w: Watched, exc: Exception, at: str | None) -> Signal:
        """The alert a raising monitor gives; it is off for the rest of the watch."""
        self._off(w)
        name = getattr(w.monitor, "name", type(w.monitor).__name__)
        return Signal(name, "monitor_error", f"monitor {name!r} raised {type(exc).__name__}: "
                      f"{exc}; it is off for this run until the worker takes the run again",
                      evidence=(at,) if at else (), level=Level.ALERT)

    def _escalate(self, w: Watched, signals: Iterable[Signal]) -> list[Verdict]:
        out = []
        for s in signals:
            key = (s.monitor, s.rule)
            n = self.seen.get(key, 0)
            self.seen[key] = n + 1
            out.append(escalate(s, n, w.stages))
        return out

    # -- asks (I/O a monitor needs; core/monitors/asks.py) ---------------------
    def asking(self) -> bool:
        """Whether a monitor here may ask for I/O (the host needs setting up)."""
        return any(w.on and getattr(w.monitor, "asking", False) for w in self.watched)

    def asks(self) -> list[Ask]:
        """Every asking monitor's asks made since the last call, in monitor order. A
        monitor whose ``asks`` raises is off, like one whose ``observe`` does (its alert
        is not given here: the next event it would have judged goes without it)."""
        out: list[Ask] = []
        for w in self.watched:
            if w.on and getattr(w.monitor, "asking", False):
                try:
                    out.extend(w.monitor.asks())  # type: ignore[attr-defined]
                except Exception:  # a monitor's bug never takes the worker down
                    self._off(w)
        return out


def _judges_calls(monitor: Monitor) -> bool:
    """Whether ``monitor.propose`` may say anything (a :class:`Quiet` one's never does)."""
    own = getattr(monitor, "__dict__", {})
    return "propose" in own or getattr(type(monitor), "propose", None) is not Quiet.propose
