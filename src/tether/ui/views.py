"""What each page shows, as plain JSON-able data read through the operations façade.

The HTML pages render these, and ``/api/`` returns them as they are: a page and its
JSON never disagree. Every read is one the CLI has (``runs``, ``show``, ``events``,
``state``, ``approvals``, ``alerts``, ``impact``, ``rollback --plan``, ``report``);
what is added here is only grouping and counting for a screen. Reads over every run
are done once per page, not once per run, so an overview of a thousand runs costs a
handful of queries.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from typing import Any

from tether import approvals as ap
from tether.core.events import Event
from tether.ops import Tether
from tether.reporting import lines
from tether.reporting.overnight import spending
from tether.reporting.render import Section, sections, title
from tether.reporting.timeline import svg
from tether.runinfo import run_json
from tether.store.records import ApprovalRow, RunRow

__all__ = ["approval_view", "asked_times", "audit_status", "event_json", "needs", "overview",
           "report_data", "step_groups", "timeline_kind"]

_CATEGORY = {
    "model.called": "model", "tool.called": "tool", "policy.decided": "policy",
    "alert": "alert", "alert.acked": "alert", "message.sent": "message",
    "message.received": "message", "message.requeued": "message",
    "message.retracted": "message", "approval.requested": "approval",
    "approval.decided": "approval", "blackboard.read": "board", "blackboard.write": "board",
    "blackboard.reverted": "board",
}


def timeline_kind(kind: str) -> str:
    """The timeline's lane of an event kind: model, tool, effect, policy, alert, message,
    approval, board, or run (lifecycle and everything else)."""
    if kind.startswith("effect."):
        return "effect"
    return _CATEGORY.get(kind, "run")


def _spend(row: RunRow) -> str:
    """The run's usage against its caps (``cost_usd 0.12 of 1``), or its cost alone."""
    if row.budget:
        return spending(row.budget, row.usage)
    return f"${row.usage.get('cost_usd', 0.0):.4f}"


def asked_times(t: Tether, ids: list[str]) -> dict[str, str | None]:
    """When each approval was asked on its run's clock (:func:`tether.approvals.asked_times`)."""
    return ap.asked_times(t.store, ids)


def approval_view(t: Tether, a: ApprovalRow) -> dict[str, Any]:
    """An approval as the API and the pages show it: ``tether approvals --json``'s object
    (:func:`tether.approvals.approval_view`, with ``requested_run_time``)."""
    return ap.approval_view(t.store, a)


def needs(t: Tether) -> dict[str, Any]:
    """Everything only a person can settle, oldest first in each kind: approvals waiting,
    in-doubt effects, paused and quarantined runs with their reasons, alerts nobody acked."""
    names: dict[str, str] = {}

    def name(run_id: str) -> str:
        if run_id not in names:
            row = t.store.get_run(run_id)
            names[run_id] = row.name if row else run_id
        return names[run_id]

    approvals = [{**approval_view(t, a), "run_name": name(a.run)} for a in t.approvals()]
    in_doubt = [{"id": e.id, "run": e.run, "run_name": name(e.run), "step": e.step,
                 "tool": e.tool, "effect": e.effect, "arguments": e.arguments}
                for e in t.effects(status="in_doubt")]
    held = []
    for r in t.runs():
        q = r.spec.get("quarantined")
        if r.status == "paused" or q:
            held.append({"id": r.id, "name": r.name, "status": r.status,
                         "quarantined": bool(q), "reason": (q or {}).get("reason") or r.reason,
                         "by": (q or {}).get("by")})
    alerts = [a.to_json() for a in t.alerts(unacked=True)]
    return {"approvals": approvals, "in_doubt": in_doubt, "held": held, "alerts": alerts,
            "count": len(approvals) + len(in_doubt) + len(held) + len(alerts)}


def overview(t: Tether) -> dict[str, Any]:
    """Every swarm and run (status, step, spending against caps, alerts not acked, what
    waits for a person), with the count of what waits for a person first."""
    rows = t.runs()
    pending = Counter(a.run for a in t.approvals())
    doubt = Counter(e.run for e in t.effects(status="in_doubt"))
    unacked = Counter(a.run for a in t.alerts(unacked=True))
    runs = []
    for r in rows:
        waiting = pending[r.id] + doubt[r.id] + unacked[r.id] + (
            1 if r.status == "paused" or r.spec.get("quarantined") else 0)
        runs.append({**run_json(r), "spend": _spend(r), "alerts": unacked[r.id],
                     "waiting": waiting})
    by_swarm: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for j in runs:
        by_swarm[j["swarm"] or ""].append(j)
    settings = t.store.swarm_rows()
    swarms = []
    for sw in sorted(s for s in by_swarm if s):
        budget = (settings.get(sw) or {}).get("budget") or {}
        usage = t.store.swarm_usage(sw) if budget else {}
        members = by_swarm[sw]
        swarms.append({"name": sw, "runs": len(members),
                       "statuses": dict(Counter(j["status"] for j in members)),
                       "waiting": sum(j["waiting"] for j in members),
                       "budget": budget, "spend": spending(budget, usage) if budget else ""})
    return {"waiting": sum(j["waiting"] for j in runs), "swarms": swarms, "runs": runs}


def event_json(e: Event) -> dict[str, Any]:
    """An event as ``tether events --json`` prints it, with the timeline's lane and the
    one-line summary ``tether events`` shows."""
    return {**e.to_json(), "lane": timeline_kind(e.kind), "summary": lines.summary(e)}


def step_groups(events: list[Event]) -> list[dict[str, Any]]:
    """Events grouped by (epoch, step), in journal order: the run page's timeline."""
    out: list[dict[str, Any]] = []
    for e in events:
        if not out or (out[-1]["epoch"], out[-1]["step"]) != (e.epoch, e.step):
            out.append({"epoch": e.epoch, "step": e.step, "events": []})
        out[-1]["events"].append(event_json(e))
    return out


def _section(s: Section) -> dict[str, Any]:
    return {"title": s.title, "lines": s.lines, "sub": [_section(x) for x in s.sub]}


def report_data(t: Tether, since: float | None, until: float | None, tz: dt.tzinfo, *,
                picture: bool = False) -> dict[str, Any]:
    """The night report of ``[since, until)`` as ``tether report`` writes it, in sections
    (``picture``: with its SVG timeline, ``svg``)."""
    rep = t.night(since, until)
    out: dict[str, Any] = {"title": title(rep, tz), "since": since, "until": until,
                           "events": rep.events,
                           "sections": [_section(s) for s in sections(rep, tz)]}
    if picture:
        out["svg"] = svg(rep, tz)
    return out


def audit_status(t: Tether, last_verify: dict[str, Any] | None) -> dict[str, Any]:
    """What the store's audit trail says now: events, the last signed checkpoint, and the
    last verify this server ran (the journal keeps no record of verifies)."""
    seals = t.seals()
    last = seals[-1] if seals else None
    return {"events": t.store.event_count(),
            "last_seal": None if last is None else {"n": last.n, "size": last.size,
                                                    "root": last.root, "created": last.created},
            "last_verify": last_verify}
