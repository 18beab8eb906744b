"""What a step returns: go on, sleep until a time, wait for a message, or finish."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Continue:
    """Run the next step at once."""


@dataclass(frozen=True, slots=True)
class SleepUntil:
    """Sleep until ``at`` (seconds since the epoch, on the run's clock).

    A sleeping run holds no worker slot; the scheduler wakes it.
    """

    at: float


@dataclass(frozen=True, slots=True)
class Done:
    """The run has reached its goal."""

    result: Any = None


@dataclass(frozen=True, slots=True)
class AwaitMessages:
    """Sleep until a message arrives in the run's inbox (or until ``until``, if given).

    A waiting run holds no worker slot; a message sent to it makes it runnable.
    """

    until: float | None = None


Outcome = Continue | SleepUntil | Done | AwaitMessages


def normalize(value: object, *, run: str, step: int) -> Outcome:
    """Accept ``None`` as Continue; reject anything else that is not an outcome."""
    if value is None:
        return Continue()
    if isinstance(value, Continue | SleepUntil | Done | AwaitMessages):
        return value
    from tether.errors import UsageError
    raise UsageError(f"run {run} step {step}: a step must return None, Continue(), "
                     f"SleepUntil(t), AwaitMessages() or Done(result), not {type(value).__name__}")


def to_json(o: Outcome) -> dict[str, Any]:
    if isinstance(o, SleepUntil):
        return {"outcome": "sleep", "until": o.at}
    if isinstance(o, Done):
        return {"outcome": "done", "result": o.result}
    if isinstance(o, AwaitMessages):
        return {"outcome": "await_messages", "until": o.until}
    return {"outcome": "continue"}
