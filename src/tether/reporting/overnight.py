"""What happened overnight: the facts of a time window, gathered from the journal.

:func:`gather` reads the events whose time falls in the window (each run's own
clock: the demo's simulated night, not the wall clock of whoever reads the
report) and the store's current rows, and returns a :class:`NightReport`:

* what is still waiting for a human, first (approvals pending, effects in
  doubt, runs paused or quarantined, alerts nobody acked), each with the
  command that deals with it;
* per swarm and agent, each run's decisions (the gate's verdicts), effects done,
  failed and undone, approvals asked and who decided them after how long,
  alerts and what was done about them, spending against the run's caps,
  rollbacks and quarantines;
* a timeline: each run a lane, its marks (effects, alerts, approvals, pauses)
  in time order, which the renderers draw.

Nothing here writes; the renderers (:mod:`.render`) only format.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tether.alerts import ACKED_KIND, alerts
from tether.core.events import Event
from tether.core.ids import iso, parse_iso
from tether.core.monitors.watch import ALERT_KIND
from tether.store.protocol import Store
from tether.store.records import RunRow

NO_SWARM = "(no swarm)"

#: Timeline marks by event kind: (mark kind, label from the payload).
_MARKS = {"effect.done": "effect", "effect.failed": "failed", "effect.undone": "undone",
          "approval.requested": "asked", "approval.decided": "decided", ALERT_KIND: "alert",
          "run.paused": "paused", "run.resumed": "resumed", "run.quarantined": "quarantined",
          "run.released": "released", "rollback": "rollback", "run.stopped": "stopped",
          "run.finished": "finished", "run.failed": "failed"}


@dataclass(slots=True)
class Approval:
    """One approval asked in the window."""

    id: str
    run: str
    name: str
    tool: str
    effect: str
    rule: str | None
    asked: str
    decision: str | None = None
    """``approved``, ``denied``, ``expired``; None while pending."""
    by: str | None = None
    decided: str | None = None
    note: str | None = None

    @property
    def waited(self) -> float | None:
        """Seconds from the ask to the decision (run clock); None while pending."""
        if self.decided is None:
            return None
        return parse_iso(self.decided) - parse_iso(self.asked)


@dataclass(slots=True)
class Mark:
    """A point on a run's lane of the timeline."""

    time: float
    kind: str
    """``effect``, ``undone``, ``failed``, ``alert``, ``asked``, ``decided``, ``paused``..."""
    label: str
    level: str = ""
    """For effects their class; for alerts their verdict."""


@dataclass(slots=True)
class RunNight:
    """One run's share of the window."""

    row: RunRow
    agent: str
    steps: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    """Gate verdicts: allow, deny, approve, defer."""
    denied: list[str] = field(default_factory=list)
    effects: Counter[str] = field(default_factory=Counter)
    """Effects done, by class."""
    failed: int = 0
    undone: int = 0
    model_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    rollbacks: list[str] = field(default_factory=list)
    quarantines: list[str] = field(default_factory=list)
    pauses: list[str] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.row.name

    def spending(self) -> str:
        """Lifetime usage against each cap the run has (``cost_usd 0.42 of 1``)."""
        return spending(self.row.budget, self.row.usage)


@dataclass(slots=True)
class Waiting:
    """Something only a person can settle."""

    what: str
    """``approval``, ``in doubt``, ``paused``, ``quarantined``, ``alert``."""
    run: str
    since: str
    detail: str
    command: str
    """The command that deals with it."""


@dataclass(slots=True)
class NightReport:
    """Everything :func:`gather` found; see the module docstring."""

    since: float | None
    until: float | None
    events: int
    waiting: list[Waiting]
    swarms: dict[str, dict[str, list[RunNight]]]
    """Swarm -> agent -> its runs active in the window."""
    approvals: list[Approval]
    alerts: list[dict[str, Any]]
    """The window's alerts (``tether alerts --json`` shape) with ``done``: what followed."""
    shared: dict[str, str] = field(default_factory=dict)
    """Swarm -> its shared budget against what its runs used (``steps 40 of 200``)."""
    first: float | None = None
    last: float | None = None
    """Times of the window's first and last event (what the timeline spans)."""

    @property
    def runs(self) -> list[RunNight]:
        return [r for agents in self.swarms.values() for rs in agents.values() for r in rs]


