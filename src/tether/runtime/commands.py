"""Operators' commands, applied by whoever owns the run at a safe point.

A command is written to the command table by any process (CLI now, web
later), never into the run's chain directly: only the lease holder appends to
a chain. Applying one journals a ``command`` event naming who asked, then the
status change it implies.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Final

from tether.core import budget as budgets
from tether.runtime.journal import RunJournal
from tether.store.protocol import Store
from tether.store.records import ACTIVE_STATUSES, Command

KINDS: Final = ("pause", "resume", "stop", "budget")
TERMINAL: Final = ("stopped", "done")


def apply(j: RunJournal, c: Command, *, step: int | None = None) -> str:
    """Journal and apply ``c`` to the run behind ``j``; return what happened."""
    status = j.row.status
    outcome = _decide(c, status, j.row.spec)
    ev = j.append("command", {"command": c.id, "kind": c.kind, "args": c.args,
                              "outcome": outcome}, step=step, actor=c.actor)
    j.command_applied(c.id)
    if outcome != "applied":
        return outcome
    who = c.actor
    if c.kind == "pause":
        j.append("run.paused", {"reason": f"paused by {who}"}, step=step, causes=(ev.id,))
        j.update(status="paused", reason=f"paused by {who}")
        if status == "waiting":  # resumed, it waits for its inbox again
            j.update(spec={**j.row.spec, "paused_waiting": True})
    elif c.kind == "resume":
        # A run paused while asleep goes back to sleep until its wake time, and one paused
        # while waiting for messages goes back to waiting (a message, or its deadline, wakes
        # it); a message that came meanwhile makes it runnable at once.
        spec = dict(j.row.spec)
        waiting = bool(spec.pop("paused_waiting", False))
        asleep = j.row.wake_at is not None and j.row.wake_at > j.now()
        j.append("run.resumed", {"by": who, "from": status}, step=step, causes=(ev.id,))
        # A waiting run keeps its deadline even when it passed while paused: it is then
        # runnable at once (the step sees no message and decides what a timeout means).
        j.update(status="waiting" if waiting else "sleeping" if asleep else "running",
                 reason="", wake_at=j.row.wake_at if asleep or waiting else None, spec=spec)
        if c.args.get("accept_change"):
            j.update(spec={**j.row.spec, "accept_definition_change": True})
    elif c.kind == "stop":
        cancel_pending(j.store, j, "the run was stopped", who)
        j.append("run.stopped", {"reason": f"stopped by {who}"}, step=step, causes=(ev.id,))
        j.update(status="stopped", reason=f"stopped by {who}")
    elif c.kind == "budget":
        old = dict(j.row.budget)
        new = dict(old)
        new.update(budgets.validate(c.args.get("set", {})))
        for k in c.args.get("unset", []):
            new.pop(k, None)
        j.append("budget.changed", {"old": old, "new": new, "by": who}, step=step,
                 causes=(ev.id,))
        j.update(budget=new)
    return outcome


def _decide(c: Command, status: str, j_spec: dict[str, object]) -> str:
    if c.kind not in KINDS:
        return f"ignored: unknown command {c.kind!r}"
    if status in TERMINAL and c.kind != "budget":
        return f"ignored: the run is {status}"
    if c.kind == "pause" and status not in ACTIVE_STATUSES:
        return f"ignored: the run is {status}"
    if c.kind == "resume" and status in ACTIVE_STATUSES:
        return f"ignored: the run is already {status}"
    marker = j_spec.get("rolling_back")
    if c.kind == "resume" and marker is not None:
        to = marker.get("to") if isinstance(marker, dict) else marker
        return (f"ignored: a rollback to step {to} is unfinished; run `tether rollback` "
                "again to finish it")
    return "applied"


def cancel_pending(store: Store, j: RunJournal, why: str, by: str) -> int:
    """Cancel the run's pending requests (it was stopped or rolled back): journaled, so a
    later approve cannot make an old request apply to a different action."""
    n = 0
    for a in store.approvals(run=j.run, status="pending"):
        j.append("approval.decided", {"i": a.idx, "approval": a.id, "decision": "cancelled",
                                      "by": by, "note": why, "arguments": None,
                                      "always": False}, step=a.step, actor=by, causes=(a.id,))
        j.approval(dataclasses.replace(a, status="cancelled", decided_by=by,
                                       decided_at=time.time(), note=why))
        n += 1
    return n
