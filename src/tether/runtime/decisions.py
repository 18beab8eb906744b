"""Journaling approval decisions under the run's lease: a person's, or expiry's.

An operator's decision (``tether approve``/``deny``, checked first by
:mod:`tether.approvals`) and the worker's expiry of requests nobody decided in
time take the same path: own the run for a moment, check again under the lease
that the request is still pending, append ``approval.decided`` and write the
approval's projection row in the same commit, so a request is decided once.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from tether.errors import UsageError
from tether.runtime.holding import holding
from tether.runtime.journal import RunJournal
from tether.store.protocol import Store
from tether.store.records import ApprovalRow
from tether.system_clock import SYSTEM_CLOCK


def expire_due(store: Store, *, now: float | None = None) -> list[ApprovalRow]:
    """Apply ``on_expiry`` to pending requests whose time is up (deny by default)."""
    t = SYSTEM_CLOCK.now() if now is None else now
    done = []
    for row in store.approvals(status="pending", expired_by=t):
        if row.on_expiry == "escalate":
            # Nobody decided in time: keep waiting for a human, with no further deadline.
            done.append(record(store, row, "escalated", "system:expiry",
                               "expired without a decision; escalated", None, False, t))
            continue
        decision = "approved" if row.on_expiry == "allow" else "expired"
        done.append(record(store, row, decision, "system:expiry",
                           f"expired at {when(row.expires_at)} ({row.on_expiry} on expiry)",
                           None, False, t))
    return done


def record(store: Store, row: ApprovalRow, decision: str, by: str, note: str | None,
           arguments: dict[str, Any] | None, always: bool, t: float) -> ApprovalRow:
    """Journal ``decision`` on ``row`` under the run's lease, once (checked again under it)."""
    with holding(store, row.run, busy=f"run {row.run} is held by a worker right now; try "
                 "again in a moment") as j:
        assert j is not None
        now_row = store.approval(row.id)  # again, under the lease: decided once, by one
        if now_row is None or now_row.status != "pending" or (
                now_row.expires_at != row.expires_at and decision != "escalated"):
            raise UsageError(f"approval {row.id} was decided meanwhile "
                             f"({now_row.status if now_row else 'gone'}); nothing was changed")
        if j.row.epoch != row.epoch or j.row.status in ("stopped", "done"):
            raise UsageError(f"approval {row.id} no longer applies: run {row.run} is "
                             f"{j.row.status} (epoch {j.row.epoch}, the request was made in "
                             f"epoch {row.epoch})")
        if decision == "approved" and j.row.spec.get("quarantined"):
            # A quarantined run's actions are held: nobody lets one through by approving it.
            if by.startswith("human:"):
                raise UsageError(f"run {row.run} is quarantined: its actions are held, so "
                                 f"approval {row.id} cannot be granted. Deny it, or lift the "
                                 f"quarantine first (`tether quarantine {row.run} --release`)")
            decision, note = "expired", "expired while the run was quarantined"
        return _journal_decision(store, j, row, decision, by, note, arguments, always, t)


def _journal_decision(store: Store, j: RunJournal, row: ApprovalRow, decision: str, by: str,
                      note: str | None, arguments: dict[str, Any] | None, always: bool,
                      t: float) -> ApprovalRow:
    status = "pending" if decision == "escalated" else decision
    new = dataclasses.replace(row, status=status, decided_by=by, decided_at=t, note=note,
                              edited_arguments=arguments, always=always,
                              expires_at=None if decision == "escalated" else row.expires_at)
    if decision == "escalated":
        j.approval(new)
        j.append("command", {"kind": "approval.escalated", "approval": row.id,
                             "outcome": "applied"}, step=row.step, actor=by)
        j.flush_sync()
        return new
    ev = j.append("approval.decided", {
        "i": row.idx, "approval": row.id, "decision": decision, "by": by, "note": note,
        "arguments": arguments, "always": always}, step=row.step, actor=by, causes=(row.id,))
    j.approval(new)
    if always:
        spec = dict(j.row.spec)
        spec["always_allow"] = sorted({*spec.get("always_allow", []), row.tool})
        j.update(spec=spec)
    waiting = [a for a in store.approvals(run=row.run, status="pending") if a.id != row.id]
    if j.row.status == "awaiting_approval" and not waiting:
        j.append("run.resumed", {"by": by, "from": "awaiting_approval",
                                 "why": f"approval {row.id} {decision}"}, actor=by,
                 causes=(ev.id,))
    j.flush_sync()
    return new


def when(t: float | None) -> str:
    """A time as operators read it (UTC), or ``-``."""
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
