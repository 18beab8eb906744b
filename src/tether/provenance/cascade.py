"""Cascade rollback: roll a run back to step K and every run its bad work reached.

The affected runs are the impact of step K+1 (:mod:`tether.provenance.impact`).
Each is rolled back to just before its first affected step in its current
history; an affected epoch whose affected steps were rolled back already is
left alone. A run whose taint goes back to before its current epoch began
is rolled back through its earlier epochs (its history); a fork that started
from affected work has no earlier state to go back to: it is listed as
blocked, and the cascade needs ``--accept-irreversible`` to go on without it
(quarantine or stop it).

Carrying it out holds every affected run's lease at once, then:

1. marks every run as rolling back (naming the cascade), so none is resumed
   half undone and running the command again finishes the job;
2. puts messages back in the inboxes of receivers rolled back past them, then
   retracts every undelivered message and reverts every blackboard write made
   after each run's target step (a message both received and sent inside the
   rolled-back span ends retracted);
3. undoes every reversible effect of every run, newest first across runs (in
   the order the files' versions were committed: :func:`undo_order`), so files
   several runs changed in turn come back through each version;
4. restores each run's state in a new epoch, the origin last: while the origin
   is unfinished, its old epoch still names the whole cascade.
"""

from __future__ import annotations

import contextlib
import copy
import heapq
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tether.errors import Conflict, UsageError
from tether.history import lineage, ran_in
from tether.provenance import rollback as rb
from tether.provenance.impact import Impact, impact_from
from tether.provenance.plan import PlannedUndo, RollbackPlan, plan, refuse, with_conflicts
from tether.runtime.agent import AgentLike
from tether.runtime.holding import holding
from tether.runtime.journal import RunJournal
from tether.runtime.operator import actor
from tether.store.protocol import Store
from tether.store.records import RunRow
from tether.tools.base import Tool


@dataclass(slots=True)
class Blocked:
    """An affected run that cannot be rolled back far enough within its current epoch."""

    run: RunRow
    first_step: int
    why: str


@dataclass(slots=True)
class CascadePlan:
    """What ``tether rollback RUN --to K --cascade`` would do."""

    origin: RunRow
    to_step: int
    impact: Impact
    plans: list[RollbackPlan] = field(default_factory=list)
    """One per run to roll back, in restore order: dependents first, the origin last."""
    blocked: list[Blocked] = field(default_factory=list)

    @property
    def idle(self) -> bool:
        return all(p.idle for p in self.plans) and not self.blocked

    @property
    def marker(self) -> dict[str, Any]:
        return {"run": self.origin.id, "epoch": self.origin.epoch, "to": self.to_step}

    def lines(self) -> list[str]:
        o = self.origin
        if self.idle:
            return [f"run {o.name} ({o.id}) is at step {self.to_step} already and nothing "
                    "downstream is left to roll back"]
        others = [p for p in self.plans if p.run.id != o.id and not p.idle]
        out = [f"cascade rollback of run {o.name} ({o.id}) to step {self.to_step}: "
               f"{len(others)} other run(s) affected"]
        for p in self.plans:
            if p.idle:
                continue
            out.append("")
            out.extend(p.lines(cascade=True))
        for b in self.blocked:
            out.append("")
            out.append(f"BLOCKED run {b.run.name} ({b.run.id}) from step {b.first_step}: {b.why}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"origin": self.origin.id, "to_step": self.to_step, "idle": self.idle,
                "plans": [p.to_json() for p in self.plans if not p.idle],
                "blocked": [{"run": b.run.id, "first_step": b.first_step, "why": b.why}
                            for b in self.blocked],
                "impact": self.impact.to_json()}


