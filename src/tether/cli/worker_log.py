"""``tether worker``'s log: one line per change of a run's state, and a summary at exit.

Text (the default), ``--quiet`` (errors and the summary only) or ``--json`` (one
JSON object per line, the summary last, for log collectors).
"""

from __future__ import annotations

import time
from typing import Any

from rich.markup import escape

from tether.cli.common import STATUS_STYLE, console, print_jsonl, status, when
from tether.runtime.changes import RunChange, WorkerStats

_ERRORS = frozenset({"failed", "abandoned"})
"""How a run can be left that an operator must hear about even with ``--quiet``."""


def _what(c: RunChange) -> str:
    """The change in words, e.g. ``sleeping until 2026-12-01 06:00:00``."""
    if c.kind == "took":
        return f"took it at step {c.step} ({c.status})"
    why = f": {c.reason}" if c.reason else ""
    if c.status == "sleeping":
        return f"sleeping until {when(c.wake_at)}" + (f" ({c.reason})" if c.reason else "")
    if c.status == "waiting":
        return "waiting for messages" + (f" until {when(c.wake_at)}" if c.wake_at else "")
    if c.status == "awaiting_approval":
        return f"awaiting approval{why}"
    if c.status == "abandoned":
        return "abandoned (lease lost or store failing; the next owner re-runs the step)"
    if c.status == "done":
        return "done"
    if c.status == "running":  # the worker is stopping: the run is left at a safe point
        return "left running (this worker stops; any worker goes on with it)"
    return f"{c.status}{why}"


def _counts(c: RunChange) -> str:
    if c.kind == "took":
        return ""
    return f" [{c.steps} step{'s' * (c.steps != 1)}, {c.effects} effect" \
           f"{'s' * (c.effects != 1)}]"


class WorkerLog:
    """Prints a worker's changes as they come; :meth:`summary` at the end."""

    def __init__(self, *, quiet: bool = False, json: bool = False) -> None:
        self.quiet = quiet
        self.json = json

    def start(self, owner: str, store_url: str, policies: list[str]) -> None:
        """The first lines: which worker, on which store, under which policies (the hash
        each scope runs under, said even with --quiet)."""
        if self.json:
            print_jsonl([{"event": "start", "time": time.time(), "worker": owner,
                          "store": store_url, "policies": policies}])
            return
        if not self.quiet:
            console.print(f"worker {owner} on {escape(store_url)}", highlight=False,
                          soft_wrap=True)
        for p in policies:
            console.print(f"runs under the {escape(p)}", highlight=False, soft_wrap=True)

    def change(self, c: RunChange) -> None:
        """One run taken or left (``Worker(on_change=...)``)."""
        if self.json:
            print_jsonl([{**c.to_json(), "time": time.time()}])
            return
        error = c.kind == "left" and c.status in _ERRORS
        if self.quiet and not error:
            return
        style = STATUS_STYLE.get(c.status, "red") if c.kind == "left" else "bold"
        console.print(f"{time.strftime('%H:%M:%S', time.gmtime())} run {escape(c.name)} ({c.run}): "
                      f"[{style}]{escape(_what(c))}[/]{_counts(c)}", highlight=False,
                      soft_wrap=True)

    def summary(self, stats: WorkerStats, *, failed: bool = False) -> None:
        """How many runs, steps and effects, and where the runs were left; ``failed``: the
        worker stopped on an error (said on the next line, stderr)."""
        end = "worker stopped on an error" if failed else "worker done"
        by: dict[str, int] = {}
        for st in stats.final.values():
            by[st] = by.get(st, 0) + 1
        if self.json:
            data: dict[str, Any] = {"event": "summary", "time": time.time(),
                                    "runs": len(stats.final), "takes": stats.runs_driven,
                                    "steps": stats.steps, "effects": stats.effects,
                                    "by_status": dict(sorted(by.items())),
                                    "failed": failed}
            print_jsonl([data])
            return
        if not stats.final:
            console.print(f"{end}: nothing was runnable", highlight=False)
            return
        left = ", ".join(f"{n} {status(st)}" for st, n in sorted(by.items()))
        takes = "" if stats.runs_driven == len(stats.final) else \
            f" (taken {stats.runs_driven} times: a run that sleeps and wakes is taken again)"
        console.print(f"{end}: drove {len(stats.final)} run"
                      f"{'s' * (len(stats.final) != 1)}{takes}, {stats.steps} step"
                      f"{'s' * (stats.steps != 1)}, "
                      f"{stats.effects} effect{'s' * (stats.effects != 1)}; left {left}",
                      highlight=False, soft_wrap=True)

