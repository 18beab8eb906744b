"""Containing a run: holding its undelivered messages and marking its writes suspect.

The one place that does it, for an operator's ``tether quarantine`` (through
:mod:`tether.provenance.quarantine`, which takes the run's lease first), for a
monitor's ``quarantine`` verdict (the worker, which holds the lease already) and for
a ``quarantine`` command (a verdict naming an upstream run, applied by whoever holds
that run's lease). A verdict's pause and its containment are one commit
(``prelude``), so a kill -9 never leaves a run parked by a quarantine verdict but
not contained.

Below a quarantine, a monitor's ``pause`` (or stronger) verdict marks the run's live
writes suspect in the commit of its ``alert`` (:func:`alert_marks`, the ids listed in
the alert's ``suspect``), and ``tether alerts ack`` clears what that alert marked
(:func:`ack_clears`) unless a quarantine or another alert nobody acked still holds it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tether.core.statuses import ACTIVE_STATUSES
from tether.errors import Conflict
from tether.runtime.journal import RunJournal
from tether.store.protocol import Store
from tether.store.records import Command, transition


@dataclass(frozen=True, slots=True)
class QuarantineResult:
    run: str
    held: tuple[str, ...]
    """Messages held (or, on release, delivered again)."""
    suspect: tuple[str, ...]
    """Writing events whose versions were marked (or unmarked) suspect."""
    released: bool

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "released": self.released, "messages": list(self.held),
                "writes": list(self.suspect)}



@dataclass(frozen=True, slots=True)
class Containment:
    """A containment to apply in one commit (see :func:`contain`)."""

    reason: str
    by: str
    causes: tuple[str, ...]
    prelude: Callable[[RunJournal], None]
    """Journals what must commit with it, before it: the ``run.paused`` that parks the run
    (a verdict's), a ``command`` event (a quarantine command's)."""


def quarantine_command(c: Command, step: int | None = None) -> Containment:
    """How quarantine command ``c`` (one :func:`tether.core.commands.decide` applies)
    contains its run: its ``command`` event, ``run.paused`` if the run is active, then
    ``run.quarantined`` citing the verdict's alert."""
    why = f"quarantined by {c.actor}"
    alert = str(c.args.get("alert") or "")
    if alert:
        why += (f": monitor {c.args.get('monitor')!r} ({c.args.get('rule')}) in run "
                f"{c.args.get('run')} traced it here (alert {alert})")

    def prelude(j: RunJournal) -> None:
        ev = j.append("command", {"command": c.id, "kind": c.kind, "args": c.args,
                                  "outcome": "applied"}, step=step, actor=c.actor)
        j.command_applied(c.id)
        if j.row.status in ACTIVE_STATUSES:
            j.append("run.paused", {"reason": why, **({"alert": alert} if alert else {})},
                     step=step, actor=c.actor, causes=(ev.id,))

    return Containment(why, c.actor, (alert,) if alert else (), prelude)


def contain(store: Store, j: RunJournal, *, release: bool, reason: str, by: str,
            causes: tuple[str, ...] = (),
            prelude: Callable[[RunJournal], None] | None = None) -> QuarantineResult | None:
    """One attempt, in one commit: hold (or deliver again) the run's messages and mark (or
    unmark) its writes suspect; None if a recipient took a message meanwhile (nothing of
    the attempt is written, ``prelude``'s included: see :class:`Containment`). Nothing
    else of the run may be buffered or in flight: a refused attempt discards the buffer."""
    if prelude is not None:
        prelude(j)
    run = j.row.id
    frm, to = ("held", "pending") if release else ("pending", "held")
    held = tuple(m.id for m in store.messages(sender=run, status=frm))
    writes = tuple(sorted({v.event for v in store.versions(run=run)
                           if v.status == "live" and v.suspect == release}))
    spec = dict(j.row.spec)
    if release:
        spec.pop("quarantined", None)
        j.append("run.released", {"messages": list(held), "writes": list(writes),
                                  "by": by}, actor=by)
    else:
        spec["quarantined"] = {"by": by, "reason": reason}
        ev = j.append("run.quarantined", {"messages": list(held), "writes": list(writes),
                                          "reason": reason, "by": by}, actor=by, causes=causes)
        if j.row.status == "awaiting_approval":
            # Its pending request cannot be granted now; the run waits, paused.
            why = f"quarantined by {by}" + (f": {reason}" if reason else "")
            j.append("run.paused", {"reason": why}, actor=by, causes=(ev.id,))
    j.update(spec=spec)
    if held:
        j.transition(transition("messages", held, "status", to, (frm,)))
    if writes:
        j.transition(transition("versions", writes, "suspect", not release))
    try:
        j.flush_sync()
    except Conflict:
        j.discard()  # a recipient took a message meanwhile: look again
        return None
    return QuarantineResult(run, held, writes, release)