def cascade_plan(store: Store, run_ref: str, to_step: int) -> CascadePlan:
    """Compute the cascade; change nothing."""
    origin_plan = plan(store, run_ref, to_step, check_files=False)
    origin = origin_plan.run
    epoch = ran_in(lineage(store, origin), to_step + 1)
    imp = impact_from(store, origin, origin.epoch if epoch is None else epoch, to_step + 1)
    cp = CascadePlan(origin, to_step, imp)
    rows, firsts = _first_affected(store, cp)
    for run, steps in firsts.items():
        if not steps:
            continue  # rolled back past it already
        target = min(steps) - 1
        if target < 0:
            cp.blocked.append(Blocked(rows[run], min(steps), (
                "it started from the affected work (a fork of it), so there is no earlier "
                "state to go back to; quarantine or stop it")))
            continue
        cp.plans.append(plan(store, run, target, check_files=False))
    # Dependents first (the reverse of the order the walk reached them), the origin last.
    cp.plans.reverse()
    cp.plans.append(origin_plan)
    # A delivered message its receiver puts back (rolled back past it) is then retracted.
    requeued = {m.id for p in cp.plans for m in p.requeue}
    for p in cp.plans:
        p.retract += [m for m in p.delivered if m.id in requeued]
        p.delivered = [m for m in p.delivered if m.id not in requeued]
    _mark_conflicts(store, cp)
    return cp


def _first_affected(store: Store, cp: CascadePlan
                    ) -> tuple[dict[str, RunRow], dict[str, list[int]]]:
    """Each affected run (but the origin) and the first affected steps of its current
    history (none: it was rolled back past them already)."""
    firsts: dict[str, list[int]] = {}
    rows: dict[str, RunRow] = {}
    for a in cp.impact.affected:
        if a.run.id != cp.origin.id:
            rows[a.run.id] = a.run
            firsts.setdefault(a.run.id, [])
            segs = {s.epoch: s for s in lineage(store, a.run)}
            seg = segs.get(a.epoch)
            # Still in the run's history? (An epoch rolled back past the taint is not.)
            if seg is not None and (seg.end is None or a.first_step <= seg.end):
                firsts[a.run.id].append(a.first_step)
    # Matched on the origin and the step (the marker also names an epoch).
    marker = {"run": cp.origin.id, "to": cp.to_step}
    for r in store.list_runs():
        # Marked by this cascade before it was interrupted: finish them at the marked step.
        m = r.spec.get("rolling_back")
        theirs = m.get("cascade") if isinstance(m, dict) else None
        if r.id != cp.origin.id and isinstance(theirs, dict) and all(
                theirs.get(k) == v for k, v in marker.items()):
            rows[r.id] = r
            firsts[r.id] = [int(m["to"]) + 1]  # type: ignore[index]
    return rows, firsts


def undo_order(store: Store, plans: list[RollbackPlan]) -> list[tuple[int, PlannedUndo]]:
    """Every undo of the plans, (plan index, undo), newest write first.

    Effect ids are ULIDs, ordered by time only within one process, so they cannot order
    the writes of runs driven by different workers. What must hold is: each run's own
    effects newest first (each plan's order), and on each file, the newer version's
    effect first (the versions table numbers them in commit order). Those constraints
    come from one real history, so they never contradict; a topological merge keeps
    them, and takes the larger id first where they leave a choice.
    """
    nodes = [(i, u) for i, p in enumerate(plans) for u in p.undo]
    ids = [u.effect.id for _, u in nodes]
    out = [nodes[k] for k in _topological(ids, _undo_before(store, plans, ids))]
    if len(out) != len(nodes):
        raise UsageError("the runs' effects give no consistent order to undo them in (the "
                         "versions table contradicts the runs' own order); check "
                         "`tether audit verify`")
    return out


def _undo_before(store: Store, plans: list[RollbackPlan], ids: list[str]
                 ) -> dict[int, set[int]]:
    """Undo k: the undos that must come after it (indexes into ``ids``): its run's older
    effects, and on each file, the effects of its older versions."""
    at = {eid: k for k, eid in enumerate(ids)}
    after: dict[int, set[int]] = {k: set() for k in range(len(ids))}
    for p_undos in ([at[u.effect.id] for u in p.undo] for p in plans):
        for a, b in itertools.pairwise(p_undos):
            after[a].add(b)
    per_key: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for v in store.versions(events=ids):
        per_key.setdefault((v.ns, v.key), []).append((v.version, at[v.event]))
    for versions in per_key.values():
        chain = [k for _, k in sorted(versions, reverse=True)]
        for a, b in itertools.pairwise(chain):
            if a != b:
                after[a].add(b)
    return after


