"""Pause points: where a human looks before an always-on loop goes on.

Configured per run (``start_run(pause_points=...)``, ``tether run --pause-...``)
or as an agent's default: review every N steps or every T minutes (on the run's
clock), ask before every irreversible effect, and pause at any monitor alert.
All are off by default: ``on_alert`` too, because monitors escalate by their own
stages (alert at the first sign, pause at the second); pausing at every alert
would make each first sign a pause.
A pause point parks the run (status ``paused``, no worker slot) with a
``run.paused`` event saying which point it was; ``tether resume`` goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tether.errors import PauseRequested, UsageError

KEYS = ("every_steps", "every_minutes", "before_irreversible", "on_alert")


@dataclass(frozen=True, slots=True)
class PausePoints:
    """A run's pause points; all off by default."""

    every_steps: int | None = None
    every_minutes: float | None = None
    before_irreversible: bool = False
    on_alert: bool = False
    """Pause at the next safe point after any monitor verdict, an ``alert`` included."""

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | None) -> PausePoints:
        """From the JSON form kept in the run's spec; UsageError naming a bad key."""
        if not spec:
            return cls()
        unknown = sorted(set(spec) - set(KEYS))
        if unknown:
            raise UsageError(f"unknown pause point {unknown[0]!r}; use {', '.join(KEYS)}")
        steps, minutes = spec.get("every_steps"), spec.get("every_minutes")
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise UsageError(f"pause point every_steps must be a whole number >= 1, not {steps!r}")
        if minutes is not None and (not isinstance(minutes, int | float) or not minutes > 0):
            raise UsageError(f"pause point every_minutes must be > 0, not {minutes!r}")
        return cls(steps, None if minutes is None else float(minutes),
                   bool(spec.get("before_irreversible", False)), bool(spec.get("on_alert", False)))

    def to_json(self) -> dict[str, Any]:
        return {"every_steps": self.every_steps, "every_minutes": self.every_minutes,
                "before_irreversible": self.before_irreversible, "on_alert": self.on_alert}

    def due(self, *, step: int, now: float, spec: Mapping[str, Any]) -> PauseRequested | None:
        """The review the run owes before ``step`` starts, if any (pure)."""
        done = step - 1  # steps completed
        last_step = int(spec.get("reviewed_step", 0))
        if self.every_steps and done > 0 and done % self.every_steps == 0 and last_step < done:
            return PauseRequested(f"review point: {done} steps done (every {self.every_steps}); "
                                  "look, then `tether resume`",
                                  detail={"review": "every_steps", "at_step": done})
        last_at = spec.get("reviewed_at")
        if self.every_minutes and last_at is not None and now - float(last_at) >= \
                self.every_minutes * 60:
            return PauseRequested(f"review point: {self.every_minutes:g} minutes since the last "
                                  "review; look, then `tether resume`",
                                  detail={"review": "every_minutes", "at_step": done})
        return None
