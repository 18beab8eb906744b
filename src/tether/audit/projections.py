"""The audit of the runs, effects and approvals projections: each row's status (and a
run's reason, wake time, epoch, step and chain head) must be the fold of its
verified events (:mod:`tether.core.fold`).

The row of a run is written in the same transaction as its events, so a row
whose ``seq`` is ahead of the events read belongs to a run that moved on while
the audit read it: it is not judged. A run with a damaged event is not judged
either (that event is already named), nor one whose status events had their
payload erased (what they said cannot be folded again).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tether.core.events import Event
from tether.core.fold import READS_PAYLOAD, RunFold, approval_change, effect_change, fold
from tether.errors import StoreError
from tether.store.protocol import Store
from tether.store.records import ApprovalRow, EffectRow, RunRow

_FIX = ("changed outside tether: restore the store from a backup (its events are intact: "
        "`tether events {run}` shows what happened)")


@dataclass(slots=True)
class FoldFacts:
    """The folds of the verified events, gathered in chain order."""

    runs: dict[str, RunFold] = field(default_factory=dict)
    heads: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Run: (seq, hash) of its last verified event."""
    unsure: set[str] = field(default_factory=set)
    """Runs with an erased payload the fold reads."""
    effects: dict[str, str | None] = field(default_factory=dict)
    approvals: dict[str, str | None] = field(default_factory=dict)
    """Effect or approval id: its status (None: decided by an erased payload)."""

    def note(self, e: Event, erased: bool) -> None:
        """Take in one verified event."""
        self.runs[e.run] = fold(self.runs.get(e.run) or RunFold(), e)
        self.heads[e.run] = (e.seq, e.hash)
        if erased and e.kind in READS_PAYLOAD:
            self.unsure.add(e.run)
        for changes, into in ((effect_change, self.effects), (approval_change, self.approvals)):
            got = changes(e)
            if got is not None:
                into[got[0]] = got[1]


    def merge(self, later: FoldFacts) -> None:
        """Take in the folds of runs noted apart, after these (as if noted here next)."""
        self.runs.update(later.runs)
        self.heads.update(later.heads)
        self.unsure |= later.unsure
        self.effects.update(later.effects)
        self.approvals.update(later.approvals)


def check_projections(store: Store, facts: FoldFacts, damaged: set[str],
                      effects: list[EffectRow] | None, problems: list[str]) -> None:
    """Compare run, effect and approval rows with the folds; one problem per table.
    ``effects`` are the effect rows (read once for this and ``check_rows``; None if they
    could not be read)."""
    try:
        runs, approvals = store.list_runs(), store.approvals()
    except StoreError as exc:
        problems.append(f"runs or approvals cannot be read ({exc})")
        return
    for row in runs:
        found = run_problem(facts, damaged, row)
        if found:
            problems.append(found)
            break
    rows: Sequence[EffectRow | ApprovalRow]
    for what, rows, want in (("effect", effects or (), facts.effects),
                             ("approval", approvals, facts.approvals)):
        for r in rows:
            if r.run in damaged or want.get(r.id, "") is None:
                continue
            if r.id not in want:
                problems.append(f"{what} {r.id} (run {r.run}): the row has no event that "
                                f"made it; {_FIX.format(run=r.run)}")
                break
            if r.status != want[r.id]:
                problems.append(f"{what} {r.id} (run {r.run} step {r.step}): status: stored "
                                f"{r.status!r}, events say {want[r.id]!r}; "
                                f"{_FIX.format(run=r.run)}")
                break


def run_problem(facts: FoldFacts, damaged: set[str], row: RunRow) -> str | None:
    """What is wrong with run row ``row`` given the folds in ``facts``, or None."""
    if row.id in damaged:
        return None
    folded, head = facts.runs.get(row.id), facts.heads.get(row.id)
    if folded is None or head is None:
        return f"run {row.id} ({row.name}): the row has no events; {_FIX.format(run=row.id)}"
    if row.seq > head[0]:
        return None  # committed after the audit read its events
    diffs = folded.differences(row)
    if (row.seq, row.head) != head:
        diffs.insert(0, f"last event: stored #{row.seq} {row.head[:12]}, events end at "
                        f"#{head[0]} {head[1][:12]}")
    if row.id in facts.unsure:
        diffs = [d for d in diffs if d.startswith(("epoch", "step", "last event"))]
    if not diffs:
        return None
    return (f"run {row.id} ({row.name}): the runs row disagrees with its events "
            f"({'; '.join(diffs)}); {_FIX.format(run=row.id)}")