def _topological(ids: list[str], after: dict[int, set[int]]) -> list[int]:
    """Indexes in an order that keeps every ``after`` constraint, the larger id first where
    they leave a choice; shorter than ``ids`` if the constraints have a cycle."""
    waiting = [0] * len(ids)
    for bs in after.values():
        for b in bs:
            waiting[b] += 1
    rank = {k: r for r, k in enumerate(sorted(range(len(ids)), key=lambda k: ids[k],
                                               reverse=True))}
    ready = [(rank[k], k) for k in range(len(ids)) if waiting[k] == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        _, k = heapq.heappop(ready)
        out.append(k)
        for b in after[k]:
            waiting[b] -= 1
            if waiting[b] == 0:
                heapq.heappush(ready, (rank[b], b))
    return out


def _mark_conflicts(store: Store, cp: CascadePlan) -> None:
    """File conflicts across runs: only the newest undo on each path meets the file as it is."""
    order = undo_order(store, cp.plans)
    marked = with_conflicts([(cp.plans[i].run.spec.get("workspace"), u) for i, u in order])
    for p in cp.plans:
        p.undo = []
    for (i, _), u in zip(order, marked, strict=True):
        cp.plans[i].undo.append(u)


def refuse_cascade(cp: CascadePlan, *, accept_irreversible: bool, force: bool) -> None:
    for p in cp.plans:
        rb.unfinished(p.run, p.to_step, cp.marker)
        refuse(p, accept_irreversible=accept_irreversible, force=force)
    if cp.blocked and not accept_irreversible:
        b = cp.blocked[0]
        raise UsageError(f"run {b.run.id} ({b.run.name}) is affected from step {b.first_step} "
                         f"but cannot be rolled back that far: {b.why}; add "
                         "--accept-irreversible to roll back the others and leave it")


def _settle_messages(store: Store, cp: CascadePlan, todo: list[RollbackPlan],
                     journals: dict[str, RunJournal], accept_irreversible: bool,
                     force: bool) -> list[RollbackPlan] | CascadePlan:
    """Retract, requeue and revert every run's messages and writes; the plans as carried out,
    or the new cascade plan when a run outside the leases took in the work meanwhile."""
    # First, before anything a retry could not take back: retract what is still
    # pending. Only a message to a run outside the leases can be taken meanwhile, and
    # then that run took in the work: it is refused (Conflict) and the cascade starts
    # again with that run in it.
    first: dict[str, RollbackPlan] = {}
    for p in todo:
        now = copy.copy(p)  # the plan also lists, for show, delivered ones to be requeued
        now.retract = [m for m in p.retract if m.status in ("pending", "held")]
        try:
            rb.retract_and_revert(journals[p.run.id], now)
        except Conflict:
            return _again(store, cp, journals, first, accept_irreversible, force)
        first[p.run.id] = now
    for p in todo:
        rb.requeue(journals[p.run.id], p)
    settled = []
    for p in todo:
        # Planned again: a message a receiver put back in its inbox is retractable now
        # (its recipient is held here, so nobody else can take it).
        fresh = rb.replanned(store, p)
        rb.retract_and_revert(journals[p.run.id], fresh)
        # What was carried out, for the report: both passes, and the requeues.
        fresh.retract = first[p.run.id].retract + fresh.retract
        fresh.revert, fresh.requeue = first[p.run.id].revert, p.requeue
        settled.append(fresh)
    return settled


def _again(store: Store, cp: CascadePlan, journals: dict[str, RunJournal],
           done: dict[str, RollbackPlan], accept_irreversible: bool,
           force: bool) -> CascadePlan:
    """A run outside the leases took in the work meanwhile: the plan with it, checked here
    while the leases are still held. If it is refused, the runs are unmarked when nothing
    was changed yet, and the error says what was, otherwise."""
    again = cascade_plan(store, cp.origin.id, cp.to_step)
    try:
        refuse_cascade(again, accept_irreversible=accept_irreversible, force=force)
    except UsageError as exc:
        if not any(p.retract or p.revert for p in done.values()):
            for j in journals.values():
                rb.unmark(j, "the cascade rollback was refused; nothing was changed")
            raise
        raise UsageError(f"{exc}. Another run took in the work while the cascade ran, and it "
                         f"was half done already ({sum(len(p.retract) for p in done.values())} "
                         "message(s) retracted, blackboard writes reverted): the runs stay "
                         "paused and marked; run the cascade again with what it asks for to "
                         "finish it") from None
    return again


def cascade(store: Store, run_ref: str, to_step: int, *, accept_irreversible: bool = False,
            force: bool = False, who: str | None = None,
            tools: dict[str, Tool] | None = None,
            agents: Mapping[str, AgentLike] | None = None) -> CascadePlan:
    """Carry out the cascade (see the module docstring). Returns the plan carried out."""
    cp = cascade_plan(store, run_ref, to_step)
    if cp.idle:
        return cp
    refuse_cascade(cp, accept_irreversible=accept_irreversible, force=force)
    by = who or actor(store=store)
    origin = cp.origin.id
    for _ in range(rb.RETRIES):
        for p in cp.plans:
            rb.pause_if_active(store, p.run, by)
        done = _under_leases(store, cp, origin, to_step, accept_irreversible=accept_irreversible,
                             force=force, by=by, tools=tools, agents=agents)
        if isinstance(done, CascadePlan):
            return done
        cp = done[0]  # another run took in the work meanwhile: take it too, and go again
    raise UsageError(f"runs kept taking in the work of run {origin} after step {to_step} while "
                     "the cascade was being prepared; pause them, then run it again")


def _under_leases(store: Store, cp: CascadePlan, origin: str, to_step: int, *,
                  accept_irreversible: bool, force: bool, by: str,
                  tools: dict[str, Tool] | None, agents: Mapping[str, AgentLike] | None
                  ) -> CascadePlan | tuple[CascadePlan]:
    """Hold every affected run's lease and carry the cascade out; (the new plan,) when a run
    outside the leases took in the work meanwhile (nothing irreversible was done then)."""
    with contextlib.ExitStack() as stack:
        journals: dict[str, RunJournal] = {}
        # Every lease at once, in id order (two cascades never wait on each other in a loop).
        for run in sorted({p.run.id for p in cp.plans}):
            j = stack.enter_context(holding(store, run, kind="rollback", ttl=120.0,
                                            busy=rb.busy(run), wait=5.0))
            assert j is not None
            journals[run] = j
        cp = cascade_plan(store, origin, to_step)  # again, under the leases
        refuse_cascade(cp, accept_irreversible=accept_irreversible, force=force)
        if {p.run.id for p in cp.plans} - set(journals):
            return (cp,)
        todo = [p for p in cp.plans if not p.idle]
        for p in todo:
            rb.begin(journals[p.run.id], p.to_step, cp.marker)
        settled = _settle_messages(store, cp, todo, journals, accept_irreversible, force)
        if isinstance(settled, CascadePlan):
            return (settled,)
        registry: dict[str, dict[str, Tool]] = {}
        for i, u in undo_order(store, settled):
            owner = settled[i].run
            reg = registry.setdefault(owner.id, rb.undo_tools(owner, tools, agents))
            rb.undo(journals[owner.id], u, reg)
        for p in settled:
            rb.restore(store, journals[p.run.id], p, by, cascade=cp.marker)
    cp.plans = settled  # what was carried out (retractions include requeued messages)
    return cp
