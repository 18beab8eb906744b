"""Operators' side of approvals: list, approve, deny, expire.

A decision is journaled in the run's own chain (``approval.decided``, naming who
decided) by whoever holds the run's lease; a waiting run holds none, so the
deciding process takes it, like any command applied without a worker. The
approval's projection row is written in the same transaction, so a decision is
recorded once: approving twice, or after expiry, is refused.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from tether.core.canonical import json_safe
from tether.errors import NotFound, UsageError
from tether.ops import _must, actor, holding
from tether.runtime.journal import RunJournal
from tether.store.protocol import Store
from tether.store.records import ApprovalRow

DECISIONS = ("approved", "denied", "expired")


def find_approval(store: Store, ref: str) -> ApprovalRow:
    """An approval request by id."""
    row = store.approval(ref) or store.approval(ref.upper())
    if row is None:
        raise NotFound(f"no approval {ref!r} in {store.url}; list them with `tether approvals`")
    return row


def decide(store: Store, ref: str, *, approve: bool, who: str | None = None,
           note: str | None = None, arguments: dict[str, Any] | None = None,
           always: bool = False, now: float | None = None) -> ApprovalRow:
    """Approve (optionally with edited arguments, or always for this run) or deny a request.

    Raises:
        UsageError: decided already, expired, denied without a reason, edited
            arguments that do not fit the tool, or a decider the policy does not name.
    """
    row = find_approval(store, ref)
    by = who or actor()
    t = time.time() if now is None else now
    if row.status != "pending":
        raise UsageError(f"approval {row.id} was already {row.status} by {row.decided_by} at "
                         f"{_when(row.decided_at)}; a decision is made once")
    if row.expires_at is not None and row.expires_at <= t:
        expire_due(store, now=t)
        raise UsageError(f"approval {row.id} expired at {_when(row.expires_at)} "
                         f"({row.on_expiry} on expiry); the run has gone on without it")
    if not approve and not (note and note.strip()):
        raise UsageError("deny needs a reason (--reason TEXT): the agent is told why")
    if not approve and (arguments is not None or always):
        raise UsageError("edited arguments and --always go with approve, not deny")
    _check_decider(row, by)
    if arguments is not None:
        arguments = _validate(store, row, arguments)
    return _record(store, row, "approved" if approve else "denied", by, note, arguments,
                   always and approve, t)


def expire_due(store: Store, *, now: float | None = None) -> list[ApprovalRow]:
    """Apply ``on_expiry`` to pending requests whose time is up (deny by default)."""
    t = time.time() if now is None else now
    done = []
    for row in store.approvals(status="pending", expired_by=t):
        if row.on_expiry == "escalate":
            # Nobody decided in time: keep waiting for a human, with no further deadline.
            done.append(_record(store, row, "escalated", "system:expiry",
                                "expired without a decision; escalated", None, False, t))
            continue
        decision = "approved" if row.on_expiry == "allow" else "expired"
        done.append(_record(store, row, decision, "system:expiry",
                            f"expired at {_when(row.expires_at)} ({row.on_expiry} on expiry)",
                            None, False, t))
    return done


def _check_decider(row: ApprovalRow, by: str) -> None:
    name = by.split(":", 1)[-1]
    if not by.startswith("human:") or name == row.run:
        raise UsageError(f"{by} may not decide approval {row.id}: only people may, and a run "
                         "never approves its own request")
    if row.approvers and name not in row.approvers:
        raise UsageError(f"{name} may not decide approval {row.id}: the policy rule "
                         f"{row.rule!r} names {', '.join(row.approvers)}")


def _validate(store: Store, row: ApprovalRow, arguments: dict[str, Any]) -> dict[str, Any]:
    from tether.runtime.runs import load_agent
    run = _must(store, row.run)
    try:
        agent = load_agent(run.agent)
    except UsageError as exc:
        raise UsageError(f"cannot check the edited arguments: {exc}") from None
    tool = next((t for t in agent.tools if t.name == row.tool), None)
    if tool is None:
        raise UsageError(f"cannot check the edited arguments: agent {run.agent} has no tool "
                         f"{row.tool} any more")
    return dict(json_safe(tool.validate(arguments)))


def _record(store: Store, row: ApprovalRow, decision: str, by: str, note: str | None,
            arguments: dict[str, Any] | None, always: bool, t: float) -> ApprovalRow:
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
        j.update(status="running", reason="")
    j.flush_sync()
    return new


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def approval_json(a: ApprovalRow) -> dict[str, Any]:
    """The public JSON form (``tether approvals --json``)."""
    return a.to_json()
