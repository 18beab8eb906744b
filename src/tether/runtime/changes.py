"""What a worker tells its operator: each run it takes and how it leaves it, and totals.

A :class:`RunChange` is handed to ``Worker(on_change=...)`` twice per drive: when the
worker takes a run (``took``) and when it lets the run go (``left``: sleeping, waiting,
awaiting approval, paused, stopped, failed, done, or ``abandoned`` when the lease was
lost or the store failed). ``tether worker`` prints them, one line each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


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
