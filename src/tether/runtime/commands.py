"""Operators' commands, applied by whoever owns the run at a safe point.

A command is written to the command table by any process (CLI now, web
later), never into the run's chain directly: only the lease holder appends to
a chain. Applying one journals a ``command`` event naming who asked, then the
status change it implies.
"""

from __future__ import annotations

import dataclasses

from tether.core import budget as budgets
from tether.core.commands import KINDS as KINDS  # what ops offers operators
from tether.core.commands import decide, resumed_status
from tether.runtime.journal import RunJournal
from tether.store.protocol import Store
from tether.store.records import Command
from tether.system_clock import SYSTEM_CLOCK


def apply(j: RunJournal, c: Command, *, step: int | None = None) -> str:
    """Journal and apply ``c`` to the run behind ``j``; return what happened. The status
    change is the event's fold (:mod:`tether.core.fold`)."""
    status = j.row.status
    outcome = decide(c.kind, status, j.row.spec)
    if outcome == "applied" and c.kind == "ack":  # once per alert
        outcome = acked_already(j.store, j.run, str(c.args.get("alert"))) or outcome
    ev = j.append("command", {"command": c.id, "kind": c.kind, "args": c.args,
                              "outcome": outcome}, step=step, actor=c.actor)
    j.command_applied(c.id)
    if outcome != "applied":
        return outcome
    who = c.actor
    if c.kind == "pause":
        j.append("run.paused", {"reason": f"paused by {who}"}, step=step, causes=(ev.id,))
        if status == "waiting":  # resumed, it waits for its inbox again
            j.update(spec={**j.row.spec, "paused_waiting": True})
    elif c.kind == "resume":
        # A message that came while it was paused makes a waiting run runnable at once.
        spec = dict(j.row.spec)
        to = resumed_status(paused_waiting=bool(spec.pop("paused_waiting", False)),
                            wake_at=j.row.wake_at, now=j.now())
        j.append("run.resumed", {"by": who, "from": status, "to": to}, step=step,
                 causes=(ev.id,))
        if c.args.get("accept_change"):
            spec["accept_definition_change"] = True
        j.update(spec=spec)
    elif c.kind == "stop":
        cancel_pending(j.store, j, "the run was stopped", who)
        j.append("run.stopped", {"reason": f"stopped by {who}"}, step=step, causes=(ev.id,))
    elif c.kind == "budget":
        _budget(j, c, ev.id, step)
    elif c.kind == "ack":
        j.append("alert.acked", {"alert": c.args.get("alert"), "by": who,
                                 "note": c.args.get("note")}, step=step, actor=who,
                 causes=(str(c.args.get("alert")), ev.id))
    return outcome


def _budget(j: RunJournal, c: Command, cause: str, step: int | None) -> None:
    old = dict(j.row.budget)
    new = budgets.merge(old, c.args.get("set", {}), c.args.get("unset", []))
    j.append("budget.changed", {"old": old, "new": new, "by": c.actor}, step=step,
             causes=(cause,))
    j.update(budget=new)


def acked_already(store: Store, run: str, alert: str) -> str | None:
    """Why acking ``alert`` again changes nothing (who acked it, when), or None."""
    for e in store.events_of_kinds(("alert.acked",), run=run):
        if isinstance(e.payload, dict) and e.payload.get("alert") == alert:
            return f"ignored: alert {alert} was acked already by {e.payload.get('by')} at {e.time}"
    return None


def cancel_pending(store: Store, j: RunJournal, why: str, by: str) -> int:
    """Cancel the run's pending requests (it was stopped or rolled back): journaled, so a
    later approve cannot make an old request apply to a different action."""
    n = 0
    for a in store.approvals(run=j.run, status="pending"):
        j.append("approval.decided", {"i": a.idx, "approval": a.id, "decision": "cancelled",
                                      "by": by, "note": why, "arguments": None,
                                      "always": False}, step=a.step, actor=by, causes=(a.id,))
        j.approval(dataclasses.replace(a, status="cancelled", decided_by=by,
                                       decided_at=SYSTEM_CLOCK.now(), note=why))
        n += 1
    return n
