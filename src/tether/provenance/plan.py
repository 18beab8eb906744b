"""What rolling one run back to step K would do: computed here, never applied here.

In the run's current history (its current epoch, and the earlier epochs it
grew from, for the steps each contributes: :func:`tether.history.lineage`), after
step K:

* every reversible effect is undone by the undo it registered, newest first;
  irreversible and in-doubt effects are listed and left (going past them needs
  ``accept_irreversible``); a reversible effect without an undo is an error;
* its messages not yet delivered (pending, or held by a quarantine) are
  retracted; those already delivered are listed with their receivers, which
  the rollback affects (``--cascade`` rolls them back too);
* messages it received are put back in its inbox (the re-run steps see them
  again), unless their sender is rolled back past them too;
* its blackboard writes still live are reverted (the key's previous version is
  current again);
* a workspace file changed by someone else since an effect (its hash differs
  from the after-image the effect recorded) is a conflict, refused without
  ``force``. Only the newest effect on a path is compared with the file as it
  is: undoing the newer ones first brings each older after-image back in turn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.audit.rows import RowFacts, effect_problem
from tether.audit.store_chain import recorded_erasures
from tether.core.events import payload_digest
from tether.errors import NotFound, UsageError
from tether.history import Segment, epoch_of, lineage, ran_in
from tether.runtime.operator import find_run
from tether.store.protocol import Store
from tether.store.records import EffectRow, MessageRow, Reached, RunRow, VersionRow
from tether.tools.files import file_hash

_NULL = payload_digest(None)

DONE = ("done", "resolved_done")


@dataclass(frozen=True, slots=True)
class PlannedUndo:
    """One reversible effect to undo."""

    effect: EffectRow
    tool: str
    arguments: dict[str, Any]
    files: dict[str, Any] = field(default_factory=dict)
    """The after-image the effect recorded: workspace path -> hash."""
    conflicts: tuple[str, ...] = ()
    """Workspace files changed since the effect (current hash != recorded after-image)."""
    started: bool = False
    """An earlier rollback journaled ``effect.undoing`` for it and did not finish."""


@dataclass(slots=True)
class RollbackPlan:
    """What a rollback of ``run`` to ``to_step`` would do."""

    run: RunRow
    to_step: int
    state_epoch: int = 0
    """The epoch whose checkpoint of ``to_step`` is restored (earlier than the run's own
    when ``to_step`` is before its current epoch began)."""
    undo: list[PlannedUndo] = field(default_factory=list)
    irreversible: list[EffectRow] = field(default_factory=list)
    in_doubt: list[EffectRow] = field(default_factory=list)
    missing_undo: list[EffectRow] = field(default_factory=list)
    forged: list[EffectRow] = field(default_factory=list)
    """Effects whose row does not say what the journal says (changed outside tether): the
    rollback is refused rather than run an undo, or skip an effect, the row made up."""
    retract: list[MessageRow] = field(default_factory=list)
    delivered: list[MessageRow] = field(default_factory=list)
    requeue: list[MessageRow] = field(default_factory=list)
    revert: list[VersionRow] = field(default_factory=list)
    affects: list[Reached] = field(default_factory=list)
    """Other runs that took in work of the steps after ``to_step`` (messages, blackboard,
    files): a plain rollback leaves them as they are; ``--cascade`` rolls them back too."""
    names: dict[str, str] = field(default_factory=dict)
    """Run id -> name, for the runs the plan mentions (to print names, not ids)."""

    def _name(self, run: str) -> str:
        return self.names.get(run, run)

    @property
    def idle(self) -> bool:
        """True when the run is at ``to_step`` already and nothing is left to do (a run
        still marked as rolling back is not: its rollback must finish and restore)."""
        return (self.to_step == self.run.step and not self.undo and not self.retract
                and not self.requeue and not self.revert
                and not self.run.spec.get("rolling_back"))

    @property
    def left(self) -> list[EffectRow]:
        """Effects that stay done in the world."""
        return self.irreversible + self.in_doubt

    def lines(self, *, cascade: bool = False) -> list[str]:
        """The plan in words, for ``--plan`` (in a cascade, delivered messages are the
        receivers' plans' business)."""
        r = self.run
        if self.idle:
            return [f"run {r.name} ({r.id}) is at step {r.step} already: nothing to roll back"]
        older = f", state from epoch {self.state_epoch}" if self.state_epoch != r.epoch else ""
        out = [f"rollback of run {r.name} ({r.id}) from step {r.step} to step {self.to_step} "
               f"(epoch {r.epoch} -> {r.epoch + 1}{older})"]
        out += self._changes()
        for a in [] if cascade else self.affects:
            via = a.via
            how = (f" (via {via.kind} from {self._name(via.src_run)} step {via.src_step})"
                   if via is not None else "")
            out.append(f"  AFFECTS run {self._name(a.run)} ({a.run}) from step {a.first_step}"
                       f"{how}: it took in work this rollback undoes; it is left as it is (roll "
                       "it back too with --cascade)")
        for e in self.irreversible:
            out.append(f"  LEAVE   step {e.step} {e.tool} ({e.id}): irreversible, cannot be undone")
        for e in self.in_doubt:
            out.append(f"  LEAVE   step {e.step} {e.tool} ({e.id}): in doubt ({e.status})")
        for e in self.missing_undo:
            out.append(f"  ERROR   step {e.step} {e.tool} ({e.id}): reversible but no undo was "
                       "registered")
        out.append(f"  restore the state of step {self.to_step} (steps after it stay in the "
                   "journal as history); budgets are not refunded")
        refused = self._refusals(cascade)
        if refused:
            out.append(f"  as it stands, the rollback is refused: {'; '.join(refused)}")
        return out

    def _changes(self) -> list[str]:
        """The plan's undos, reverts, retractions and requeues, a line each."""
        out = []
        for u in self.undo:
            e = u.effect
            note = f"  CONFLICT: changed since: {', '.join(u.conflicts)}" if u.conflicts else ""
            out.append(f"  undo    step {e.step} {e.tool}{_paths(e.arguments)} ({e.id}) with "
                       f"{u.tool}{note}")
        for v in self.revert:
            out.append(f"  revert  step {v.step} blackboard {v.key!r} version {v.version}")
        for m in self.retract:
            state = ("delivered: its receiver puts it back first" if m.status == "delivered"
                     else m.status)
            out.append(f"  retract step {m.step} message {m.id} to {self._name(m.recipient)} "
                       f"({state})")
        for m in self.requeue:
            out.append(f"  requeue message {m.id} from {self._name(m.sender)} (received after "
                       f"step {self.to_step}): back in the inbox")
        return out

    def _refusals(self, cascade: bool) -> list[str]:
        """Why the rollback would be refused as it stands (nothing: it would go ahead)."""
        refused = []
        if self.missing_undo:
            refused.append("a reversible effect registered no undo")
        if self.left:
            refused.append("--accept-irreversible is needed to go past what cannot be undone")
        if any(u.conflicts for u in self.undo):
            refused.append("--force is needed to overwrite files changed since" + (
                "" if cascade or not self.affects else " (or --cascade, when the change came "
                "from a run this rollback affects)"))
        return refused

    def to_json(self) -> dict[str, Any]:
        r = self.run
        return {
            "run": r.id, "name": r.name, "from_step": r.step, "to_step": self.to_step,
            "epoch": r.epoch, "state_epoch": self.state_epoch, "idle": self.idle,
            "undo": [{"effect": u.effect.id, "step": u.effect.step, "tool": u.effect.tool,
                      "undo_tool": u.tool, "conflicts": list(u.conflicts)} for u in self.undo],
            "revert": [{"key": v.key, "version": v.version, "event": v.event, "step": v.step}
                       for v in self.revert],
            "retract": [m.id for m in self.retract], "requeue": [m.id for m in self.requeue],
            "delivered": [{"message": m.id, "recipient": m.recipient} for m in self.delivered],
            "affects": [{"run": a.run, "epoch": a.epoch, "first_step": a.first_step,
                         "via": None if a.via is None else a.via.kind} for a in self.affects],
            "irreversible": [e.id for e in self.irreversible],
            "in_doubt": [e.id for e in self.in_doubt],
            "missing_undo": [e.id for e in self.missing_undo],
        }


