"""The operators' API: one façade over every operation, for every surface.

The CLI, the web UI and Python callers all go through :class:`Tether`: it reads
runs (their state at any step, checkpoints, events, what a step reached) and
changes them (pause, resume, stop, approve, deny, resolve, rollback, cascade,
fork, quarantine, budgets). Each method does one thing an operator asks for and
raises a :class:`~tether.errors.TetherError` whose message names the run, step or
event and says what to do when it cannot.

Example:
    >>> from tether import Tether, open_store
    >>> ops = Tether(open_store("tether.db"), who="human:ada")  # doctest: +SKIP
    >>> ops.pause("nightly-triage")  # doctest: +SKIP
    >>> ops.state("nightly-triage", step=3).state  # doctest: +SKIP

Every change is journaled in the run's own chain with who asked (``who``, else
``$TETHER_USER``, else the OS user). A run a worker owns gets a command that
worker applies at its next safe point; a run nobody owns is changed here, under
its lease.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tether import alerts as al
from tether import approvals as ap
from tether import control
from tether.audit import VerifyReport, verify_store
from tether.core.events import Event
from tether.core.ids import UlidSource, iso
from tether.core.policy import policy_from_text
from tether.core.settings import StoreEvent
from tether.core.statediff import Change, diff
from tether.core.transcripts import READ_ONLY_KEY
from tether.errors import UsageError
from tether.history import StepCheckpoint, checkpoints
from tether.policies import InForce, apply_policy, in_force
from tether.provenance import cascade as cs
from tether.provenance import fork as fk
from tether.provenance import impact as im
from tether.provenance import plan as pl
from tether.provenance import quarantine as qu
from tether.provenance import rollback as rb
from tether.reporting.overnight import NightReport, gather
from tether.reporting.query import Query, run_query
from tether.runinfo import run_info, run_json
from tether.runtime.agent import AgentLike
from tether.runtime.containment import QuarantineResult
from tether.runtime.operator import CommandResult, actor, find_effect, find_run, run_state, send_command
from tether.store.protocol import Store
from tether.store.records import ApprovalRow, EffectRow, Link, RunRow
from tether.store.seal_records import SignedCheckpoint
from tether.system_clock import SYSTEM_CLOCK
from tether.tools.base import Tool

__all__ = ["CommandResult", "RunState", "StepCheckpoint", "Tether"]


@dataclass(frozen=True, slots=True)
class RunState:
    """A run's state after one of its steps, restored from its checkpoints."""

    run: RunRow
    step: int
    """The step whose state this is (0: the start state)."""
    state: dict[str, Any]


