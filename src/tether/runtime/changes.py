"""What a worker tells its operator: each run it takes and how it leaves it, and totals.

A :class:`RunChange` is handed to ``Worker(on_change=...)`` twice per drive: when the
worker takes a run (``took``) and when it lets the run go (``left``: sleeping, waiting,
awaiting approval, paused, stopped, failed, done, or ``abandoned`` when the lease was
lost or the store failed). ``tether worker`` prints them, one line each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from tether.store.records import RunRow

log = logging.getLogger("tether.worker")


@dataclass(frozen=True, slots=True)
class RunChange:
    """One change of a run's state in a worker."""

    kind: Literal["took", "left"]
    """``took``: the worker took the run's lease; ``left``: it let the run go."""
    run: str
    name: str
    status: str
    """The run's status now (``abandoned``: the worker lost the run mid-way)."""
    step: int
    """The last completed step."""
    steps: int = 0
    """Steps completed while the worker held the run (``left`` only)."""
    effects: int = 0
    """Effects (tool calls that change the world) run while it held the run."""
    reason: str = ""
    """Why it paused, failed, stopped, sleeps (deferred) or waits for approval."""
    wake_at: float | None = None
    """When a sleeping run wakes, or a waiting run's deadline (run clock)."""

    def to_json(self) -> dict[str, Any]:
        """The JSON form (``tether worker --json``)."""
        return {"event": self.kind, "run": self.run, "name": self.name, "status": self.status,
                "step": self.step, "steps": self.steps, "effects": self.effects,
                "reason": self.reason, "wake_at": self.wake_at}


@dataclass(slots=True)
class WorkerStats:
    """What a worker did, for the CLI and the benchmark."""

    runs_driven: int = 0
    """Takes: a run that waits and wakes is taken again."""
    finished: dict[str, int] | None = None
    """How the runs were left, by status, once per take."""
    steps: int = 0
    """Steps completed."""
    effects: int = 0
    """Effects run (tool calls that change the world)."""
    final: dict[str, str] = field(default_factory=dict)
    """Each run driven and the status it was last left in."""


class DriveLog:
    """A worker's bookkeeping of its drives: the steps and effects of each, the totals, the
    status each run was last left in; and the ``on_change`` calls."""

    def __init__(self, on_change: Callable[[RunChange], None] | None = None) -> None:
        self.on_change = on_change
        self.steps = 0
        self.effects = 0
        self.final: dict[str, str] = {}
        self._took: dict[str, int] = {}  # run -> its step when taken

    def took(self, row: RunRow) -> None:
        """The worker took ``row``'s run."""
        self._took[row.id] = row.step
        self._tell(RunChange("took", row.id, row.name, row.status, row.step))

    def left(self, row: RunRow, status: str, effects: int) -> None:
        """The worker let the run go, ``status`` (``abandoned`` if lost) after ``effects``."""
        steps = max(0, row.step - self._took.pop(row.id, row.step))
        self.steps += steps
        self.effects += effects
        self.final[row.id] = status
        self._tell(RunChange("left", row.id, row.name, status, row.step, steps, effects,
                             row.reason, row.wake_at))

    def _tell(self, change: RunChange) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(change)
        except Exception as exc:  # a broken log (a closed pipe) must not stop the runs
            log.warning("reporting a change of run %s failed: %s: %s", change.run,
                        type(exc).__name__, exc)
