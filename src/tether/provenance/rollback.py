"""Roll a run back to step K: undo its reversible effects after K, restore its state.

The plan is computed first and shown by ``--plan`` without changing anything:
every reversible effect after K is undone by the undo it registered while it
ran, newest first; irreversible effects after K cannot be undone and are
listed (rollback refuses to go past them without ``accept_irreversible``);
a workspace file changed by someone else since an effect (its hash differs
from the recorded after-image) is refused without ``force``.

Each undo is write-ahead like any effect: ``effect.undoing`` is durable before
the undo tool runs, ``effect.undone`` after, with the effect's row marked
``undone`` in the same commit. A crash in the middle is resumed by running the
rollback again: undone effects are skipped, and an undo that was started and
not finished is run again only when its tool is idempotent (the built-in file
restore is), otherwise the rollback stops and says so. Finally the state of
step K is restored as a keyframe in a new epoch (``rollback`` and
``checkpoint`` events), so step numbers reused after K never collide with the
abandoned branch, whose history is kept. Budgets are not refunded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.core.checkpoint import CheckpointEncoder
from tether.errors import NotFound, UsageError
from tether.ops import actor, find_run, holding, run_state, send_command
from tether.runtime.runs import load_agent
from tether.store.protocol import Store
from tether.store.records import ACTIVE_STATUSES, EffectRow, RunRow
from tether.tools.base import Tool, ToolContext, _current
from tether.tools.files import FILE_TOOLS, file_hash

DONE = ("done", "resolved_done")


@dataclass(frozen=True, slots=True)
class Undo:
    """One reversible effect to undo."""

    effect: EffectRow
    tool: str
    arguments: dict[str, Any]
    conflicts: tuple[str, ...] = ()
    """Workspace files changed since the effect (current hash != recorded after-image)."""
    started: bool = False
    """An earlier rollback journaled ``effect.undoing`` for it and did not finish."""


@dataclass(slots=True)
class RollbackPlan:
    """What a rollback of ``run`` to ``to_step`` would do."""

    run: RunRow
    to_step: int
    undo: list[Undo] = field(default_factory=list)
    irreversible: list[EffectRow] = field(default_factory=list)
    in_doubt: list[EffectRow] = field(default_factory=list)
    missing_undo: list[EffectRow] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The plan in words, for ``--plan``."""
        r = self.run
        out = [f"rollback of run {r.name} ({r.id}) from step {r.step} to step {self.to_step} "
               f"(epoch {r.epoch} -> {r.epoch + 1})"]
        for u in self.undo:
            e = u.effect
            note = f"  CONFLICT: changed since: {', '.join(u.conflicts)}" if u.conflicts else ""
            out.append(f"  undo    step {e.step} {e.tool} ({e.id}) with {u.tool}{note}")
        for e in self.irreversible:
            out.append(f"  LEAVE   step {e.step} {e.tool} ({e.id}): irreversible, cannot be undone")
        for e in self.in_doubt:
            out.append(f"  LEAVE   step {e.step} {e.tool} ({e.id}): in doubt ({e.status})")
        for e in self.missing_undo:
            out.append(f"  ERROR   step {e.step} {e.tool} ({e.id}): reversible but no undo was "
                       "registered")
        if self.to_step == r.step and not self.undo:
            return [f"run {r.name} ({r.id}) is at step {r.step} already: nothing to roll back"]
        out.append(f"  restore the state of step {self.to_step} (steps after it stay in the "
                   "journal as history); budgets are not refunded")
        return out


