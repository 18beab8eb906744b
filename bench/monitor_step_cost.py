"""Monitor cost per step: CPU a built-in monitor spends on one step's events.

A step of an agent loop journals a ``model.called``, a ``tool.called`` and a
``step.finished`` (with a delta checkpoint); 3,000 such steps, seven seconds of
the run's clock apart (a window closes every eight or nine steps), are fed to a
fresh monitor built from its defaults, and the CPU time (``process_time``) per
step is the median over seven rounds. A monitor that does nothing is timed the
same way, as the floor (the cost of the calls themselves).

Usage: ``python -m bench.monitor_step_cost [NAME ...]`` (default: every
registered monitor enabled by default).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Iterable

from tether.core.events import Event
from tether.core.ids import iso
from tether.core.monitors import KINDS, Quiet, Signal, View

STEPS = 3000
ROUNDS = 7


def _event(i: int, kind: str, t: float, payload: object) -> Event:
    return Event(id=f"e{i:08d}", run="r", seq=i, epoch=0, step=i // 3, kind=kind, time=iso(t),
                 actor="agent:a", causes=(), payload=payload, payload_hash="", prev="")


def events(steps: int = STEPS, gap: float = 7.0) -> list[Event]:
    """A plausible agent loop's events: model call, read tool call, end of step."""
    out = []
    t = 1_800_000_000.0
    for s in range(steps):
        t += gap
        out.append(_event(3 * s, "model.called", t, {
            "i": 0, "fp": f"m{s}", "model": "gpt-4o-mini", "cost_usd": 0.0002, "latency_s": 0.8,
            "response": {"content": "ok", "tool_calls": [],
                         "usage": {"input_tokens": 900 + s % 50, "output_tokens": 100}}}))
        out.append(_event(3 * s + 1, "tool.called", t, {
            "i": 1, "fp": f"t{s}", "tool": "look", "arguments": {"path": f"f{s}"}, "result": "x"}))
        out.append(_event(3 * s + 2, "step.finished", t, {
            "outcome": "continue", "checkpoint": {"kind": "delta", "hash": f"{s:064x}"}}))
    return out


class Nothing(Quiet):
    name = "nothing"

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        return ()


def per_step(make: object, evs: list[Event]) -> float:
    """Median CPU microseconds per step over the rounds."""
    view = View(run="r", agent="a", swarm=None, goal="g", epoch=0, step=1, now=0.0)
    steps = len(evs) / 3
    times = []
    for _ in range(ROUNDS):
        m = make()  # type: ignore[operator]
        t0 = time.process_time()
        for e in evs:
            for _ in m.observe(e, view):
                pass
        times.append((time.process_time() - t0) / steps * 1e6)
    return statistics.median(times)


def main(names: list[str]) -> None:
    evs = events()
    names = names or [n for n, k in KINDS.items() if k.enabled]
    print(f"floor (a monitor that does nothing): {per_step(Nothing, evs):.2f} µs CPU per step")
    for n in names:
        kind = KINDS[n]
        cost = per_step(lambda kind=kind: kind.make(kind.defaults), evs)
        print(f"{n}: {cost:.2f} µs CPU per step")


if __name__ == "__main__":
    main(sys.argv[1:])