class Tether:
    """An operator's hands on one store.

    Args:
        store: the store to operate on (:func:`tether.open_store`).
        agents: agents by the name runs were started with (``agent_ref``), as a
            :class:`~tether.Worker` takes them: used where an operation needs a run's
            agent (its undo tools in a rollback, its tools' schemas for edited approval
            arguments, the agent of a fork). A name not in it is imported as
            ``module:attr``.
        who: who is acting, e.g. ``human:ada`` (the web UI passes its principal's
            :attr:`~tether.identity.Principal.actor`). Default: the OS user, or
            ``$TETHER_USER`` where the store allows chosen names (see
            :func:`tether.runtime.operator.actor`).
    """

    def __init__(self, store: Store, *, agents: Mapping[str, AgentLike] | None = None,
                 who: str | None = None) -> None:
        self.store = store
        self.agents: dict[str, AgentLike] = dict(agents or {})
        self._who = who

    @property
    def who(self) -> str:
        """Who the journal records as acting (read when first needed, so a bad
        ``$TETHER_USER`` is reported by the command that would use it)."""
        if self._who is None:
            self._who = actor(store=self.store)
        return self._who

    def _writable(self, ref: str, what: str) -> None:
        """Refuse to change an imported run: it records what happened elsewhere."""
        row = self.run(ref)
        mark = row.spec.get(READ_ONLY_KEY)
        if mark:
            raise UsageError(f"run {row.name} ({row.id}) was imported from "
                             f"{mark.get('source')} (record {mark.get('record')}) and is "
                             f"read-only: no {what}; read it with `tether show`, `events`, "
                             "`analyze`")

    # -- reads ---------------------------------------------------------------------------

    def run(self, ref: str) -> RunRow:
        """A run by id, name, unique id prefix, or the name of its agent when one run has it."""
        return find_run(self.store, ref)

    def runs(self, *, status: str | None = None, swarm: str | None = None) -> list[RunRow]:
        """Runs, newest first, optionally only those in ``status`` or of ``swarm``."""
        return self.store.list_runs(status=status, swarm=swarm)

    def events(self, ref: str, *, after: int = 0, kind: str | None = None,
               limit: int | None = None) -> list[Event]:
        """The run's journal events in order: after seq ``after``, of ``kind``, at most
        ``limit``."""
        row = self.run(ref)
        evs = self.store.events(row.id, after_seq=after, limit=None if kind else limit)
        return [e for e in evs if kind is None or e.kind == kind][:limit]

    def checkpoints(self, ref: str) -> list[StepCheckpoint]:
        """Every checkpoint of the run, by epoch and step, each marked as part of its
        current history or of a branch a rollback abandoned."""
        return checkpoints(self.store, self.run(ref))

    def state(self, ref: str, step: int | None = None) -> RunState:
        """The run's state after ``step`` (default: its last completed step), in its current
        history (a step from before a rollback is read from the epoch it ran in)."""
        row, k, st = run_state(self.store, ref, step)
        return RunState(row, k, st)

    def state_diff(self, ref: str, before: int, after: int | None = None) -> list[Change]:
        """What changed in the run's state from step ``before`` to step ``after`` (default:
        its last completed step), key by key (:func:`tether.core.statediff.diff`)."""
        return diff(self.state(ref, before).state, self.state(ref, after).state)

    def show(self, ref: str) -> dict[str, Any]:
        """One run as ``tether show --json`` prints it: its public form (:func:`run_json`),
        its effects, inbox and held messages, alerts (those nobody acked first), result,
        last error and what it waits for."""
        row = self.run(ref)
        d = run_json(row)
        d["effects"] = [{"id": e.id, "step": e.step, "tool": e.tool, "effect": e.effect,
                         "status": e.status} for e in self.store.effects(run=row.id)]
        d["inbox"] = len(self.store.messages(recipient=row.id, status="pending"))
        d["held_messages"] = len(self.store.messages(sender=row.id, status="held"))
        d["alerts"] = [a.to_json() for a in sorted(self.alerts(run=row.id),
                                                   key=lambda a: a.acked_by is not None)]
        d.update(run_info(self.store, row).to_json())
        return d

    def effects(self, *, run: str | None = None, status: str | None = None) -> list[EffectRow]:
        """Effects, oldest first: of ``run`` only, in ``status`` only (``in_doubt``: those a
        person must settle with :meth:`resolve`)."""
        return self.store.effects(run=self.run(run).id if run else None, status=status)

    def effect(self, ref: str) -> EffectRow:
        """An effect by id (the id of its ``effect.intent`` event)."""
        return find_effect(self.store, ref)

    def approvals(self, *, run: str | None = None, pending: bool = True) -> list[ApprovalRow]:
        """Approval requests, oldest first (only pending ones unless ``pending=False``);
        requests past their expiry are settled first."""
        if not getattr(self.store, "readonly", False):  # a read-only copy: workers settle them
            ap.expire_due(self.store)
        run_id = self.run(run).id if run else None
        return self.store.approvals(run=run_id, status="pending" if pending else None)

    def approval_schema(self, approval: str) -> dict[str, Any]:
        """The JSON schema of the arguments an approval's tool takes (what edited arguments
        must fit), from its run's agent; UsageError when the agent cannot be loaded."""
        return dict(ap.tool_of(self.store, ap.find_approval(self.store, approval),
                               self.agents).schema)

    def alerts(self, *, run: str | None = None, since: float | None = None,
               unacked: bool = False) -> list[al.AlertRow]:
        """Monitor alerts, oldest first: of ``run`` only, journaled at or after ``since``
        (seconds since the epoch, the runs' clocks), only those nobody acked (``unacked``)."""
        return al.alerts(self.store, run=run, since=since, unacked=unacked)

    def erase(self, event: str, *, reason: str) -> StoreEvent:
        """Erase an event's payload and its copies in the projections and in every run's
        checkpoints, recorded (who, when, why) as a ``payload.erased`` store event; the
        audit still verifies (``Store.erase``)."""
        now = SYSTEM_CLOCK.now()
        return self.store.erase(event, reason=reason, actor=self.who, time=iso(now),
                                id=UlidSource(lambda: now).new())

    def night(self, since: float | None, until: float | None) -> NightReport:
        """What happened in ``[since, until)`` (the runs' clocks): what waits for a human,
        then per swarm and agent the decisions, effects, approvals, alerts and spending
        (render it with :func:`tether.reporting.render.render`)."""
        return gather(self.store, since, until)

    def query(self, q: Query) -> list[Event]:
        """The journal's events matching ``q`` (a time window, runs, agent, swarm, kinds,
        tool, effect class, actor, alert), in time order."""
        return run_query(self.store, q)

    def verify(self) -> VerifyReport:
        """Walk every chain and projection of the store and its signed checkpoints (``tether
        audit verify``); the report names every problem found."""
        return verify_store(self.store)

    def seals(self) -> list[SignedCheckpoint]:
        """The store's signed checkpoints, oldest first (``tether audit seal``)."""
        return self.store.signed_checkpoints()

    def links(self) -> list[Link]:
        """Every link between runs: a message consumed, a blackboard value or a file read,
        a rollback's new epoch, a fork (what the swarm graph draws)."""
        return self.store.links()

    def impact(self, ref: str, *, epoch: int | None = None) -> im.Impact:
        """Everything downstream of ``ref`` (an event id, or ``RUN@STEP``): the runs,
        steps, messages, effects and files its work reached."""
        return im.impact(self.store, ref, epoch=epoch)

    def rollback_plan(self, ref: str, step: int) -> pl.RollbackPlan:
        """What rolling the run back to ``step`` would do; changes nothing."""
        return pl.plan(self.store, ref, step)

    def cascade_plan(self, ref: str, step: int) -> cs.CascadePlan:
        """What a cascade rollback from the run's ``step`` would do; changes nothing."""
        return cs.cascade_plan(self.store, ref, step)

    def fork_plan(self, ref: str, step: int) -> list[str]:
        """What a fork at ``step`` would let the child repeat, in words; changes nothing."""
        return fk.fork_plan(self.store, ref, step)

    # -- commands --------------------------------------------------------------------------

    def command(self, ref: str, kind: str, args: dict[str, Any] | None = None, *,
                wait: float = 5.0) -> CommandResult:
        """Send a command (``pause``, ``resume``, ``stop``, ``budget``): applied here when no
        worker owns the run, else by its owner (waiting up to ``wait`` seconds to say so)."""
        self._writable(ref, kind)
        return send_command(self.store, ref, kind, args, who=self.who, wait=wait)

    def pause(self, ref: str, *, wait: float = 5.0) -> CommandResult:
        """Pause the run at its next safe point (an in-flight call finishes first)."""
        return self.command(ref, "pause", wait=wait)

    def resume(self, ref: str, *, accept_change: bool = False, wait: float = 5.0
               ) -> CommandResult:
        """Resume a paused or failed run (``accept_change``: although its agent's definition
        changed since it last ran)."""
        return self.command(ref, "resume", {"accept_change": True} if accept_change else None,
                            wait=wait)

    def stop(self, ref: str, *, wait: float = 5.0) -> CommandResult:
        """Stop the run for good (an in-flight async call is cancelled)."""
        return self.command(ref, "stop", wait=wait)

    def set_budget(self, ref: str, changes: Mapping[str, float], unset: list[str] | None = None
                   ) -> CommandResult:
        """Raise or lower the run's budget caps (``unset``: remove caps)."""
        self._writable(ref, "budget")
        return control.set_budget(self.store, ref, dict(changes), list(unset or []),
                                  who=self.who)

    def set_swarm_budget(self, swarm: str, changes: Mapping[str, float],
                         unset: list[str] | None = None) -> dict[str, float]:
        """Change the budget a swarm's runs share; returns the budget now."""
        return control.set_swarm_budget(self.store, swarm, dict(changes), list(unset or []),
                                        who=self.who)

    def set_swarm_pause_points(self, swarm: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change the pause points a swarm's runs share; returns them now."""
        return control.set_swarm_pause_points(self.store, swarm, changes, who=self.who)

    def policy(self, swarm: str | None = None) -> InForce:
        """The policy that gates runs of ``swarm`` (None: runs in no swarm) right now."""
        return in_force(self.store, swarm)

    def apply_policy(self, text: str, *, swarm: str | None = None, source: str = "dashboard"
                     ) -> StoreEvent | None:
        """Check a policy's TOML text, then put it in force for the store (or ``swarm``),
        journaled with who applied it (``tether policy apply``). None: exactly this policy is
        in force there already (nothing written). PolicyError names the line or rule."""
        return apply_policy(self.store, policy_from_text(text, "toml", source=source),
                            who=self.who, swarm=swarm)

    def approve(self, approval: str, *, note: str | None = None,
                arguments: dict[str, Any] | None = None, always: bool = False) -> ApprovalRow:
        """Approve a proposed action, optionally with edited ``arguments`` (checked against the
        tool's schema) or ``always`` for this run from now on."""
        return ap.decide(self.store, approval, approve=True, who=self.who, note=note,
                         arguments=arguments, always=always, agents=self.agents)

    def deny(self, approval: str, reason: str) -> ApprovalRow:
        """Deny a proposed action; the agent's model is told ``reason``."""
        return ap.decide(self.store, approval, approve=False, who=self.who, note=reason)

    def ack_alert(self, alert: str, *, note: str | None = None, wait: float = 5.0
                  ) -> CommandResult:
        """Record that this operator looked at ``alert`` (an ``alert.acked`` event in the
        alerted run's chain; applied by its worker when one owns the run). A second ack of
        the same alert is refused (UsageError naming who acked it)."""
        return al.ack(self.store, alert, who=self.who, note=note, wait=wait)

    def resolve(self, effect: str, resolution: str, *, result: Any = None) -> EffectRow:
        """Settle an in-doubt effect: ``done`` (it happened; ``result`` is what the agent
        sees), ``not_done`` (it did not; not retried) or ``retry`` (run it again, once)."""
        return control.resolve_effect(self.store, effect, resolution, result=result,
                                      who=self.who)

    def settle_undo(self, effect: str, *, happened: bool) -> EffectRow:
        """Settle an undo an interrupted rollback started: it took effect or it did not."""
        return rb.settle_undo(self.store, effect, happened=happened, who=self.who)

    def rollback(self, ref: str, step: int, *, accept_irreversible: bool = False,
                 force: bool = False, tools: Mapping[str, Tool] | None = None
                 ) -> pl.RollbackPlan:
        """Roll the run back to ``step``: undo its reversible effects after it (newest
        first), retract or requeue its messages, revert its writes, restore that step's
        state in a new epoch. Returns the plan carried out.

        Args:
            accept_irreversible: go past irreversible or in-doubt effects (they stay).
            force: undo even where a file changed since the effect.
            tools: undo tools by name, beside the agent's own and the built-in ones.
        """
        self._writable(ref, "rollback")
        return rb.rollback(self.store, ref, step, accept_irreversible=accept_irreversible,
                           force=force, who=self.who, tools=dict(tools or {}),
                           agents=self.agents)

    def cascade(self, ref: str, step: int, *, accept_irreversible: bool = False,
                force: bool = False, tools: Mapping[str, Tool] | None = None
                ) -> cs.CascadePlan:
        """Roll the run back to ``step`` and every run its later work reached back to just
        before its first affected step. Returns the plan carried out."""
        self._writable(ref, "cascade")
        return cs.cascade(self.store, ref, step, accept_irreversible=accept_irreversible,
                          force=force, who=self.who, tools=dict(tools or {}),
                          agents=self.agents)

    def fork(self, ref: str, step: int, *, edits: Mapping[str, Any] | None = None,
             shared_workspace: bool = False, name: str | None = None) -> RunRow:
        """Start a new run from the run's state at ``step`` with ``edits`` applied, in a copy
        of its workspace rewound to that step (unless ``shared_workspace``). Returns the new
        run; a worker drives it."""
        self._writable(ref, "fork")
        child = fk.fork(self.store, ref, step, edits=edits, shared_workspace=shared_workspace,
                        name=name, who=self.who, agents=self.agents)
        return self.run(child)

    def quarantine(self, ref: str, *, reason: str = "") -> QuarantineResult:
        """Contain the run: pause it, hold its undelivered messages, mark its writes suspect."""
        self._writable(ref, "quarantine")
        return qu.quarantine(self.store, ref, reason=reason, who=self.who)

    def release(self, ref: str) -> QuarantineResult:
        """Lift a quarantine: deliver the held messages, clear the suspect marks."""
        self._writable(ref, "release")
        return qu.quarantine(self.store, ref, release=True, who=self.who)
