"""Containing a run: holding its undelivered messages and marking its writes suspect.

The one place that does it, for an operator's ``tether quarantine`` (through
:mod:`tether.provenance.quarantine`, which takes the run's lease first) and for a
monitor's ``quarantine`` verdict (the worker, which holds the lease already).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tether.errors import Conflict
from tether.runtime.journal import RunJournal
from tether.store.protocol import Store
from tether.store.records import transition


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



def contain(store: Store, j: RunJournal, *, release: bool, reason: str, by: str,
            causes: tuple[str, ...] = ()) -> QuarantineResult | None:
    """One attempt, in one commit: hold (or deliver again) the run's messages and mark (or
    unmark) its writes suspect; None if a recipient took a message meanwhile."""
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
