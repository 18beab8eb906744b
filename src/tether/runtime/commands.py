"""Operators' commands, applied by whoever owns the run at a safe point.

A command is written to the command table by any process (CLI now, web
later), never into the run's chain directly: only the lease holder appends to
a chain. Applying one journals a ``command`` event naming who asked, then the
status change it implies.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tether.core import budget as budgets
from tether.core.commands import KINDS as KINDS  # what ops offers operators
from tether.core.commands import decide, resumed_status
from tether.core.statuses import CLOSED_STATUSES
from tether.errors import UsageError
from tether.runtime.containment import Containment, ack_clears, contain, quarantine_command
from tether.runtime.holding import holding
from tether.runtime.journal import RunJournal
from tether.store.protocol import Store
from tether.store.records import Command
from tether.system_clock import SYSTEM_CLOCK


def apply(j: RunJournal, c: Command, *, step: int | None = None) -> str:
    """Journal and apply ``c`` to the run behind ``j``; return what happened. The status
    change is the event's fold (:mod:`tether.core.fold`). Not for ``quarantine``: it
    commits on its own (:func:`apply_quarantine`), unless it is ignored."""
    status = j.row.status
    outcome = decide(c.kind, status, j.row.spec)
    if c.kind == "quarantine" and outcome == "applied":
        raise ValueError(f"command {c.id}: a quarantine is applied by apply_quarantine")
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
        _ack(j, c, ev.id, step)
    return outcome


def _ack(j: RunJournal, c: Command, cause: str, step: int | None) -> None:
    """``alert.acked``, clearing what the alert marked suspect (:func:`ack_clears`)."""
    alert = str(c.args.get("alert"))
    marks = j.store.events_of_kinds(("alert", "alert.acked"), run=j.run)
    clear = ack_clears(j.store, j, alert, marks)
    j.append("alert.acked", {"alert": alert, "by": c.actor, "note": c.args.get("note"),
                             **clear.payload("writes")}, step=step, actor=c.actor,
             causes=(alert, cause))
    clear.journal(j, False)


def quarantine_for(j: RunJournal, c: Command, step: int | None = None) -> Containment | None:
    """How ``c`` contains the run, if it is a quarantine command that applies to it; None
    for any other command (:func:`apply` it)."""
    if c.kind != "quarantine" or decide(c.kind, j.row.status, j.row.spec) != "applied":
        return None
    return quarantine_command(c, step)


def apply_quarantine(store: Store, j: RunJournal, c: Command, *, tries: int = 5) -> None:
    """Apply quarantine command ``c`` (one :func:`decide` applies) in one commit
    (:func:`~tether.runtime.containment.quarantine_command`), retried while a recipient
    takes one of its messages meanwhile. Nothing else of the run may be buffered."""
    plan = quarantine_command(c)
    for _ in range(tries):
        if contain(store, j, release=False, reason=plan.reason, by=plan.by,
                   causes=plan.causes, prelude=plan.prelude) is not None:
            return
    raise UsageError(f"run {j.run}: its messages kept being delivered while they were being "
                     f"held; command {c.id} stays queued")


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


def apply_offline(store: Store, run: str) -> list[int] | None:
    """If no worker owns ``run``, take its lease and apply its pending commands here (a
    quarantine in a commit of its own). The ids of the commands applied, or None when a
    worker owns the run. Blocking."""
    with holding(store, run) as j:
        if j is None:
            return None
        pending = store.pending_commands([run])
        for c in pending:
            if quarantine_for(j, c) is not None:  # commits alone, nothing else buffered
                j.flush_sync()
                apply_quarantine(store, j, c)
            else:
                apply(j, c)
        j.flush_sync()
    return [c.id for c in pending]


def resend_orders(store: Store, now: float) -> int:
    """Queue the order of every alert whose verdict (``pause`` or stronger) names another
    run as its origin, if it was never queued (a worker died between the alert's commit and
    queueing it): one indexed read of the store's alerts, then one keyed insert each (a
    no-op for those queued before). Returns how many alerts name an origin. Blocking."""
    n = 0
    for e in store.events_of_kinds(("alert",)):
        p = e.payload if isinstance(e.payload, dict) else {}
        origin, verdict = p.get("origin"), str(p.get("verdict"))
        if origin in (None, e.run) or verdict not in ("pause", "quarantine", "stop"):
            continue
        n += 1
        send_order(store, str(origin), verdict, {
            "alert": e.id, "run": e.run, "verdict": verdict, "monitor": p.get("monitor"),
            "rule": p.get("rule")}, now)
    return n


def send_order(store: Store, origin: str, kind: str, args: dict[str, Any], now: float) -> None:
    """Queue a monitor's order (``pause``, ``quarantine``, ``stop``) for the run its
    verdict names as origin, as a command from ``system:monitor``, once per alert (keyed by
    it: queueing it again after a crash is harmless). Whoever owns the origin applies it at
    its next safe point; an origin nobody drives (parked, sleeping, between workers) is
    ordered here, under its lease, at once. Blocking."""
    row = store.get_run(origin)
    if row is None or row.status in CLOSED_STATUSES:
        return
    cid = store.add_command(origin, kind, args, "system:monitor", now,
                            key=f"alert:{args['alert']}")
    if any(c.id == cid for c in store.pending_commands([origin])):
        apply_offline(store, origin)  # None (left to its owner) when a worker has it
