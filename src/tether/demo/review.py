"""The morning review of the demo's night: what the monitors caught while it ran.

The router's answers are checked by the invariant the demo's policy declares
(``tether.toml``, ``[monitors.agent.router.invariants]``); nothing here judges a
ticket. The review reads the alert the invariant raised from the router's journal
(its current epoch): the step it broke at is the bad step, the alert's causes are
its evidence, what that step reached is its impact
(:mod:`tether.provenance.impact`, as ``tether impact RUN@STEP`` reports it) and
``tether rollback RUN --to STEP-1 --cascade`` undoes it in every run it reached
(:mod:`tether.provenance.cascade`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tether.core.events import Event
from tether.provenance.cascade import CascadePlan, cascade_plan
from tether.provenance.impact import Impact
from tether.store.protocol import Store
from tether.store.records import RunRow

ROUTER = "tether.demo.agents:router"


@dataclass(slots=True)
class BadStep:
    """The router's step an invariant caught, what it reached, and how to undo it."""

    alert: Event
    """The ``alert`` event (monitor ``invariants``)."""
    at: str
    """The step's time on the simulated clock (HH:MM)."""
    evidence: list[str]
    """The kinds of the alert's causes, counted (``2 model.called``...)."""
    quarantined: bool
    """The verdict quarantined the router (the demo's policy says so)."""
    plan: CascadePlan
    """The cascade rollback to just before the bad step (its origin is the router's run,
    its impact what the bad step reached)."""
    irreversible: list[str] = field(default_factory=list)
    """Effects the cascade would have to leave (why it needs --accept-irreversible)."""
    conflicts: list[str] = field(default_factory=list)
    """Files changed since the effects on them (the rollback would refuse them)."""

    @property
    def step(self) -> int:
        return self.alert.step

    @property
    def payload(self) -> dict[str, Any]:
        return self.alert.payload if isinstance(self.alert.payload, dict) else {}

    @property
    def offending(self) -> dict[str, Any]:
        """The item the invariant broke on (the router's ``{"text", "team"}``), if any."""
        off = (self.payload.get("figures") or {}).get("offending") or {}
        item = next(iter(off.values()), None) if isinstance(off, dict) else None
        return item if isinstance(item, dict) else {}

    @property
    def run(self) -> RunRow:
        return self.plan.origin

    @property
    def impact(self) -> Impact:
        return self.plan.impact

    @property
    def to_step(self) -> int:
        return self.plan.to_step


def router_run(store: Store) -> RunRow | None:
    runs = [r for r in store.list_runs() if r.agent == ROUTER]
    return max(runs, key=lambda r: (r.created, r.id)) if runs else None


def _caught(row: RunRow, events: list[Event]) -> Event | None:
    """The first alert of an invariant that broke in the run's current epoch."""
    for e in events:
        p = e.payload if isinstance(e.payload, dict) else {}
        if e.epoch == row.epoch and e.kind == "alert" and p.get("monitor") == "invariants" \
                and p.get("rule") != "monitor_error":
            return e
    return None


def find_bad_step(store: Store) -> BadStep | None:
    """The router's step an invariant caught (in its current epoch), or None."""
    row = router_run(store)
    if row is None:
        return None
    events = store.events(row.id)
    alert = _caught(row, events)
    if alert is None:
        return None
    kinds = {e.id: e.kind for e in events}
    counted = Counter(kinds.get(c, "event") for c in alert.causes)
    evidence = [f"{n} {k}" if n > 1 else k for k, n in counted.items()]
    plan = cascade_plan(store, row.id, alert.step - 1)  # with the impact of the bad step
    quarantined = bool((row.spec or {}).get("quarantined"))
    bad = BadStep(alert, alert.time[11:16], evidence, quarantined, plan)
    for p in plan.plans:
        bad.irreversible += [f"{e.tool} ({p.run.name} step {e.step}, {e.status})"
                             for e in p.left]
        bad.conflicts += [f"{path} ({p.run.name} step {u.effect.step})"
                          for u in p.undo for path in u.conflicts]
    bad.irreversible += [f"run {b.run.name} cannot be rolled back far enough: {b.why}"
                         for b in plan.blocked]
    return bad