def plan(store: Store, run_ref: str, to_step: int, *, check_files: bool = True) -> RollbackPlan:
    """Compute what rolling ``run_ref`` back to ``to_step`` would do; change nothing."""
    row = find_run(store, run_ref)
    if to_step < 0:
        raise UsageError(f"--to must be a step >= 0, not {to_step}")
    if to_step > row.step:
        raise UsageError(f"run {row.id} has completed {row.step} steps in epoch {row.epoch}; "
                         f"step {to_step} is in the future")
    segments = lineage(store, row)
    state_epoch = epoch_of(segments, to_step)
    if state_epoch is None:
        raise NotFound(f"run {row.id} has no checkpoint for step {to_step} in its history "
                       "(it was forked after that step)")
    p = RollbackPlan(row, to_step, state_epoch)
    after_k = _after(segments, to_step)
    _sort_effects(store, p, after_k)
    _sort_messages(store, p, after_k)
    p.revert = [v for v in store.versions(run=row.id) if v.ns.startswith("board:")
                and after_k(v.epoch, v.step) and v.status == "live"]
    if check_files:
        p.undo = with_conflicts([(row.spec.get("workspace"), u) for u in p.undo])
    if to_step < row.step:
        ran = ran_in(segments, to_step + 1)
        p.affects = [r for r in store.downstream(row.id, row.epoch if ran is None else ran,
                                                 to_step + 1) if r.run != row.id]
    others = {m.recipient for m in p.retract + p.delivered} | {m.sender for m in p.requeue} | {
        a.run for a in p.affects} | {a.via.src_run for a in p.affects if a.via is not None}
    for run in others - {row.id}:
        other = store.get_run(run)
        if other is not None:
            p.names[run] = other.name
    p.names[row.id] = row.name
    return p