def plan(store: Store, run_ref: str, to_step: int) -> RollbackPlan:
    """Compute what rolling ``run_ref`` back to ``to_step`` would do; change nothing."""
    row = find_run(store, run_ref)
    if to_step < 0:
        raise UsageError(f"--to must be a step >= 0, not {to_step}")
    if to_step > row.step:
        raise UsageError(f"run {row.id} has completed {row.step} steps in epoch {row.epoch}; "
                         f"step {to_step} is in the future")
    if store.checkpoint_chain(row.id, row.epoch, to_step) is None:
        raise NotFound(f"run {row.id} has no checkpoint for step {to_step} in epoch {row.epoch} "
                       "(it is before the epoch began)")
    p = RollbackPlan(row, to_step)
    after = [e for e in store.effects(run=row.id) if e.epoch == row.epoch and e.step > to_step]
    after.sort(key=lambda e: (e.step, e.idx), reverse=True)
    images, started = _journal_facts(store, row)
    ws = row.spec.get("workspace")
    seen: set[str] = set()  # paths a newer effect of this run touched: checked at that one
    for e in after:
        if e.status in ("undone", "failed", "resolved_not_done"):
            continue
        if e.status not in DONE:
            p.in_doubt.append(e)
        elif e.effect == "irreversible":
            p.irreversible.append(e)
        elif not e.undo:
            p.missing_undo.append(e)
        else:
            # Only the newest effect on a path can be checked against the file as it is:
            # undoing newer ones first brings each older after-image back in turn.
            files = images.get(e.id, {})
            # An undo an interrupted rollback started may have put the file back already.
            conflicts = () if e.id in started else tuple(
                path for path, h in files.items()
                if ws and path not in seen and file_hash(Path(ws), path) != h)
            seen.update(files)
            p.undo.append(Undo(e, e.undo["tool"], dict(e.undo["arguments"]), conflicts,
                               e.id in started))
    return p


def _journal_facts(store: Store, row: RunRow) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """After-images of effects (from ``effect.done``) and undos started but not finished."""
    images: dict[str, dict[str, Any]] = {}
    undoing: set[str] = set()
    for ev in store.events(row.id):
        if ev.epoch != row.epoch or not isinstance(ev.payload, dict):
            continue
        if ev.kind == "effect.done" and ev.causes:
            images[ev.causes[0]] = dict((ev.payload.get("after") or {}).get("files") or {})
        elif ev.kind == "effect.undoing":
            undoing.add(str(ev.payload["effect"]))
        elif ev.kind == "effect.undone":
            undoing.discard(str(ev.payload["effect"]))
    return images, undoing


def rollback(store: Store, run_ref: str, to_step: int, *, accept_irreversible: bool = False,
             force: bool = False, who: str | None = None,
             tools: dict[str, Tool] | None = None) -> RollbackPlan:
    """Carry out the rollback (see the module docstring). Returns the plan it carried out."""
    p = plan(store, run_ref, to_step)
    if p.to_step == p.run.step and not p.undo:
        return p  # already there (e.g. a rollback run twice): nothing to undo or restore
    _refuse(p, accept_irreversible=accept_irreversible, force=force)
    by = who or actor()
    run = p.run
    if run.status in ACTIVE_STATUSES:
        send_command(store, run.id, "pause", who=by)
    busy = f"run {run.id} is still held by a worker; pause it (`tether pause {run.id}`) and retry"
    with holding(store, run.id, kind="rollback", ttl=60.0, busy=busy) as j:
        assert j is not None
        p = plan(store, run.id, to_step)  # again, under the lease
        _refuse(p, accept_irreversible=accept_irreversible, force=force)
        registry = undo_tools(p.run, tools)
        if j.row.spec.get("rolling_back") != to_step:
            # Until it finishes, the run must not be resumed with its files half undone.
            j.update(status="paused", spec={**j.row.spec, "rolling_back": to_step},
                     reason=f"a rollback to step {to_step} is in progress; if it was "
                            f"interrupted, run `tether rollback {run.id} --to {to_step}` again")
            j.flush_sync()
        for u in p.undo:
            _undo(j, u, registry)
        _restore(store, j, p, by)
    return p


