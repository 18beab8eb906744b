"""A run's history: which epoch each of its steps comes from.

A rollback does not delete: it starts a new epoch from the state at its step,
and the old epoch's later steps stay in the journal as an abandoned branch.
The run's *current history* is therefore made of segments: each epoch counts
for the steps after its own start up to the step the next epoch began at.
Rolling back, restoring a step's state and naming ``RUN@STEP`` all read steps
through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tether.core.checkpoint import chain_label, restore
from tether.store.protocol import Store
from tether.store.records import RunRow


@dataclass(frozen=True, slots=True)
class Segment:
    """The steps an epoch contributes to the run's current history: (start, end]."""

    epoch: int
    start: int
    """The step the epoch began at (its first checkpoint: 0, or a rollback's step)."""
    end: int | None
    """The step the next epoch began at (None: the current epoch, open-ended)."""

    def holds(self, step: int) -> bool:
        """Whether ``step`` of this epoch is part of the run's current history."""
        return step > self.start and (self.end is None or step <= self.end)


def lineage(store: Store, row: RunRow) -> list[Segment]:
    """The run's current history as epoch segments, oldest first.

    Epoch e+1 always begins (by a rollback) from the run's history as it was then,
    cut at its start step: every segment is cut there, those that began at or after
    it drop out (a rollback to before an earlier rollback's step abandons that
    epoch whole), and the new epoch goes on from it.
    """
    out: list[Segment] = []
    for e in range(row.epoch + 1):
        steps = store.checkpoint_steps(row.id, e)
        if not steps:
            continue
        start = min(s for s, _, _ in steps)
        out = [Segment(seg.epoch, seg.start, start if seg.end is None or seg.end > start
                       else seg.end) for seg in out if seg.start < start]
        out.append(Segment(e, start, None))
    return out


@dataclass(frozen=True, slots=True)
class StepCheckpoint:
    """One stored checkpoint of a run (``tether checkpoints RUN``)."""

    epoch: int
    step: int
    kind: str
    """``key`` (a keyframe) or ``delta`` (against the step before)."""
    size: int
    """Bytes stored for it (a keyframe's shared chunks not counted)."""
    current: bool
    """Part of the run's current history; False: on a branch a rollback abandoned."""

    def to_json(self) -> dict[str, object]:
        return {"epoch": self.epoch, "step": self.step, "kind": self.kind, "bytes": self.size,
                "current": self.current}


def checkpoints(store: Store, row: RunRow) -> list[StepCheckpoint]:
    """Every checkpoint of the run, by epoch then step."""
    segments = lineage(store, row)
    return [StepCheckpoint(e, step, kind, size, epoch_of(segments, step) == e)
            for e in range(row.epoch + 1)
            for step, kind, size in sorted(store.checkpoint_steps(row.id, e))]


def epoch_of(segments: list[Segment], step: int) -> int | None:
    """The epoch whose checkpoint of ``step`` is in the run's current history."""
    for seg in reversed(segments):
        if seg.start <= step and (seg.end is None or step <= seg.end):
            return seg.epoch
    return None


def ran_in(segments: list[Segment], step: int) -> int | None:
    """The epoch that ran ``step`` of the run's current history (None for step 0 or a step
    not in it)."""
    for seg in segments:
        if seg.holds(step):
            return seg.epoch
    return None


def state_at(store: Store, run: str, epoch: int, step: int) -> dict[str, Any] | None:
    """The run's state after ``step`` of ``epoch``, restored from its checkpoints (from the
    nearest one at or before it); None when the epoch has none there."""
    chain = store.checkpoint_chain(run, epoch, step)
    if chain is None:
        return None
    return restore(chain.key_body, store.chunk, chain.deltas, prefetch=store.chunks,
                   where=chain_label(run, epoch, step, chain.key_step))
