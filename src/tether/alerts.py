"""Operators' side of monitor alerts: list them, ack them.

An alert is the ``alert`` event a monitor's verdict was journaled as (in the
alerted run's chain, citing its evidence). Acking one records who looked: an
``alert.acked`` event in the same run's chain, applied like any operator command
(here, under the run's lease, when no worker owns the run; else by its worker at
the run's next safe point), so it works whatever state the run is in, a finished
one included. An alert is acked once: a second ack is refused, naming who acked
it first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tether.core.monitors.watch import ALERT_KIND
from tether.errors import NotFound, UsageError
from tether.runtime.commands import acked_already
from tether.runtime.operator import CommandResult, find_run, send_command
from tether.store.protocol import Store
from tether.store.records import RunRow

ACKED_KIND = "alert.acked"


@dataclass(frozen=True, slots=True)
class AlertRow:
    """One alert, as operators list it."""

    id: str
    """The ``alert`` event's id (what ``tether alerts ack`` takes)."""
    run: str
    name: str
    """The run's name."""
    agent: str
    step: int
    time: str
    """When it was journaled (ISO-8601 UTC, the run's clock)."""
    monitor: str
    rule: str
    verdict: str
    """``alert``, ``block``, ``pause``, ``quarantine`` or ``stop``."""
    message: str
    evidence: tuple[str, ...]
    """Ids of the events that show it (the alert's causes)."""
    payload: dict[str, Any]
    """The whole ``alert`` payload (stage, figures, threshold, origin...)."""
    acked_by: str | None = None
    acked_at: str | None = None
    note: str | None = None

    @property
    def origin(self) -> str | None:
        """The run the verdict names as the cause, when not the alerted run."""
        o = self.payload.get("origin")
        return str(o) if o else None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "run": self.run, "name": self.name, "agent": self.agent,
                "step": self.step, "time": self.time, "monitor": self.monitor,
                "rule": self.rule, "verdict": self.verdict, "stage": self.payload.get("stage"),
                "message": self.message, "evidence": list(self.evidence),
                "figures": self.payload.get("figures"), "threshold": self.payload.get("threshold"),
                "origin": self.origin, "acked_by": self.acked_by, "acked_at": self.acked_at,
                "note": self.note}


def alerts(store: Store, *, run: str | None = None, since: float | None = None,
           unacked: bool = False) -> list[AlertRow]:
    """Alerts, oldest first (of ``run``, a reference :func:`find_run` takes; journaled at or
    after ``since``, seconds since the epoch; only those nobody acked)."""
    run_id = find_run(store, run).id if run else None
    acks = {str(e.payload.get("alert")): e for e in store.events_of_kinds((ACKED_KIND,), run=run_id)
            if isinstance(e.payload, dict)}
    rows: dict[str, RunRow | None] = {}
    out = []
    for e in store.events_of_kinds((ALERT_KIND,), run=run_id, since=since):
        if not isinstance(e.payload, dict):
            continue  # an erased payload is no alert to act on
        if e.run not in rows:
            rows[e.run] = store.get_run(e.run)
        a = _row(e.id, e.run, e.step, e.time, e.causes, e.payload, rows[e.run], acks.get(e.id))
        if not (unacked and a.acked_by):
            out.append(a)
    return out


def _row(id_: str, run: str, step: int, time: str, causes: tuple[str, ...],
         p: dict[str, Any], row: RunRow | None, ack: Any) -> AlertRow:
    a = ack.payload if ack is not None else {}
    return AlertRow(id=id_, run=run, name=row.name if row else run,
                    agent=_agent(row), step=step, time=time,
                    monitor=str(p.get("monitor", "?")), rule=str(p.get("rule", "?")),
                    verdict=str(p.get("verdict", "alert")), message=str(p.get("message", "")),
                    evidence=causes, payload=p, acked_by=a.get("by"),
                    acked_at=ack.time if ack is not None else None, note=a.get("note"))


def _agent(row: RunRow | None) -> str:
    """The agent's name (as it was defined), else the reference the run was started with."""
    if row is None:
        return "?"
    return str(row.spec.get("agent_name") or row.agent.rsplit(":", 1)[-1])


def find_alert(store: Store, ref: str) -> tuple[str, str]:
    """(alert id, its run) by the alert event's id; NotFound naming it otherwise."""
    e = store.event(ref) or store.event(ref.upper())
    if e is None or e.kind != ALERT_KIND:
        what = f"event {ref} is a {e.kind!r} event, not an alert" if e is not None \
            else f"no alert {ref!r} in {store.url}"
        raise NotFound(f"{what}; list alerts with `tether alerts`")
    return e.id, e.run


def ack(store: Store, ref: str, *, who: str, note: str | None = None,
        wait: float = 5.0) -> CommandResult:
    """Record that ``who`` looked at alert ``ref``; UsageError if it was acked already."""
    alert, run = find_alert(store, ref)
    done = acked_already(store, run, alert)
    if done is not None:
        raise UsageError(f"run {run}: {done.removeprefix('ignored: ')}; nothing to do")
    res = send_command(store, run, "ack", {"alert": alert, "note": note}, who=who, wait=wait)
    if res.outcome.startswith("ignored"):  # another ack got there first
        raise UsageError(f"run {run}: {res.outcome.removeprefix('ignored: ')}; nothing to do")
    return res
