"""Operators' side of approvals: list, approve, deny, expire.

A decision is journaled in the run's own chain (``approval.decided``, naming who
decided) by whoever holds the run's lease; a waiting run holds none, so the
deciding process takes it, like any command applied without a worker. The
approval's projection row is written in the same transaction, so a decision is
recorded once: approving twice, or after expiry, is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tether.core.canonical import json_safe
from tether.core.text import refuse_nul
from tether.errors import NotFound, UsageError
from tether.runtime.agent import AgentLike
from tether.runtime.decisions import expire_due
from tether.runtime.decisions import record as _record
from tether.runtime.decisions import when as _when
from tether.runtime.holding import must_get
from tether.runtime.operator import actor
from tether.runtime.runs import load_agent
from tether.store.protocol import Store
from tether.store.records import ApprovalRow
from tether.system_clock import SYSTEM_CLOCK
from tether.tools.base import Tool

# expire_due is the runtime's (the worker expires requests too); operators reach it here.
__all__ = ["DECISIONS", "approval_json", "decide", "expire_due", "find_approval", "tool_of"]

DECISIONS = ("approved", "denied", "expired")


def find_approval(store: Store, ref: str) -> ApprovalRow:
    """An approval request by id."""
    row = store.approval(ref) or store.approval(ref.upper())
    if row is None:
        raise NotFound(f"no approval {ref!r} in {store.url}; list them with `tether approvals`")
    return row


def decide(store: Store, ref: str, *, approve: bool, who: str | None = None,
           note: str | None = None, arguments: dict[str, Any] | None = None,
           always: bool = False, now: float | None = None,
           agents: Mapping[str, AgentLike] | None = None) -> ApprovalRow:
    """Approve (optionally with edited arguments, or always for this run) or deny a request.

    Raises:
        UsageError: decided already, expired, denied without a reason, edited
            arguments that do not fit the tool, or a decider the policy does not name.
    """
    row = find_approval(store, ref)
    by = who or actor(store=store)
    for field, text in (("the decider", by), ("the note", note)):
        refuse_nul(f"approval {row.id}", field, text)  # kept in the approval's text columns
    t = SYSTEM_CLOCK.now() if now is None else now
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
        arguments = _validate(store, row, arguments, agents)
    return _record(store, row, "approved" if approve else "denied", by, note, arguments,
                   always and approve, t)


def _check_decider(row: ApprovalRow, by: str) -> None:
    name = by.split(":", 1)[-1]
    if not by.startswith("human:") or name == row.run:
        raise UsageError(f"{by} may not decide approval {row.id}: only people may, and a run "
                         "never approves its own request")
    if row.approvers and name not in row.approvers:
        raise UsageError(f"{name} may not decide approval {row.id}: the policy rule "
                         f"{row.rule!r} names {', '.join(row.approvers)}")


def tool_of(store: Store, row: ApprovalRow, agents: Mapping[str, AgentLike] | None = None
            ) -> Tool:
    """The tool a request proposes to run, from its run's agent (what edited arguments are
    checked against).

    Raises:
        UsageError: the agent cannot be loaded, or no longer has the tool.
    """
    run = must_get(store, row.run)
    try:
        agent = load_agent(run.agent, agents)
    except UsageError as exc:
        raise UsageError(f"cannot check the edited arguments: {exc}") from None
    tool = next((t for t in agent.tools if t.name == row.tool), None)
    if tool is None:
        raise UsageError(f"cannot check the edited arguments: agent {run.agent} has no tool "
                         f"{row.tool} any more")
    return tool


def _validate(store: Store, row: ApprovalRow, arguments: dict[str, Any],
              agents: Mapping[str, AgentLike] | None) -> dict[str, Any]:
    return dict(json_safe(tool_of(store, row, agents).validate(arguments)))


def approval_json(a: ApprovalRow) -> dict[str, Any]:
    """The row's own JSON form (what :func:`approval_view` adds to)."""
    return a.to_json()


def asked_times(store: Store, ids: Iterable[str]) -> dict[str, str | None]:
    """When each approval was asked on its run's clock: the time of its
    ``approval.requested`` event (an approval's id is that event's id; None where that
    event is gone), as ``tether report`` shows it. An approval row's ``requested_at`` is
    wall time instead, by design: its expiry is counted in people's time, whatever the
    run's clock (in a simulated night the two disagree)."""
    out: dict[str, str | None] = {}
    for i in ids:
        asked = store.event(i)
        out[i] = asked.time if asked is not None else None
    return out


def approval_view(store: Store, a: ApprovalRow) -> dict[str, Any]:
    """An approval as every surface shows it (``tether approvals --json``, the dashboard's
    API and pages): the row's JSON and ``requested_run_time``, the ask's time on the run's
    clock (ISO-8601 UTC, or None), beside ``requested_at``, wall time (:func:`asked_times`)."""
    return {**approval_json(a), "requested_run_time": asked_times(store, [a.id])[a.id]}
