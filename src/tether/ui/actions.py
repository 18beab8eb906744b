"""What the dashboard's buttons and the API's POSTs do: one call of the operations façade
each, and what to say about it.

Forms and ``/api/`` both land here, so a button and its API twin cannot drift apart,
and neither does anything the CLI cannot: each function is the body of a CLI command
without its printing. The JSON each returns is the one its CLI command's ``--json``
prints where it has one (approvals, rollback plans, quarantine), else the changed row.

Rollbacks run here, in the server process, as ``tether rollback`` runs them in the
shell: under the run's lease, its undo tools loaded from its agent's reference
(docs/ui.md says why they are not handed to a worker).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tether.ops import CommandResult, Tether
from tether.policies import InForce
from tether.runinfo import run_json
from tether.ui.views import approval_view

__all__ = ["Done", "ack", "apply_policy", "approve", "budget", "command", "deny", "fork",
           "policy_json", "quarantine", "release", "resolve", "rollback"]

COMMAND_WAIT = 2.0
"""Seconds a pause, resume or stop waits for the worker that owns the run to say it
applied it (the CLI waits 5; a browser should not hang that long)."""


@dataclass(frozen=True, slots=True)
class Done:
    """What an action did: its JSON, and one sentence for the page's notice."""

    message: str
    result: dict[str, Any] = field(default_factory=dict)


def approve(t: Tether, approval: str, *, note: str | None = None,
            arguments: dict[str, Any] | None = None, always: bool = False) -> Done:
    row = t.approve(approval, note=note, arguments=arguments, always=always)
    return Done(f"approved {row.id}: the run will run {row.tool}"
                + (" with the edited arguments" if arguments is not None else "")
                + (" (always allowed for this run from now on)" if always else ""),
                approval_view(t, row))


def deny(t: Tether, approval: str, reason: str) -> Done:
    row = t.deny(approval, reason)
    return Done(f"denied {row.id}: the run goes on without {row.tool}; its model is told why",
                approval_view(t, row))


def _command_json(res: CommandResult) -> dict[str, Any]:
    return {"command": res.command, "run": res.run, "applied": res.applied, "by": res.by,
            "outcome": res.outcome}


def command(t: Tether, run: str, kind: str) -> Done:
    """``pause``, ``resume`` or ``stop``."""
    res = t.command(run, kind, wait=COMMAND_WAIT)
    if res.applied and res.outcome and res.outcome != "applied":
        msg = f"{kind}: nothing to do for run {res.run} ({res.outcome})"
    elif res.applied:
        msg = f"{kind}: run {res.run} is now {t.run(res.run).status} (applied by {res.by})"
    else:
        msg = (f"{kind}: queued as command {res.command}; the worker that owns run {res.run} "
               "applies it at its next safe point")
    return Done(msg, _command_json(res))


def budget(t: Tether, run: str, changes: dict[str, float], unset: list[str]) -> Done:
    res = t.set_budget(run, changes, unset)
    row = t.run(res.run)
    caps = ", ".join(f"{k}={v:g}" for k, v in row.budget.items()) or "none"
    return Done(f"budget of run {row.name}: {caps}", {**_command_json(res), "budget": row.budget})


def resolve(t: Tether, effect: str, resolution: str, result: Any = None) -> Done:
    row = t.resolve(effect, resolution, result=result)
    return Done(f"effect {row.id} ({row.tool}) settled as {resolution}; its run can go on",
                {"id": row.id, "run": row.run, "tool": row.tool, "status": row.status})


def ack(t: Tether, alert: str, note: str | None = None) -> Done:
    res = t.ack_alert(alert, note=note, wait=COMMAND_WAIT)
    return Done(f"alert {alert} acknowledged", _command_json(res))


def rollback(t: Tether, run: str, to: int, *, cascade: bool = False,
             accept_irreversible: bool = False, force: bool = False) -> Done:
    if cascade:
        cp = t.cascade(run, to, accept_irreversible=accept_irreversible, force=force)
        done = [p for p in cp.plans if not p.idle]
        return Done(f"cascade rollback done: {len(done)} run(s) rolled back, each paused; "
                    "resume them to go on", {"done": True, **cp.to_json()})
    p = t.rollback(run, to, accept_irreversible=accept_irreversible, force=force)
    row = t.run(p.run.id)
    return Done(f"rolled back run {row.name} to step {to}: {len(p.undo)} effects undone, "
                f"{len(p.retract)} messages retracted, {len(p.revert)} blackboard writes "
                f"reverted, {len(p.left)} effects left; now epoch {row.epoch}, {row.status}",
                {"done": True, **p.to_json()})


def fork(t: Tether, run: str, at: int, *, edits: dict[str, Any], name: str | None = None,
         shared_workspace: bool = False) -> Done:
    row = t.fork(run, at, edits=edits, name=name, shared_workspace=shared_workspace)
    return Done(f"forked run {row.parent} at step {at} into {row.name} ({row.id}); a worker "
                "drives it", run_json(row))


def quarantine(t: Tether, run: str, reason: str = "") -> Done:
    r = t.quarantine(run, reason=reason)
    return Done(f"quarantined run {r.run}: {len(r.held)} message(s) held, {len(r.suspect)} "
                "write(s) marked suspect", r.to_json())


def release(t: Tether, run: str) -> Done:
    r = t.release(run)
    return Done(f"released run {r.run}: {len(r.held)} held message(s) delivered, "
                f"{len(r.suspect)} write(s) no longer suspect", r.to_json())


def policy_json(now: InForce) -> dict[str, Any]:
    """The policy in force (``tether policy show --json``'s core): where it comes from, its
    hash, its rules and groups, and its text."""
    p = now.policy
    return {"scope": now.scope, "describe": now.describe(), "hash": p.hash,
            "rules": len(p.rules), "format": p.format, "text": p.text,
            "applied_by": now.event.actor if now.event else None,
            "applied_at": now.event.time if now.event else None}


def apply_policy(t: Tether, text: str, swarm: str | None) -> Done:
    where = f"swarm {swarm}" if swarm else "the store"
    event = t.apply_policy(text, swarm=swarm)
    now = t.policy(swarm)
    if event is None:
        return Done(f"unchanged: this policy is in force for {where} already", policy_json(now))
    return Done(f"applied to {where} as store event #{event.n}: every worker uses it from its "
                "next scheduling pass", policy_json(now))
