"""Operators' commands, decided: whether one applies to a run, and where a resume goes.

Pure: the runtime (``runtime/commands.py``) journals what these decide, at a safe
point of whoever holds the run's lease.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from tether.core.statuses import ACTIVE_STATUSES, CLOSED_STATUSES

KINDS: Final = ("pause", "resume", "stop", "budget", "ack", "quarantine")
"""``ack``: an operator looked at a monitor's alert (``args``: ``alert``, ``note``).
``quarantine``: a monitor's verdict naming this run as the origin of what it saw in
another (``args``: ``alert``, ``run``, ``verdict``, ``monitor``, ``rule``): pause it
and contain it, in one commit."""


def decide(kind: str, status: str, spec: Mapping[str, object]) -> str:
    """``applied``, or why a ``kind`` command leaves a run in ``status`` as it is."""
    if kind not in KINDS:
        return f"ignored: unknown command {kind!r}"
    if status in CLOSED_STATUSES and kind not in ("budget", "ack"):
        return f"ignored: the run is {status}"
    if kind == "quarantine" and spec.get("quarantined"):
        return "ignored: the run is quarantined already"
    if kind == "pause" and status not in ACTIVE_STATUSES:
        return f"ignored: the run is {status}"
    if kind == "resume" and status in ACTIVE_STATUSES:
        return f"ignored: the run is already {status}"
    marker = spec.get("rolling_back")
    if kind == "resume" and marker is not None:
        to = marker.get("to") if isinstance(marker, dict) else marker
        return (f"ignored: a rollback to step {to} is unfinished; run `tether rollback` "
                "again to finish it")
    return "applied"


def resumed_status(*, paused_waiting: bool, wake_at: float | None, now: float) -> str:
    """Where a resumed run goes: back to waiting for its inbox if it was paused while
    waiting, back to sleep if its wake time is still ahead, else running."""
    # A waiting run keeps its deadline even when it passed while paused: it is then
    # runnable at once (the step sees no message and decides what a timeout means).
    if paused_waiting:
        return "waiting"
    return "sleeping" if wake_at is not None and wake_at > now else "running"