def gather(store: Store, since: float | None, until: float | None) -> NightReport:
    """The report of ``[since, until)`` (seconds since the epoch, on the runs' clocks)."""
    rows = {r.id: r for r in store.list_runs()}
    events = store.events_in_window(since, until)
    night = _Night(store)
    for e in events:
        row = rows.get(e.run)
        if row is not None:
            night.take(e, row)
    found = [a.to_json() for a in alerts(store, since=since)
             if until is None or parse_iso(a.time) < until]
    for a in found:
        a["done"] = sorted(set(night.after_alert.get(a["id"], [])))
    swarms: dict[str, dict[str, list[RunNight]]] = {}
    for n in sorted(night.runs.values(), key=lambda n: (n.row.swarm or "", n.agent, n.name)):
        swarms.setdefault(n.row.swarm or NO_SWARM, {}).setdefault(n.agent, []).append(n)
    shared = {}
    for swarm in swarms:
        caps = store.swarm_budget(swarm) if swarm != NO_SWARM else {}
        if caps:
            shared[swarm] = spending(caps, store.swarm_usage(swarm))
    times = [parse_iso(e.time) for e in events]
    return NightReport(since, until, len(events), _waiting(store, rows), swarms,
                       list(night.asked.values()), found, shared=shared,
                       first=min(times, default=None), last=max(times, default=None))