@dataclass(frozen=True, slots=True)
class Marks:
    """What a verdict marks suspect (or an ack clears): writing events of versions, and
    messages."""

    writes: tuple[str, ...] = ()
    messages: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.writes or self.messages)

    def payload(self, writes: str) -> dict[str, list[str]]:
        """The event's fields for them (``writes`` names the field of the writes; an
        empty list is left out, so an event that marks nothing says nothing)."""
        out = {writes: list(self.writes), "messages": list(self.messages)}
        return {k: v for k, v in out.items() if v}

    def journal(self, j: RunJournal, value: bool) -> None:
        """Set (or clear) the marks with ``j``'s next commit."""
        if self.writes:
            j.transition(transition("versions", self.writes, "suspect", value))
        if self.messages:
            j.transition(transition("messages", self.messages, "suspect", value))


def alert_marks(store: Store, j: RunJournal) -> Marks:
    """What a verdict of ``pause`` or stronger marks: the writing events of the run's live
    versions, and its messages nobody received yet, not marked already, those still
    buffered or in flight included (``RunJournal.unflushed_*``). All of them, not only
    those after the alert's evidence: a monitor's evidence is where it noticed, and the
    damage may be older (an invariant is checked when a step ends, a drift after its
    window), as a quarantine marks them all."""
    stored = {v.event: v for v in store.versions(run=j.run)}
    writes = {e for e, v in stored.items() if v.status == "live" and not v.suspect}
    writes.update(e for e in j.unflushed_versions if e not in stored)
    sent = {m.id: m for m in store.messages(sender=j.run)}
    msgs = {i for i, m in sent.items() if m.status in ("pending", "held") and not m.suspect}
    msgs.update(i for i in j.unflushed_messages if i not in sent)
    return Marks(tuple(sorted(writes)), tuple(sorted(msgs)))


def ack_clears(store: Store, j: RunJournal, alert: str, alerts: Iterable[Any]) -> Marks:
    """What acking ``alert`` unmarks: what it marked (its ``suspect`` writes and
    ``messages``) that is still marked, unless another alert of the run nobody acked
    marked it too; its writes stay marked while the run is quarantined (the quarantine
    holds them; its held messages stay held either way). ``alerts``: the run's ``alert``
    and ``alert.acked`` events."""
    marked: dict[str, tuple[set[str], set[str]]] = {}
    acked: set[str] = {alert}
    for e in alerts:
        p = e.payload if isinstance(e.payload, dict) else {}
        if e.kind == "alert.acked":
            acked.add(str(p.get("alert")))
        elif p.get("suspect") or p.get("messages"):
            marked[e.id] = (set(p.get("suspect") or ()), set(p.get("messages") or ()))
    mine = marked.get(alert, (set(), set()))
    others = [m for a, m in marked.items() if a not in acked]
    writes = mine[0] - set().union(*(m[0] for m in others))
    msgs = mine[1] - set().union(*(m[1] for m in others))
    if j.row.spec.get("quarantined"):
        writes = set()
    still_w = {v.event for v in store.versions(run=j.run) if v.suspect}
    still_m = {m.id for m in store.messages(ids=sorted(msgs)) if m.suspect} if msgs else set()
    return Marks(tuple(sorted(writes & still_w)), tuple(sorted(msgs & still_m)))
