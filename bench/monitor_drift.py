"""CPU per step of the drift monitor on the hot path: a step of 2 actions (a read's
``tool.called``, an effect's ``effect.intent``) among 7 events, fed through a Watch as
the worker's host does. ``python -m bench.monitor_drift``; prints the median of 7
runs of 3,000 steps (µs per step), for a steady run and one spread over 40 symbols.
"""

from __future__ import annotations

import random
import statistics
import time

from tether.core.events import Event
from tether.core.monitors import KINDS, View
from tether.core.monitors.watch import Watch

KINDS_OF_STEP = ("step.started", "model.called", "tool.called", "model.called",
                 "effect.intent", "effect.done", "step.finished")


def _events(steps: int, spread: int, seed: int) -> list[Event]:
    rng = random.Random(seed)
    out: list[Event] = []
    for s in range(1, steps + 1):
        for k in KINDS_OF_STEP:
            n = rng.randrange(spread)
            payload = ({"tool": f"tool{n % 8}", "fp": f"fp{n}-{s}",
                        "arguments": {"path": f"dir{n}/f{s}.txt"}}
                       if k in ("tool.called", "effect.intent") else {})
            out.append(Event(id=f"e{len(out)}", run="r", seq=len(out), epoch=0, step=s, kind=k,
                             time="", actor="system", causes=(), payload=payload,
                             payload_hash="", prev=""))
    return out


def per_step(steps: int = 3000, spread: int = 2, runs: int = 7) -> float:
    """Median µs of CPU per step."""
    events = _events(steps, spread, 1)
    kind = KINDS["drift"]
    samples = []
    for _ in range(runs):
        watch = Watch([(kind.make(dict(kind.defaults)), kind.stages)])
        view = View(run="r", agent="a", swarm=None, goal="g", epoch=0, step=1, now=0.0)
        t0 = time.process_time()
        for e in events:
            watch.observe(e, view)
        samples.append((time.process_time() - t0) / steps * 1e6)
    return statistics.median(samples)


if __name__ == "__main__":
    print(f"drift, steady (2 symbols): {per_step(spread=2):.1f} µs CPU per step")
    print(f"drift, spread (40 symbols): {per_step(spread=40):.1f} µs CPU per step")