class _Night:
    """The window's events folded per run, in time order."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.runs: dict[str, RunNight] = {}
        self.asked: dict[str, Approval] = {}
        self.after_alert: dict[str, list[str]] = {}
        """Alert id -> kinds of the events that followed it (naming it)."""
        self.classes: dict[str, str] = {}
        """Effect intent id -> its class (an effect's later events name their intent first)."""

    def take(self, e: Event, row: RunRow) -> None:
        n = self.runs.get(e.run)
        if n is None:
            n = self.runs[e.run] = RunNight(row, _agent_name(row))
        p = e.payload if isinstance(e.payload, dict) else {}
        k = e.kind
        if k.startswith("effect."):
            p = self._effect(n, e, p)
        elif k.startswith("approval."):
            self._approval(e, p, row)
        else:
            _tally(n, k, p)
        # What followed an alert names it as a cause, or (a pause it asked for) in its payload.
        for c in (*e.causes, p.get("alert")) if k != ACKED_KIND else ():
            if isinstance(c, str):
                self.after_alert.setdefault(c, []).append(k)
        mark = _MARKS.get(k)
        if mark is not None:
            level = str(p.get("effect") or "") if k.startswith("effect.") else \
                str(p.get("verdict") or "") if k == ALERT_KIND else ""
            n.marks.append(Mark(parse_iso(e.time), mark, _mark_label(k, p), level))

    def _effect(self, n: RunNight, e: Event, p: dict[str, Any]) -> dict[str, Any]:
        """Count an effect's event; its payload with the effect's class."""
        if e.kind == "effect.intent":
            self.classes[e.id] = str(p.get("effect") or "?")
            return p
        if not e.causes:
            return p
        intent = e.causes[0]
        if intent not in self.classes:  # the intent is before the window
            eff = self.store.effect(intent)
            self.classes[intent] = eff.effect if eff is not None else "?"
        p = {**p, "effect": self.classes[intent]}
        if e.kind == "effect.done":
            n.effects[p["effect"]] += 1
        n.undone += e.kind == "effect.undone"
        n.failed += e.kind == "effect.failed"
        return p

    def _approval(self, e: Event, p: dict[str, Any], row: RunRow) -> None:
        if e.kind == "approval.requested":
            self.asked[e.id] = Approval(e.id, e.run, row.name, str(p.get("tool")),
                                        str(p.get("effect")), p.get("rule"), e.time)
        elif e.kind == "approval.decided":
            got = self.asked.get(str(p.get("approval")))
            if got is not None:
                got.decision, got.by, got.decided, got.note = (
                    str(p.get("decision")), p.get("by"), e.time, p.get("note"))


def _tally(n: RunNight, k: str, p: dict[str, Any]) -> None:
    """Count one of a run's own events (steps, gate decisions, model calls...)."""
    if k == "step.finished":
        n.steps += 1
    elif k == "policy.decided":
        verdict = str(p.get("verdict", "?"))
        n.decisions[verdict] += 1
        if verdict == "deny":
            n.denied.append(f"{p.get('tool')} (rule {p.get('rule')}): {p.get('reason', '')}")
    elif k == "model.called":
        n.model_calls += 1
        resp = p.get("response")
        usage = resp.get("usage") if isinstance(resp, dict) else None
        usage = usage if isinstance(usage, dict) else {}
        n.input_tokens += int(usage.get("input_tokens") or 0)
        n.output_tokens += int(usage.get("output_tokens") or 0)
        n.cost_usd += float(p.get("cost_usd") or 0.0)
    elif k == "rollback":
        n.rollbacks.append(f"to step {p.get('to_step')} by {p.get('by')}: "
                           f"{len(p.get('undone') or [])} undone, "
                           f"{len(p.get('left') or [])} left")
    elif k == "run.quarantined":
        n.quarantines.append(f"by {p.get('by')}: {p.get('reason', '')}")
    elif k == "run.paused":
        n.pauses.append(str(p.get("reason", "")))


def spending(caps: dict[str, float], usage: dict[str, float]) -> str:
    """Usage against each cap: lifetime caps as ``used of cap``; rolling windows
    (``..._per_hour``) by their cap only (the window's use is the worker's to judge)."""
    out = []
    for key, cap in sorted(caps.items()):
        used = usage.get(key)
        out.append(f"{key} {used:g} of {cap:g}" if used is not None else f"{key} cap {cap:g}")
    return ", ".join(out)


def _waiting(store: Store, rows: dict[str, RunRow]) -> list[Waiting]:
    """What waits for a person now, whatever the window: the report's first section."""
    out = []
    for ap in store.approvals(status="pending"):
        name = rows[ap.run].name if ap.run in rows else ap.run
        asked = store.event(ap.id)  # the approval.requested event: its time is the run's
        out.append(Waiting("approval", name, asked.time if asked else iso(ap.requested_at),
                           f"{ap.tool} ({ap.effect}) under rule {ap.rule}",
                           f"tether approve {ap.id}  |  tether deny {ap.id} --reason ..."))
    for eff in store.effects(status="in_doubt"):
        name = rows[eff.run].name if eff.run in rows else eff.run
        out.append(Waiting("in doubt", name, iso(eff.updated),
                           f"{eff.tool} (step {eff.step}) may or may not have happened",
                           f"tether resolve {eff.id} --done | --not-done | --retry"))
    for r in rows.values():
        q = (r.spec or {}).get("quarantined")
        if q:
            out.append(Waiting("quarantined", r.name, iso(r.updated),
                               f"by {q.get('by')}: {q.get('reason', '')}",
                               f"tether impact {r.name}  |  tether quarantine {r.name} --release"))
        elif r.status == "paused":
            paused = store.events_of_kinds(("run.paused",), run=r.id)
            out.append(Waiting("paused", r.name, paused[-1].time if paused else iso(r.updated),
                               r.reason or "paused", f"tether resume {r.name}"))
    for a in alerts(store, unacked=True):
        if a.verdict != "alert" or (a.run in rows and rows[a.run].status == "paused"):
            out.append(Waiting("alert", a.name, a.time,
                               f"{a.monitor} ({a.rule}, {a.verdict}): {a.message}",
                               f"tether alerts ack {a.id}"))
    return out


def _agent_name(row: RunRow) -> str:
    return str((row.spec or {}).get("agent_name") or row.agent.rsplit(":", 1)[-1])


def _mark_label(kind: str, p: dict[str, Any]) -> str:
    if kind.startswith(("effect.", "approval.")):
        return f"{kind} {p.get('tool') or ''}".strip()
    if kind == ALERT_KIND:
        return f"alert {p.get('monitor')} ({p.get('rule')}): {p.get('verdict')}"
    if kind in ("run.paused", "run.quarantined"):
        return f"{kind}: {p.get('reason', '')}"[:120]
    return kind
