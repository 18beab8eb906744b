"""Micro-benchmark: the CPU the ``loops`` and ``pingpong`` monitors cost per step.

A typical agent step, as the worker feeds it to a run's monitors through
:class:`~tether.core.monitors.watch.Watch`: ``step.started``, ``model.called`` (an answer
asking for two tools), the read's proposal and ``tool.called`` (a result of ~200
characters with a timestamp in it), the write's proposal, ``effect.intent`` and
``effect.done``, ``step.finished``: 6 events and 2 proposals. Every step reads and
writes other paths, so nothing is flagged (the common case). Prints microseconds per
step, the median of 5 rounds of 2,000 steps, for each monitor alone and both together.

    .venv/bin/python -m bench.monitor_loops
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from tether.core.events import Event
from tether.core.monitors import Level, Monitor, Proposal, View
from tether.core.monitors.loops import Loops
from tether.core.monitors.pingpong import PingPong
from tether.core.monitors.watch import Watch

STEPS = 2_000
ROUNDS = 5


def _event(seq: int, step: int, kind: str, payload: Any) -> Event:
    return Event(id=f"01M8Q5TPY0Z67HCYKBAE{seq:06d}", run="r", seq=seq, epoch=0, step=step,
                 kind=kind, time="2026-12-04T10:00:00.000000Z", actor="agent:a", causes=(),
                 payload=payload, payload_hash="", prev="", hash="")


def _step(n: int, seq: int) -> list[Event | Proposal]:
    read = {"path": f"tickets/{n}.json"}
    write = {"path": f"notes/{n}.md", "content": f"- ticket {n}: routed to billing\n"}
    answer = {"content": f"Ticket {n} looks like a billing question; noting it.",
              "tool_calls": [{"id": f"c{n}", "name": "fs_read", "arguments": str(read)}],
              "usage": {"input_tokens": 900, "output_tokens": 40}, "model": "m",
              "finish_reason": "tool_calls"}
    result = (f'{{"id": "01M8Q43S408EPJAC6445Y4X{n % 1000:03d}", "subject": "Invoice {n} '
              f'charged twice", "received": "2026-12-04T09:{n % 60:02d}:00Z", "body": "Hello, '
              'my card was charged twice for the same invoice, please refund one."}')
    return [
        _event(seq, n, "step.started", {}),
        _event(seq + 1, n, "model.called", {"i": 0, "fp": f"model:m:{n:032x}", "model": "m",
                                            "response": answer, "cost_usd": 0.001,
                                            "latency_s": 0.4}),
        Proposal(1, "fs_read", "read", read, f"tool:fs_read:{n:032x}"),
        _event(seq + 2, n, "tool.called", {"i": 1, "fp": f"tool:fs_read:{n:032x}",
                                           "tool": "fs_read", "arguments": read,
                                           "result": result}),
        Proposal(2, "fs_append", "reversible", write, f"effect:fs_append:{n:032x}"),
        _event(seq + 3, n, "effect.intent", {"i": 2, "fp": f"effect:fs_append:{n:032x}",
                                             "tool": "fs_append", "effect": "reversible",
                                             "idempotent": False, "arguments": write}),
        _event(seq + 4, n, "effect.done", {"i": 2, "result": f"appended 40 bytes to notes/{n}.md",
                                           "undo": None, "after": {}}),
        _event(seq + 5, n, "step.finished", {"checkpoint": {}}),
    ]


def _rounds(make: Callable[[], list[Monitor]], *, direct: bool = False) -> float:
    """Median µs per step of feeding the steps to a Watch of ``make()``'s monitors (or,
    ``direct``, to the monitors themselves: their own cost, without the Watch's)."""
    steps = [_step(n, 6 * n + 1) for n in range(1, STEPS + 1)]
    view = View(run="r", agent="a", swarm="s", goal="g", epoch=0, step=1, now=0.0)
    out = []
    for _ in range(ROUNDS):
        monitors = make()
        watch = Watch([(m, (Level.ALERT,)) for m in monitors])
        t0 = time.process_time()
        for items in steps:
            for x in items:
                flagged: list[Any] = []
                if direct:
                    for m in monitors:
                        flagged += m.propose(x, view) if isinstance(x, Proposal) else \
                            m.observe(x, view)
                else:
                    flagged = list(watch.propose(x, view) if isinstance(x, Proposal) else
                                   watch.observe(x, view))
                assert not flagged, flagged
        out.append((time.process_time() - t0) / STEPS * 1e6)
    return statistics.median(out)


def main() -> None:
    kinds: dict[str, Callable[[], list[Monitor]]] = {
        "loops": lambda: [Loops()], "pingpong": lambda: [PingPong()],
        "both": lambda: [Loops(), PingPong()]}
    base, bare = _rounds(list), _rounds(list, direct=True)
    print("µs of CPU per step (6 events, 2 proposals), over an empty watch / a bare loop")
    for name, make in kinds.items():
        print(f"{name:9} through the Watch {_rounds(make) - base:5.1f}   the monitors alone "
              f"{_rounds(make, direct=True) - bare:5.1f}")


if __name__ == "__main__":
    main()
