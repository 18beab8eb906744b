"""The demo's night does not depend on which of two runs that wake at the same moment
the worker happens to get to first: ingest drops tickets on the hour, when triage wakes
too, and the night ends the same whichever of them reaches the inbox first (it once
ended with triage a step earlier when ingest was first: the demo's summary, and the
kill-and-rerun and full-disk tests that compare two nights, then differed by chance)."""

from __future__ import annotations

import asyncio
import io
import threading
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tether.demo import agents
from tether.demo.night import run_night
from tether.runtime.outcome import SleepUntil


class _Order:
    """Holds one of the two runs at each moment both are due, until the other's step
    there has ended (a barrier on the run clock, no timing)."""

    def __init__(self, first: str) -> None:
        self.first = first
        # When each run is next due (ingest and triage both start at 21:00); None: not due.
        self.due: dict[str, float | None] = {"ingest": agents.NIGHT_START,
                                             "triage": agents.NIGHT_START}
        self.changed = threading.Condition()

    def wait_turn(self, name: str) -> None:
        """Blocking: until ``name`` may step (the other run is not due when it is)."""
        other = "triage" if name == "ingest" else "ingest"
        with self.changed:
            self.changed.wait_for(lambda: name == self.first or self.due[other] is None
                                  or self.due[other] != self.due[name])

    def stepped(self, name: str, outcome: Any) -> None:
        with self.changed:
            self.due[name] = outcome.at if isinstance(outcome, SleepUntil) else None
            self.changed.notify_all()


def _ordered(monkeypatch: pytest.MonkeyPatch, first: str) -> None:
    order = _Order(first)
    ingest, triage = agents.ingest_step, agents.triage_step

    def ingest_step(ctx: Any, state: dict[str, Any]) -> Any:  # on a step thread of its own
        order.wait_turn("ingest")
        outcome: Any = None
        try:
            outcome = ingest(ctx, state)
            return outcome
        finally:
            order.stepped("ingest", outcome)

    async def triage_step(ctx: Any, state: dict[str, Any]) -> Any:
        await asyncio.to_thread(order.wait_turn, "triage")
        outcome: Any = None
        try:  # a step that waits for an approval ends here too: triage is then not due
            outcome = await triage(ctx, state)
            return outcome
        finally:
            order.stepped("triage", outcome)

    monkeypatch.setattr(agents, "ingest_step", ingest_step)
    monkeypatch.setattr(agents, "triage_step", triage_step)


def _night(folder: Path) -> tuple[dict[str, tuple[str, int]], str]:
    """Each run's status and step by name, and triage's notes."""
    quiet = Console(file=io.StringIO())
    night = asyncio.run(run_night(folder, model=agents.scripted(), console=quiet, quiet=True))
    try:
        runs = {r.name: (r.status, r.step) for r in night.store.list_runs()}
    finally:
        night.store.close()
    return runs, (folder / "workspace" / "notes" / "triage.md").read_text()


def test_the_night_is_the_same_whichever_run_reaches_the_inbox_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        _ordered(m, "triage")
        triage_first = _night(tmp_path / "triage-first")
    with monkeypatch.context() as m:
        _ordered(m, "ingest")
        ingest_first = _night(tmp_path / "ingest-first")
    assert ingest_first == triage_first
    # The night as the demo tells it: the security ticket (02:00) is triaged at 02:30, where
    # triage waits for a human's approval to page.
    assert triage_first[0]["triage"] == ("awaiting_approval", 11)
    assert "- [02:30] urgent: Security" in triage_first[1]