def _refuse(p: RollbackPlan, *, accept_irreversible: bool, force: bool) -> None:
    if p.missing_undo:
        e = p.missing_undo[0]
        raise UsageError(f"effect {e.id} ({e.tool}, step {e.step}) is reversible but registered "
                         "no undo; roll back to a step after it, or fix the tool")
    if (p.irreversible or p.in_doubt) and not accept_irreversible:
        left = [f"{e.tool} at step {e.step} ({e.id})" for e in p.irreversible + p.in_doubt]
        raise UsageError(f"rolling back past {len(left)} effect(s) that cannot be undone: "
                         f"{'; '.join(left[:5])}; add --accept-irreversible to go past them")
    conflicts = [u for u in p.undo if u.conflicts]
    if conflicts and not force:
        u = conflicts[0]
        raise UsageError(f"{', '.join(u.conflicts)} changed since effect {u.effect.id} "
                         f"({u.effect.tool}, step {u.effect.step}); undoing it would overwrite "
                         "someone else's change. Look first, then use --force")


def undo_tools(run: RunRow, extra: dict[str, Tool] | None) -> dict[str, Tool]:
    registry = {t.name: t for t in FILE_TOOLS}
    with contextlib.suppress(UsageError):  # else only the built-in undos are available here
        registry.update({t.name: t for t in load_agent(run.agent).tools})
    registry.update(extra or {})
    return registry


def _undo(j: Any, u: Undo, registry: dict[str, Tool]) -> None:
    tool = registry.get(u.tool)
    e = u.effect
    if tool is None:
        raise UsageError(f"the undo of effect {e.id} needs tool {u.tool!r}, which cannot be "
                         "loaded here; run from the agent's folder")
    if u.started and not tool.idempotent:
        raise UsageError(f"an earlier rollback started undoing effect {e.id} with {u.tool} and "
                         "did not finish; that undo is not idempotent, so check it by hand")
    step = j.row.step + 1
    j.append("effect.undoing", {"effect": e.id, "tool": u.tool, "arguments": u.arguments},
             step=step, causes=(e.id,), actor="system:rollback")
    j.flush_sync()  # write-ahead: the intent to undo is durable before the undo runs
    tc = ToolContext(e.run, step, e.id, f"undo:{e.id}", _workspace(j.row))
    token = _current.set(tc)
    try:
        out = tool.fn(**tool.validate(u.arguments))
        if asyncio.iscoroutine(out):
            out = asyncio.run(out)
    finally:
        _current.reset(token)
    from tether.runtime.context import json_safe
    j.append("effect.undone", {"effect": e.id, "tool": u.tool, "result": json_safe(out),
                                    "after": json_safe(tc.after)},
                  step=step, causes=(e.id,), actor="system:rollback")
    j.effect(dataclasses.replace(e, status="undone", updated=time.time()))
    j.flush_sync()


def _workspace(row: RunRow) -> Path | None:
    ws = row.spec.get("workspace")
    return Path(ws) if ws else None


def _restore(store: Store, j: Any, p: RollbackPlan, by: str) -> None:
    from tether.approvals import cancel_pending
    cancel_pending(store, j, f"the run was rolled back to step {p.to_step}", by)
    _, _, state = run_state(store, p.run.id, p.to_step)
    old_epoch = j.row.epoch
    spec = {k: v for k, v in j.row.spec.items() if k != "rolling_back"}
    j.update(epoch=old_epoch + 1, step=p.to_step, status="paused", wake_at=None, spec=spec,
             reason=f"rolled back to step {p.to_step} by {by}; `tether resume` goes on from there")
    ck = CheckpointEncoder(run=p.run.id).encode(p.to_step, state, force_key=True)
    j.checkpoint(ck)
    from tether.runtime.executor import checkpoint_info
    j.append("rollback", {"to_step": p.to_step, "from_epoch": old_epoch, "from_step": p.run.step,
                          "undone": [u.effect.id for u in p.undo],
                          "left": [e.id for e in p.irreversible + p.in_doubt], "by": by},
             step=p.to_step, actor=by)
    j.append("checkpoint", checkpoint_info(ck), step=p.to_step, actor=by)
    j.flush_sync()
