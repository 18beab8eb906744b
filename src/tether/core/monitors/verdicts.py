"""Verdicts: what a monitor's signal comes to, in increasing strength, and the ladder
that escalates repeated signals.

A monitor reports a :class:`Signal` (what it saw, the evidence and the figures);
the host turns it into a :class:`Verdict` by the monitor's *stages*: the n-th
signal of the same monitor and rule in a run takes the n-th stage (the last one
repeats). With the default stages ``("alert", "pause")`` a run is told at the
first sign and parked for a human at the second.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final


class Level(IntEnum):
    """How strongly a verdict acts, weakest first."""

    OK = 0
    ALERT = 1
    """Journaled as an ``alert`` event; operators are told (outbox, ``tether alerts``)."""
    BLOCK = 2
    """The call it was raised on does not run; the model is told why. Raised on anything
    but a proposed call, it acts as an alert."""
    PAUSE = 3
    """The run is parked at its next safe point until a human resumes it."""
    QUARANTINE = 4
    """Paused, its undelivered messages held and its writes marked suspect."""
    STOP = 5
    """Stopped for good at its next safe point."""

    @property
    def label(self) -> str:
        return self.name.lower()


LEVELS: Final = {lv.label: lv for lv in Level}
DEFAULT_STAGES: Final = (Level.ALERT, Level.PAUSE)


def parse_level(text: object, *, where: str) -> Level:
    """A level from its name; ValueError naming ``where`` and the names there are."""
    if isinstance(text, str) and text in LEVELS:
        return LEVELS[text]
    raise ValueError(f"{where}: {text!r} is not a verdict; use one of {', '.join(LEVELS)}")


@dataclass(frozen=True, slots=True)
class Signal:
    """What a monitor saw: one sign of trouble, with its evidence."""

    monitor: str
    rule: str
    """Which of the monitor's checks fired (``identical_calls``, ``no_progress``...)."""
    message: str
    """One sentence for a human: what was seen and why it matters."""
    evidence: tuple[str, ...] = ()
    """Ids of the events that show it (the ``causes`` of the ``alert`` event)."""
    figures: Mapping[str, Any] = field(default_factory=dict)
    """What the monitor measured (JSON values)."""
    threshold: Any = None
    """What the figures were held against."""
    level: Level | None = None
    """A level the monitor insists on, overriding its stages (None: the ladder decides)."""
    origin: str | None = None
    """The run the verdict applies to when it is not the observed one (upstream
    attribution through provenance links); None: the observed run."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """A signal with the strength the ladder gave it."""

    signal: Signal
    level: Level
    stage: int
    """1 for the first signal of this monitor and rule in the run, 2 for the second..."""

    def to_payload(self, **extra: Any) -> dict[str, Any]:
        """The ``alert`` event's payload (docs/events.md)."""
        s = self.signal
        out: dict[str, Any] = {"monitor": s.monitor, "rule": s.rule, "verdict": self.level.label,
                               "stage": self.stage, "message": s.message,
                               "figures": dict(s.figures), "threshold": s.threshold}
        if s.origin is not None:
            out["origin"] = s.origin
        out.update(extra)
        return out


def escalate(signal: Signal, seen: int, stages: Sequence[Level]) -> Verdict:
    """The verdict for ``signal`` when ``seen`` signals of its monitor and rule came before
    it in this run (pure)."""
    stage = seen + 1
    if signal.level is not None:
        return Verdict(signal, signal.level, stage)
    ladder = stages or DEFAULT_STAGES
    return Verdict(signal, ladder[min(seen, len(ladder) - 1)], stage)
