"""A run's journal as its owner sees it: the chain head, buffered events, projections.

Events are appended to a buffer (cheap) and become durable at the next flush,
which writes them with the run's projection row, effect rows, checkpoint and
usage in one :class:`~tether.store.records.Write`, fenced by the lease token.
Used by workers (through the group committer) and by the CLI (directly).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tether.core import budget as budgets
from tether.core.checkpoint import Checkpoint
from tether.core.events import Chain, Event
from tether.core.fold import FOLDED, RunFold, fold
from tether.core.ids import UlidSource, iso_stamper
from tether.runtime.committer import GroupCommitter
from tether.store.protocol import Store
from tether.store.records import (
    ApprovalRow,
    EffectRow,
    MessageRow,
    Notification,
    RunRow,
    Transition,
    UsageDelta,
    VersionRow,
    Write,
)

NOTIFY_KINDS = frozenset({"approval.requested", "run.paused", "run.stopped", "budget.exceeded",
                          "effect.in_doubt", "run.failed", "alert"})
"""Events operators are told about (through the outbox, when a webhook is configured)."""


@dataclass(slots=True)
class Recorded:
    """A journaled call of the in-flight step and its latest result event (what replay
    returns instead of calling again)."""

    call: Event
    result: Event | None = None


class RunJournal:
    """Buffered, fenced writer of one run's events and projections."""

    def __init__(self, store: Store, row: RunRow, fence: int | None, ids: UlidSource,
                 now: Any, stamp: Callable[[float], str] | None = None) -> None:
        self.store = store
        self.row = dataclasses.replace(row)  # our own copy, changed in place
        self._changed: set[str] = set()
        self.fence = fence
        self.ids = ids
        self._now = now
        # A worker's journals share its stamper: with a thousand runs each stepping about
        # once a second, a journal's own cache missed on most steps (a strftime each).
        self._iso = stamp or iso_stamper()
        self.chain = Chain(row.id, row.seq, row.head) if row.seq else Chain(row.id)
        self._fold = _folded(row)
        self._events: list[Event] = []
        self._effects: dict[str, EffectRow] = {}
        self._checkpoint: tuple[int, Checkpoint] | None = None
        self._usage: dict[str, float] = {}
        self._usage_bucket: int | None = None
        self._commands: list[int] = []
        self._approvals: dict[str, ApprovalRow] = {}
        self._notes: list[Notification] = []
        self._messages: list[MessageRow] = []
        self._versions: list[VersionRow] = []
        self.unflushed_versions: dict[str, None] = {}
        """Writing events of this run's versions not known to be durable (buffered, or in a
        commit in flight): a monitor's verdict marks them with the stored ones. Forgotten
        as each commit that carried them lands (:meth:`durable`)."""
        self.unflushed_messages: dict[str, None] = {}
        """The same for the messages this run sent."""
        self._transitions: list[Transition] = []
        self._chunks: dict[str, bytes] = {}
        self._dirty = False
        self.listener: Callable[[Event], None] | None = None
        """Told of every event right after it is appended (the run's monitors)."""

    @property
    def run(self) -> str:
        return self.row.id

    def now(self) -> float:
        t: float = self._now()
        return t

    def append(self, kind: str, payload: Any, *, step: int | None = None, actor: str = "system",
               causes: tuple[str, ...] = (), epoch: int | None = None) -> Event:
        """Add an event to the buffer and fold it into the run's row (:mod:`tether.core.fold`);
        both become durable at the next flush. ``epoch``: a rollback's, which opens one."""
        t = self.now()
        e = self.chain.make(id=self.ids.new(), kind=kind, time=self._iso(t),
                            epoch=self.row.epoch if epoch is None else epoch,
                            step=self.row.step + 1 if step is None else step, actor=actor,
                            payload=payload, causes=causes)
        self._events.append(e)
        self._dirty = True
        new = fold(self._fold, e)
        if new is not self._fold:
            self._apply(new)
        if kind in NOTIFY_KINDS:
            # Queued in the same transaction as the event: notified if and only if it happened.
            self._notes.append(Notification(e.id, kind, {
                "id": e.id, "kind": kind, "run": self.row.id, "name": self.row.name,
                "agent": self.row.agent, "swarm": self.row.swarm, "step": e.step, "time": e.time,
                "payload": payload}, t))
        if self.listener is not None:
            self.listener(e)
        return e

    def _apply(self, new: RunFold) -> None:
        old, self._fold = self._fold, new
        for name, was, v in zip(FOLDED, old, new, strict=True):
            if v != was:
                setattr(self.row, name, v)
                self._changed.add(name)

    def update(self, **changes: Any) -> None:
        """Change fields of the run's projection row (written at the next flush); not those
        the events fold into (status, reason, wake time, epoch, step): append the event."""
        folded = sorted(set(changes) & set(FOLDED))
        if folded:
            raise ValueError(f"run {self.row.id}: {', '.join(folded)} follow from its events; "
                             "append the event that changes them instead")
        for k, v in changes.items():
            setattr(self.row, k, v)
        self._changed.update(changes)
        self._dirty = True

    def effect(self, row: EffectRow) -> None:
        self._effects[row.id] = row
        self._dirty = True

    def approval(self, row: ApprovalRow) -> None:
        """Write (or update) an approval request with the next flush."""
        self._approvals[row.id] = row
        self._dirty = True

    def message(self, row: MessageRow) -> None:
        """Post a message with the next flush (it exists once its ``message.sent`` does)."""
        self._messages.append(row)
        self.unflushed_messages[row.id] = None
        self._dirty = True

    def version(self, row: VersionRow) -> None:
        """Record an attributed write (blackboard key, workspace file) with the next flush."""
        self._versions.append(row)
        self.unflushed_versions[row.event] = None
        self._dirty = True

    def transition(self, t: Transition) -> None:
        """Change message or version rows with the next flush, if still as expected."""
        self._transitions.append(t)
        self._dirty = True

    def chunk(self, digest: str, body: bytes) -> None:
        """Keep a content-addressed blob (SHA-256 hex of ``body``) with the next flush."""
        self._chunks[digest] = body
        self._dirty = True

    def checkpoint(self, ck: Checkpoint) -> None:
        self._checkpoint = (self.row.epoch, ck)
        self._dirty = True

    def add_usage(self, counts: dict[str, float]) -> None:
        """Count usage (lifetime in the row, per-minute bucket for rolling windows)."""
        # A flush carries one minute bucket; usage buffered across a minute boundary
        # is counted in the later minute, which shifts a rolling window by < 1 minute.
        self._usage_bucket = int(self.now() // 60)
        budgets.add(self._usage, counts)
        budgets.add(self.row.usage, counts)
        self._changed.add("usage")
        self._dirty = True

    def pending_usage(self) -> dict[str, float]:
        return dict(self._usage)

    def command_applied(self, cid: int) -> None:
        self._commands.append(cid)
        self._dirty = True

    def discard(self) -> None:
        """Forget everything buffered and take the run's row and chain head as stored (after
        a write the store refused, e.g. Conflict)."""
        self.take()
        self.unflushed_versions.clear()
        self.unflushed_messages.clear()
        row = self.store.get_run(self.row.id)
        if row is not None:
            self.row = dataclasses.replace(row)
            self._fold = _folded(row)
            self.chain = Chain(row.id, row.seq, row.head) if row.seq else Chain(row.id)

    @property
    def dirty(self) -> bool:
        return self._dirty

    def take(self) -> Write:
        """Build the write for everything buffered and reset the buffer."""
        r = self.row
        r.seq, r.head, r.updated = self.chain.seq, self.chain.head, self.now()
        # A snapshot for the writer thread; ours keeps changing.
        snap = dataclasses.replace(r, usage=dict(r.usage), budget=dict(r.budget))
        w = Write(run=r.id, fence=self.fence, events=tuple(self._events), run_row=snap,
                  run_changes=tuple(self._changed),
                  effects=tuple(self._effects.values()), checkpoint=self._checkpoint,
                  usage=UsageDelta(self._usage_bucket, dict(self._usage))
                  if self._usage and self._usage_bucket is not None else None,
                  commands_applied=tuple(self._commands), swarm=self.row.swarm,
                  approvals=tuple(self._approvals.values()), notifications=tuple(self._notes),
                  messages=tuple(self._messages), versions=tuple(self._versions),
                  transitions=tuple(self._transitions), chunks=tuple(self._chunks.items()))
        self._events, self._effects, self._checkpoint = [], {}, None
        self._usage, self._usage_bucket, self._commands = {}, None, []
        self._approvals = {}
        self._notes = []
        self._messages, self._versions, self._transitions = [], [], []
        self._chunks = {}
        self._changed = set()
        self._dirty = False
        return w

    async def flush(self, committer: GroupCommitter) -> None:
        """Make everything buffered durable (through the group committer)."""
        if self._dirty:
            w = self.take()
            await committer.submit(w)
            self.durable(w)

    def flush_sync(self) -> None:
        """Make everything buffered durable, committing directly (CLI, tests)."""
        if self._dirty:
            w = self.take()
            err = self.store.commit([w])[0]
            if err is not None:
                raise err
            self.durable(w)

    def durable(self, w: Write) -> None:
        """``w`` (taken from this journal) was committed."""
        for v in w.versions:
            self.unflushed_versions.pop(v.event, None)
        for m in w.messages:
            self.unflushed_messages.pop(m.id, None)


def _folded(row: RunRow) -> RunFold:
    return RunFold(status=row.status, reason=row.reason, wake_at=row.wake_at, epoch=row.epoch,
                   step=row.step)