def _sort_effects(store: Store, p: RollbackPlan, after_k: Callable[[int, int], bool]) -> None:
    """The run's effects after the step, newest first: to undo, to leave, or refused."""
    after = [e for e in store.effects(run=p.run.id) if after_k(e.epoch, e.step)]
    after.sort(key=lambda e: (e.epoch, e.step, e.idx), reverse=True)
    rows = RowFacts(erased=recorded_erasures(store))  # an erased row is no forgery
    images, started = journal_facts(store, p.run, rows)
    p.forged = [e for e in after if effect_problem(rows, e)]
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
            p.undo.append(PlannedUndo(e, e.undo["tool"], dict(e.undo["arguments"]),
                               images.get(e.id, {}), (), e.id in started))


def _sort_messages(store: Store, p: RollbackPlan, after_k: Callable[[int, int], bool]) -> None:
    """Messages the run sent after the step (to retract; delivered ones are the receivers'),
    and those it took after it (back in its inbox)."""
    for m in store.messages(sender=p.run.id):
        if after_k(m.epoch, m.step):
            if m.status in ("pending", "held"):
                p.retract.append(m)
            elif m.status == "delivered":
                p.delivered.append(m)
    for m in store.messages(recipient=p.run.id, status="delivered"):
        taken = claimed_at(m)
        if taken is not None and after_k(*taken):
            p.requeue.append(m)


def _paths(arguments: dict[str, Any]) -> str:
    """The workspace paths a file tool's arguments name, for the plan's words."""
    paths = [str(arguments[k]) for k in ("path", "src", "dst") if isinstance(arguments.get(k), str)]
    return f" {' -> '.join(paths)}" if paths else ""


