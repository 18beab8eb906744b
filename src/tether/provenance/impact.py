"""Impact: everything downstream of a step, in every run of the store.

Within a run, every step depends on the ones before it (a step sees the state
they left). Across runs, the store's provenance links say where work flowed:
a message received cites its ``message.sent``, a blackboard read cites the
write it saw, a file-tool call cites the effect that last wrote the file, a
rollback's new epoch starts from the old one's state at its step, a fork
starts from its parent's. So the steps affected by step S of run R (epoch E)
are: R's steps from S on in epoch E, every epoch or fork started from a step
at or after S, and, recursively, every step that took in something one of
those produced.

The walk (``Store.downstream``) is a breadth-first search over links indexed by
their source step: about one indexed query per affected (run, epoch), each link
read about once, whatever the size of the journal.
The granularity is the step: an event names its step.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tether.errors import NotFound, UsageError
from tether.history import lineage, ran_in
from tether.runtime.operator import find_run
from tether.store.protocol import Store
from tether.store.records import EffectRef, Link, MessageRef, RunRow, VersionRef


@dataclass(slots=True)
class Affected:
    """One affected (run, epoch): its steps from ``first_step`` on, and what they produced."""

    run: RunRow
    epoch: int
    first_step: int
    via: Link | None
    """How the taint reached this (run, epoch) first (None for the origin)."""
    last_step: int = 0
    effects: list[EffectRef] = field(default_factory=list)
    messages: list[MessageRef] = field(default_factory=list)
    board: list[VersionRef] = field(default_factory=list)
    files: list[VersionRef] = field(default_factory=list)

    @property
    def span(self) -> str:
        """The affected steps in words: ``step 5`` or ``steps 5-7``."""
        if self.last_step <= self.first_step:
            return f"step {self.first_step}"
        return f"steps {self.first_step}-{self.last_step}"

    def summary(self, name: Callable[[str], str] = str) -> str:
        """One line: the run, its affected steps, how the taint came, what those steps did."""
        what = [f"{n} {tool}" for tool, n in sorted(Counter(e.tool for e in self.effects).items())]
        if self.messages:
            what.append(f"sent {len(self.messages)} message(s)")
        if self.board:
            what.append(f"{len(self.board)} blackboard write(s)")
        via = "" if self.via is None else \
            f" (via {self.via.kind} from {name(self.via.src_run)} step {self.via.src_step})"
        old = "" if self.current else f" [epoch {self.epoch}: rolled back since]"
        return f"{self.run.name:<11} {self.span}{old}{via}: {', '.join(what) or 'nothing'}"

    @property
    def current(self) -> bool:
        """Whether this is the run's current epoch (older epochs were rolled back already)."""
        return self.epoch == self.run.epoch

    def to_json(self) -> dict[str, Any]:
        via = self.via
        return {
            "run": self.run.id, "name": self.run.name, "agent": self.run.agent,
            "status": self.run.status, "epoch": self.epoch, "current_epoch": self.current,
            "first_step": self.first_step, "last_step": self.last_step,
            "via": None if via is None else {
                "kind": via.kind, "run": via.src_run, "epoch": via.src_epoch,
                "step": via.src_step, "event": via.src_event, "at_event": via.dst_event},
            "effects": [{"id": e.id, "step": e.step, "tool": e.tool, "effect": e.effect,
                         "status": e.status} for e in self.effects],
            "messages": [{"id": m.id, "step": m.step, "to": m.recipient, "status": m.status}
                         for m in self.messages],
            "board": [{"key": v.key, "version": v.version, "step": v.step, "status": v.status,
                       "event": v.event, "suspect": v.suspect} for v in self.board],
            "files": [{"path": v.key, "version": v.version, "step": v.step, "status": v.status,
                       "event": v.event, "workspace": v.ns.removeprefix("file:"),
                       "suspect": v.suspect} for v in self.files],
        }


@dataclass(slots=True)
class Impact:
    """The answer of :func:`impact`: affected (run, epoch)s, the origin first."""

    origin: tuple[str, int, int]
    """(run, epoch, step) the walk started from."""
    affected: list[Affected]

    def runs(self) -> set[str]:
        return {a.run.id for a in self.affected}

    def files(self) -> list[str]:
        """The workspace files the affected steps wrote, in the order first written."""
        return list(dict.fromkeys(v.key for a in self.affected for v in a.files))

    def totals(self) -> str:
        """The whole impact in one line."""
        steps = sum(max(0, a.last_step - a.first_step + 1) for a in self.affected)
        return (f"{len(self.runs())} runs, {steps} steps, "
                f"{sum(len(a.messages) for a in self.affected)} messages, "
                f"{sum(len(a.effects) for a in self.affected)} effects on "
                f"{len(self.files())} files")

    def to_json(self) -> dict[str, Any]:
        run, epoch, step = self.origin
        return {"origin": {"run": run, "epoch": epoch, "step": step},
                "runs": len(self.runs()),
                "steps": sum(max(0, a.last_step - a.first_step + 1) for a in self.affected),
                "affected": [a.to_json() for a in self.affected]}


