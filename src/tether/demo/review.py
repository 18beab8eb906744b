"""The morning review of the demo's night: did the router send tickets to the wrong team?

The right team for a ticket is :func:`tether.demo.agents.team_for`; the router's
answers are in its journal (the ``message.sent`` events of its current epoch).
The first step that sent a ticket to the wrong team is the bad step: what it
reached is its impact (:mod:`tether.provenance.impact`, as ``tether impact
RUN@STEP`` reports it) and ``tether rollback RUN --to STEP-1 --cascade`` undoes
it in every run it reached (:mod:`tether.provenance.cascade`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tether.demo.agents import team_for
from tether.provenance.cascade import CascadePlan, cascade_plan
from tether.provenance.impact import Impact
from tether.store.protocol import Store
from tether.store.records import RunRow

ROUTER = "tether.demo.agents:router"


@dataclass(frozen=True, slots=True)
class Misroute:
    """A ticket the router sent to the wrong team."""

    step: int
    at: str
    """When the ticket arrived (simulated clock, HH:MM)."""
    text: str
    got: str
    want: str


@dataclass(slots=True)
class BadStep:
    """The router's first wrong step, what it reached, and how to undo it."""

    step: int
    at: str
    """The step's time on the simulated clock (HH:MM)."""
    wrong: list[Misroute]
    routed: int
    """Tickets the router routed from the bad step on."""
    plan: CascadePlan
    """The cascade rollback to just before the bad step (its origin is the router's run,
    its impact what the bad step reached)."""
    irreversible: list[str] = field(default_factory=list)
    """Effects the cascade would have to leave (why it needs --accept-irreversible)."""
    conflicts: list[str] = field(default_factory=list)
    """Files changed since the effects on them (the rollback would refuse them)."""

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


def find_bad_step(store: Store) -> BadStep | None:
    """The router's first step (in its current epoch) that misrouted a ticket, or None."""
    row = router_run(store)
    if row is None:
        return None
    wrong: list[Misroute] = []
    routed_at: dict[int, int] = {}
    times: dict[int, str] = {}
    for e in store.events(row.id):
        if e.epoch != row.epoch or e.kind != "message.sent" or not isinstance(e.payload, dict):
            continue
        body = e.payload.get("body")
        items = [i for i in body.get("routed") or [] if isinstance(i, dict)] \
            if isinstance(body, dict) else []
        routed_at[e.step] = routed_at.get(e.step, 0) + len(items)
        for item in items:
            want = team_for(str(item.get("text", "")))
            if item.get("team") != want:
                wrong.append(Misroute(e.step, str(item.get("at", "")), str(item.get("text")),
                                      str(item.get("team")), want))
                times.setdefault(e.step, e.time[11:16])  # the run's clock, when it sent it
    if not wrong:
        return None
    step = min(m.step for m in wrong)
    plan = cascade_plan(store, row.id, step - 1)  # with the impact of the bad step
    bad = BadStep(step, times.get(step, ""), wrong,
                  sum(n for s, n in routed_at.items() if s >= step), plan)
    for p in plan.plans:
        bad.irreversible += [f"{e.tool} ({p.run.name} step {e.step}, {e.status})"
                             for e in p.left]
        bad.conflicts += [f"{path} ({p.run.name} step {u.effect.step})"
                          for u in p.undo for path in u.conflicts]
    bad.irreversible += [f"run {b.run.name} cannot be rolled back far enough: {b.why}"
                         for b in plan.blocked]
    return bad
