"""Roll a run back to step K: undo what it did to the world after K, restore its state.

The plan (:mod:`tether.provenance.plan`) is computed first and shown by
``--plan`` without changing anything. Carrying it out, under the run's lease:

1. the run is marked as rolling back (paused; ``resume`` refused until done);
2. messages it received after K go back to its inbox (``message.requeued``);
   its messages after K not yet delivered are retracted (``message.retracted``);
   its blackboard writes after K are reverted (``blackboard.reverted``); each
   is journaled with the change to the rows in one commit, and a retraction
   that lost a race with the recipient (the message was delivered meanwhile)
   is refused as a whole and planned again;
3. each undo is write-ahead like any effect: ``effect.undoing`` is durable
   before the undo tool runs, ``effect.undone`` after, with the effect's row
   marked ``undone`` and its file versions ``undone`` in the same commit;
4. the state of step K is restored as a keyframe in a new epoch (``rollback``
   and ``checkpoint`` events), so step numbers reused after K never collide
   with the abandoned branch, whose history is kept. Budgets are not refunded.

A crash in the middle is resumed by running the rollback again: what was done
is not in the new plan, and an undo that was started and not finished is run
again only when its tool is idempotent (the built-in file restore is),
otherwise the rollback stops and says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tether.core.canonical import json_safe
from tether.core.checkpoint import CheckpointEncoder, checkpoint_info
from tether.errors import Conflict, UsageError
from tether.provenance.plan import PlannedUndo, RollbackPlan, journal_facts, plan, refuse
from tether.runtime.agent import AgentLike
from tether.runtime.commands import cancel_pending
from tether.runtime.holding import holding
from tether.runtime.journal import RunJournal
from tether.runtime.operator import actor, find_effect, find_run, run_state, send_command
from tether.runtime.runs import load_agent
from tether.store.protocol import Store
from tether.store.records import ACTIVE_STATUSES, EffectRow, RunRow, transition
from tether.system_clock import SYSTEM_CLOCK
from tether.tools.base import Tool, ToolContext
from tether.tools.files import FILE_TOOLS, UNDO_TOOLS
from tether.tools.running import run_tool_blocking

__all__ = ["PlannedUndo", "RollbackPlan", "plan", "rollback", "settle_undo", "undo_tools"]

RETRIES = 5
"""Times a retraction that lost a race with a recipient is planned again."""


def rollback(store: Store, run_ref: str, to_step: int, *, accept_irreversible: bool = False,
             force: bool = False, who: str | None = None,
             tools: dict[str, Tool] | None = None,
             agents: Mapping[str, AgentLike] | None = None) -> RollbackPlan:
    """Carry out the rollback (see the module docstring). Returns the plan it carried out.

    ``tools``: undo tools beside the agent's own and the built-in ones; ``agents``: agents by
    reference (the run's agent is found there before it is imported).
    """
    p = plan(store, run_ref, to_step)
    unfinished(p.run, to_step)
    if p.idle:
        return p  # already there (e.g. a rollback run twice): nothing to undo or restore
    refuse(p, accept_irreversible=accept_irreversible, force=force)
    by = who or actor(store=store)
    pause_if_active(store, p.run, by)
    with holding(store, p.run.id, kind="rollback", ttl=60.0, busy=busy(p.run.id),
                 wait=5.0) as j:
        assert j is not None
        p = plan(store, p.run.id, to_step)  # again, under the lease
        refuse(p, accept_irreversible=accept_irreversible, force=force)
        registry = undo_tools(p.run, tools, agents)
        begin(j, to_step)
        p = settle_messages(store, j, p)
        for u in p.undo:
            undo(j, u, registry)
        restore(store, j, p, by)
    return p


def busy(run: str) -> str:
    return f"run {run} is still held by a worker; pause it (`tether pause {run}`) and retry"


def pause_if_active(store: Store, run: RunRow, by: str) -> None:
    if run.status in ACTIVE_STATUSES:
        send_command(store, run.id, "pause", who=by)


def unfinished(row: RunRow, to_step: int, cascade: dict[str, Any] | None = None) -> None:
    """Refuse to start another rollback of a run whose last one is unfinished (unless it is
    that same one, run again to finish it): some of its undos are done, and another target
    would restore a state that does not match the world."""
    marker = row.spec.get("rolling_back")
    if not isinstance(marker, dict):
        return
    theirs = marker.get("cascade")
    if isinstance(theirs, dict):
        if cascade is not None and (theirs.get("run"), theirs.get("to")) == (
                cascade.get("run"), cascade.get("to")):
            return
        raise UsageError(f"run {row.id} ({row.name}) is part of an unfinished cascade rollback "
                         f"of run {theirs.get('run')} to step {theirs.get('to')}; finish it "
                         f"first: `tether rollback {theirs.get('run')} --to {theirs.get('to')} "
                         "--cascade`")
    if cascade is not None or marker.get("to") != to_step:
        raise UsageError(f"run {row.id} ({row.name}) has an unfinished rollback to step "
                         f"{marker.get('to')}; finish it first: `tether rollback {row.id} --to "
                         f"{marker.get('to')}`")


def begin(j: RunJournal, to_step: int, cascade: dict[str, Any] | None = None) -> None:
    """Mark the run as rolling back: until it finishes, it must not be resumed with its
    files half undone."""
    marker: dict[str, Any] = {"to": to_step, **({"cascade": cascade} if cascade else {})}
    if j.row.spec.get("rolling_back") == marker:
        return
    unfinished(j.row, to_step, cascade)
    again = f"tether rollback {j.run} --to {to_step}" if cascade is None else \
        f"tether rollback {cascade['run']} --to {cascade['to']} --cascade"
    j.append("rollback.begun", {**marker, "reason": f"a rollback to step {to_step} is in "
                                f"progress; if it was interrupted, run `{again}` again"})
    j.update(spec={**j.row.spec, "rolling_back": marker})
    j.flush_sync()


def unmark(j: RunJournal, why: str) -> None:
    """Take a rollback's mark off a run it never changed (it stays paused)."""
    if "rolling_back" not in j.row.spec:
        return
    j.append("rollback.abandoned", {"reason": why})
    j.update(spec={k: v for k, v in j.row.spec.items() if k != "rolling_back"})
    j.flush_sync()


def requeue(j: RunJournal, p: RollbackPlan) -> None:
    """Put messages the run received after the step back in its inbox (held, not pending,
    when their sender is quarantined)."""
    if not p.requeue:
        return
    quarantined: dict[str, bool] = {}
    for m in p.requeue:
        if m.sender not in quarantined:
            sender = j.store.get_run(m.sender)
            quarantined[m.sender] = bool(sender and sender.spec.get("quarantined"))
    ids = [m.id for m in p.requeue]
    held = [m.id for m in p.requeue if quarantined[m.sender]]
    j.append("message.requeued", {"messages": ids, "held": held, "to_step": p.to_step},
             step=j.row.step + 1, actor="system:rollback")
    if len(held) < len(ids):
        j.transition(transition("messages", [i for i in ids if i not in held], "status",
                                "pending", ("delivered",)))
    if held:
        j.transition(transition("messages", held, "status", "held", ("delivered",)))
    j.flush_sync()


def retract_and_revert(j: RunJournal, p: RollbackPlan) -> None:
    """Retract the run's undelivered messages after the step; revert its blackboard writes.

    Raises:
        Conflict: a message was delivered since the plan was made (nothing was applied).
    """
    step = j.row.step + 1
    if p.retract:
        ids = [m.id for m in p.retract]
        j.append("message.retracted", {"messages": ids, "to_step": p.to_step}, step=step,
                 actor="system:rollback")
        j.transition(transition("messages", ids, "status", "retracted", ("pending", "held")))
    if p.revert:
        j.append("blackboard.reverted", {"writes": [
            {"key": v.key, "version": v.version, "event": v.event} for v in p.revert],
            "to_step": p.to_step}, step=step, actor="system:rollback")
        j.transition(transition("versions", [v.event for v in p.revert], "status", "reverted",
                                ("live",)))
    try:
        j.flush_sync()
    except Conflict:
        j.discard()
        raise


def replanned(store: Store, p: RollbackPlan) -> RollbackPlan:
    """The plan again, keeping its undos (their file conflicts were checked already)."""
    fresh = plan(store, p.run.id, p.to_step, check_files=False)
    fresh.undo, fresh.requeue = p.undo, []
    return fresh


def settle_messages(store: Store, j: RunJournal, p: RollbackPlan) -> RollbackPlan:
    """Requeue, then retract and revert; plan again when a recipient took a message
    meanwhile. Planned again after the requeue too: a message the run sent itself after the
    step is back in its inbox then, and is retracted rather than received twice."""
    requeued = p.requeue
    requeue(j, p)
    p = replanned(store, p)
    for _ in range(RETRIES):
        try:
            retract_and_revert(j, p)
            p.requeue = requeued  # what was done, for the report
            return p
        except Conflict:
            p = replanned(store, p)
    raise UsageError(f"run {p.run.id}: its messages kept being delivered while the rollback "
                     "tried to retract them; run the rollback again")


def undo_tools(run: RunRow, extra: dict[str, Tool] | None,
               agents: Mapping[str, AgentLike] | None = None) -> dict[str, Tool]:
    """The tools an undo of ``run``'s effects may name: built-in, the agent's, ``extra``."""
    registry = {t.name: t for t in (*FILE_TOOLS, *UNDO_TOOLS)}
    with contextlib.suppress(UsageError):  # else only the built-in undos are available here
        registry.update({t.name: t for t in load_agent(run.agent, agents).tools})
    registry.update(extra or {})
    return registry


def undo(j: RunJournal, u: PlannedUndo, registry: dict[str, Tool]) -> None:
    """Undo one effect, write-ahead, and mark it (and its file versions) undone."""
    tool, args = _undo_call(u, registry)
    e = u.effect
    step = j.row.step + 1
    j.append("effect.undoing", {"effect": e.id, "tool": u.tool, "arguments": u.arguments},
             step=step, causes=(e.id,), actor="system:rollback")
    j.flush_sync()  # write-ahead: the intent to undo is durable before the undo runs
    tc = ToolContext(e.run, step, e.id, f"undo:{e.id}", _workspace(j.row), chunk=j.store.chunk)
    try:
        out = run_tool_blocking(tool, args, tc)
    except Exception as exc:
        # Journaled; the undo stays started (it may have acted in part): an idempotent one
        # runs again with the next rollback, another waits for an operator to settle it.
        error = f"{type(exc).__name__}: {exc}"
        j.append("effect.undo_failed", {"effect": e.id, "tool": u.tool, "error": error},
                 step=step, causes=(e.id,), actor="system:rollback")
        j.flush_sync()
        again = ("run the rollback again once the cause is fixed" if tool.idempotent else
                 f"check what it did, then `tether resolve {e.id} --undone` or `--not-undone`, "
                 "and run the rollback again")
        raise UsageError(f"the undo of effect {e.id} ({e.tool}, run {e.run} step {e.step}) "
                         f"with {u.tool} failed: {error}; the rollback stopped there (the run "
                         f"stays paused, marked as rolling back): {again}") from exc
    j.append("effect.undone", {"effect": e.id, "tool": u.tool, "result": json_safe(out),
                               "after": json_safe(tc.after)},
             step=step, causes=(e.id,), actor="system:rollback")
    j.effect(dataclasses.replace(e, status="undone", updated=SYSTEM_CLOCK.now()))
    j.transition(transition("versions", [e.id], "status", "undone"))
    j.flush_sync()


def _undo_call(u: PlannedUndo, registry: dict[str, Tool]) -> tuple[Tool, dict[str, Any]]:
    """The undo's tool and its checked arguments, before anything is journaled (nothing
    started yet if they are refused)."""
    e = u.effect
    tool = registry.get(u.tool)
    if tool is None:
        raise UsageError(f"the undo of effect {e.id} needs tool {u.tool!r}, which cannot be "
                         "loaded here; run from the agent's folder")
    if u.started and not tool.idempotent:
        raise UsageError(f"an earlier rollback started undoing effect {e.id} with {u.tool} and "
                         "did not finish; that undo is not idempotent, so check whether it took "
                         f"effect, then `tether resolve {e.id} --undone` (it did) or "
                         "`--not-undone` (it did not: it is run again), and roll back again")
    try:
        return tool, tool.validate(u.arguments)
    except UsageError as exc:
        raise UsageError(f"the undo of effect {e.id} ({e.tool}, run {e.run} step {e.step}) "
                         f"cannot run: {exc}") from None


def settle_undo(store: Store, effect_ref: str, *, happened: bool,
                who: str | None = None) -> EffectRow:
    """Settle an undo an interrupted rollback started and did not finish: it took effect
    (the effect is marked undone) or it did not (the next rollback runs it again)."""
    eff = find_effect(store, effect_ref)
    row = find_run(store, eff.run)
    _, started = journal_facts(store, row)
    if eff.id not in started:
        raise UsageError(f"effect {eff.id} ({eff.tool}, run {eff.run} step {eff.step}) has no "
                         "unfinished undo; --undone and --not-undone settle an undo an "
                         "interrupted rollback left")
    by = who or actor(store=store)
    with holding(store, eff.run, busy=busy(eff.run)) as j:
        assert j is not None
        j.append("effect.undo_settled", {"effect": eff.id, "happened": happened, "by": by},
                 step=j.row.step + 1, causes=(eff.id,), actor=by)
        if happened:
            eff = dataclasses.replace(eff, status="undone", updated=SYSTEM_CLOCK.now())
            j.effect(eff)
            j.transition(transition("versions", [eff.id], "status", "undone"))
        j.flush_sync()
    return eff


def _workspace(row: RunRow) -> Path | None:
    ws = row.spec.get("workspace")
    return Path(ws) if ws else None


def restore(store: Store, j: RunJournal, p: RollbackPlan, by: str,
            cascade: dict[str, Any] | None = None) -> None:
    """Restore the state of the step in a new epoch and end the rollback."""
    cancel_pending(store, j, f"the run was rolled back to step {p.to_step}", by)
    _, _, state = run_state(store, p.run.id, p.to_step)
    old_epoch, from_step = j.row.epoch, j.row.step
    spec = {k: v for k, v in j.row.spec.items() if k not in ("rolling_back", "paused_waiting")}
    if int(spec.get("reviewed_step", 0)) > p.to_step:
        # The review points the abandoned branch passed come again when the steps are re-run.
        spec["reviewed_step"] = p.to_step
    payload: dict[str, Any] = {
        "to_step": p.to_step, "from_epoch": old_epoch, "from_step": from_step,
        "state_epoch": p.state_epoch,
        "undone": [u.effect.id for u in p.undo], "left": [e.id for e in p.left], "by": by}
    if cascade:
        payload["cascade"] = cascade
    # Opens the new epoch at the step; its fold pauses the run there.
    j.append("rollback", payload, step=p.to_step, actor=by, epoch=old_epoch + 1)
    j.update(spec=spec)
    ck = CheckpointEncoder(run=p.run.id).encode(p.to_step, state, force_key=True)
    j.checkpoint(ck)
    j.append("checkpoint", checkpoint_info(ck), step=p.to_step, actor=by)
    j.flush_sync()