def parse_origin(store: Store, ref: str, epoch: int | None = None) -> tuple[RunRow, int, int]:
    """``EVENT`` (an event id) or ``RUN@STEP`` -> (run row, epoch, step).

    ``RUN@STEP`` means the step of the run's current history (in the epoch that ran it)
    unless ``epoch`` is given.
    """
    if "@" in ref:
        return _at_step(store, ref, epoch)
    e = store.event(ref)
    if e is None:
        if store.find_runs(ref):
            raise UsageError(f"{ref!r} is a run: name its step too, e.g. {ref}@1 (the step "
                             "whose work to follow)")
        raise NotFound(f"no event {ref!r}; give an event id (from `tether events RUN`) or "
                       "RUN@STEP")
    owner = store.get_run(e.run)
    if owner is None:
        raise NotFound(f"event {ref} names run {e.run}, which is not in this store")
    return owner, e.epoch, e.step


def _at_step(store: Store, ref: str, epoch: int | None) -> tuple[RunRow, int, int]:
    """``RUN@STEP`` -> (run row, epoch, step); see :func:`parse_origin`."""
    run_ref, _, step_text = ref.rpartition("@")
    try:
        step = int(step_text)
    except ValueError:
        raise UsageError(f"{ref!r}: the part after @ must be a step number, e.g. "
                         f"{run_ref or 'RUN'}@3") from None
    if not run_ref:
        raise UsageError(f"{ref!r}: name the run before the @, e.g. my-run@{step}")
    if step < 1:
        raise UsageError(f"{ref!r}: steps are numbered from 1 (0 is the start state, which "
                         "no step made)")
    row = find_run(store, run_ref)
    ep = row.epoch if epoch is None else epoch
    if epoch is None:
        ran = ran_in(lineage(store, row), step)
        ep = row.epoch if ran is None else ran
    last = row.step if ep == row.epoch else _last_step(store, row.id, ep)
    if last is None:
        raise NotFound(f"run {row.id} has no epoch {ep} (it is in epoch {row.epoch})")
    if step > last and epoch is None:
        was = [e for e in range(row.epoch) if (_last_step(store, row.id, e) or 0) >= step]
        if was:
            raise UsageError(f"run {row.id}'s step {step} was rolled back (its current "
                             f"history, epoch {row.epoch}, has {last} steps); that step of "
                             f"epoch {was[-1]} is `{run_ref}@{step} --epoch {was[-1]}`")
        raise UsageError(f"run {row.id} has completed {last} steps; step {step} is in the "
                         "future")
    if step > last:
        raise UsageError(f"run {row.id} has completed {last} steps in epoch {ep}; step {step} "
                         "is in the future")
    return row, ep, step


def _last_step(store: Store, run: str, epoch: int) -> int | None:
    steps = store.checkpoint_steps(run, epoch)
    return max(s for s, _, _ in steps) if steps else None


def impact(store: Store, ref: str, *, epoch: int | None = None) -> Impact:
    """Everything downstream of ``ref`` (an event id or ``RUN@STEP``)."""
    row, ep, step = parse_origin(store, ref, epoch)
    return impact_from(store, row, ep, step)


def impact_from(store: Store, row: RunRow, epoch: int, step: int) -> Impact:
    """Everything downstream of step ``step`` of ``row`` in ``epoch``."""
    rows = {row.id: row}
    affected = []
    for r in store.downstream(row.id, epoch, step):
        run = rows.get(r.run) or store.get_run(r.run)
        if run is None:
            continue
        rows[r.run] = run
        affected.append(_describe(store, run, r.epoch, r.first_step, r.via))
    return Impact((row.id, epoch, step), affected)


def _describe(store: Store, r: RunRow, epoch: int, first: int, link: Link | None) -> Affected:
    a = Affected(r, epoch, first, link)
    a.last_step = r.step if epoch == r.epoch else (_last_step(store, r.id, epoch) or first)
    made = store.produced(r.id, epoch, first)
    a.effects, a.messages = made.effects, made.messages
    for v in made.versions:
        (a.board if v.ns.startswith("board:") else a.files).append(v)
    return a