def _after(segments: list[Segment], step: int) -> Callable[[int, int], bool]:
    """Whether (epoch, s) is a step of the run's current history after ``step``."""
    by_epoch = {seg.epoch: seg for seg in segments}

    def after(epoch: int, s: int) -> bool:
        seg = by_epoch.get(epoch)
        return seg is not None and s > step and seg.holds(s)
    return after


def claimed_at(m: MessageRow) -> tuple[int, int] | None:
    """(epoch, step) of the receive call that took a message (its claim key)."""
    parts = (m.claim or "").split(":")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return int(parts[0]), int(parts[1])


def with_conflicts(undos: list[tuple[str | None, PlannedUndo]]) -> list[PlannedUndo]:
    """The undos (in the order given: newest first) with their file conflicts marked.

    Only the newest effect on each (workspace, path) is compared with the file as it is;
    an undo an interrupted rollback started may have put the file back already.
    """
    seen: set[tuple[str, str]] = set()
    out = []
    for ws, u in undos:
        conflicts: tuple[str, ...] = ()
        if ws and not u.started:
            conflicts = tuple(path for path, h in u.files.items()
                              if (ws, path) not in seen and file_hash(Path(ws), path) != h)
        seen.update((ws or "", path) for path in u.files)
        out.append(PlannedUndo(u.effect, u.tool, u.arguments, u.files, conflicts, u.started))
    return out


def journal_facts(store: Store, row: RunRow, rows: RowFacts | None = None
                  ) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """After-images of effects (from ``effect.done``) and undos started but not finished;
    with ``rows``, also what the run's effect rows must say (noted into it)."""
    images: dict[str, dict[str, Any]] = {}
    undoing: set[str] = set()
    for ev in store.events(row.id):
        if rows is not None:
            rows.note(ev, ev.payload is None and ev.payload_hash != _NULL)
        if not isinstance(ev.payload, dict):
            continue
        if ev.kind == "effect.done" and ev.causes:
            images[ev.causes[0]] = dict((ev.payload.get("after") or {}).get("files") or {})
        elif ev.kind == "effect.undoing":
            undoing.add(str(ev.payload["effect"]))
        elif ev.kind in ("effect.undone", "effect.undo_settled"):
            undoing.discard(str(ev.payload["effect"]))
    return images, undoing


def refuse_forged(p: RollbackPlan) -> None:
    """Raise UsageError if an effect row the plan acts on is not what the journal says."""
    if p.forged:
        e = p.forged[0]
        raise UsageError(f"effect {e.id} ({e.tool}, run {e.run} step {e.step}): its row does not "
                         "match the journal (changed outside tether), so its undo cannot be "
                         "trusted; run `tether audit verify` and restore the store from a backup")


def refuse(p: RollbackPlan, *, accept_irreversible: bool, force: bool) -> None:
    """Raise UsageError if the plan may not be carried out as asked."""
    refuse_forged(p)
    if p.missing_undo:
        e = p.missing_undo[0]
        raise UsageError(f"effect {e.id} ({e.tool}, run {e.run} step {e.step}) is reversible but "
                         "registered no undo; roll back to a step after it, or fix the tool")
    if p.left and not accept_irreversible:
        left = [f"{e.tool} at run {e.run} step {e.step} ({e.id})" for e in p.left]
        raise UsageError(f"rolling back past {len(left)} effect(s) that cannot be undone: "
                         f"{'; '.join(left[:5])}; add --accept-irreversible to go past them")
    conflicts = [u for u in p.undo if u.conflicts]
    if conflicts and not force:
        u = conflicts[0]
        hint = (" If the change came from a run this rollback affects (see the plan's AFFECTS "
                "lines), roll it back too with --cascade" if p.affects else "")
        raise UsageError(f"{', '.join(u.conflicts)} changed since effect {u.effect.id} "
                         f"({u.effect.tool}, run {u.effect.run} step {u.effect.step}); undoing it "
                         f"would overwrite someone else's change. Look first, then use --force."
                         f"{hint}")
